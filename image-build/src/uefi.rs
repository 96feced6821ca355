//! UEFI boot pieces of the flashable appliance: the pinned systemd-boot package (boot manager
//! and Linux EFI stub) and unified kernel images (the stub with the kernel, initramfs, command
//! line and os-release joined in as PE sections, so firmware boots one file).

use crate::fetch::{unpack_deb, FetchError};
use crate::lock::PackageLock;
use object::read::pe::PeFile64;
use object::{Object, ObjectSection};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum UefiError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{0}: not in the boot loader package; is the lock's package systemd-boot-efi?")]
    Missing(String),
    #[error("the EFI stub {path}: {detail}")]
    Stub { path: String, detail: String },
    #[error("objcopy (Debian's binutils; `just setup` installs it) failed making {out}: {detail}")]
    Objcopy { out: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The boot manager and the Linux EFI stub from the pinned package.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// `systemd-bootx64.efi`: installed as the removable-media path `EFI/BOOT/BOOTX64.EFI`.
    pub loader: PathBuf,
    /// `linuxx64.efi.stub`: the front of every unified kernel image.
    pub stub: PathBuf,
    pub version: String,
}

impl BootFiles {
    /// Unpacks `deb` into the cache (once) and finds the two files.
    pub fn unpack(lock: &PackageLock, deb: &Path, cache: &Path) -> Result<Self, UefiError> {
        let dest = cache
            .join("boot")
            .join(format!("{}_{}", lock.package, lock.version));
        if !dest.join(".complete").exists() {
            unpack_deb(deb, &dest)?;
        }
        let dir = dest.join("usr/lib/systemd/boot/efi");
        let found = |name: &str| {
            let p = dir.join(name);
            p.exists()
                .then_some(p)
                .ok_or_else(|| UefiError::Missing(name.into()))
        };
        Ok(Self {
            loader: found("systemd-bootx64.efi")?,
            stub: found("linuxx64.efi.stub")?,
            version: lock.version.clone(),
        })
    }
}

/// What goes into one unified kernel image.
pub struct UkiParts<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: &'a str,
    /// os-release text: systemd-boot shows `PRETTY_NAME` and sorts by `VERSION_ID`.
    pub os_release: &'a str,
}

/// PE section alignment of the added sections.
const ALIGN: u64 = 0x1000;

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Where each added section goes: after the stub's own sections, in order, each aligned, as
/// systemd's `ukify` lays them out. Returns each name with its virtual address.
pub fn layout(
    stub: &[u8],
    parts: &[(&'static str, u64)],
) -> Result<Vec<(&'static str, u64)>, String> {
    let pe = PeFile64::parse(stub).map_err(|e| format!("not a PE32+ image: {e}"))?;
    let base = pe.relative_address_base();
    let end = (pe.sections())
        .map(|s| s.address() - base + s.size())
        .max()
        .ok_or("it has no sections")?;
    let mut at = align_up(end);
    let mut out = Vec::new();
    for &(name, size) in parts {
        out.push((name, base + at));
        at = align_up(at + size.max(1));
    }
    Ok(out)
}

/// Writes the unified kernel image `out` from `stub` and `parts` with objcopy; returns its size.
pub fn unified_kernel_image(stub: &Path, parts: &UkiParts, out: &Path) -> Result<u64, UefiError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| UefiError::Io { path, source }
    };
    let stub_bytes = std::fs::read(stub).map_err(io(stub))?;
    let dir = out.with_extension("parts");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let osrel = dir.join("osrel");
    std::fs::write(&osrel, parts.os_release).map_err(io(&osrel))?;
    let cmdline = dir.join("cmdline");
    std::fs::write(&cmdline, parts.cmdline).map_err(io(&cmdline))?;
    let files: [(&str, &Path); 4] = [
        (".osrel", &osrel),
        (".cmdline", &cmdline),
        (".linux", parts.vmlinuz),
        (".initrd", parts.initramfs),
    ];
    let mut sizes = Vec::new();
    for (name, path) in files {
        sizes.push((name, std::fs::metadata(path).map_err(io(path))?.len()));
    }
    let addrs = layout(&stub_bytes, &sizes).map_err(|detail| UefiError::Stub {
        path: stub.display().to_string(),
        detail,
    })?;
    let mut cmd = Command::new("objcopy");
    for ((name, path), (_, addr)) in files.iter().zip(&addrs) {
        cmd.arg("--add-section")
            .arg(format!("{name}={}", path.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={addr:#x}"));
    }
    let result = cmd.arg(stub).arg(out).output();
    let _ = std::fs::remove_dir_all(&dir);
    let fail = |detail: String| UefiError::Objcopy {
        out: out.display().to_string(),
        detail,
    };
    let output = result.map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        return Err(fail(String::from_utf8_lossy(&output.stderr).into_owned()));
    }
    // objcopy stamps the image with the current time; give it the stub's own, so two builds of
    // the same parts are the same bytes.
    let mut image = std::fs::read(out).map_err(io(out))?;
    let stamp = pe_timestamp(&stub_bytes).ok_or_else(|| UefiError::Stub {
        path: stub.display().to_string(),
        detail: "no PE header".into(),
    })?;
    set_pe_timestamp(&mut image, stamp).ok_or_else(|| fail("objcopy wrote no PE header".into()))?;
    std::fs::write(out, &image).map_err(io(out))?;
    Ok(image.len() as u64)
}

/// Offset of the COFF file header (`PE\0\0` + 4) from the DOS header's `e_lfanew`.
fn coff_header(pe: &[u8]) -> Option<usize> {
    let at = u32::from_le_bytes(pe.get(0x3c..0x40)?.try_into().ok()?) as usize;
    (pe.get(at..at + 4)? == b"PE\0\0").then_some(at + 4)
}

fn pe_timestamp(pe: &[u8]) -> Option<u32> {
    let coff = coff_header(pe)?;
    Some(u32::from_le_bytes(
        pe.get(coff + 4..coff + 8)?.try_into().ok()?,
    ))
}

/// Sets the COFF `TimeDateStamp` and recomputes the optional header's `CheckSum` (the PE
/// algorithm: 16-bit one's-complement sum of the file with the field zeroed, plus its length).
fn set_pe_timestamp(pe: &mut [u8], stamp: u32) -> Option<()> {
    let coff = coff_header(pe)?;
    pe.get_mut(coff + 4..coff + 8)?
        .copy_from_slice(&stamp.to_le_bytes());
    let sum_at = coff + 20 + 64;
    pe.get_mut(sum_at..sum_at + 4)?.copy_from_slice(&[0; 4]);
    let mut sum: u64 = 0;
    for pair in pe.chunks(2) {
        sum += u64::from(pair[0]) | u64::from(*pair.get(1).unwrap_or(&0)) << 8;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = (sum & 0xffff) as u32 + pe.len() as u32;
    pe.get_mut(sum_at..sum_at + 4)?
        .copy_from_slice(&sum.to_le_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE image: DOS header pointing at a COFF header and an optional header.
    fn tiny_pe() -> Vec<u8> {
        let mut pe = vec![0u8; 512];
        pe[0x3c..0x40].copy_from_slice(&64u32.to_le_bytes());
        pe[64..68].copy_from_slice(b"PE\0\0");
        pe[72..76].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        pe[300] = 0xab;
        pe
    }

    #[test]
    fn timestamp_is_set_and_checksum_recomputed() {
        let mut pe = tiny_pe();
        assert_eq!(pe_timestamp(&pe), Some(0x1234_5678));
        set_pe_timestamp(&mut pe, 7).unwrap();
        assert_eq!(pe_timestamp(&pe), Some(7));
        let sum = u32::from_le_bytes(pe[152..156].try_into().unwrap());
        // 16-bit words: timestamp 7, the 0xab byte, "PE" and the e_lfanew 64; plus the length.
        let words = 7 + 0xab + u32::from_le_bytes(*b"PE\0\0") % 0x10000 + 64;
        assert_eq!(sum, words + 512);
        let again = sum;
        set_pe_timestamp(&mut pe, 7).unwrap();
        assert_eq!(u32::from_le_bytes(pe[152..156].try_into().unwrap()), again);
    }

    #[test]
    fn not_a_pe_is_refused() {
        assert_eq!(pe_timestamp(&[0u8; 100]), None);
        let mut pe = tiny_pe();
        pe[64] = b'X';
        assert_eq!(set_pe_timestamp(&mut pe, 1), None);
    }
}
