//! The 12-byte ATA command/response header (AoEr11 section 3.1); the data follows it.

use super::{check_len, room, WireError};

pub const ATA_HEADER_LEN: usize = 12;
/// E: LBA48 extended command.
pub const AFLAG_EXTENDED: u8 = 0x40;
/// D: device/head register bit.
pub const AFLAG_DEVICE: u8 = 0x10;
/// A: asynchronous write (no response wanted until written).
pub const AFLAG_ASYNC: u8 = 0x02;
/// W: the frame carries data to write.
pub const AFLAG_WRITE: u8 = 0x01;

/// ATA registers carried in an AoE ATA frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtaRepr {
    pub aflags: u8,
    /// Feature register in requests, error register in responses.
    pub err_feature: u8,
    pub sector_count: u8,
    /// Command register in requests, status register in responses.
    pub cmd_status: u8,
    /// 48-bit LBA (bytes are little-endian on the wire).
    pub lba: u64,
}

impl AtaRepr {
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), WireError> {
        check_len("ATA header", bytes, ATA_HEADER_LEN)?;
        let mut lba = [0u8; 8];
        lba[..6].copy_from_slice(&bytes[4..10]);
        let repr = AtaRepr {
            aflags: bytes[0],
            err_feature: bytes[1],
            sector_count: bytes[2],
            cmd_status: bytes[3],
            lba: u64::from_le_bytes(lba),
        };
        Ok((repr, &bytes[ATA_HEADER_LEN..]))
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let out = room("ATA header", buf, ATA_HEADER_LEN)?;
        out[0] = self.aflags;
        out[1] = self.err_feature;
        out[2] = self.sector_count;
        out[3] = self.cmd_status;
        out[4..10].copy_from_slice(&self.lba.to_le_bytes()[..6]);
        out[10] = 0;
        out[11] = 0;
        Ok(ATA_HEADER_LEN)
    }

    pub fn is_extended(&self) -> bool {
        self.aflags & AFLAG_EXTENDED != 0
    }

    pub fn is_write(&self) -> bool {
        self.aflags & AFLAG_WRITE != 0
    }
}
