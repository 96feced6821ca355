//! The 10-byte AoE header: version and flags, error, shelf (major), slot (minor), command, tag.

use super::{check_len, room, WireError};

pub const AOE_HEADER_LEN: usize = 10;
pub const AOE_VERSION: u8 = 1;
const FLAG_RESPONSE: u8 = 0x08;
const FLAG_ERROR: u8 = 0x04;

/// The command byte of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Ata,
    QueryConfig,
    MacMaskList,
    ReserveRelease,
    /// Anything else (vendor-specific 0xf0..=0xff or unassigned).
    Other(u8),
}

impl From<u8> for Command {
    fn from(v: u8) -> Self {
        match v {
            0 => Command::Ata,
            1 => Command::QueryConfig,
            2 => Command::MacMaskList,
            3 => Command::ReserveRelease,
            other => Command::Other(other),
        }
    }
}

impl From<Command> for u8 {
    fn from(c: Command) -> u8 {
        match c {
            Command::Ata => 0,
            Command::QueryConfig => 1,
            Command::MacMaskList => 2,
            Command::ReserveRelease => 3,
            Command::Other(v) => v,
        }
    }
}

/// The error codes a response with the E flag carries (AoEr11 section 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AoeError {
    #[error("unrecognized command code")]
    UnrecognizedCommand,
    #[error("bad argument parameter")]
    BadArgument,
    #[error("device unavailable")]
    DeviceUnavailable,
    #[error("config string present")]
    ConfigStringPresent,
    #[error("unsupported version")]
    UnsupportedVersion,
    #[error("target is reserved")]
    TargetReserved,
    #[error("error code {0}")]
    Other(u8),
}

impl From<u8> for AoeError {
    fn from(v: u8) -> Self {
        match v {
            1 => AoeError::UnrecognizedCommand,
            2 => AoeError::BadArgument,
            3 => AoeError::DeviceUnavailable,
            4 => AoeError::ConfigStringPresent,
            5 => AoeError::UnsupportedVersion,
            6 => AoeError::TargetReserved,
            other => AoeError::Other(other),
        }
    }
}

impl From<AoeError> for u8 {
    fn from(e: AoeError) -> u8 {
        match e {
            AoeError::UnrecognizedCommand => 1,
            AoeError::BadArgument => 2,
            AoeError::DeviceUnavailable => 3,
            AoeError::ConfigStringPresent => 4,
            AoeError::UnsupportedVersion => 5,
            AoeError::TargetReserved => 6,
            AoeError::Other(v) => v,
        }
    }
}

/// The common AoE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// Protocol version (high nibble of byte 0); only 1 is defined.
    pub version: u8,
    /// R flag: this frame is a response.
    pub response: bool,
    /// E flag with its error code.
    pub error: Option<AoeError>,
    pub shelf: u16,
    pub slot: u8,
    pub command: Command,
    pub tag: u32,
}

impl HeaderRepr {
    /// A version-1 request header.
    pub fn request(shelf: u16, slot: u8, command: Command, tag: u32) -> Self {
        HeaderRepr {
            version: AOE_VERSION,
            response: false,
            error: None,
            shelf,
            slot,
            command,
            tag,
        }
    }

    /// The response header for this request: R set, addressed from `shelf`/`slot`.
    pub fn reply(&self, shelf: u16, slot: u8, error: Option<AoeError>) -> Self {
        HeaderRepr {
            version: AOE_VERSION,
            response: true,
            error,
            shelf,
            slot,
            command: self.command,
            tag: self.tag,
        }
    }

    /// Parses the header; the version is reported, not checked (the target must answer an
    /// unknown version with `AoeError::UnsupportedVersion`).
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), WireError> {
        check_len("AoE header", bytes, AOE_HEADER_LEN)?;
        let flags = bytes[0] & 0x0f;
        let repr = HeaderRepr {
            version: bytes[0] >> 4,
            response: flags & FLAG_RESPONSE != 0,
            error: (flags & FLAG_ERROR != 0).then(|| AoeError::from(bytes[1])),
            shelf: u16::from_be_bytes([bytes[2], bytes[3]]),
            slot: bytes[4],
            command: Command::from(bytes[5]),
            tag: u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]),
        };
        Ok((repr, &bytes[AOE_HEADER_LEN..]))
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let out = room("AoE header", buf, AOE_HEADER_LEN)?;
        let mut flags = 0;
        if self.response {
            flags |= FLAG_RESPONSE;
        }
        if self.error.is_some() {
            flags |= FLAG_ERROR;
        }
        out[0] = (self.version << 4) | flags;
        out[1] = self.error.map_or(0, u8::from);
        out[2..4].copy_from_slice(&self.shelf.to_be_bytes());
        out[4] = self.slot;
        out[5] = self.command.into();
        out[6..10].copy_from_slice(&self.tag.to_be_bytes());
        Ok(AOE_HEADER_LEN)
    }
}
