//! The user-space AoE initiator: one target at one shelf/slot, reached over an AF_PACKET
//! socket, presented as a synchronous block device (`read_at`, `write_at`, `flush`, `size`)
//! that any number of threads may call at once (it is `Send + Sync`).
//!
//! There is no receive thread: one caller at a time holds the receiving turn and reads the
//! socket for everyone, taking its own replies straight from it and handing the others' to
//! them by tag (bit 31 always set, so the Linux driver ignores ours); it passes the turn to a
//! waiting caller when its own call ends. A lone caller (one request in flight, however many
//! frames) so never waits for another thread to wake. Callers keep up to a window of frames in
//! flight, sized from the target's buffer count, and retransmit on an RTT-estimated timeout
//! with backoff until a total deadline, after which the call fails with `TimedOut`. Requests
//! are cut into frames of as many sectors as both the target and the local MTU allow (jumbo
//! frames included).

mod discover;
mod exchange;
mod rtt;

pub use discover::{discover, DiscoverError, Found};
pub use rtt::RttEstimator;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::ata::{self, SECTOR_SIZE};
use crate::net::{NetError, PacketSocket};
use crate::target::sectors_per_frame;
use crate::wire::{
    AoeError, AtaRepr, Body, Command, Mac, Message, WireError, AFLAG_EXTENDED, AFLAG_WRITE,
};
use exchange::{Delivery, Op, Receiving, Reply};

/// A block operation through the initiator failed.
#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error("emit frame: {0}")]
    Wire(#[from] WireError),
    #[error("no target answered for shelf {shelf} slot {slot}")]
    NoTarget { shelf: u16, slot: u8 },
    #[error("target e{shelf}.{slot} did not answer within {after:?}")]
    TimedOut {
        shelf: u16,
        slot: u8,
        after: Duration,
    },
    #[error("target e{shelf}.{slot} answered with AoE error: {error}")]
    Aoe {
        shelf: u16,
        slot: u8,
        error: AoeError,
    },
    #[error(
        "ATA command {command:#04x} at LBA {lba} failed: status {status:#04x} error {error:#04x}"
    )]
    Ata {
        command: u8,
        lba: u64,
        status: u8,
        error: u8,
    },
    #[error("response for LBA {lba} carried {got} data bytes, expected {want}")]
    ShortResponse { lba: u64, got: usize, want: usize },
    #[error("offset {offset} length {len} is not sector aligned")]
    Unaligned { offset: u64, len: usize },
    #[error("offset {offset} length {len} is beyond the device size {size}")]
    OutOfRange { offset: u64, len: usize, size: u64 },
    #[error("IDENTIFY DEVICE response is unusable")]
    BadIdentify,
}

/// Frames the receiving caller takes per `recvmmsg`.
const RX_BATCH: usize = 32;
/// How long the receiving caller blocks in one `recvmmsg`, so it checks its retransmission
/// deadlines at least this often.
const RX_WAIT: Duration = Duration::from_millis(10);

/// Tuning of the initiator.
#[derive(Debug, Clone)]
pub struct InitiatorConfig {
    /// A call fails with `TimedOut` after this long without completing.
    pub total_timeout: Duration,
    /// `open` stops looking for the target after this long, or after `total_timeout` if that
    /// is shorter: an initiator may ride out a long outage of a target it has, yet still be
    /// told soon that one is not there at all.
    pub discover_timeout: Duration,
    /// Upper bound on frames in flight (the target's buffer count bounds it too).
    pub max_window: usize,
    pub initial_rto: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
    /// Test hook: do not actually send every n-th frame (0 = never), as if it were lost.
    pub drop_request_one_in: u64,
}

impl Default for InitiatorConfig {
    fn default() -> Self {
        InitiatorConfig {
            total_timeout: Duration::from_secs(30),
            discover_timeout: Duration::from_secs(30),
            max_window: 64,
            initial_rto: Duration::from_millis(200),
            min_rto: Duration::from_millis(50),
            max_rto: Duration::from_secs(2),
            drop_request_one_in: 0,
        }
    }
}

/// Counters of one initiator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitiatorStats {
    pub frames_sent: u64,
    pub retransmits: u64,
    pub dropped_by_hook: u64,
}

/// Frames allowed in flight, shared by all callers.
#[derive(Debug)]
struct Window {
    slots: Mutex<Slots>,
    freed: Condvar,
    limit: usize,
}

/// Frames in flight, and callers waiting for one of them to end.
#[derive(Debug, Default)]
struct Slots {
    inflight: usize,
    waiting: usize,
}

/// A connection to one AoE target.
#[derive(Debug)]
pub struct Initiator {
    sock: PacketSocket,
    /// Device size in sectors (IDENTIFY DEVICE).
    sectors: u64,
    target: Found,
    max_sectors: usize,
    cfg: InitiatorConfig,
    window: Window,
    /// The caller waiting for each tag in flight.
    pending: Mutex<HashMap<u32, Sender<Delivery>>>,
    /// The receiving turn and its buffers.
    receiver: Mutex<Receiving>,
    rtt: Mutex<RttEstimator>,
    next_tag: AtomicU32,
    frames_sent: AtomicU64,
    retransmits: AtomicU64,
    dropped_by_hook: AtomicU64,
}

impl Initiator {
    /// Finds shelf/slot on the socket's segment (retrying discovery until the discover timeout)
    /// and reads the capacity with IDENTIFY DEVICE.
    pub fn open(
        sock: PacketSocket,
        shelf: u16,
        slot: u8,
        cfg: InitiatorConfig,
    ) -> Result<Self, InitiatorError> {
        let start = Instant::now();
        let target = loop {
            let found = discover(&sock, shelf, slot, Duration::from_millis(250), Some(1))?;
            if let Some(f) = found.into_iter().next() {
                break f;
            }
            if start.elapsed() > cfg.discover_timeout.min(cfg.total_timeout) {
                return Err(InitiatorError::NoTarget { shelf, slot });
            }
        };
        // From now on only the target's responses wake the initiator, not other targets' and
        // initiators' traffic on the segment.
        sock.set_filter(&crate::filter::responses_from(target.shelf, target.slot))?;
        sock.set_recv_timeout(RX_WAIT)?;
        let max_sectors = sectors_per_frame(sock.mtu())
            .min(usize::from(target.sector_count))
            .max(1);
        let limit = usize::from(target.buffer_count).clamp(1, cfg.max_window.max(1));
        let frame_bytes = sock.mtu() + 14;
        let mut ini = Initiator {
            sock,
            sectors: 0,
            target,
            max_sectors,
            window: Window {
                slots: Mutex::new(Slots::default()),
                freed: Condvar::new(),
                limit,
            },
            pending: Mutex::new(HashMap::new()),
            receiver: Mutex::new(Receiving {
                frames: vec![vec![0u8; frame_bytes]; RX_BATCH],
                lens: [0; RX_BATCH],
            }),
            rtt: Mutex::new(RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto)),
            next_tag: AtomicU32::new(1),
            frames_sent: AtomicU64::new(0),
            retransmits: AtomicU64::new(0),
            dropped_by_hook: AtomicU64::new(0),
            cfg,
        };
        let mut page = [0u8; 512];
        let identify = AtaRepr {
            sector_count: 1,
            cmd_status: ata::CMD_IDENTIFY,
            ..Default::default()
        };
        ini.run(
            &[Op {
                ata: identify,
                range: 0..512,
            }],
            exchange::Data::Read(&mut page),
        )?;
        ini.sectors = ata::identify_sectors(&page).ok_or(InitiatorError::BadIdentify)?;
        Ok(ini)
    }

    /// Device size in bytes.
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR_SIZE as u64
    }

    /// The target's address and advertised limits.
    pub fn target(&self) -> &Found {
        &self.target
    }

    /// Frames in flight at most, and sectors per frame.
    pub fn limits(&self) -> (usize, usize) {
        (self.window.limit, self.max_sectors)
    }

    pub fn stats(&self) -> InitiatorStats {
        InitiatorStats {
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            retransmits: self.retransmits.load(Ordering::Relaxed),
            dropped_by_hook: self.dropped_by_hook.load(Ordering::Relaxed),
        }
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), InitiatorError> {
        if !offset.is_multiple_of(SECTOR_SIZE as u64) || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(InitiatorError::Unaligned { offset, len });
        }
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.size())
        {
            return Err(InitiatorError::OutOfRange {
                offset,
                len,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// One frame per `max_sectors` sectors of `len` bytes at `offset`.
    fn ops(&self, offset: u64, len: usize, write: bool) -> Vec<Op> {
        let per = self.max_sectors * SECTOR_SIZE;
        (0..len)
            .step_by(per)
            .map(|at| {
                let n = per.min(len - at);
                Op {
                    ata: AtaRepr {
                        aflags: AFLAG_EXTENDED | if write { AFLAG_WRITE } else { 0 },
                        err_feature: 0,
                        sector_count: (n / SECTOR_SIZE) as u8,
                        cmd_status: if write {
                            ata::CMD_WRITE_EXT
                        } else {
                            ata::CMD_READ_EXT
                        },
                        lba: (offset + at as u64) / SECTOR_SIZE as u64,
                    },
                    range: at..at + n,
                }
            })
            .collect()
    }

    /// Reads `buf.len()` bytes at `offset` (both sector aligned).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), InitiatorError> {
        self.check(offset, buf.len())?;
        let ops = self.ops(offset, buf.len(), false);
        self.run(&ops, exchange::Data::Read(buf))
    }

    /// Writes `buf` at `offset` (both sector aligned); returns once the target acknowledged
    /// every frame (our target acknowledges only durable writes).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), InitiatorError> {
        self.check(offset, buf.len())?;
        let ops = self.ops(offset, buf.len(), true);
        self.run(&ops, exchange::Data::Write(buf))
    }

    /// FLUSH CACHE EXT.
    pub fn flush(&self) -> Result<(), InitiatorError> {
        let flush = AtaRepr {
            aflags: AFLAG_EXTENDED,
            cmd_status: ata::CMD_FLUSH_EXT,
            ..Default::default()
        };
        self.run(
            &[Op {
                ata: flush,
                range: 0..0,
            }],
            exchange::Data::None,
        )
    }
}

impl Initiator {
    /// Sorts one received frame: a response to a tag in flight is removed from the pending
    /// map and returned when `mine` says it is the receiving caller's, else handed to the
    /// caller that waits for it. Anything else (not ours, late, duplicate) is dropped.
    fn deliver(&self, frame: &[u8], at: Instant, mine: impl Fn(u32) -> bool) -> Option<Reply> {
        let msg = Message::parse(frame).ok()?;
        let h = msg.header;
        if !h.response
            || msg.src != self.target.mac
            || (h.shelf, h.slot) != (self.target.shelf, self.target.slot)
            || h.command != Command::Ata
            || h.tag & 0x8000_0000 == 0
        {
            return None;
        }
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&h.tag)?;
        let (ata, data) = match msg.body {
            Body::Ata { ata, data } => (Some(ata), data.to_vec()),
            _ => (None, Vec::new()),
        };
        let reply = Reply {
            tag: h.tag,
            error: h.error,
            ata,
            data,
            at,
        };
        if mine(h.tag) {
            return Some(reply);
        }
        let _ = waiter.send(Delivery::Reply(reply));
        None
    }

    fn target_mac(&self) -> Mac {
        self.target.mac
    }
}
