//! One caller's batch of ATA frames: keep up to the shared window in flight, match replies,
//! retransmit on timeout with backoff, give up after the total deadline. Frames of one call
//! may complete in any order; each carries its own slice of the caller's buffer. While a call
//! waits it holds the receiving turn if it is free (see the module above) and gives it on when
//! it ends.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::{Initiator, InitiatorError};
use crate::ata::STATUS_ERR;
use crate::wire::{AtaRepr, Body, Command, HeaderRepr, Message};

/// One frame to send: its ATA registers and the byte range of the caller's buffer it reads
/// into or writes from.
#[derive(Debug, Clone)]
pub(super) struct Op {
    pub ata: AtaRepr,
    pub range: Range<usize>,
}

/// The caller's buffer.
pub(super) enum Data<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
    None,
}

/// What the receiving caller hands a waiting one.
#[derive(Debug)]
pub(super) enum Delivery {
    /// A response to one of its frames.
    Reply(Reply),
    /// The receiving turn is free: take it.
    Lead,
}

/// The receiving turn: whoever holds it reads the socket, into these buffers.
#[derive(Debug)]
pub(super) struct Receiving {
    pub frames: Vec<Vec<u8>>,
    pub lens: [usize; super::RX_BATCH],
}

/// A response to one frame.
#[derive(Debug)]
pub(super) struct Reply {
    pub tag: u32,
    pub error: Option<crate::wire::AoeError>,
    pub ata: Option<AtaRepr>,
    pub data: Vec<u8>,
    pub at: Instant,
}

struct InFlight {
    op: usize,
    sent: Instant,
    deadline: Instant,
    retries: u32,
}

impl Initiator {
    fn lock_pending(&self) -> MutexGuard<'_, HashMap<u32, mpsc::Sender<Delivery>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a window slot; blocks (until `until`) only when `block` is set.
    fn acquire(&self, block: bool, until: Instant) -> bool {
        let w = &self.window;
        let mut slots = w.slots.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if slots.inflight < w.limit {
                slots.inflight += 1;
                return true;
            }
            let now = Instant::now();
            if !block || now >= until {
                return false;
            }
            slots.waiting += 1;
            slots = w
                .freed
                .wait_timeout(slots, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            slots.waiting -= 1;
        }
    }

    fn release(&self, count: usize) {
        if count == 0 {
            return;
        }
        let mut slots = self.window.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.inflight -= count.min(slots.inflight);
        // A wake is a system call: only when a caller waits for a slot.
        if slots.waiting > 0 {
            self.window.freed.notify_all();
        }
    }

    /// Sends the frames of `batch` (`(tag, op index)`) with one `sendmmsg`: a multi-frame
    /// request or a refill after several replies costs one system call, not one per frame.
    fn send_ops(
        &self,
        batch: &[(u32, usize)],
        ops: &[Op],
        data: &Data,
        frames: &mut Vec<Vec<u8>>,
    ) -> Result<(), InitiatorError> {
        if frames.len() < batch.len() {
            frames.resize_with(batch.len(), Vec::new);
        }
        let mut lens = Vec::with_capacity(batch.len());
        for (&(tag, op), frame) in batch.iter().zip(frames.iter_mut()) {
            let op = &ops[op];
            let payload = match data {
                Data::Write(buf) => &buf[op.range.clone()],
                _ => &[][..],
            };
            let msg = Message {
                dst: self.target_mac(),
                src: self.sock.mac(),
                header: HeaderRepr::request(self.target.shelf, self.target.slot, Command::Ata, tag),
                body: Body::Ata {
                    ata: op.ata,
                    data: payload,
                },
            };
            frame.resize(msg.buffer_len(), 0);
            let n = msg.emit(frame)?;
            let sent = self.frames_sent.fetch_add(1, Ordering::Relaxed) + 1;
            let hook = self.cfg.drop_request_one_in;
            if hook != 0 && sent.is_multiple_of(hook) {
                self.dropped_by_hook.fetch_add(1, Ordering::Relaxed);
                lens.push(0);
            } else {
                lens.push(n);
            }
        }
        let out: Vec<&[u8]> = (frames.iter().zip(&lens))
            .filter(|(_, n)| **n > 0)
            .map(|(f, n)| &f[..*n])
            .collect();
        match out.as_slice() {
            [] => Ok(()),
            [one] => Ok(self.sock.send(one)?),
            many => self.sock.send_batch(many).map(drop).map_err(Into::into),
        }
    }

    /// Runs every op to completion or to the first error.
    pub(super) fn run(&self, ops: &[Op], mut data: Data) -> Result<(), InitiatorError> {
        let (tx, rx) = mpsc::channel();
        let mut inflight: HashMap<u32, InFlight> = HashMap::new();
        let mut turn = None;
        let result = self.run_inner(ops, &mut data, &tx, &rx, &mut inflight, &mut turn);
        let mut pending = self.lock_pending();
        for tag in inflight.keys() {
            pending.remove(tag);
        }
        drop(pending);
        self.release(inflight.len());
        // The turn goes on if this call had it, or was offered it and ended before taking it.
        let offered = rx.try_iter().any(|d| matches!(d, Delivery::Lead));
        if turn.take().is_some() || offered {
            self.hand_over();
        }
        result
    }

    /// Offers the receiving turn to a caller that still has frames in flight.
    fn hand_over(&self) {
        if let Some(next) = self.lock_pending().values().next() {
            let _ = next.send(Delivery::Lead);
        }
    }

    /// Waits until `until` for replies to this call's frames. With the receiving turn (taken
    /// here when it is free) it reads the socket itself and hands other callers theirs;
    /// without, it waits for what the receiving caller hands it, or for the turn.
    fn wait_replies<'a>(
        &'a self,
        until: Instant,
        rx: &mpsc::Receiver<Delivery>,
        inflight: &HashMap<u32, InFlight>,
        turn: &mut Option<MutexGuard<'a, Receiving>>,
    ) -> Result<Vec<Reply>, RecvTimeoutError> {
        loop {
            let mut got = Vec::new();
            let mut offered = false;
            for d in rx.try_iter() {
                match d {
                    Delivery::Reply(r) => got.push(r),
                    Delivery::Lead => offered = true,
                }
            }
            // An offered turn is taken even when replies are here, so it is never dropped.
            if turn.is_none() && (offered || got.is_empty()) {
                *turn = match self.receiver.try_lock() {
                    Ok(g) => Some(g),
                    Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    Err(TryLockError::WouldBlock) => None,
                };
            }
            if !got.is_empty() {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= until {
                return Err(RecvTimeoutError::Timeout);
            }
            let Some(receiving) = turn.as_mut() else {
                match rx.recv_timeout(until - now) {
                    Ok(Delivery::Reply(r)) => return Ok(vec![r]),
                    Ok(Delivery::Lead) => continue,
                    Err(e) => return Err(e),
                }
            };
            let Receiving { frames, lens } = &mut **receiving;
            // Blocks at most RX_WAIT; an error is retried until `until`, as a timeout is.
            let count = self.sock.recv_batch(frames, lens).unwrap_or(0);
            let at = Instant::now();
            for (frame, &len) in frames.iter().zip(lens.iter()).take(count) {
                if len > 0 {
                    got.extend(self.deliver(&frame[..len], at, |t| inflight.contains_key(&t)));
                }
            }
            if !got.is_empty() {
                return Ok(got);
            }
        }
    }

    fn run_inner<'a>(
        &'a self,
        ops: &[Op],
        data: &mut Data,
        tx: &mpsc::Sender<Delivery>,
        rx: &mpsc::Receiver<Delivery>,
        inflight: &mut HashMap<u32, InFlight>,
        turn: &mut Option<MutexGuard<'a, Receiving>>,
    ) -> Result<(), InitiatorError> {
        let start = Instant::now();
        let give_up = start + self.cfg.total_timeout;
        let timed_out = || InitiatorError::TimedOut {
            shelf: self.target.shelf,
            slot: self.target.slot,
            after: start.elapsed(),
        };
        let mut frames = Vec::new();
        let mut batch: Vec<(u32, usize)> = Vec::new();
        let mut next = 0;
        loop {
            if inflight.is_empty() && next < ops.len() && turn.is_some() {
                // About to wait for a window slot, which only other callers' replies free:
                // one of them receives meanwhile.
                *turn = None;
                self.hand_over();
            }
            // Fill the window; block for a slot only with nothing of ours in flight.
            while next < ops.len() && self.acquire(inflight.is_empty(), give_up) {
                let tag =
                    0x8000_0000 | (self.next_tag.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff);
                self.lock_pending().insert(tag, tx.clone());
                let rto = self.rtt.lock().unwrap_or_else(|p| p.into_inner()).rto();
                let now = Instant::now();
                inflight.insert(
                    tag,
                    InFlight {
                        op: next,
                        sent: now,
                        deadline: now + rto,
                        retries: 0,
                    },
                );
                batch.push((tag, next));
                next += 1;
            }
            self.send_ops(&batch, ops, data, &mut frames)?;
            batch.clear();
            if inflight.is_empty() {
                if next == ops.len() {
                    return Ok(());
                }
                return Err(timed_out());
            }
            let earliest = inflight
                .values()
                .map(|f| f.deadline)
                .min()
                .unwrap_or(give_up);
            match self.wait_replies(earliest, rx, inflight, turn) {
                Ok(replies) => {
                    // Every reply already here is taken before the window is refilled, so
                    // the refill goes out as one batch.
                    for r in &replies {
                        self.take_reply(ops, r, data, inflight)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if now >= give_up {
                        return Err(timed_out());
                    }
                    for (&tag, f) in inflight.iter_mut().filter(|(_, f)| f.deadline <= now) {
                        f.retries += 1;
                        let wait = self
                            .rtt
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .backed_off(f.retries);
                        f.deadline = (now + wait).min(give_up.max(now + Duration::from_millis(1)));
                        self.retransmits.fetch_add(1, Ordering::Relaxed);
                        batch.push((tag, f.op));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(timed_out()),
            }
        }
    }

    /// Ends the frame `reply` answers, if it is still ours: frees its window slot, samples its
    /// round trip and completes its op.
    fn take_reply(
        &self,
        ops: &[Op],
        reply: &Reply,
        data: &mut Data,
        inflight: &mut HashMap<u32, InFlight>,
    ) -> Result<(), InitiatorError> {
        let Some(f) = inflight.remove(&reply.tag) else {
            return Ok(());
        };
        self.release(1);
        // Karn: only frames answered on their first transmission are sampled, so a lost
        // frame's backoff never inflates the estimate.
        if f.retries == 0 {
            let rtt = reply.at.saturating_duration_since(f.sent);
            self.rtt
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sample(rtt);
        }
        self.complete(&ops[f.op], reply, data)
    }

    /// Checks one reply and copies read data into place.
    fn complete(&self, op: &Op, reply: &Reply, data: &mut Data) -> Result<(), InitiatorError> {
        if let Some(error) = reply.error {
            return Err(InitiatorError::Aoe {
                shelf: self.target.shelf,
                slot: self.target.slot,
                error,
            });
        }
        let ata = reply.ata.ok_or(InitiatorError::ShortResponse {
            lba: op.ata.lba,
            got: 0,
            want: 12,
        })?;
        if ata.cmd_status & STATUS_ERR != 0 {
            return Err(InitiatorError::Ata {
                command: op.ata.cmd_status,
                lba: op.ata.lba,
                status: ata.cmd_status,
                error: ata.err_feature,
            });
        }
        if let Data::Read(buf) = data {
            let want = op.range.len();
            let src = reply
                .data
                .get(..want)
                .ok_or(InitiatorError::ShortResponse {
                    lba: op.ata.lba,
                    got: reply.data.len(),
                    want,
                })?;
            buf[op.range.clone()].copy_from_slice(src);
        }
        Ok(())
    }
}
