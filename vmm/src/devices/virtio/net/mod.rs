//! virtio-net on a tap: frames move between the guest's receive/transmit queues and the tap,
//! each with a 12-byte virtio_net_hdr_v1 that both sides understand, so checksum and segmentation
//! offloads pass through untouched.
//!
//! VIRTIO_F_EVENT_IDX is offered: the guest kicks only when the device has run out of its
//! buffers, and is interrupted only as far as it asked, which saves most exits under load.
//! Offloads are negotiated honestly: they are offered only if the tap accepts offload settings,
//! and the tap is told to deliver only the offloads the guest accepted.
//!
//! VIRTIO_NET_F_MRG_RXBUF is offered: the guest posts page-sized receive buffers and a large
//! (segmentation-offloaded) frame spans as many as it needs, the header's `num_buffers` saying
//! how many ([`place`]). Without it a guest that takes TSO must post 64 KiB chains, so a ring
//! holds a dozen frames of any size. Without mergeable buffers a frame must fit one receive
//! chain; a frame that does not is dropped (the guest counts a length error), as is a transmit
//! chain that is empty or larger than a 64 KiB frame.

pub mod imds;
pub mod metadata;
pub mod port;
pub mod tap;
#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT, Reader, Writer};

use self::port::{Port, Verdict};
use self::tap::{Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, VNET_HDR_LEN};
use super::worker::{QueueHandler, Worker};
use super::{check_queues, read_config_bytes, ActivateError, ActiveQueue, GuestMemoryMmap};
use super::{VirtioDevice, VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1};

/// virtio device ID of a network card.
pub const TYPE_NET: u16 = 1;
const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// Largest frame plus header moved in either direction.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65550;

const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_MAC: u64 = 1 << 5;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_GUEST_TSO6: u64 = 1 << 8;
const F_HOST_TSO4: u64 = 1 << 11;
const F_HOST_TSO6: u64 = 1 << 12;
/// VIRTIO_NET_F_MRG_RXBUF: a received frame may span several receive chains.
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// Where `num_buffers` sits in the virtio_net_hdr_v1 (its last two bytes, little-endian).
const NUM_BUFFERS: std::ops::Range<usize> = VNET_HDR_LEN - 2..VNET_HDR_LEN;

/// The offload features offered when the tap supports them.
pub const OFFLOADS: u64 =
    F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_HOST_TSO4 | F_HOST_TSO6;

/// The tap offload flags matching the guest's accepted receive offloads.
pub fn tap_offloads(acked: u64) -> u32 {
    let mut f = 0;
    if acked & F_GUEST_CSUM != 0 {
        f |= TUN_F_CSUM;
        if acked & F_GUEST_TSO4 != 0 {
            f |= TUN_F_TSO4;
        }
        if acked & F_GUEST_TSO6 != 0 {
            f |= TUN_F_TSO6;
        }
    }
    f
}

/// A virtio-net device.
pub struct Net {
    tap: Option<Tap>,
    port: Option<Port>,
    worker: Option<Worker<NetHandler>>,
    features: u64,
    config: Vec<u8>,
    queue_sizes: [u16; 2],
}

impl Net {
    /// A device on `tap` whose guest's frames pass through `port` (which holds its MAC).
    pub fn new(tap: Tap, port: Port) -> Net {
        let offloads_work = tap
            .set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            .is_ok()
            && tap.set_offload(0).is_ok();
        let mut features = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | F_MAC | F_MRG_RXBUF;
        if offloads_work {
            features |= OFFLOADS;
        }
        Net {
            tap: Some(tap),
            config: port.mac().octets().to_vec(),
            port: Some(port),
            worker: None,
            features,
            queue_sizes: [QUEUE_SIZE; 2],
        }
    }
}

struct NetHandler {
    tap: Tap,
    port: Port,
    /// Frames the port answered (each with its virtio-net header), delivered before the tap's.
    answers: VecDeque<Vec<u8>>,
    /// Receive buffer; holds the pending frame between `receive` calls.
    frame: Vec<u8>,
    /// Transmit buffer (separate, so a pending received frame survives a transmit).
    tx_frame: Vec<u8>,
    pending: Option<usize>,
    /// The guest accepted VIRTIO_NET_F_MRG_RXBUF.
    mergeable: bool,
}

impl NetHandler {
    /// Moves frames from the tap into receive buffers until either runs out.
    fn receive(&mut self, mem: &GuestMemoryMmap, queues: &mut [ActiveQueue]) {
        let q = &mut queues[RX];
        let mut any = false;
        loop {
            let len = if let Some(len) = self.pending.take() {
                len
            } else if let Some(answer) = self.answers.pop_front() {
                self.frame[..answer.len()].copy_from_slice(&answer);
                answer.len()
            } else {
                match self.tap.read_frame(&mut self.frame) {
                    Ok(len) => len,
                    Err(_) => break,
                }
            };
            match place(mem, q, &mut self.frame[..len], self.mergeable) {
                Placed::Used => any = true,
                Placed::NoRoom => {
                    // Hold the frame until the guest posts buffers (its notify wakes us).
                    self.pending = Some(len);
                    break;
                }
            }
        }
        if any {
            q.signal_used(mem);
        }
    }

    /// Sends every posted transmit chain the port lets out to the tap, and the port's answers
    /// to the guest.
    fn transmit(&mut self, mem: &GuestMemoryMmap, queues: &mut [ActiveQueue]) {
        let (frame, tap, port, answers) = (
            &mut self.tx_frame,
            &self.tap,
            &mut self.port,
            &mut self.answers,
        );
        queues[TX].drain(mem, |chain| {
            let Some(len) = read_tx_frame(mem, chain, frame) else {
                return 0;
            };
            let guest = &frame[VNET_HDR_LEN..len];
            match port.check(guest) {
                Verdict::Forward => match port.serve(guest) {
                    Some(replies) => {
                        let room = MAX_ANSWERS.saturating_sub(answers.len());
                        let replies = replies.iter().take(room);
                        answers.extend(replies.map(|r| with_vnet_header(r)));
                    }
                    // A full tap queue drops the frame, as a busy wire would.
                    None => drop(tap.write_frame(&frame[..len])),
                },
                Verdict::Answer(reply) if answers.len() < MAX_ANSWERS => {
                    answers.push_back(with_vnet_header(&reply))
                }
                Verdict::Answer(_) | Verdict::Drop(_) | Verdict::Swallow => {}
            }
            0
        });
        if !self.answers.is_empty() {
            self.receive(mem, queues);
        }
    }
}

/// What became of a received frame offered to the receive queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Placed {
    /// Written into receive chains, or dropped into them as empty ones (a chain the device
    /// cannot write, or a frame too big for its one chain): either way, chains were used.
    Used,
    /// The posted chains cannot hold it: nothing was taken; it waits for more.
    NoRoom,
}

/// Puts `frame` (its virtio-net header first) into `q`'s posted receive chains: into one, or,
/// when `mergeable`, over as many as it needs, the header's `num_buffers` set to their count.
/// Chains are taken only once they can hold the whole frame, so a guest that has posted too
/// few finds them untouched. A chain the device cannot write ends the frame: it and any taken
/// before it are returned empty (the driver drops each as a runt), as a wire drops a frame.
pub fn place(
    mem: &GuestMemoryMmap,
    q: &mut ActiveQueue,
    frame: &mut [u8],
    mergeable: bool,
) -> Placed {
    if frame.len() < VNET_HDR_LEN {
        // Nothing a guest could be given (the tap and the port never make one): dropped.
        return Placed::Used;
    }
    let mut taken: Vec<(u16, Writer<'_, ()>)> = Vec::new();
    let mut room = 0;
    while room < frame.len() && (mergeable || taken.is_empty()) {
        let Some(chain) = q.next_chain(mem) else {
            for _ in &taken {
                q.queue.go_to_previous_position();
            }
            return Placed::NoRoom;
        };
        let head = chain.head_index();
        match Writer::<()>::new(mem, chain) {
            Ok(w) if w.available_bytes() > 0 => {
                room += w.available_bytes();
                taken.push((head, w));
            }
            _ => {
                for h in taken.iter().map(|(h, _)| *h).chain([head]) {
                    let _ = q.queue.add_used(mem, h, 0);
                }
                return Placed::Used;
            }
        }
    }
    if room < frame.len() {
        // Without mergeable buffers, a frame larger than its chain is dropped into it.
        let (head, _) = taken[0];
        let _ = q.queue.add_used(mem, head, 0);
        return Placed::Used;
    }
    // One chain without mergeable buffers (the spec asks for 1 then too); at most the queue's
    // size (≤ 32768) with them.
    let count = taken.len() as u16;
    frame[NUM_BUFFERS].copy_from_slice(&count.to_le_bytes());
    let mut at = 0;
    for (head, mut w) in taken {
        let n = w.available_bytes().min(frame.len() - at);
        let written = w.write_all(&frame[at..at + n]).map_or(0, |_| n);
        at += n;
        let _ = q.queue.add_used(mem, head, written as u32);
    }
    Placed::Used
}

/// Answers held for a guest that posts no receive buffers (DHCP replies, the metadata
/// service's segments); a guest that floods without reading gets no more than this many
/// queued, and TCP resends what was dropped.
const MAX_ANSWERS: usize = 128;

/// `frame` behind a virtio_net_hdr_v1 that asks for nothing (one buffer, checksums done).
fn with_vnet_header(frame: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; VNET_HDR_LEN];
    // num_buffers (the header's last 16 bits) is 1 without mergeable receive buffers.
    out[VNET_HDR_LEN - 2] = 1;
    out.extend_from_slice(frame);
    out
}

/// Copies one transmit chain (virtio-net header and frame) into `frame` and returns its length;
/// `None` for a chain the guest made too short, too long or unreadable (the frame is dropped).
/// `frame` must hold [`MAX_FRAME`] bytes.
pub fn read_tx_frame(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    frame: &mut [u8],
) -> Option<usize> {
    let mut r = Reader::<()>::new(mem, chain).ok()?;
    let len = r.available_bytes();
    let fits = (VNET_HDR_LEN..=MAX_FRAME).contains(&len) && len <= frame.len();
    (fits && r.read_exact(&mut frame[..len]).is_ok()).then_some(len)
}

impl QueueHandler for NetHandler {
    fn process_queue(&mut self, mem: &GuestMemoryMmap, queues: &mut [ActiveQueue], index: usize) {
        match index {
            RX => self.receive(mem, queues),
            _ => self.transmit(mem, queues),
        }
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        vec![self.tap.as_raw_fd()]
    }

    fn process_fd(&mut self, mem: &GuestMemoryMmap, queues: &mut [ActiveQueue], _index: usize) {
        self.receive(mem, queues);
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        acked_features: u64,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        check_queues(&mem, &queues, 2)?;
        let (Some(tap), Some(port)) = (self.tap.take(), self.port.take()) else {
            return Err(ActivateError::AlreadyActive);
        };
        let mut queues = queues;
        for q in &mut queues {
            q.queue
                .set_event_idx(acked_features & VIRTIO_F_EVENT_IDX != 0);
        }
        if tap.set_offload(tap_offloads(acked_features)).is_err() {
            tracing::warn!("virtio-net: tap refused offload settings");
        }
        let handler = NetHandler {
            tap,
            port,
            answers: VecDeque::new(),
            frame: vec![0; MAX_FRAME],
            tx_frame: vec![0; MAX_FRAME],
            pending: None,
            mergeable: acked_features & F_MRG_RXBUF != 0,
        };
        // The tap is edge-triggered in the worker: `receive` reads until it would block or the
        // guest has no buffers, and a guest notify resumes it.
        self.worker = Some(Worker::spawn("virtio-net", mem, queues, handler)?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(h) = self.worker.take().and_then(Worker::stop) {
            self.tap = Some(h.tap);
            self.port = Some(h.port);
        }
    }
}
