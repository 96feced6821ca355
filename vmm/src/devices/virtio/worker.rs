//! The per-device I/O thread: waits on the queues' notification eventfds and the device's extra
//! fds, and calls the device's [`QueueHandler`] for whichever is ready.
//!
//! The thread never blocks a vCPU: vCPUs only signal eventfds. Stopping the worker hands the
//! handler (and so the backend it owns) back, so a reset device can be activated again.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActiveQueue, GuestMemoryMmap};

/// Device logic run on the worker thread.
pub trait QueueHandler: Send + 'static {
    /// Serves queue `index` after its notification fired.
    fn process_queue(&mut self, mem: &GuestMemoryMmap, queues: &mut [ActiveQueue], index: usize);
    /// Extra fds to wait on (readable), such as a tap.
    fn extra_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// Serves extra fd `index` (position in [`QueueHandler::extra_fds`]) after it became ready.
    fn process_fd(&mut self, _mem: &GuestMemoryMmap, _queues: &mut [ActiveQueue], _index: usize) {}
}

const STOP_TOKEN: u64 = u64::MAX;

/// Extra fds are edge-triggered (a handler may stop reading before they would block, e.g. when
/// the guest has no receive buffers, and must not be woken again until something changes);
/// eventfds are level-triggered and drained by a read.
fn edge(token: u64) -> EventSet {
    if token >= EXTRA_BASE && token != STOP_TOKEN {
        EventSet::EDGE_TRIGGERED
    } else {
        EventSet::empty()
    }
}
const EXTRA_BASE: u64 = 1 << 32;

/// A running worker thread.
pub struct Worker<H: QueueHandler> {
    stop: EventFd,
    thread: Option<JoinHandle<H>>,
}

impl<H: QueueHandler> Worker<H> {
    /// Starts a thread serving `queues` with `handler`.
    pub fn spawn(
        name: &str,
        mem: GuestMemoryMmap,
        queues: Vec<ActiveQueue>,
        handler: H,
    ) -> io::Result<Worker<H>> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let add = |fd: RawFd, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN | edge(token), token),
            )
        };
        add(stop.as_raw_fd(), STOP_TOKEN)?;
        for (i, q) in queues.iter().enumerate() {
            add(q.notify.as_raw_fd(), i as u64)?;
        }
        for (i, fd) in handler.extra_fds().into_iter().enumerate() {
            add(fd, EXTRA_BASE + i as u64)?;
        }
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(epoll, mem, queues, handler))?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and returns the handler.
    pub fn stop(mut self) -> Option<H> {
        let _ = self.stop.write(1);
        self.thread.take()?.join().ok()
    }
}

impl<H: QueueHandler> Drop for Worker<H> {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run<H: QueueHandler>(
    epoll: Epoll,
    mem: GuestMemoryMmap,
    mut queues: Vec<ActiveQueue>,
    mut handler: H,
) -> H {
    let mut events = vec![EpollEvent::default(); 16];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return handler,
        };
        for ev in &events[..n] {
            match ev.data() {
                STOP_TOKEN => return handler,
                t if t >= EXTRA_BASE => {
                    handler.process_fd(&mem, &mut queues, (t - EXTRA_BASE) as usize)
                }
                t => {
                    let i = t as usize;
                    // Reading resets the counter; several notifications coalesce into one pass.
                    let _ = queues[i].notify.read();
                    handler.process_queue(&mem, &mut queues, i);
                }
            }
        }
    }
}
