//! Finding targets: a broadcast Query Config, answers collected for a while.

use std::time::{Duration, Instant};

use crate::net::{NetError, PacketSocket};
use crate::wire::{Body, Command, ConfigCommand, ConfigRepr, HeaderRepr, Mac, Message, WireError};

/// Discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("emit Query Config: {0}")]
    Wire(#[from] WireError),
}

/// One target that answered a Query Config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub mac: Mac,
    pub shelf: u16,
    pub slot: u8,
    pub buffer_count: u16,
    pub firmware_version: u16,
    pub sector_count: u8,
    pub config: Vec<u8>,
}

/// Tag used for discovery frames (bit 31 set, like every tag this initiator sends).
const DISCOVER_TAG: u32 = 0x8000_0000;

/// Broadcasts a Query Config for `shelf`/`slot` (0xffff/0xff for all) and returns every
/// distinct answer received within `listen`; returns early once `want` answers are in.
pub fn discover(
    sock: &PacketSocket,
    shelf: u16,
    slot: u8,
    listen: Duration,
    want: Option<usize>,
) -> Result<Vec<Found>, DiscoverError> {
    let req = Message {
        dst: Mac::BROADCAST,
        src: sock.mac(),
        header: HeaderRepr::request(shelf, slot, Command::QueryConfig, DISCOVER_TAG),
        body: Body::Config(ConfigRepr::request(ConfigCommand::Read, &[])),
    };
    let mut buf = vec![0u8; sock.mtu() + 14];
    let n = req.emit(&mut buf)?;
    sock.send(&buf[..n])?;
    sock.set_recv_timeout(Duration::from_millis(20))?;
    let deadline = Instant::now() + listen;
    let mut found: Vec<Found> = Vec::new();
    while Instant::now() < deadline && want.is_none_or(|w| found.len() < w) {
        let Some(n) = sock.recv(&mut buf)? else {
            continue;
        };
        let Ok(msg) = Message::parse(&buf[..n]) else {
            continue;
        };
        let h = msg.header;
        let matches = (shelf == 0xffff || h.shelf == shelf) && (slot == 0xff || h.slot == slot);
        let Body::Config(c) = msg.body else { continue };
        if !h.response || h.error.is_some() || h.tag != DISCOVER_TAG || !matches {
            continue;
        }
        let f = Found {
            mac: msg.src,
            shelf: h.shelf,
            slot: h.slot,
            buffer_count: c.buffer_count,
            firmware_version: c.firmware_version,
            sector_count: c.sector_count,
            config: c.config.to_vec(),
        };
        if !found
            .iter()
            .any(|o| (o.mac, o.shelf, o.slot) == (f.mac, f.shelf, f.slot))
        {
            found.push(f);
        }
    }
    Ok(found)
}
