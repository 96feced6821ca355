//! AoE v1 wire format (Coraid AoEr11): the Ethernet framing, the common AoE header and the
//! four command bodies (ATA, Query Config, MAC Mask List, Reserve/Release).
//!
//! Each body is a `Repr` (what the bytes mean) with `parse` over a byte slice and `emit` into a
//! caller's buffer; both check every length and return a [`WireError`] instead of panicking.
//! [`Message`] ties the layers together for the target and the initiator. This module knows
//! nothing of sockets, block devices or ATA semantics (that is `target::ata`).

mod ata;
mod config;
mod ethernet;
mod header;
mod mask;
mod message;
mod reserve;

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;

pub use ata::{AtaRepr, AFLAG_ASYNC, AFLAG_DEVICE, AFLAG_EXTENDED, AFLAG_WRITE, ATA_HEADER_LEN};
pub use config::{ConfigCommand, ConfigRepr, CONFIG_HEADER_LEN, MAX_CONFIG_LEN};
pub use ethernet::{EthernetRepr, Mac, ETHERNET_HEADER_LEN, ETHERTYPE_AOE};
pub use header::{AoeError, Command, HeaderRepr, AOE_HEADER_LEN, AOE_VERSION};
pub use mask::{
    Directive, DirectiveCommand, MacMaskCommand, MacMaskRepr, MASK_ERROR_BAD_DCMD,
    MASK_ERROR_LIST_FULL, MASK_ERROR_UNSPEC,
};
pub use message::{Body, Message};
pub use reserve::{ReserveCommand, ReserveRepr};

/// Bytes before any command body: Ethernet header plus AoE header.
pub const FRAME_HEADER_LEN: usize = ETHERNET_HEADER_LEN + AOE_HEADER_LEN;

/// What was wrong with a frame being parsed or a buffer being emitted into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{what} truncated: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("EtherType {0:#06x} is not AoE (0x88a2)")]
    NotAoe(u16),
    #[error("AoE version {0} is not supported (only 1)")]
    UnsupportedVersion(u8),
    #[error("config string of {0} bytes exceeds the 1024-byte limit")]
    ConfigTooLong(usize),
    #[error("unknown {what} code {code}")]
    UnknownCode { what: &'static str, code: u8 },
    #[error("{what} has {count} entries, more than the 255 a count byte can carry")]
    TooManyEntries { what: &'static str, count: usize },
    #[error("buffer of {have} bytes too small to emit {what} ({need} bytes)")]
    BufferTooSmall {
        what: &'static str,
        need: usize,
        have: usize,
    },
}

/// Returns `Truncated` unless `bytes` holds at least `need` bytes.
pub(crate) fn check_len(what: &'static str, bytes: &[u8], need: usize) -> Result<(), WireError> {
    if bytes.len() < need {
        return Err(WireError::Truncated {
            what,
            need,
            have: bytes.len(),
        });
    }
    Ok(())
}

/// Returns the first `need` bytes of `buf` for emitting, or `BufferTooSmall`.
pub(crate) fn room<'b>(
    what: &'static str,
    buf: &'b mut [u8],
    need: usize,
) -> Result<&'b mut [u8], WireError> {
    let have = buf.len();
    buf.get_mut(..need)
        .ok_or(WireError::BufferTooSmall { what, need, have })
}
