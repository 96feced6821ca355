//! The I/O threads of one virtio-blk device: requests run several at a time, so a disk whose
//! latency is the network's (an AoE volume) has as many requests in flight as the guest queues,
//! up to [`MAX_THREADS`], instead of one.
//!
//! The queue worker pops chains and submits them here; a thread serves each against the shared
//! [`Media`], puts `(head, used length)` on the done list and writes the done eventfd, which the
//! worker waits on: only the worker thread touches the queue's rings. Threads start on demand,
//! when a chain arrives and none is idle, so an idle disk costs one thread.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use virtio_queue::DescriptorChain;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::media::Media;
use crate::bus::lock;
use crate::devices::virtio::GuestMemoryMmap;

/// Most requests one device runs at once (the `just bench ebs` guest queues 16).
pub const MAX_THREADS: usize = 16;
/// Stack of an I/O thread: it holds a request's bounded chunk on the heap, not the stack.
const STACK_BYTES: usize = 256 << 10;

/// A chain as an I/O thread holds it: guest memory by `Arc`.
pub type Chain = DescriptorChain<Arc<GuestMemoryMmap>>;

/// What the threads share.
struct Shared {
    media: Arc<Media>,
    mem: Arc<GuestMemoryMmap>,
    jobs: Mutex<Receiver<Chain>>,
    /// Threads waiting for a chain.
    idle: AtomicUsize,
    /// Chains submitted and not yet taken by a thread.
    queued: AtomicUsize,
    done: Mutex<Vec<(u16, u32)>>,
    done_event: EventFd,
}

/// The device's I/O threads.
pub struct IoPool {
    shared: Arc<Shared>,
    jobs: Option<Sender<Chain>>,
    threads: Vec<JoinHandle<()>>,
}

impl IoPool {
    /// A pool serving requests against `media` in `mem`; no thread runs until the first chain.
    pub fn new(media: Arc<Media>, mem: Arc<GuestMemoryMmap>) -> io::Result<IoPool> {
        let (tx, rx) = channel();
        Ok(IoPool {
            shared: Arc::new(Shared {
                media,
                mem,
                jobs: Mutex::new(rx),
                idle: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                done: Mutex::new(Vec::new()),
                done_event: EventFd::new(EFD_NONBLOCK)?,
            }),
            jobs: Some(tx),
            threads: Vec::new(),
        })
    }

    /// Guest memory as chains for [`IoPool::submit`] must hold it.
    pub fn memory(&self) -> Arc<GuestMemoryMmap> {
        self.shared.mem.clone()
    }

    /// The eventfd written whenever requests complete.
    pub fn done_fd(&self) -> RawFd {
        self.shared.done_event.as_raw_fd()
    }

    /// Runs `chain` on an I/O thread, starting one if more chains wait than threads are idle
    /// and there is room.
    pub fn submit(&mut self, chain: Chain) {
        let queued = self.shared.queued.fetch_add(1, Ordering::SeqCst) + 1;
        if queued > self.shared.idle.load(Ordering::SeqCst) && self.threads.len() < MAX_THREADS {
            let shared = self.shared.clone();
            match std::thread::Builder::new()
                .name("virtio-blk-io".into())
                .stack_size(STACK_BYTES)
                .spawn(move || serve(&shared))
            {
                Ok(t) => self.threads.push(t),
                // The threads already running take the chain.
                Err(e) if !self.threads.is_empty() => {
                    tracing::warn!("virtio-blk: no further I/O thread: {e}")
                }
                Err(e) => {
                    tracing::error!("virtio-blk: cannot start an I/O thread: {e}");
                    return;
                }
            }
        }
        if let Some(jobs) = &self.jobs {
            // Sending fails only when every thread is gone, which dropping the pool alone does.
            let _ = jobs.send(chain);
        }
    }

    /// The requests completed since the last call, as `(head index, used length)`.
    pub fn take_done(&self) -> Vec<(u16, u32)> {
        // Reading resets the counter; completions after it write it again.
        let _ = self.shared.done_event.read();
        std::mem::take(&mut *lock(&self.shared.done))
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        // Closing the channel ends each thread once it has finished its request.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An I/O thread: takes chains until the pool goes away.
fn serve(shared: &Shared) {
    loop {
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let job = lock(&shared.jobs).recv();
        shared.idle.fetch_sub(1, Ordering::SeqCst);
        let Ok(chain) = job else { return };
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        let head = chain.head_index();
        let used = shared.media.serve(&shared.mem, chain);
        lock(&shared.done).push((head, used));
        // A failed write means the counter is saturated: the worker has a wake-up pending.
        let _ = shared.done_event.write(1);
    }
}
