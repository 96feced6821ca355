//! The Query Config body (AoEr11 section 3.2): buffer count, firmware version, sectors per
//! command, AoE version, config command and a config string of at most 1024 bytes.

use super::{check_len, room, WireError};

pub const CONFIG_HEADER_LEN: usize = 8;
pub const MAX_CONFIG_LEN: usize = 1024;

/// What a Query Config request asks of the config string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigCommand {
    /// Read the config string.
    Read,
    /// Answer only if the string matches exactly.
    Test,
    /// Answer only if the request's string is a prefix of the target's.
    TestPrefix,
    /// Set the string if none is set yet.
    Set,
    /// Set the string unconditionally.
    ForceSet,
}

impl TryFrom<u8> for ConfigCommand {
    type Error = WireError;
    fn try_from(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            0 => ConfigCommand::Read,
            1 => ConfigCommand::Test,
            2 => ConfigCommand::TestPrefix,
            3 => ConfigCommand::Set,
            4 => ConfigCommand::ForceSet,
            code => {
                return Err(WireError::UnknownCode {
                    what: "config command",
                    code,
                })
            }
        })
    }
}

impl From<ConfigCommand> for u8 {
    fn from(c: ConfigCommand) -> u8 {
        match c {
            ConfigCommand::Read => 0,
            ConfigCommand::Test => 1,
            ConfigCommand::TestPrefix => 2,
            ConfigCommand::Set => 3,
            ConfigCommand::ForceSet => 4,
        }
    }
}

/// A Query Config request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigRepr<'a> {
    /// Frames the target can queue.
    pub buffer_count: u16,
    pub firmware_version: u16,
    /// Maximum sectors in one ATA frame.
    pub sector_count: u8,
    /// AoE protocol version the target speaks (high nibble of byte 5).
    pub aoe_version: u8,
    pub command: ConfigCommand,
    pub config: &'a [u8],
}

impl<'a> ConfigRepr<'a> {
    /// A request with zeroed target fields.
    pub fn request(command: ConfigCommand, config: &'a [u8]) -> Self {
        ConfigRepr {
            buffer_count: 0,
            firmware_version: 0,
            sector_count: 0,
            aoe_version: 0,
            command,
            config,
        }
    }

    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        check_len("Query Config header", bytes, CONFIG_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([bytes[6], bytes[7]]));
        if len > MAX_CONFIG_LEN {
            return Err(WireError::ConfigTooLong(len));
        }
        check_len("config string", bytes, CONFIG_HEADER_LEN + len)?;
        Ok(ConfigRepr {
            buffer_count: u16::from_be_bytes([bytes[0], bytes[1]]),
            firmware_version: u16::from_be_bytes([bytes[2], bytes[3]]),
            sector_count: bytes[4],
            aoe_version: bytes[5] >> 4,
            command: ConfigCommand::try_from(bytes[5] & 0x0f)?,
            config: &bytes[CONFIG_HEADER_LEN..CONFIG_HEADER_LEN + len],
        })
    }

    pub fn buffer_len(&self) -> usize {
        CONFIG_HEADER_LEN + self.config.len()
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.config.len() > MAX_CONFIG_LEN {
            return Err(WireError::ConfigTooLong(self.config.len()));
        }
        let len = self.buffer_len();
        let out = room("Query Config", buf, len)?;
        out[0..2].copy_from_slice(&self.buffer_count.to_be_bytes());
        out[2..4].copy_from_slice(&self.firmware_version.to_be_bytes());
        out[4] = self.sector_count;
        out[5] = (self.aoe_version << 4) | u8::from(self.command);
        // Length checked against MAX_CONFIG_LEN above, so it fits in u16.
        out[6..8].copy_from_slice(&(self.config.len() as u16).to_be_bytes());
        out[CONFIG_HEADER_LEN..len].copy_from_slice(self.config);
        Ok(len)
    }
}
