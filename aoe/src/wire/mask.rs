//! The MAC Mask List body (AoEr11 section 3.3): read or edit the list of initiator MACs a
//! target answers, as a sequence of 8-byte directives.

use super::{check_len, room, Mac, WireError};

const MASK_HEADER_LEN: usize = 4;
const DIRECTIVE_LEN: usize = 8;
/// MError: unspecified error.
pub const MASK_ERROR_UNSPEC: u8 = 1;
/// MError: bad directive command.
pub const MASK_ERROR_BAD_DCMD: u8 = 2;
/// MError: the mask list is full.
pub const MASK_ERROR_LIST_FULL: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacMaskCommand {
    Read,
    Edit,
}

/// One directive: what to do with one MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectiveCommand {
    None,
    Add,
    Delete,
    /// Unassigned code, kept so the target can answer "bad directive".
    Other(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directive {
    pub command: DirectiveCommand,
    pub mac: Mac,
}

/// A MAC Mask List request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacMaskRepr {
    pub command: MacMaskCommand,
    /// MError in responses (0 = none).
    pub error: u8,
    pub directives: Vec<Directive>,
}

impl MacMaskRepr {
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        check_len("MAC Mask List header", bytes, MASK_HEADER_LEN)?;
        let command = match bytes[1] {
            0 => MacMaskCommand::Read,
            1 => MacMaskCommand::Edit,
            code => {
                return Err(WireError::UnknownCode {
                    what: "MAC mask command",
                    code,
                })
            }
        };
        let count = usize::from(bytes[3]);
        check_len(
            "MAC mask directives",
            bytes,
            MASK_HEADER_LEN + count * DIRECTIVE_LEN,
        )?;
        let directives = bytes[MASK_HEADER_LEN..]
            .chunks_exact(DIRECTIVE_LEN)
            .take(count)
            .map(|d| {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&d[2..8]);
                Directive {
                    command: match d[1] {
                        0 => DirectiveCommand::None,
                        1 => DirectiveCommand::Add,
                        2 => DirectiveCommand::Delete,
                        other => DirectiveCommand::Other(other),
                    },
                    mac: Mac(mac),
                }
            })
            .collect();
        Ok(MacMaskRepr {
            command,
            error: bytes[2],
            directives,
        })
    }

    pub fn buffer_len(&self) -> usize {
        MASK_HEADER_LEN + self.directives.len() * DIRECTIVE_LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let count = u8::try_from(self.directives.len()).map_err(|_| WireError::TooManyEntries {
            what: "MAC mask list",
            count: self.directives.len(),
        })?;
        let len = self.buffer_len();
        let out = room("MAC Mask List", buf, len)?;
        out[0] = 0;
        out[1] = match self.command {
            MacMaskCommand::Read => 0,
            MacMaskCommand::Edit => 1,
        };
        out[2] = self.error;
        out[3] = count;
        for (d, o) in self
            .directives
            .iter()
            .zip(out[MASK_HEADER_LEN..].chunks_exact_mut(DIRECTIVE_LEN))
        {
            o[0] = 0;
            o[1] = match d.command {
                DirectiveCommand::None => 0,
                DirectiveCommand::Add => 1,
                DirectiveCommand::Delete => 2,
                DirectiveCommand::Other(v) => v,
            };
            o[2..8].copy_from_slice(&d.mac.0);
        }
        Ok(len)
    }
}
