//! What the PXE service did, in order: DHCP replies sent, TFTP files sent, HTTP requests
//! answered. Tests and benchmarks watch a node's boot through it; the frontend can show boot
//! progress per node. A bounded in-memory log, not an audit trail.

use super::leases::Mac;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Oldest entries are dropped beyond this many.
const CAPACITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PxeEvent {
    /// A DHCP reply went out (`kind` is OFFER, ACK or NAK).
    Dhcp {
        kind: String,
        mac: Mac,
        ip: Ipv4Addr,
        boot_file: Option<String>,
    },
    /// A whole file went out over TFTP.
    TftpSent { file: String, peer: SocketAddr },
    /// An HTTP request was answered.
    Http {
        path: String,
        status: u16,
        range: bool,
    },
}

/// Shared, cloneable log of [`PxeEvent`]s with the time each happened.
#[derive(Debug, Clone, Default)]
pub struct EventLog(Arc<Mutex<Vec<(Instant, PxeEvent)>>>);

impl EventLog {
    pub fn push(&self, event: PxeEvent) {
        tracing::info!("pxe: {event:?}");
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() >= CAPACITY {
            log.remove(0);
        }
        log.push((Instant::now(), event));
    }

    pub fn snapshot(&self) -> Vec<(Instant, PxeEvent)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first event matching `pred`, with its time.
    pub fn find(&self, pred: impl Fn(&PxeEvent) -> bool) -> Option<(Instant, PxeEvent)> {
        self.snapshot().into_iter().find(|(_, e)| pred(e))
    }
}
