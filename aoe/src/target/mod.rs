//! The AoE target: serves one block backend at one shelf/slot on one interface.
//!
//! Several worker threads receive from the same AF_PACKET socket, so many requests are in
//! flight at once; each worker runs `Export::handle` (pure frame-in/frame-out logic) and
//! sends the reply. Writes are durable before they are acknowledged (`backend`). Before
//! claiming its address the target broadcasts a Query Config and refuses to start if
//! another target answers for the same shelf/slot. This module owns threads and lifecycle,
//! not protocol rules (those are in `export`, `ata` and `acl`).

mod acl;
mod ata;
mod backend;
mod export;
mod stats;

pub use acl::AccessControl;
pub use backend::{Backend, BackendError};
pub use export::{query_config, Export, Outcome, SHELF_ANY, SLOT_ANY};
pub use stats::{ExportStats, StatsSnapshot};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Worker threads serving requests concurrently.
    pub workers: usize,
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
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            shelf: 0,
            slot: 0,
            workers: 8,
            buffer_count: 64,
            probe_timeout: Duration::from_millis(500),
            acl: AccessControl::default(),
            config_string: Vec::new(),
            drop_response_one_in: 0,
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
        let socket = Arc::new(socket);
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for i in 0..cfg.workers.max(1) {
            let (export, socket, stop, replies) = (
                Arc::clone(&export),
                Arc::clone(&socket),
                Arc::clone(&stop),
                Arc::clone(&replies),
            );
            let drop_one_in = cfg.drop_response_one_in;
            let handle = std::thread::Builder::new()
                .name(format!("aoe-target-{i}"))
                .spawn(move || serve(&export, &socket, &stop, &replies, drop_one_in))
                .map_err(TargetError::Spawn)?;
            workers.push(handle);
        }
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

    /// Stops the workers and waits for them (at most one receive timeout).
    pub fn stop(mut self) {
        self.shutdown();
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

/// One worker: receive, handle, reply, until told to stop.
fn serve(
    export: &Export,
    socket: &PacketSocket,
    stop: &AtomicBool,
    replies: &AtomicU64,
    drop_one_in: u64,
) {
    let size = socket.mtu() + ETHERNET_HEADER_LEN;
    let (mut frame, mut out) = (vec![0u8; size], vec![0u8; size]);
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv(&mut frame) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Outcome::Reply(len) = export.handle(&frame[..n], &mut out) {
            let count = replies.fetch_add(1, Ordering::Relaxed) + 1;
            if drop_one_in != 0 && count.is_multiple_of(drop_one_in) {
                export.stats.drop_by_hook();
                continue;
            }
            if socket.send(&out[..len]).is_ok() {
                export.stats.frame_out();
            }
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

#[cfg(test)]
mod export_tests;
