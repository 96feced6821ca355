//! The test guest's volume check (user-data line `disks`): it watches the guest's virtio disks
//! and, for each EBS volume it has (a `vol-` serial and more than one sector, its root disk
//! included when it boots from one), reads what an earlier writer left at the volume's end — a
//! header in the last sector naming the writer and the SHA-256 of the MiB before it — says
//! whether those bytes still match, then writes its own MiB and header there and flushes them
//! to the volume. A volume with no header that is not its root disk first gets a copy of the
//! guest's root disk at its start, so a snapshot of it can be an EBS-backed image's root. Lines
//! on the console, for the end-to-end tests:
//!
//! * `disk: <volume> empty` (no header), `disk: <volume> holds <writer> ok` or
//!   `disk: <volume> holds <writer> BAD <why>`;
//! * `disk: <volume> took the root disk (<bytes> bytes)` after the copy;
//! * `disk: <volume> wrote <sha256>` once its own bytes are flushed;
//! * `disk: <volume> gone` when the volume is detached (the slot is empty again).
//!
//! The header's format and the pattern are plain functions ([`header`], [`parse_header`],
//! [`pattern`]); the rest reads `/sys/block` and `/dev`.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tracing::{info, warn};

/// The bytes each writer leaves after the header sector.
pub const DATA_BYTES: usize = 1 << 20;
const SECTOR: usize = 512;
const MAGIC: &str = "mallee-disk-check";
const POLL: Duration = Duration::from_millis(200);
/// `_IO(0x12, 97)` from `<linux/fs.h>`: drop a block device's cached pages.
const BLKFLSBUF: u64 = 0x1261;

/// The header sector: the magic, the writer and the SHA-256 (hex) of the data after it.
pub fn header(writer: &str, sha: &str) -> [u8; SECTOR] {
    let mut sector = [0u8; SECTOR];
    let text = format!("{MAGIC} {writer} {sha}\n");
    let n = text.len().min(SECTOR);
    sector[..n].copy_from_slice(&text.as_bytes()[..n]);
    sector
}

/// The writer and SHA-256 a header sector names, or `None` when it is no header.
pub fn parse_header(sector: &[u8]) -> Option<(String, String)> {
    let end = sector.iter().position(|b| *b == b'\n')?;
    let text = std::str::from_utf8(&sector[..end]).ok()?;
    match text.split(' ').collect::<Vec<_>>().as_slice() {
        [MAGIC, writer, sha] if sha.len() == 64 => Some((writer.to_string(), sha.to_string())),
        _ => None,
    }
}

/// `DATA_BYTES` of pseudo-random bytes seeded by `seed` (xorshift64*), so no two writers'
/// bytes match and no chunk is all zeros.
pub fn pattern(seed: &str) -> Vec<u8> {
    let digest = Sha256::digest(seed.as_bytes());
    let mut x = u64::from_le_bytes(digest[..8].try_into().unwrap_or([1; 8])) | 1;
    let mut out = Vec::with_capacity(DATA_BYTES);
    while out.len() < DATA_BYTES {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(DATA_BYTES);
    out
}

/// A disk the guest has: its size in sectors and its serial.
fn disks() -> BTreeMap<String, (u64, String)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("vd") {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).unwrap_or_default();
        let size = read("size").trim().parse().unwrap_or(0);
        out.insert(name, (size, read("serial").trim().to_string()));
    }
    out
}

/// The guest's root disk, which volumes with nothing on them get a copy of.
const ROOT_DEV: &str = "vda";

/// Reads what is at the end of `dev` (`sectors` long), says so, then writes and flushes this
/// writer's bytes there; an empty volume that is not the root disk first takes a copy of it.
fn check_and_write(dev: &str, sectors: u64, volume: &str, me: &str) -> std::io::Result<String> {
    let path = format!("/dev/{dev}");
    let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
    // Nothing this guest read from the device before (another volume in the slot) may answer.
    // SAFETY: BLKFLSBUF takes no argument and only drops the device's clean cached pages.
    unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF as _, 0) };
    let size = sectors * SECTOR as u64;
    let (data_at, header_at) = (size - (DATA_BYTES + SECTOR) as u64, size - SECTOR as u64);
    let mut last = [0u8; SECTOR];
    f.seek(SeekFrom::Start(header_at))?;
    f.read_exact(&mut last)?;
    match parse_header(&last) {
        None => {
            info!("disk: {volume} empty");
            if dev != ROOT_DEV {
                let copied = copy_root(&mut f, data_at)?;
                info!("disk: {volume} took the root disk ({copied} bytes)");
            }
        }
        Some((writer, sha)) => {
            let mut data = vec![0u8; DATA_BYTES];
            f.seek(SeekFrom::Start(data_at))?;
            f.read_exact(&mut data)?;
            let seen = format!("{:x}", Sha256::digest(&data));
            if seen == sha {
                info!("disk: {volume} holds {writer} ok");
            } else {
                info!("disk: {volume} holds {writer} BAD sha256 {seen}, header says {sha}");
            }
        }
    }
    let data = pattern(&format!("{me} {volume}"));
    let sha = format!("{:x}", Sha256::digest(&data));
    f.seek(SeekFrom::Start(data_at))?;
    f.write_all(&data)?;
    f.write_all(&header(me, &sha))?;
    f.sync_all()?;
    Ok(sha)
}

/// Copies the root disk to the start of `to` if it fits below `limit`; the bytes copied.
fn copy_root(to: &mut std::fs::File, limit: u64) -> std::io::Result<u64> {
    let mut root = std::fs::File::open(format!("/dev/{ROOT_DEV}"))?;
    let len = root.seek(SeekFrom::End(0))?;
    if len > limit {
        return Ok(0);
    }
    root.seek(SeekFrom::Start(0))?;
    to.seek(SeekFrom::Start(0))?;
    std::io::copy(&mut root, to)
}

/// Watches the disks for ever, checking each volume that appears as `me` (the instance id).
pub fn watch(me: String) {
    let mut held: BTreeMap<String, String> = BTreeMap::new(); // device → volume
    loop {
        let now = disks();
        for (dev, volume) in held.clone() {
            let still = now
                .get(&dev)
                .is_some_and(|(size, serial)| *size > 1 && *serial == volume);
            if !still {
                info!("disk: {volume} gone");
                held.remove(&dev);
            }
        }
        for (dev, (size, serial)) in now {
            let room = ((DATA_BYTES + SECTOR) / SECTOR) as u64;
            if size <= room || !serial.starts_with("vol-") || held.contains_key(&dev) {
                continue;
            }
            held.insert(dev.clone(), serial.clone());
            match check_and_write(&dev, size, &serial, &me) {
                Ok(sha) => info!("disk: {serial} wrote {sha}"),
                Err(e) => warn!("disk: {serial} on /dev/{dev}: {e}"),
            }
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_other_sectors_are_no_header() {
        let sha = "ab".repeat(32);
        let h = header("i-0123abcd", &sha);
        assert_eq!(parse_header(&h), Some(("i-0123abcd".into(), sha)));
        assert_eq!(parse_header(&[0u8; SECTOR]), None);
        assert_eq!(parse_header(&header("i-1", "short")), None);
        assert_eq!(parse_header(b"mallee-disk-check a b c\n"), None);
    }

    #[test]
    fn patterns_differ_by_seed_and_have_no_zero_chunk() {
        let (a, b) = (pattern("i-1 vol-1"), pattern("i-2 vol-1"));
        assert_eq!(a.len(), DATA_BYTES);
        assert_ne!(a, b);
        assert_eq!(a, pattern("i-1 vol-1"));
        assert!(a.chunks(512 * 1024).all(|c| c.iter().any(|x| *x != 0)));
    }
}
