//! Checks that a binary going into an initramfs is static: no ELF interpreter (`PT_INTERP`).
//!
//! A busybox-free initramfs has no dynamic loader and no libc, so a dynamic binary would fail
//! with a confusing "No such file or directory" at boot; the build refuses it instead.

use object::elf::PT_INTERP;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::Endianness;

#[derive(Debug, thiserror::Error)]
pub enum StaticCheckError {
    #[error("{path}: not a 64-bit ELF executable: {detail}")]
    NotElf { path: String, detail: String },
    #[error("{path}: has an ELF interpreter ({interp}); build it static with RUSTFLAGS=\"-C target-feature=+crt-static\" --target x86_64-unknown-linux-gnu")]
    Dynamic { path: String, interp: String },
}

/// Ok when `bytes` is a 64-bit ELF with no interpreter.
pub fn check_static(path: &str, bytes: &[u8]) -> Result<(), StaticCheckError> {
    let elf = ElfFile64::<Endianness>::parse(bytes).map_err(|e| StaticCheckError::NotElf {
        path: path.to_string(),
        detail: e.to_string(),
    })?;
    let endian = elf.endian();
    for ph in elf.elf_program_headers() {
        if ph.p_type(endian) == PT_INTERP {
            let interp = ph
                .data(endian, bytes)
                .ok()
                .map(|d| {
                    String::from_utf8_lossy(d)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default();
            return Err(StaticCheckError::Dynamic {
                path: path.to_string(),
                interp,
            });
        }
    }
    Ok(())
}

/// A minimal static ELF64 executable (header + one `PT_LOAD`), for tests that need one.
pub fn minimal_static_elf(payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"); // ident: 64-bit, LE, v1
    b.extend_from_slice(&2u16.to_le_bytes()); // e_type EXEC
    b.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine x86-64
    b.extend_from_slice(&1u32.to_le_bytes()); // e_version
    b.extend_from_slice(&0x400078u64.to_le_bytes()); // e_entry
    b.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    b.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    b.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    b.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    b.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    let total = (120 + payload.len()) as u64;
    b.extend_from_slice(&1u32.to_le_bytes()); // p_type LOAD
    b.extend_from_slice(&5u32.to_le_bytes()); // p_flags R+X
    b.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    b.extend_from_slice(&0x400000u64.to_le_bytes()); // p_vaddr
    b.extend_from_slice(&0x400000u64.to_le_bytes()); // p_paddr
    b.extend_from_slice(&total.to_le_bytes()); // p_filesz
    b.extend_from_slice(&total.to_le_bytes()); // p_memsz
    b.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    b.extend_from_slice(payload);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_elf_passes() {
        check_static("t", &minimal_static_elf(b"\xf4")).unwrap();
    }

    #[test]
    fn the_systems_dynamic_true_is_refused() {
        let bytes = std::fs::read("/bin/true").unwrap();
        let err = check_static("/bin/true", &bytes).unwrap_err();
        match err {
            StaticCheckError::Dynamic { interp, .. } => assert!(interp.contains("ld-linux")),
            other => panic!("expected Dynamic, got {other}"),
        }
    }

    #[test]
    fn a_script_is_not_elf() {
        assert!(matches!(
            check_static("s", b"#!/bin/sh\n"),
            Err(StaticCheckError::NotElf { .. })
        ));
    }
}
