//! Copy-on-write disks: an instance's writes land in a sparse file of its own (the top) laid over
//! a shared base image that is only ever opened read-only.
//!
//! The top has the base's size and starts as one hole, so making it costs the same for any image
//! size. Its unit is the 4 KiB cluster (a page, the unit the page cache writes back and the file
//! system allocates). A cluster is the top's once any byte of it was written: the first write
//! copies the rest of the cluster up from the base, under the map's lock, so that no two first
//! writes to one cluster race. Which clusters are the top's is the top file's own allocation,
//! read back with `SEEK_DATA`/`SEEK_HOLE` when the disk is opened: there is no second map to
//! keep consistent with the data, and a write the guest never flushed is either whole in the top
//! after a crash or absent (the cluster then reads as the base, as before the write), because the
//! file system allocates a page's blocks when it writes the page. Two rules follow: the top must
//! never be made sparser by anything else (a hole reads as the base again), and zeroing a range
//! writes zeroes rather than punching holes or allocating unwritten extents (discard is not
//! offered).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use super::backend::BlockBackend;
use crate::bus::lock;

/// The copy-on-write unit.
pub const CLUSTER: u64 = 4096;

/// A base image with a private top.
pub struct Overlay {
    base: File,
    top: File,
    size: u64,
    /// One bit per cluster: set once the cluster is the top's. Bits are never cleared.
    map: Mutex<Vec<u64>>,
}

impl Overlay {
    /// Opens `base` read-only and `top` (read-write unless `read_only`); `top` must have the
    /// base's size (the node agent makes it as one hole of that size).
    pub fn open(base: &Path, top: &Path, read_only: bool) -> io::Result<Overlay> {
        let base_file = File::open(base)?;
        let top_file = OpenOptions::new().read(true).write(!read_only).open(top)?;
        let size = base_file.metadata()?.len();
        let top_size = top_file.metadata()?.len();
        if top_size != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "overlay {} is {top_size} bytes but its base {} is {size}: make the top \
                     with the base's size",
                    top.display(),
                    base.display()
                ),
            ));
        }
        let mut map = vec![0u64; size.div_ceil(CLUSTER).div_ceil(64) as usize];
        for (start, end) in data_extents(&top_file, size)? {
            for c in start / CLUSTER..end.div_ceil(CLUSTER) {
                map[(c / 64) as usize] |= 1 << (c % 64);
            }
        }
        Ok(Overlay {
            base: base_file,
            top: top_file,
            size,
            map: Mutex::new(map),
        })
    }

    /// How many clusters are the top's.
    pub fn clusters_written(&self) -> u64 {
        lock(&self.map)
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// Copies cluster `c` from the base into the top (the caller holds the map's lock).
    fn copy_up(&self, c: u64) -> io::Result<()> {
        let start = c * CLUSTER;
        let mut buf = vec![0u8; (self.size - start).min(CLUSTER) as usize];
        self.base.read_exact_at(&mut buf, start)?;
        self.top.write_all_at(&buf, start)
    }
}

fn is_set(map: &[u64], c: u64) -> bool {
    map[(c / 64) as usize] & (1 << (c % 64)) != 0
}

/// The `[start, end)` byte ranges holding data in `file` (of `size` bytes), from the file
/// system's allocation.
fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let seek = |offset: u64, whence: i32| -> io::Result<Option<u64>> {
        let offset = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: lseek only reads its integer arguments; the fd is owned by `file`, which
        // outlives the call.
        let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let err = io::Error::last_os_error();
        // ENXIO: no data (or hole) at or after `offset`.
        if err.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(err)
        }
    };
    let mut extents = Vec::new();
    let mut at = 0;
    while at < size {
        let Some(start) = seek(at, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        if end <= start {
            break;
        }
        extents.push((start, end));
        at = end;
    }
    Ok(extents)
}

impl BlockBackend for Overlay {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        // Which clusters are the top's, read once; a cluster a concurrent first write is
        // copying up reads as the base (the old contents), which is what a read racing a write
        // may return.
        let first = offset / CLUSTER;
        let last = (end - 1) / CLUSTER;
        let ours: Vec<bool> = {
            let map = lock(&self.map);
            (first..=last).map(|c| is_set(&map, c)).collect()
        };
        // Runs of clusters from the same file.
        let mut at = offset;
        while at < end {
            let c = at / CLUSTER;
            let from_top = ours[(c - first) as usize];
            let mut run_end = ((c + 1) * CLUSTER).min(end);
            while run_end < end && ours[(run_end / CLUSTER - first) as usize] == from_top {
                run_end = ((run_end / CLUSTER + 1) * CLUSTER).min(end);
            }
            let part = &mut buf[(at - offset) as usize..(run_end - offset) as usize];
            if from_top {
                self.top.read_exact_at(part, at)?;
            } else {
                self.base.read_exact_at(part, at)?;
            }
            at = run_end;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let first = offset / CLUSTER;
        let last = (offset + buf.len() as u64 - 1) / CLUSTER;
        let mut map = lock(&self.map);
        if (first..=last).all(|c| is_set(&map, c)) {
            drop(map);
            return self.top.write_all_at(buf, offset);
        }
        // First writes: the edge clusters the write covers only partly take the rest of their
        // bytes from the base before the write lands; the lock is held throughout.
        let end = offset + buf.len() as u64;
        for c in [first, last] {
            let partial = offset > c * CLUSTER || end < ((c + 1) * CLUSTER).min(self.size);
            if partial && !is_set(&map, c) {
                self.copy_up(c)?;
                map[(c / 64) as usize] |= 1 << (c % 64);
            }
        }
        self.top.write_all_at(buf, offset)?;
        for c in first..=last {
            map[(c / 64) as usize] |= 1 << (c % 64);
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.top.sync_data()
    }
}

#[cfg(test)]
#[path = "overlay_tests.rs"]
mod tests;
