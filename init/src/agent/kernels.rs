//! Kernels unpacked once per image: a bzImage's compressed payload, found through its setup
//! header, decompressed into the ELF `vmlinux` it carries and kept beside the cached image,
//! so that every boot of that kernel starts at the kernel itself instead of running its
//! decompressor in the guest (xz under emulation costs seconds a boot). `mallee-vmm` boots an
//! ELF kernel directly (64-bit boot protocol). Anything this cannot unpack boots as it is.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a kernel image could not be unpacked (it is then booted as it is).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("not a bzImage (no `HdrS` setup header)")]
    NotBzImage,
    #[error("boot protocol {0:#06x} does not locate the payload (2.08 or later does)")]
    OldProtocol(u16),
    #[error("the payload ({offset} + {len} bytes) lies outside the {size}-byte image")]
    PayloadOutside {
        offset: usize,
        len: usize,
        size: usize,
    },
    #[error("the payload is compressed with {0}, which is not unpacked here")]
    Unsupported(&'static str),
    #[error("decompressing the {format} payload: {source}")]
    Decompress {
        format: &'static str,
        source: std::io::Error,
    },
    #[error("the payload unpacks to more than {MAX_VMLINUX} bytes")]
    TooLarge,
    #[error("the payload unpacks to {got} bytes where its trailer says {said}")]
    WrongSize { got: usize, said: usize },
    #[error("the unpacked payload is not a 64-bit x86 ELF executable")]
    NotElf,
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// The most an unpacked kernel may be: a stripped vmlinux is tens of MiB; a payload that
/// unpacks to more is refused, not allowed to fill the node's memory.
pub const MAX_VMLINUX: usize = 256 << 20;

/// The most memory the xz decoder may take (its dictionary, as the stream's header asks):
/// kernel builds use 32 MiB; a header asking for more is refused, not allocated.
const XZ_MEM_LIMIT_KIB: u32 = 128 << 10;

/// The setup header's offsets (Documentation/arch/x86/boot.rst).
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The compressed payload of bzImage `bz`.
pub fn payload(bz: &[u8]) -> Result<&[u8], UnpackError> {
    if bz.get(HEADER_MAGIC..HEADER_MAGIC + 4) != Some(b"HdrS") {
        return Err(UnpackError::NotBzImage);
    }
    let version = u16_at(bz, VERSION).ok_or(UnpackError::NotBzImage)?;
    if version < 0x0208 {
        return Err(UnpackError::OldProtocol(version));
    }
    let sects = match bz[SETUP_SECTS] {
        0 => 4,
        n => n as usize,
    };
    let field = |at| u32_at(bz, at).ok_or(UnpackError::NotBzImage);
    let (po, len) = (
        field(PAYLOAD_OFFSET)? as usize,
        field(PAYLOAD_LENGTH)? as usize,
    );
    let offset = (sects + 1) * 512 + po;
    let outside = || UnpackError::PayloadOutside {
        offset,
        len,
        size: bz.len(),
    };
    let end = offset.checked_add(len).ok_or_else(outside)?;
    bz.get(offset..end).ok_or_else(outside)
}

/// The ELF vmlinux bzImage `bz` carries.
pub fn unpack(bz: &[u8]) -> Result<Vec<u8>, UnpackError> {
    let payload = payload(bz)?;
    // The build appends the unpacked size to every payload (`size_append`).
    let said = payload
        .len()
        .checked_sub(4)
        .and_then(|at| u32_at(payload, at))
        .map(|n| n as usize);
    let out = match payload {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => {
            let xz = lzma_rust2::XzReader::new_mem_limit(payload, false, XZ_MEM_LIMIT_KIB);
            read_bounded(xz, "xz")?
        }
        [0x1f, 0x8b, ..] => read_bounded(flate2::read::GzDecoder::new(payload), "gzip")?,
        [0x02, 0x21, 0x4c, 0x18, ..] => lz4_legacy(payload)?,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => return Err(UnpackError::Unsupported("zstd")),
        [b'B', b'Z', b'h', ..] => return Err(UnpackError::Unsupported("bzip2")),
        [0x89, b'L', b'Z', b'O', ..] => return Err(UnpackError::Unsupported("lzo")),
        [0x5d, 0, 0, ..] => return Err(UnpackError::Unsupported("lzma")),
        _ => return Err(UnpackError::Unsupported("an unknown format")),
    };
    if let Some(said) = said.filter(|&n| n != out.len()) {
        return Err(UnpackError::WrongSize {
            got: out.len(),
            said,
        });
    }
    if !is_x86_64_executable(&out) {
        return Err(UnpackError::NotElf);
    }
    Ok(out)
}

fn read_bounded(r: impl Read, format: &'static str) -> Result<Vec<u8>, UnpackError> {
    let mut out = Vec::new();
    r.take(MAX_VMLINUX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| UnpackError::Decompress { format, source })?;
    if out.len() > MAX_VMLINUX {
        return Err(UnpackError::TooLarge);
    }
    Ok(out)
}

/// LZ4's legacy frame (`lz4 -l`, what the kernel build makes): the magic, then blocks, each a
/// little-endian compressed length and a block of at most 8 MiB unpacked; the build's
/// 4-byte size trailer ends it.
fn lz4_legacy(payload: &[u8]) -> Result<Vec<u8>, UnpackError> {
    const MAGIC: u32 = 0x184c_2102;
    const BLOCK_MAX: usize = 8 << 20;
    let bad = |why: &str| UnpackError::Decompress {
        format: "lz4",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()),
    };
    let mut out = Vec::new();
    let mut at = 4;
    while payload.len() - at > 4 {
        let n = u32_at(payload, at).ok_or_else(|| bad("a block length is cut off"))?;
        at += 4;
        if n == MAGIC {
            continue; // another frame, concatenated
        }
        let block = at
            .checked_add(n as usize)
            .and_then(|end| payload.get(at..end))
            .ok_or_else(|| bad("a block runs past the payload"))?;
        at += n as usize;
        let start = out.len();
        if start + BLOCK_MAX > MAX_VMLINUX {
            return Err(UnpackError::TooLarge);
        }
        out.resize(start + BLOCK_MAX, 0);
        let got = lz4_flex::block::decompress_into(block, &mut out[start..])
            .map_err(|e| bad(&e.to_string()))?;
        out.truncate(start + got);
    }
    Ok(out)
}

fn is_x86_64_executable(elf: &[u8]) -> bool {
    elf.len() > 64
        && elf[..4] == *b"\x7fELF"
        && elf[4] == 2 // 64-bit
        && elf[5] == 1 // little-endian
        && u16_at(elf, 16) == Some(2) // ET_EXEC
        && u16_at(elf, 18) == Some(0x3e) // x86-64
}

/// `kernel` unpacked into `out` (written once, atomically; kept for later boots): `out` when
/// it is there or could be made.
pub fn unpacked(kernel: &Path, out: &Path) -> Result<PathBuf, UnpackError> {
    if out.exists() {
        return Ok(out.to_path_buf());
    }
    let bz = std::fs::read(kernel).map_err(|e| UnpackError::Io(kernel.to_path_buf(), e))?;
    let elf = unpack(&bz)?;
    let io = |e| UnpackError::Io(out.to_path_buf(), e);
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = out.with_file_name(name);
    std::fs::write(&tmp, &elf).map_err(io)?;
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    Ok(out.to_path_buf())
}

#[cfg(test)]
#[path = "kernels_tests.rs"]
mod tests;
