//! The disk a virtio-blk device serves, shared between the device (its configuration space), the
//! queue worker (requests) and, for a volume slot, the API (attach and detach swap it).
//!
//! Each request runs with the disk read-locked (requests run several at a time, on the device's
//! I/O threads), so a swap waits for the requests in flight and every later request runs
//! against the new disk; the capacity the guest reads is kept beside the lock,
//! so reading the configuration space never waits for disk I/O. This module does not tell the
//! guest about a swap: the volume slot does, through the device's configuration-change interrupt.

use std::io;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use virtio_queue::DescriptorChain;

use super::backend::BlockBackend;
use super::request::{self, Disk, ID_BYTES, SECTOR_SIZE};
use crate::devices::virtio::GuestMemoryMmap;

/// A disk as its device and the device's worker share it.
pub struct Media {
    disk: RwLock<Disk<Box<dyn BlockBackend>>>,
    sectors: AtomicU64,
}

impl Media {
    /// Media holding `disk`.
    pub fn new(disk: Disk<Box<dyn BlockBackend>>) -> Media {
        let sectors = disk.backend.size() / SECTOR_SIZE;
        Media {
            disk: RwLock::new(disk),
            sectors: AtomicU64::new(sectors),
        }
    }

    /// The capacity the guest reads, in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors.load(Ordering::SeqCst)
    }

    /// Serves one descriptor chain; returns the bytes written into it.
    pub fn serve<M: Deref<Target = GuestMemoryMmap> + Clone>(
        &self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<M>,
    ) -> u32 {
        // A request that panicked leaves the disk as it was: the lock's poison is ignored.
        let disk = self.disk.read().unwrap_or_else(|e| e.into_inner());
        request::process(mem, chain, &disk).used_len
    }

    /// Replaces the disk once the requests in flight (if any) have finished, and returns the old
    /// one: no request runs against it afterwards.
    pub fn swap(&self, new: Disk<Box<dyn BlockBackend>>) -> Disk<Box<dyn BlockBackend>> {
        let mut disk = self.disk.write().unwrap_or_else(|e| e.into_inner());
        self.sectors
            .store(new.backend.size() / SECTOR_SIZE, Ordering::SeqCst);
        std::mem::replace(&mut *disk, new)
    }
}

/// A disk of `backend` with `serial` (truncated to 20 bytes) as its GET_ID string.
pub fn disk(
    backend: Box<dyn BlockBackend>,
    read_only: bool,
    serial: Option<&str>,
    discard: bool,
) -> Disk<Box<dyn BlockBackend>> {
    let mut id = [0u8; ID_BYTES];
    if let Some(s) = serial {
        let n = s.len().min(ID_BYTES);
        id[..n].copy_from_slice(&s.as_bytes()[..n]);
    }
    Disk {
        backend,
        read_only,
        serial: id,
        discard,
    }
}

/// What an empty volume slot holds: one sector of zeros that cannot be written. Not 0 bytes:
/// Linux sends no uevent for a capacity change from or to 0, so udev would never make (or
/// remove) `/dev/disk/by-id/virtio-<volume id>` for an attach; from one sector it does. Reads
/// give zeros (the guest's partition scan at boot finds no table and logs no error); writes fail.
pub struct NoMedium;

/// The size of [`NoMedium`].
pub const EMPTY_BYTES: u64 = SECTOR_SIZE;

fn no_medium() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no volume in the slot")
}

impl BlockBackend for NoMedium {
    fn size(&self) -> u64 {
        EMPTY_BYTES
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > EMPTY_BYTES {
            return Err(no_medium());
        }
        buf.fill(0);
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(no_medium())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(()) // nothing was written
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(no_medium())
    }
}

/// The disk of an empty volume slot.
pub fn empty() -> Disk<Box<dyn BlockBackend>> {
    disk(Box::new(NoMedium), false, None, false)
}
