//! The Reserve/Release body (AoEr11 section 3.4): read or set the list of MACs a target is
//! reserved to.

use super::{check_len, room, Mac, WireError};

const RESERVE_HEADER_LEN: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveCommand {
    /// Read the reserve list.
    Read,
    /// Set it (only when unreserved or asked by a member); an empty list releases.
    Set,
    /// Set it regardless of the current reservation.
    ForceSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveRepr {
    pub command: ReserveCommand,
    pub macs: Vec<Mac>,
}

impl ReserveRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        check_len("Reserve/Release header", bytes, RESERVE_HEADER_LEN)?;
        let command = match bytes[0] {
            0 => ReserveCommand::Read,
            1 => ReserveCommand::Set,
            2 => ReserveCommand::ForceSet,
            code => {
                return Err(WireError::UnknownCode {
                    what: "reserve command",
                    code,
                })
            }
        };
        let count = usize::from(bytes[1]);
        check_len("reserve list", bytes, RESERVE_HEADER_LEN + count * 6)?;
        let macs = bytes[RESERVE_HEADER_LEN..]
            .chunks_exact(6)
            .take(count)
            .map(|m| {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(m);
                Mac(mac)
            })
            .collect();
        Ok(ReserveRepr { command, macs })
    }

    pub fn buffer_len(&self) -> usize {
        RESERVE_HEADER_LEN + self.macs.len() * 6
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let count = u8::try_from(self.macs.len()).map_err(|_| WireError::TooManyEntries {
            what: "reserve list",
            count: self.macs.len(),
        })?;
        let len = self.buffer_len();
        let out = room("Reserve/Release", buf, len)?;
        out[0] = match self.command {
            ReserveCommand::Read => 0,
            ReserveCommand::Set => 1,
            ReserveCommand::ForceSet => 2,
        };
        out[1] = count;
        for (mac, o) in self
            .macs
            .iter()
            .zip(out[RESERVE_HEADER_LEN..].chunks_exact_mut(6))
        {
            o.copy_from_slice(&mac.0);
        }
        Ok(len)
    }
}
