//! How a guest's kernel finds the root file system of its disk image: [`locate`] reads a few
//! KiB of the image (through [`ReadAt`], so nothing loads the whole image) and says what
//! `root=` names it — a whole-disk ext2/3/4 file system by its UUID, a GPT partition by its
//! unique partition GUID, an MBR partition by the disk signature and partition number (the
//! kernel's `PARTUUID` of one). [`RootDevice`] is that answer as a type: it holds numbers
//! only, so its text (`UUID=…`, `PARTUUID=…`) is hex digits and dashes whatever the image
//! held, and it can go on a kernel command line; its JSON is that text, parsed as strictly.
//!
//! Images are hostile input: any bytes give an answer or `None`, never a panic, and every read
//! is bounded (a sector for each table header, at most [`MAX_GPT_TABLE`] bytes of GPT entries,
//! one superblock for each of at most [`MAX_SUPERBLOCK_PROBES`] partitions). It does not read
//! files or snapshots itself, nor decide what to do without an answer (the node agent boots
//! `root=/dev/vda`).

use std::fmt;
use std::io;
use std::str::FromStr;
use uuid::Uuid;

/// The logical sector size partition tables count in (the guest's virtio disks have 512-byte
/// sectors).
const SECTOR: u64 = 512;
/// Where an ext superblock starts, from the start of its file system.
const EXT_SUPERBLOCK: u64 = 1024;
/// The part of the superblock read: up to and including `s_volume_name`.
const EXT_SUPERBLOCK_READ: usize = 136;
/// Most bytes of GPT partition entries read (128 entries of 512 bytes, or 512 of 128).
pub const MAX_GPT_TABLE: usize = 64 * 1024;
/// Most "Linux filesystem" partitions whose first bytes are read to find an ext superblock.
pub const MAX_SUPERBLOCK_PROBES: usize = 16;
/// GPT type "Linux root (x86-64)" (the Discoverable Partitions Specification).
const GPT_LINUX_ROOT_X86_64: Uuid = Uuid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709);
/// GPT type "Linux filesystem data".
const GPT_LINUX_FS: Uuid = Uuid::from_u128(0x0fc63daf_8483_4772_8e79_3d69d8477de4);
/// MBR partition type of a GPT disk's protective entry.
const MBR_PROTECTIVE: u8 = 0xee;
/// MBR partition type "Linux".
const MBR_LINUX: u8 = 0x83;

/// What `root=` names an image's root file system by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RootDevice {
    /// The whole disk is an ext2/3/4 file system with this UUID (`UUID=…`). Only an
    /// initramfs resolves it; the kernel alone does not.
    FsUuid(Uuid),
    /// The GPT partition with this unique partition GUID (`PARTUUID=…`, lower case).
    GptPartition(Uuid),
    /// Primary partition `number` (1 to 4) of an MBR disk with disk signature `signature`
    /// (`PARTUUID=SSSSSSSS-NN`, as the kernel names it).
    MbrPartition { signature: u32, number: u8 },
}

impl RootDevice {
    /// Whether only an initramfs can find it (the kernel resolves `PARTUUID=` itself).
    pub fn needs_initramfs(&self) -> bool {
        matches!(self, RootDevice::FsUuid(_))
    }
}

impl fmt::Display for RootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootDevice::FsUuid(u) => write!(f, "UUID={}", u.hyphenated()),
            RootDevice::GptPartition(u) => write!(f, "PARTUUID={}", u.hyphenated()),
            RootDevice::MbrPartition { signature, number } => {
                write!(f, "PARTUUID={signature:08x}-{number:02x}")
            }
        }
    }
}

/// Text that is not a [`RootDevice`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a root device (UUID=<uuid>, PARTUUID=<uuid> or PARTUUID=<8 hex>-<2 hex>): {0:?}")]
pub struct BadRootDevice(String);

impl FromStr for RootDevice {
    type Err = BadRootDevice;

    /// Exactly the text [`Display`](fmt::Display) writes (hex digits in either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRootDevice(s.chars().take(64).collect());
        let hex = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit());
        // Only the hyphenated form: `Uuid::try_parse` would also take braces and `urn:uuid:`.
        let uuid = |t: &str| {
            let dashes = [8, 13, 18, 23];
            let shaped = t.len() == 36
                && (t.bytes().enumerate()).all(|(i, b)| {
                    (b == b'-') == dashes.contains(&i) && (b == b'-' || b.is_ascii_hexdigit())
                });
            shaped.then(|| Uuid::try_parse(t).ok()).flatten()
        };
        if let Some(t) = s.strip_prefix("UUID=") {
            return uuid(t).map(RootDevice::FsUuid).ok_or_else(bad);
        }
        let t = s.strip_prefix("PARTUUID=").ok_or_else(bad)?;
        if let Some(u) = uuid(t) {
            return Ok(RootDevice::GptPartition(u));
        }
        match t.split_once('-') {
            Some((sig, num)) if sig.len() == 8 && num.len() == 2 && hex(sig) && hex(num) => {
                let signature = u32::from_str_radix(sig, 16).map_err(|_| bad())?;
                let number = u8::from_str_radix(num, 16).map_err(|_| bad())?;
                if !(1..=4).contains(&number) {
                    return Err(bad());
                }
                Ok(RootDevice::MbrPartition { signature, number })
            }
            _ => Err(bad()),
        }
    }
}

impl serde::Serialize for RootDevice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RootDevice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A disk image read at byte offsets.
pub trait ReadAt {
    /// Fills `buf` from byte `offset`; an image that ends first is an
    /// [`io::ErrorKind::UnexpectedEof`] error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// What names the root file system of `image`, or `None` when its layout is none this knows
/// (the caller falls back to the first disk as a whole). In order: a GPT disk (a protective
/// MBR, a header and entries whose CRCs match) names its "Linux root (x86-64)" partition, else
/// the first "Linux filesystem" partition holding an ext file system, else the largest
/// "Linux filesystem" partition; a whole-disk ext file system names its UUID; an MBR disk names
/// its first primary Linux partition. Only errors other than reading past the image's end are
/// errors.
pub fn locate<R: ReadAt + ?Sized>(image: &R) -> io::Result<Option<RootDevice>> {
    let mbr = read(image, 0, SECTOR as usize)?.and_then(|b| Mbr::parse(&b));
    if mbr.as_ref().is_some_and(Mbr::is_protective) {
        // A GPT disk, or (bad CRCs, no header) nothing to trust.
        return gpt_root(image);
    }
    if let Some(uuid) = ext_uuid(image, 0)? {
        return Ok((!uuid.is_nil()).then_some(RootDevice::FsUuid(uuid)));
    }
    Ok(mbr.and_then(|m| m.linux_partition()))
}

/// Reads `len` bytes at `offset`; `None` when the image ends first.
fn read<R: ReadAt + ?Sized>(image: &R, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0; len];
    match image.read_exact_at(&mut buf, offset) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn bytes16(b: &[u8], at: usize) -> [u8; 16] {
    let mut x = [0u8; 16];
    x.copy_from_slice(&b[at..at + 16]);
    x
}

/// The UUID of the ext2/3/4 file system starting at byte `start`, if one does (magic 0xEF53, a
/// block size of at most 64 KiB, revision 0 or 1, some inodes and blocks).
fn ext_uuid<R: ReadAt + ?Sized>(image: &R, start: u64) -> io::Result<Option<Uuid>> {
    let Some(at) = start.checked_add(EXT_SUPERBLOCK) else {
        return Ok(None);
    };
    let Some(sb) = read(image, at, EXT_SUPERBLOCK_READ)? else {
        return Ok(None);
    };
    let is_ext = le_u16(&sb, 56) == 0xef53
        && le_u32(&sb, 24) <= 6 // s_log_block_size: 1 KiB << 6 = 64 KiB
        && le_u32(&sb, 76) <= 1 // s_rev_level
        && le_u32(&sb, 0) > 0 // s_inodes_count
        && le_u32(&sb, 4) > 0; // s_blocks_count_lo
    Ok(is_ext.then(|| Uuid::from_bytes(bytes16(&sb, 104))))
}

/// The four primary entries of a sector ending in 0x55AA.
struct Mbr {
    signature: u32,
    /// (type, first LBA, sectors) of each primary entry.
    entries: [(u8, u32, u32); 4],
}

impl Mbr {
    /// `None` unless `sector` ends in the boot signature and each entry's boot flag is 0x00 or
    /// 0x80 (as the kernel asks of a partition table).
    fn parse(sector: &[u8]) -> Option<Mbr> {
        if sector.get(510..512)? != [0x55, 0xaa] {
            return None;
        }
        let mut entries = [(0, 0, 0); 4];
        for (i, e) in entries.iter_mut().enumerate() {
            let at = 446 + 16 * i;
            if !matches!(sector[at], 0x00 | 0x80) {
                return None;
            }
            *e = (
                sector[at + 4],
                le_u32(sector, at + 8),
                le_u32(sector, at + 12),
            );
        }
        Some(Mbr {
            signature: le_u32(sector, 440),
            entries,
        })
    }

    fn is_protective(&self) -> bool {
        self.entries.iter().any(|e| e.0 == MBR_PROTECTIVE)
    }

    fn linux_partition(&self) -> Option<RootDevice> {
        let i = (self.entries.iter())
            .position(|&(kind, first, len)| kind == MBR_LINUX && first > 0 && len > 0)?;
        Some(RootDevice::MbrPartition {
            signature: self.signature,
            number: i as u8 + 1,
        })
    }
}

/// One used GPT partition entry.
struct GptEntry {
    kind: Uuid,
    unique: Uuid,
    first_lba: u64,
    last_lba: u64,
}

impl GptEntry {
    /// `None` for an unused entry (type all zeros) or one that makes no sense.
    fn parse(e: &[u8]) -> Option<GptEntry> {
        let entry = GptEntry {
            kind: Uuid::from_bytes_le(bytes16(e, 0)),
            unique: Uuid::from_bytes_le(bytes16(e, 16)),
            first_lba: le_u64(e, 32),
            last_lba: le_u64(e, 40),
        };
        let used = !entry.kind.is_nil() && !entry.unique.is_nil();
        (used && entry.first_lba <= entry.last_lba).then_some(entry)
    }
}

/// The root partition of a GPT disk whose primary header is at LBA 1 (see [`locate`]).
fn gpt_root<R: ReadAt + ?Sized>(image: &R) -> io::Result<Option<RootDevice>> {
    let Some(entries) = gpt_entries(image)? else {
        return Ok(None);
    };
    if let Some(e) = entries.iter().find(|e| e.kind == GPT_LINUX_ROOT_X86_64) {
        return Ok(Some(RootDevice::GptPartition(e.unique)));
    }
    let linux: Vec<&GptEntry> = entries.iter().filter(|e| e.kind == GPT_LINUX_FS).collect();
    for e in linux.iter().take(MAX_SUPERBLOCK_PROBES) {
        if let Some(start) = e.first_lba.checked_mul(SECTOR) {
            if ext_uuid(image, start)?.is_some() {
                return Ok(Some(RootDevice::GptPartition(e.unique)));
            }
        }
    }
    let largest = (linux.iter()).min_by_key(|e| std::cmp::Reverse(e.last_lba - e.first_lba));
    Ok(largest.map(|e| RootDevice::GptPartition(e.unique)))
}

/// The used entries of the GPT whose header is at LBA 1, if the header and the entries check
/// out (signature, header size, both CRC32s, its own LBA, an entry array of at most
/// [`MAX_GPT_TABLE`] bytes with entries of 128, 256 or 512 bytes).
fn gpt_entries<R: ReadAt + ?Sized>(image: &R) -> io::Result<Option<Vec<GptEntry>>> {
    let Some(h) = read(image, SECTOR, SECTOR as usize)? else {
        return Ok(None);
    };
    let header_size = le_u32(&h, 12) as usize;
    if &h[..8] != b"EFI PART" || !(92..=SECTOR as usize).contains(&header_size) {
        return Ok(None);
    }
    let mut zeroed = h[..header_size].to_vec();
    zeroed[16..20].fill(0);
    if crc32fast::hash(&zeroed) != le_u32(&h, 16) || le_u64(&h, 24) != 1 {
        return Ok(None);
    }
    let (table_lba, count, size) = (le_u64(&h, 72), le_u32(&h, 80), le_u32(&h, 84));
    let bytes = (count as usize).checked_mul(size as usize);
    let offset = table_lba.checked_mul(SECTOR).filter(|_| table_lba >= 2);
    let (Some(bytes), Some(offset)) = (bytes.filter(|b| *b <= MAX_GPT_TABLE), offset) else {
        return Ok(None);
    };
    if !matches!(size, 128 | 256 | 512) {
        return Ok(None);
    }
    let Some(table) = read(image, offset, bytes)? else {
        return Ok(None);
    };
    if crc32fast::hash(&table) != le_u32(&h, 88) {
        return Ok(None);
    }
    Ok(Some(
        table
            .chunks_exact(size as usize)
            .filter_map(GptEntry::parse)
            .collect(),
    ))
}

#[cfg(test)]
#[path = "root_device_tests.rs"]
mod tests;
