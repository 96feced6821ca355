//! The node agent's kernel unpacker (a user-registered kernel image is untrusted): any bytes
//! in, an x86-64 ELF of at most the bound or an error out, no panic.
#![no_main]

use mallee_init::agent::kernels::{unpack, MAX_VMLINUX};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(elf) = unpack(data) {
        assert!(elf.len() <= MAX_VMLINUX && elf.starts_with(b"\x7fELF"));
    }
});
