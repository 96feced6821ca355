//! virtio-rng: fills the guest's buffers from the host kernel's random source (getrandom).
//!
//! A chain gets at most [`MAX_BYTES_PER_CHAIN`] bytes, so a guest posting huge buffers cannot make
//! one request monopolise the worker.

use std::io::Write;

use virtio_queue::Writer;

use super::worker::{QueueHandler, Worker};
use super::VIRTIO_F_VERSION_1;
use super::{check_queues, ActivateError, ActiveQueue, GuestMemoryMmap, VirtioDevice};

/// virtio device ID of an entropy source.
pub const TYPE_RNG: u16 = 4;
/// Most bytes served per chain.
pub const MAX_BYTES_PER_CHAIN: usize = 64 << 10;

/// The entropy device.
pub struct Rng {
    worker: Option<Worker<RngHandler>>,
    queue_sizes: [u16; 1],
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    /// A new device.
    pub fn new() -> Rng {
        Rng {
            worker: None,
            queue_sizes: [256],
        }
    }
}

struct RngHandler;

fn fill_random(buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

/// Serves one chain: returns the bytes written.
pub fn serve_chain(
    mem: &GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
) -> u32 {
    let Ok(mut w) = Writer::<()>::new(mem, chain) else {
        return 0;
    };
    let n = w.available_bytes().min(MAX_BYTES_PER_CHAIN);
    let mut buf = vec![0u8; n];
    if !fill_random(&mut buf) || w.write_all(&buf).is_err() {
        return 0;
    }
    n as u32
}

impl QueueHandler for RngHandler {
    fn process_queue(&mut self, mem: &GuestMemoryMmap, queues: &mut [ActiveQueue], index: usize) {
        queues[index].drain(mem, |chain| serve_chain(mem, chain));
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u16 {
        TYPE_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
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
        self.worker = Some(Worker::spawn("virtio-rng", mem, queues, RngHandler)?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}
