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
//! With `disks churn` the guest then keeps rewriting a ring of [`CHURN_BLOCKS`] MiB just before
//! that MiB, flushing each write, and after every lap reads the ring back and compares it with
//! what it last wrote, so a storage outage mid-write shows as a stall followed by intact laps:
//!
//! * `disk: <volume> churn lap <n> ok` (the first lap, every 16th, and each after a stall),
//!   `disk: <volume> churn lap <n> BAD block <i>`;
//! * `disk: <volume> churn stalled <seconds> s in a write and completed` when one write and its
//!   flush took longer than [`STALL`] (`in a read-back` for a lap's read-back);
//! * `disk: <volume> churn stopped: <error>` when a write fails (the volume went away).
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
/// The MiB blocks `disks churn` keeps rewriting, just below the writer's MiB.
pub const CHURN_BLOCKS: u64 = 8;
/// A churn write and flush slower than this is reported as a stall.
pub const STALL: Duration = Duration::from_secs(5);
/// The pause between churn writes, so the churn does not take the node's whole CPU.
const CHURN_PACE: Duration = Duration::from_millis(250);
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
    let (data_at, header_at) = layout(sectors);
    let mut last = [0u8; SECTOR];
    f.seek(SeekFrom::Start(header_at))?;
    f.read_exact(&mut last)?;
    match parse_header(&last) {
        None => {
            info!("disk: {volume} empty");
            if dev != ROOT_DEV {
                let copied = copy_root(&mut f, churn_start(sectors))?;
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

/// Where the writer's MiB and its header sector start on a volume of `sectors`.
fn layout(sectors: u64) -> (u64, u64) {
    let size = sectors * SECTOR as u64;
    (size - (DATA_BYTES + SECTOR) as u64, size - SECTOR as u64)
}

/// Where the churn ring starts (nothing below it is churned; the root copy must end here).
fn churn_start(sectors: u64) -> u64 {
    layout(sectors)
        .0
        .saturating_sub(CHURN_BLOCKS * DATA_BYTES as u64)
}

/// What churn write `n` of `volume` by `me` puts in its block.
pub fn churn_bytes(me: &str, volume: &str, n: u64) -> Vec<u8> {
    pattern(&format!("{me} {volume} churn {n}"))
}

/// Rewrites and re-reads the churn ring of `volume` on `dev` until a write fails.
fn churn(dev: &str, sectors: u64, volume: &str, me: &str) -> std::io::Result<()> {
    let start = churn_start(sectors);
    if start == 0 {
        info!("disk: {volume} churn stopped: too small for a ring");
        return Ok(());
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/{dev}"))?;
    let mut last = [0u64; CHURN_BLOCKS as usize]; // the churn number each block last took
    let mut stalled = false;
    let serial = format!("/sys/block/{dev}/serial");
    for n in 0u64.. {
        // The slot may hold another volume by now: churn only the one it was started on.
        if std::fs::read_to_string(&serial).unwrap_or_default().trim() != volume {
            info!("disk: {volume} churn stopped: the volume is gone");
            return Ok(());
        }
        let block = n % CHURN_BLOCKS;
        let began = std::time::Instant::now();
        f.seek(SeekFrom::Start(start + block * DATA_BYTES as u64))?;
        f.write_all(&churn_bytes(me, volume, n))?;
        f.sync_data()?;
        last[block as usize] = n;
        stalled |= stall(volume, "write", began);
        if block + 1 == CHURN_BLOCKS {
            let lap = n / CHURN_BLOCKS;
            let began = std::time::Instant::now();
            // SAFETY: BLKFLSBUF takes no argument and only drops the device's clean cached pages.
            unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF as _, 0) };
            let mut seen = vec![0u8; DATA_BYTES];
            for (i, n) in last.iter().enumerate() {
                f.seek(SeekFrom::Start(start + i as u64 * DATA_BYTES as u64))?;
                f.read_exact(&mut seen)?;
                if seen != churn_bytes(me, volume, *n) {
                    info!("disk: {volume} churn lap {lap} BAD block {i}");
                    return Ok(());
                }
            }
            stalled |= stall(volume, "read-back", began);
            if lap.is_multiple_of(16) || stalled {
                info!("disk: {volume} churn lap {lap} ok");
                stalled = false;
            }
        }
        std::thread::sleep(CHURN_PACE);
    }
    Ok(())
}

/// Whether the churn I/O begun at `began` (`what`: a write and its flush, or a lap's read-back)
/// took longer than [`STALL`]; says so when it did.
fn stall(volume: &str, what: &str, began: std::time::Instant) -> bool {
    let took = began.elapsed();
    if took > STALL {
        info!(
            "disk: {volume} churn stalled {:.1} s in a {what} and completed",
            took.as_secs_f64()
        );
    }
    took > STALL
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

/// Watches the disks for ever, checking each volume that appears as `me` (the instance id), and
/// with `churn` then churning it.
pub fn watch(me: String, churn: bool) {
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
                Err(e) => {
                    warn!("disk: {serial} on /dev/{dev}: {e}");
                    continue;
                }
            }
            if churn {
                let (me, on) = (me.clone(), dev.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("churn-{dev}"))
                    .spawn(move || {
                        if let Err(e) = self::churn(&on, size, &serial, &me) {
                            info!("disk: {serial} churn stopped: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    warn!("disk: cannot start churning /dev/{dev}: {e}");
                }
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

    #[test]
    fn the_churn_ring_sits_between_the_root_copy_and_the_writers_mib() {
        let sectors = (1u64 << 30) / SECTOR as u64;
        let (data_at, header_at) = layout(sectors);
        assert_eq!(header_at, (1 << 30) - 512);
        assert_eq!(data_at + DATA_BYTES as u64, header_at);
        assert_eq!(
            churn_start(sectors) + CHURN_BLOCKS * DATA_BYTES as u64,
            data_at
        );
        // A volume too small for a ring has none.
        assert_eq!(churn_start(((DATA_BYTES + SECTOR) / SECTOR) as u64 + 1), 0);
        assert_ne!(
            churn_bytes("i-1", "vol-1", 0),
            churn_bytes("i-1", "vol-1", 8)
        );
    }
}
