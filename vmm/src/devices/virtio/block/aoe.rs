//! A virtio-blk backend on an AoE target, through `mallee-aoe`'s user-space initiator: EBS
//! volumes exported by the frontend reach the guest as ordinary virtio disks.
//!
//! The initiator does discovery, retransmission and the ATA commands; this adapter only maps its
//! errors to I/O errors (the guest sees `VIRTIO_BLK_S_IOERR`, after [`STALL_LIMIT`] without an
//! answer). Discard is not offered (AoE has no
//! TRIM here); write-zeroes falls back to writing zero blocks.

use std::io;
use std::time::Duration;

use mallee_aoe::initiator::{Initiator, InitiatorConfig};
use mallee_aoe::net::PacketSocket;

use super::backend::BlockBackend;

/// How long one request may wait for the target before the guest gets an I/O error: as long as
/// the Linux `aoe` driver's `aoe_deadsecs`, so a storage controller that restarts, or a frontend
/// that reboots, stalls the guest's I/O instead of failing it.
pub const STALL_LIMIT: Duration = Duration::from_secs(180);

/// An open AoE target.
pub struct AoeDisk {
    initiator: Initiator,
}

impl AoeDisk {
    /// Finds shelf.slot on `iface`'s segment and opens it.
    pub fn open(iface: &str, shelf: u16, slot: u8) -> io::Result<AoeDisk> {
        let sock = PacketSocket::open(iface).map_err(io::Error::other)?;
        let cfg = InitiatorConfig {
            total_timeout: STALL_LIMIT,
            ..InitiatorConfig::default()
        };
        let initiator = Initiator::open(sock, shelf, slot, cfg).map_err(io::Error::other)?;
        Ok(AoeDisk { initiator })
    }
}

impl BlockBackend for AoeDisk {
    fn size(&self) -> u64 {
        self.initiator.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.initiator
            .read_at(buf, offset)
            .map_err(io::Error::other)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.initiator
            .write_at(buf, offset)
            .map_err(io::Error::other)
    }

    fn flush(&self) -> io::Result<()> {
        self.initiator.flush().map_err(io::Error::other)
    }
}
