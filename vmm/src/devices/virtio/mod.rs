//! The virtio device model: the [`VirtioDevice`] trait a transport drives, the queues a device
//! gets at activation, and the worker thread that serves them.
//!
//! A device's queue processing runs on its own worker thread, woken by the queues' notification
//! eventfds (ioeventfds in the VM) and by any extra fds the device has (a tap). Interrupts go out
//! through one eventfd per queue (an irqfd in the VM); a device whose configuration changes while
//! the guest runs (a volume slot) signals that through [`config_change`]. This module does not know about PCI: the
//! transport in [`pci`] does.

pub mod block;
pub mod config_change;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod net;
pub mod pci;
pub mod rng;
#[cfg(test)]
pub mod test_utils;
pub mod worker;

use std::ops::Deref;
use std::os::fd::RawFd;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

/// Guest memory as the devices see it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// VIRTIO_F_VERSION_1: the modern interface; every device offers it.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_F_EVENT_IDX (virtio 1.2 section 2.7.10): the driver and the device each say at which
/// ring index they next want to hear from the other, instead of after every buffer.
pub const VIRTIO_F_EVENT_IDX: u64 = 1 << 29;

/// Device status bits (virtio 1.2 section 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: activate.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from.
    pub const NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// A queue handed to a device at activation, with its notification and interrupt eventfds.
pub struct ActiveQueue {
    /// The queue state as the driver configured it.
    pub queue: Queue,
    /// Signalled by the guest (through an ioeventfd) when it adds buffers.
    pub notify: EventFd,
    /// Written to interrupt the guest; `None` when the driver assigned no MSI-X vector.
    pub irq: Option<EventFd>,
}

impl ActiveQueue {
    /// Serves every chain the driver has posted: `serve` consumes each and returns the bytes it
    /// wrote into it (the used length); the guest is interrupted once at the end if it wants.
    pub fn drain<'m>(
        &mut self,
        mem: &'m GuestMemoryMmap,
        mut serve: impl FnMut(DescriptorChain<&'m GuestMemoryMmap>) -> u32,
    ) {
        let mut done = Vec::new();
        while let Some(chain) = self.next_chain(mem) {
            let head = chain.head_index();
            done.push((head, serve(chain)));
        }
        self.complete(mem, done);
    }

    /// The next chain the driver posted; when there is none, the driver's notifications are
    /// armed again (with VIRTIO_F_EVENT_IDX, the avail event set to where the device stopped)
    /// and a chain posted in between is still returned, so none waits for a kick that will not
    /// come.
    pub fn next_chain<'m>(
        &mut self,
        mem: &'m GuestMemoryMmap,
    ) -> Option<DescriptorChain<&'m GuestMemoryMmap>> {
        if let Some(chain) = self.queue.pop_descriptor_chain(mem) {
            return Some(chain);
        }
        // An error means the ring is not in guest memory: nothing to serve either way.
        match self.queue.enable_notification(mem) {
            Ok(true) => self.queue.pop_descriptor_chain(mem),
            _ => None,
        }
    }

    /// Takes the next chain the driver posted, holding guest memory as `mem` does (an `Arc` for
    /// a chain served on another thread).
    pub fn pop<M>(&mut self, mem: M) -> Option<DescriptorChain<M>>
    where
        M: Clone + Deref<Target = GuestMemoryMmap>,
    {
        self.queue.pop_descriptor_chain(mem)
    }

    /// Returns chains served elsewhere, as `(head index, bytes written into it)`, to the driver
    /// and interrupts it once if it wants.
    pub fn complete(&mut self, mem: &GuestMemoryMmap, done: impl IntoIterator<Item = (u16, u32)>) {
        let mut any = false;
        for (head, used) in done {
            // add_used only fails for an out-of-range head, which pop never returns.
            let _ = self.queue.add_used(mem, head, used);
            any = true;
        }
        if any {
            self.signal_used(mem);
        }
    }

    /// Interrupts the guest if the driver wants to hear about the used buffers just added.
    pub fn signal_used(&mut self, mem: &GuestMemoryMmap) {
        let wanted = self.queue.needs_notification(mem).unwrap_or(true);
        if let (true, Some(irq)) = (wanted, &self.irq) {
            // A failed eventfd write means the counter is saturated: an interrupt is pending.
            let _ = irq.write(1);
        }
    }
}

/// Why a device could not start serving its queues.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up a different number of queues than the device has.
    #[error("driver enabled {got} queues, device needs {want}")]
    QueueCount {
        /// Queues the device needs.
        want: usize,
        /// Queues the driver enabled.
        got: usize,
    },
    /// A queue's addresses or size do not fit guest memory.
    #[error("queue {0} is not valid in guest memory")]
    InvalidQueue(usize),
    /// The device was activated twice without a reset.
    #[error("device is already active")]
    AlreadyActive,
    /// The worker thread could not be started.
    #[error("cannot start the device worker: {0}")]
    Worker(#[from] std::io::Error),
}

/// A virtio device as a transport sees it.
pub trait VirtioDevice: Send {
    /// The virtio device ID (1 net, 2 block, 4 entropy).
    fn device_type(&self) -> u16;
    /// The maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits the device offers.
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (most devices ignore it).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving `queues` with the features the driver accepted.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        acked_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError>;
    /// Stops serving queues so the device can be activated again.
    fn reset(&mut self);
    /// Takes the handle that tells the driver the configuration changed (the transport calls it
    /// once, before the driver sees the device); devices whose configuration never changes
    /// ignore it.
    fn set_config_change(&mut self, _change: config_change::ConfigChange) {}
}

/// Copies `data.len()` bytes of a config-space image at `offset`, zero past its end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// Checks the queues a driver enabled against what the device needs and guest memory.
pub fn check_queues(
    mem: &GuestMemoryMmap,
    queues: &[ActiveQueue],
    want: usize,
) -> Result<(), ActivateError> {
    if queues.len() != want {
        return Err(ActivateError::QueueCount {
            want,
            got: queues.len(),
        });
    }
    match queues.iter().position(|q| !q.queue.is_valid(mem)) {
        Some(i) => Err(ActivateError::InvalidQueue(i)),
        None => Ok(()),
    }
}

/// The raw fds of the queues' notification eventfds, in queue order.
pub fn notify_fds(queues: &[ActiveQueue]) -> Vec<RawFd> {
    use std::os::fd::AsRawFd;
    queues.iter().map(|q| q.notify.as_raw_fd()).collect()
}

#[cfg(test)]
mod tests {
    use super::test_utils::{chain, memory};
    use super::*;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Bytes;

    const SIZE: u16 = 16;

    fn active(vq: &MockSplitQueue<GuestMemoryMmap>, event_idx: bool) -> ActiveQueue {
        let mut queue: Queue = vq.create_queue().unwrap();
        queue.set_event_idx(event_idx);
        ActiveQueue {
            queue,
            notify: EventFd::new(0).unwrap(),
            irq: None,
        }
    }

    /// Posts `n` one-descriptor chains at descriptor `first` onwards.
    fn post(vq: &MockSplitQueue<GuestMemoryMmap>, first: u16, n: u16) {
        let descs: Vec<_> = (0..n)
            .map(|i| chain(&[(0x8000 + u64::from(first + i) * 0x100, 64, 0)])[0])
            .collect();
        vq.add_desc_chains(&descs, first).unwrap();
    }

    /// The used ring's avail_event: where the device asks the driver to kick next.
    fn avail_event(mem: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
        let at = vm_memory::GuestAddress(vq.used_addr().0 + 4 + 8 * u64::from(SIZE));
        mem.read_obj::<u16>(at).unwrap()
    }

    #[test]
    fn with_event_idx_a_drained_queue_asks_for_a_kick_at_its_next_buffer() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, SIZE);
        let mut q = active(&vq, true);
        post(&vq, 0, 3);
        let mut served = 0;
        q.drain(&mem, |_| {
            served += 1;
            0
        });
        assert_eq!(served, 3);
        assert_eq!(vq.used().idx().load(), 3);
        assert_eq!(
            avail_event(&mem, &vq),
            3,
            "the driver is not asked to kick again"
        );
    }

    #[test]
    fn chains_posted_after_the_ring_was_emptied_are_served_with_or_without_event_idx() {
        for event_idx in [true, false] {
            let mem = memory();
            let vq = MockSplitQueue::new(&mem, SIZE);
            let mut q = active(&vq, event_idx);
            post(&vq, 0, 1);
            assert!(q.next_chain(&mem).is_some());
            // Posted after the device took the last one: served on the next call, and then the
            // ring is empty again.
            post(&vq, 1, 1);
            assert!(q.next_chain(&mem).is_some(), "event_idx={event_idx}");
            assert!(q.next_chain(&mem).is_none(), "event_idx={event_idx}");
        }
    }
}
