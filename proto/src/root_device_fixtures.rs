//! Disk images built byte by byte as the specs lay them out (ext superblock, protective MBR +
//! GPT, MBR), for the tests of [`crate::root_device`] here and of the frontend that registers
//! images (feature `test-support`).

use uuid::Uuid;

pub const FS_UUID: &str = "5f1a2b3c-4d5e-4f60-8172-839405a6b7c8";
/// A partition GUID as text, and the same GUID as GPT stores it (first three fields
/// little-endian, the rest as written).
pub const PART_UUID: &str = "01234567-89ab-cdef-0123-456789abcdef";
pub const PART_UUID_ON_DISK: [u8; 16] = [
    0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
];
/// The type GUIDs as GPT stores them.
pub const ROOT_X86_64_ON_DISK: [u8; 16] = [
    0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09,
];
pub const LINUX_FS_ON_DISK: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];
/// "EFI System" (not Linux).
pub const ESP_ON_DISK: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];

pub fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).unwrap()
}

/// A unique partition GUID for partition `n` (on disk: `n` then fifteen 0x11).
pub fn nth_guid(n: u8) -> [u8; 16] {
    let mut g = [0x11; 16];
    g[0] = n;
    g
}

pub fn put(img: &mut [u8], at: usize, bytes: &[u8]) {
    img[at..at + bytes.len()].copy_from_slice(bytes);
}

/// An ext4 superblock's first 1 KiB (the fields the probe reads) for a file system with
/// `uuid` (as its text reads, byte for byte) and label `x`.
pub fn ext_superblock(uuid: &str) -> Vec<u8> {
    let mut sb = vec![0u8; 1024];
    put(&mut sb, 0, &64u32.to_le_bytes()); // s_inodes_count
    put(&mut sb, 4, &256u32.to_le_bytes()); // s_blocks_count_lo
    put(&mut sb, 24, &2u32.to_le_bytes()); // s_log_block_size: 4 KiB
    put(&mut sb, 56, &0xef53u16.to_le_bytes());
    put(&mut sb, 76, &1u32.to_le_bytes()); // s_rev_level: dynamic
    put(&mut sb, 104, Uuid::parse_str(uuid).unwrap().as_bytes());
    put(&mut sb, 120, b"x");
    sb
}

pub fn whole_disk_ext() -> Vec<u8> {
    let mut img = vec![0u8; 8192];
    put(&mut img, 1024, &ext_superblock(FS_UUID));
    img
}

/// One GPT partition: type, unique GUID, first and last LBA, and whether an ext superblock
/// goes at its start.
pub struct Part {
    pub kind: [u8; 16],
    pub unique: [u8; 16],
    pub first: u64,
    pub last: u64,
    pub ext: bool,
}

pub fn part(kind: [u8; 16], unique: [u8; 16], first: u64, last: u64, ext: bool) -> Part {
    Part {
        kind,
        unique,
        first,
        last,
        ext,
    }
}

/// A protective MBR, the primary GPT header at LBA 1 and 128 entries of 128 bytes at LBA 2
/// (both CRCs right), the partitions' superblocks; no backup table (the probe reads none).
pub fn gpt_image(parts: &[Part]) -> Vec<u8> {
    // Partitions at absurd LBAs (hostile tables) are listed, not laid out.
    let laid_out = |p: &&Part| p.last < 1 << 20;
    let end = parts
        .iter()
        .filter(laid_out)
        .map(|p| p.last + 1)
        .max()
        .unwrap_or(0)
        .max(64);
    let mut img = vec![0u8; (end * 512) as usize];
    // Protective MBR: one entry of type 0xEE from LBA 1 over the whole disk.
    put(&mut img, 446 + 4, &[0xee]);
    put(&mut img, 446 + 8, &1u32.to_le_bytes());
    put(&mut img, 446 + 12, &u32::MAX.to_le_bytes());
    put(&mut img, 510, &[0x55, 0xaa]);
    let mut table = vec![0u8; 128 * 128];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut table[i * 128..(i + 1) * 128];
        put(e, 0, &p.kind);
        put(e, 16, &p.unique);
        put(e, 32, &p.first.to_le_bytes());
        put(e, 40, &p.last.to_le_bytes());
        if p.ext && laid_out(&p) {
            put(
                &mut img,
                (p.first * 512 + 1024) as usize,
                &ext_superblock(FS_UUID),
            );
        }
    }
    put(&mut img, 1024, &table);
    let mut h = vec![0u8; 92];
    put(&mut h, 0, b"EFI PART");
    put(&mut h, 8, &0x0001_0000u32.to_le_bytes());
    put(&mut h, 12, &92u32.to_le_bytes());
    put(&mut h, 24, &1u64.to_le_bytes()); // this header's LBA
    put(&mut h, 32, &(end - 1).to_le_bytes()); // the backup's
    put(&mut h, 40, &34u64.to_le_bytes());
    put(&mut h, 48, &(end - 34).to_le_bytes());
    put(&mut h, 56, &[0x42; 16]); // disk GUID
    put(&mut h, 72, &2u64.to_le_bytes());
    put(&mut h, 80, &128u32.to_le_bytes());
    put(&mut h, 84, &128u32.to_le_bytes());
    put(&mut h, 88, &crc32fast::hash(&table).to_le_bytes());
    let crc = crc32fast::hash(&h);
    put(&mut h, 16, &crc.to_le_bytes());
    put(&mut img, 512, &h);
    img
}

/// Rewrites the header CRC of a GPT image after a test changed its header.
pub fn reseal_header(img: &mut [u8]) {
    img[512 + 16..512 + 20].fill(0);
    let crc = crc32fast::hash(&img[512..512 + 92]);
    put(img, 512 + 16, &crc.to_le_bytes());
}

/// An MBR with disk signature 0x12345678 and the given primary entries (type, first LBA,
/// sectors).
pub fn mbr_image(entries: &[(u8, u32, u32)]) -> Vec<u8> {
    let mut img = vec![0u8; 64 * 1024];
    put(&mut img, 440, &0x1234_5678u32.to_le_bytes());
    for (i, (kind, first, len)) in entries.iter().enumerate() {
        let at = 446 + 16 * i;
        put(&mut img, at + 4, &[*kind]);
        put(&mut img, at + 8, &first.to_le_bytes());
        put(&mut img, at + 12, &len.to_le_bytes());
    }
    put(&mut img, 510, &[0x55, 0xaa]);
    img
}
