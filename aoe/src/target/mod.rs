//! The AoE target: serves one block backend at one shelf/slot on one interface.
//!
//! One receive thread answers what cannot block (Query Config, reads already in the page
//! cache) inline and hands writes, flushes and uncached reads to a pool of worker threads,
//! so many requests are in flight at once; both run `Export::handle` (pure
//! frame-in/frame-out logic). The receive thread's socket is filtered to requests for this
//! address (`crate::filter`), and it polls briefly before sleeping (`TargetConfig::poll`).
//! Retransmissions of a request still in the pool are dropped. Writes are durable before they
//! are acknowledged (`backend`). Before claiming its address the target broadcasts a Query
//! Config and refuses to start if another target answers for the same shelf/slot. This module
//! owns threads and lifecycle, not protocol rules (those are in `export`, `ata` and `acl`).

mod acl;
mod ata;
mod backend;
mod dirty;
mod export;
mod stats;

pub use acl::AccessControl;
pub use backend::{Backend, BackendError};
pub use dirty::DirtyMap;
pub use export::{query_config, Export, Outcome, SHELF_ANY, SLOT_ANY};
pub use stats::{ExportStats, StatsSnapshot};

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ata::{Identity, SECTOR_SIZE};
use crate::net::{NetError, PacketSocket};
use crate::wire::{
    Body, Command, ConfigCommand, ConfigRepr, HeaderRepr, Mac, Message, AOE_HEADER_LEN,
    ATA_HEADER_LEN, ETHERNET_HEADER_LEN,
};

/// Starting or running a target failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("shelf {shelf} slot {slot} is already answered by {mac} on this segment")]
    AddressInUse { shelf: u16, slot: u8, mac: Mac },
    #[error("shelf {shelf} slot {slot}: broadcast addresses 65535/255 cannot be claimed")]
    BroadcastAddress { shelf: u16, slot: u8 },
    #[error("MTU {0} is too small for one sector per frame")]
    MtuTooSmall(usize),
    #[error("emit probe frame: {0}")]
    Wire(#[from] crate::wire::WireError),
    #[error("spawn worker thread: {0}")]
    Spawn(std::io::Error),
}

/// How to export a backend.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub shelf: u16,
    pub slot: u8,
    /// Pool threads serving writes, flushes and uncached reads concurrently.
    pub workers: usize,
    /// Threads receiving frames and serving cached reads inline.
    pub receivers: usize,
    /// Frames the target advertises it can queue (Query Config buffer count).
    pub buffer_count: u16,
    /// How long to listen for another target's answer before claiming the address.
    pub probe_timeout: Duration,
    /// Initial MAC mask list (empty: answer everyone) and reserve list.
    pub acl: AccessControl,
    /// Initial config string.
    pub config_string: Vec<u8>,
    /// Test hook: withhold every n-th response (0 = never), as if it were lost on the wire.
    pub drop_response_one_in: u64,
    /// How long the receive thread keeps polling for the next frame after the last before it
    /// sleeps (zero: it sleeps at once). An initiator's next request usually comes within
    /// this, and is then served without the receive thread being put to sleep and woken,
    /// which cost as much as the request itself (random 4 KiB reads at one in flight went
    /// from 1.0x vblade to 1.4-1.8x with 50 us). It costs CPU only while requests come: at
    /// most this long after each burst, yielding to any other thread that wants the core.
    /// Linux suggests the same 50 us for its own socket busy polling (`net.core.busy_read`).
    pub poll: Duration,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            shelf: 0,
            slot: 0,
            workers: 64,
            receivers: 1,
            buffer_count: 64,
            probe_timeout: Duration::from_millis(500),
            acl: AccessControl::default(),
            config_string: Vec::new(),
            drop_response_one_in: 0,
            poll: Duration::from_micros(50),
        }
    }
}

/// Sectors of data that fit in one frame on an interface with this MTU (at most 255).
pub fn sectors_per_frame(mtu: usize) -> usize {
    (mtu.saturating_sub(AOE_HEADER_LEN + ATA_HEADER_LEN) / SECTOR_SIZE).min(255)
}

/// A running export; stops its workers when dropped.
#[derive(Debug)]
pub struct Target {
    export: Arc<Export>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Target {
    /// Probes the address, then starts serving `backend` on `socket`.
    pub fn start(
        socket: PacketSocket,
        backend: Backend,
        cfg: TargetConfig,
    ) -> Result<Self, TargetError> {
        if cfg.shelf == SHELF_ANY || cfg.slot == SLOT_ANY {
            return Err(TargetError::BroadcastAddress {
                shelf: cfg.shelf,
                slot: cfg.slot,
            });
        }
        let max_sectors = sectors_per_frame(socket.mtu());
        if max_sectors == 0 {
            return Err(TargetError::MtuTooSmall(socket.mtu()));
        }
        probe(&socket, cfg.shelf, cfg.slot, cfg.probe_timeout)?;
        // From now on only requests to this address wake the receive thread (the probe above
        // had to hear other targets' responses).
        socket.set_filter(&crate::filter::requests_to(cfg.shelf, cfg.slot))?;
        socket.set_recv_timeout(Duration::from_millis(100))?;
        let identity = Identity {
            sectors: backend.sectors(),
            serial: format!("MAL{:05}.{:03}", cfg.shelf, cfg.slot),
            firmware: env!("CARGO_PKG_VERSION").to_owned(),
            model: "Mallee AoE target".to_owned(),
            max_sectors: max_sectors as u8,
        };
        let export = Arc::new(Export {
            shelf: cfg.shelf,
            slot: cfg.slot,
            mac: socket.mac(),
            max_sectors: max_sectors as u8,
            buffer_count: cfg.buffer_count,
            firmware_version: 1,
            identify: identity.page(),
            backend,
            acl: Mutex::new(cfg.acl.clone()),
            config: Mutex::new(cfg.config_string.clone()),
            stats: ExportStats::default(),
        });
        let server = Arc::new(Server {
            export: Arc::clone(&export),
            socket,
            replies: AtomicU64::new(0),
            drop_one_in: cfg.drop_response_one_in,
            poll: cfg.poll,
            busy: Mutex::new(HashSet::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE_LIMIT);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let mut workers = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let (server, stop, jobs) =
                (Arc::clone(&server), Arc::clone(&stop), Arc::clone(&jobs_rx));
            let handle = std::thread::Builder::new()
                .name(format!("aoe-pool-{i}"))
                .spawn(move || server.pool_worker(&jobs, &stop))
                .map_err(TargetError::Spawn)?;
            workers.push(handle);
        }
        for i in 0..cfg.receivers.max(1) {
            let (rx_server, rx_stop, jobs) =
                (Arc::clone(&server), Arc::clone(&stop), jobs_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("aoe-target-rx-{i}"))
                .spawn(move || rx_server.receive(jobs, &rx_stop))
                .map_err(TargetError::Spawn)?;
            workers.push(handle);
        }
        drop(jobs_tx);
        Ok(Target {
            export,
            stop,
            workers,
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.export.stats.snapshot()
    }

    pub fn export(&self) -> &Export {
        &self.export
    }

    /// Stops the workers and waits for them (at most one receive timeout); returns the export,
    /// whose backend no longer changes (its dirty map is final).
    pub fn stop(mut self) -> Arc<Export> {
        self.shutdown();
        Arc::clone(&self.export)
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Frames one receive thread takes per `recvmmsg`.
const BATCH: usize = 32;

/// Deferred frames waiting for a pool thread, at most.
const QUEUE_LIMIT: usize = 4096;

/// What the receive thread and the pool share.
struct Server {
    export: Arc<Export>,
    socket: PacketSocket,
    replies: AtomicU64,
    drop_one_in: u64,
    /// How long to poll for more frames before sleeping (`TargetConfig::poll`).
    poll: Duration,
    /// (initiator, tag) of deferred requests not yet answered, to drop retransmissions.
    busy: Mutex<HashSet<(Mac, u32)>>,
}

/// Initiator MAC and tag of a frame that already parsed once.
fn request_key(frame: &[u8]) -> Option<(Mac, u32)> {
    let msg = Message::parse(frame).ok()?;
    Some((msg.src, msg.header.tag))
}

impl Server {
    /// The receive thread: serves what cannot block inline (config, cached reads) and hands
    /// writes, flushes and uncached reads to the pool, dropping retransmissions of requests
    /// the pool is still working on.
    fn receive(&self, jobs: mpsc::SyncSender<Vec<u8>>, stop: &AtomicBool) {
        let size = self.socket.mtu() + ETHERNET_HEADER_LEN;
        let mut frames = vec![vec![0u8; size]; BATCH];
        let mut outs = vec![vec![0u8; size]; BATCH];
        let mut lens = [0usize; BATCH];
        while !stop.load(Ordering::Relaxed) {
            // The first frame alone, its reply sent before the next is read: reading a batch
            // first delayed that reply by the others' copies, the initiator woke later, and
            // random 4 KiB reads at one in flight (four frames at MTU 1500) ran at
            // 0.81-0.87x vblade. Then whatever is queued by then, a batch at a time, each
            // batch's replies in one `sendmmsg`, polling for more for `poll` before sleeping.
            match self.socket.recv(&mut frames[0]) {
                Ok(Some(len)) => {
                    if let Some(len) = self.serve(&frames[0][..len], &mut outs[0], &jobs) {
                        self.send(&[&outs[0][..len]]);
                    }
                }
                Ok(None) => continue,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            let mut idle_since = None::<Instant>;
            while !stop.load(Ordering::Relaxed) {
                let count = self.socket.recv_queued(&mut frames, &mut lens).unwrap_or(0);
                if count == 0 {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < self.poll {
                        std::thread::yield_now();
                        continue;
                    }
                    break;
                }
                idle_since = None;
                let mut replies = Vec::with_capacity(count);
                for (i, out) in outs.iter_mut().enumerate().take(count) {
                    if let Some(len) = self.serve(&frames[i][..lens[i]], out, &jobs) {
                        replies.push((i, len));
                    }
                }
                let batch: Vec<&[u8]> = replies.iter().map(|&(i, len)| &outs[i][..len]).collect();
                self.send(&batch);
            }
        }
    }

    /// Serves one received frame: the length of the reply made in `out`, if one is to be
    /// sent now; a frame that may block is handed to the pool.
    fn serve(
        &self,
        frame: &[u8],
        out: &mut [u8],
        jobs: &mpsc::SyncSender<Vec<u8>>,
    ) -> Option<usize> {
        if frame.is_empty() {
            return None;
        }
        match self.export.handle(frame, out, true) {
            Outcome::Reply(len) if self.keep_reply() => Some(len),
            Outcome::Defer => {
                self.defer(frame, jobs);
                None
            }
            _ => None,
        }
    }

    /// Sends replies and counts those sent: one with a plain `send` (no batch to build, on
    /// the path whose latency matters), more with one `sendmmsg`.
    fn send(&self, replies: &[&[u8]]) {
        let sent = match replies {
            [] => return,
            [one] => self.socket.send(one).map(|()| 1),
            many => self.socket.send_batch(many),
        };
        for _ in 0..sent.unwrap_or(0) {
            self.export.stats.frame_out();
        }
    }

    /// Queues a frame for the pool unless the same request is already there.
    fn defer(&self, frame: &[u8], jobs: &mpsc::SyncSender<Vec<u8>>) {
        let Some(key) = request_key(frame) else {
            return;
        };
        let busy = || self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy().insert(key) {
            self.export.stats.drop_duplicate();
            return;
        }
        if jobs.try_send(frame.to_vec()).is_err() {
            busy().remove(&key);
        }
    }

    /// A pool thread: runs deferred requests, which may block on storage.
    fn pool_worker(&self, jobs: &Mutex<mpsc::Receiver<Vec<u8>>>, stop: &AtomicBool) {
        let mut out = vec![0u8; self.socket.mtu() + ETHERNET_HEADER_LEN];
        while !stop.load(Ordering::Relaxed) {
            let job = jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .recv_timeout(Duration::from_millis(100));
            let frame = match job {
                Ok(frame) => frame,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if let Outcome::Reply(len) = self.export.handle(&frame, &mut out, false) {
                self.reply(&out[..len]);
            }
            if let Some(key) = request_key(&frame) {
                self.busy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
        }
    }

    /// Counts a request answered; false when the loss test hook withholds its reply.
    fn keep_reply(&self) -> bool {
        let stats = &self.export.stats;
        stats.frame_in();
        let count = self.replies.fetch_add(1, Ordering::Relaxed) + 1;
        if self.drop_one_in != 0 && count.is_multiple_of(self.drop_one_in) {
            stats.drop_by_hook();
            return false;
        }
        true
    }

    fn reply(&self, frame: &[u8]) {
        if self.keep_reply() {
            self.send(&[frame]);
        }
    }
}

/// Broadcasts a Query Config for shelf/slot and fails if anyone else answers in `timeout`.
fn probe(
    socket: &PacketSocket,
    shelf: u16,
    slot: u8,
    timeout: Duration,
) -> Result<(), TargetError> {
    let tag = 0x4d41_0000 | u32::from(slot);
    let req = Message {
        dst: Mac::BROADCAST,
        src: socket.mac(),
        header: HeaderRepr::request(shelf, slot, Command::QueryConfig, tag),
        body: Body::Config(ConfigRepr::request(ConfigCommand::Read, &[])),
    };
    let mut buf = vec![0u8; socket.mtu().max(req.buffer_len()) + ETHERNET_HEADER_LEN];
    let n = req.emit(&mut buf)?;
    socket.send(&buf[..n])?;
    let deadline = Instant::now() + timeout;
    socket.set_recv_timeout(Duration::from_millis(50))?;
    while Instant::now() < deadline {
        let Some(n) = socket.recv(&mut buf)? else {
            continue;
        };
        let Ok(msg) = Message::parse(&buf[..n]) else {
            continue;
        };
        let h = msg.header;
        if h.response
            && h.command == Command::QueryConfig
            && h.shelf == shelf
            && h.slot == slot
            && msg.src != socket.mac()
        {
            return Err(TargetError::AddressInUse {
                shelf,
                slot,
                mac: msg.src,
            });
        }
    }
    Ok(())
}
