//! The virtio-blk device: feature bits, configuration space, and the queue handler that hands
//! requests to the device's I/O threads (parsing and checks live in [`request`], storage in
//! [`backend`] and copy-on-write disks in [`overlay`], the disk shared with the threads in
//! [`media`], the threads in [`io_pool`], hot-attached volumes in [`slot`]).

pub mod aoe;
pub mod backend;
pub mod io_pool;
pub mod media;
pub mod overlay;
pub mod request;
pub mod slot;
#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;

use std::os::fd::RawFd;
use std::sync::Arc;

use mallee_proto::vmm::DiskSource;

use self::aoe::AoeDisk;
use self::backend::{BlockBackend, RawFile};
use self::io_pool::IoPool;
use self::media::Media;
use self::overlay::Overlay;
use self::slot::VolumeSlot;
use super::config_change::ConfigChange;
use super::worker::{QueueHandler, Worker};
use super::{check_queues, read_config_bytes, ActivateError, ActiveQueue, GuestMemoryMmap};
use super::{VirtioDevice, VIRTIO_F_VERSION_1};

/// virtio device ID of a block device.
pub const TYPE_BLOCK: u16 = 2;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;

const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;

/// Opens a disk's source: a raw file or block device, or an AoE target (which waits up to the
/// initiator's timeout for the target to answer).
pub fn open(source: &DiskSource, read_only: bool) -> std::io::Result<Box<dyn BlockBackend>> {
    Ok(match source {
        DiskSource::File(path) => Box::new(RawFile::open(path, read_only)?),
        DiskSource::Overlay { base, top } => Box::new(Overlay::open(base, top, read_only)?),
        DiskSource::Aoe { iface, shelf, slot } => Box::new(AoeDisk::open(iface, *shelf, *slot)?),
    })
}

/// A virtio-blk device over any [`BlockBackend`], or over a volume slot.
pub struct Block {
    media: Arc<Media>,
    slot: Option<Arc<VolumeSlot>>,
    worker: Option<Worker<BlockHandler>>,
    features: u64,
    queue_sizes: [u16; 1],
}

impl Block {
    /// A device serving `backend`; `serial` is truncated to 20 bytes.
    pub fn new(backend: Box<dyn BlockBackend>, read_only: bool, serial: Option<&str>) -> Block {
        let discard = backend.supports_discard() && !read_only;
        let mut features = VIRTIO_F_VERSION_1 | F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
        if read_only {
            features |= F_RO;
        } else {
            features |= F_WRITE_ZEROES;
        }
        if discard {
            features |= F_DISCARD;
        }
        let disk = media::disk(backend, read_only, serial, discard);
        Block {
            media: Arc::new(Media::new(disk)),
            slot: None,
            worker: None,
            features,
            queue_sizes: [QUEUE_SIZE],
        }
    }

    /// The device of a volume slot: whatever the slot holds now and later. Its features cannot
    /// depend on a volume not yet attached: writable (a read-only volume fails writes), no
    /// discard.
    pub fn for_slot(slot: Arc<VolumeSlot>) -> Block {
        Block {
            media: slot.media(),
            slot: Some(slot),
            worker: None,
            features: VIRTIO_F_VERSION_1 | F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_WRITE_ZEROES,
            queue_sizes: [QUEUE_SIZE],
        }
    }
}

/// The virtio_blk_config image (60 bytes, little-endian).
fn config_space(sectors: u64) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    c[0..8].copy_from_slice(&sectors.to_le_bytes());
    // seg_max: a chain has a header and a status descriptor besides data.
    c[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
    c[20..24].copy_from_slice(&512u32.to_le_bytes());
    c[34..36].copy_from_slice(&1u16.to_le_bytes());
    let max_sectors = u32::MAX / 512;
    c[36..40].copy_from_slice(&max_sectors.to_le_bytes()); // max_discard_sectors
    c[40..44].copy_from_slice(&1u32.to_le_bytes()); // max_discard_seg
    c[44..48].copy_from_slice(&8u32.to_le_bytes()); // discard_sector_alignment
    c[48..52].copy_from_slice(&max_sectors.to_le_bytes()); // max_write_zeroes_sectors
    c[52..56].copy_from_slice(&1u32.to_le_bytes()); // max_write_zeroes_seg
    c
}

/// The worker's half: pops the guest's chains into the I/O threads, and puts what they
/// completed on the used ring.
struct BlockHandler {
    pool: IoPool,
}

impl QueueHandler for BlockHandler {
    fn process_queue(&mut self, _mem: &GuestMemoryMmap, queues: &mut [ActiveQueue], index: usize) {
        let mem = self.pool.memory();
        while let Some(chain) = queues[index].pop(mem.clone()) {
            self.pool.submit(chain);
        }
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        vec![self.pool.done_fd()]
    }

    fn process_fd(&mut self, mem: &GuestMemoryMmap, queues: &mut [ActiveQueue], _index: usize) {
        queues[0].complete(mem, self.pool.take_done());
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u16 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&config_space(self.media.sectors()), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        _acked_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        check_queues(&mem, &queues, 1)?;
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let pool = IoPool::new(self.media.clone(), Arc::new(mem.clone()))
            .map_err(ActivateError::Worker)?;
        let handler = BlockHandler { pool };
        self.worker = Some(Worker::spawn("virtio-blk", mem, queues, handler)?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }

    fn set_config_change(&mut self, change: ConfigChange) {
        if let Some(slot) = &self.slot {
            slot.set_config_change(change);
        }
    }
}
