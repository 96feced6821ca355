//! A whole AoE frame: Ethernet header, AoE header and the command body, parsed and emitted in
//! one step. This is what the target and initiator exchange.

use super::{
    AtaRepr, Command, ConfigRepr, EthernetRepr, HeaderRepr, Mac, MacMaskRepr, ReserveRepr,
    WireError, AOE_VERSION, ETHERTYPE_AOE, FRAME_HEADER_LEN,
};

/// The command-specific part of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// ATA registers and the data that follows them (may include Ethernet padding).
    Ata {
        ata: AtaRepr,
        data: &'a [u8],
    },
    Config(ConfigRepr<'a>),
    MacMask(MacMaskRepr),
    Reserve(ReserveRepr),
    /// A command this crate does not interpret, or an error response whose body is absent.
    Raw(&'a [u8]),
}

/// One AoE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub dst: Mac,
    pub src: Mac,
    pub header: HeaderRepr,
    pub body: Body<'a>,
}

impl<'a> Message<'a> {
    /// Parses a whole frame. Frames of another EtherType or AoE version are errors; so is a
    /// body too short for its command (except in error responses, which keep it as `Raw`).
    pub fn parse(frame: &'a [u8]) -> Result<Self, WireError> {
        let (eth, rest) = EthernetRepr::parse(frame)?;
        if eth.ethertype != ETHERTYPE_AOE {
            return Err(WireError::NotAoe(eth.ethertype));
        }
        let (header, payload) = HeaderRepr::parse(rest)?;
        if header.version != AOE_VERSION {
            return Err(WireError::UnsupportedVersion(header.version));
        }
        let body = match Self::parse_body(header.command, payload) {
            Ok(body) => body,
            Err(_) if header.error.is_some() => Body::Raw(payload),
            Err(e) => return Err(e),
        };
        Ok(Message {
            dst: eth.dst,
            src: eth.src,
            header,
            body,
        })
    }

    fn parse_body(command: Command, payload: &'a [u8]) -> Result<Body<'a>, WireError> {
        Ok(match command {
            Command::Ata => {
                let (ata, data) = AtaRepr::parse(payload)?;
                Body::Ata { ata, data }
            }
            Command::QueryConfig => Body::Config(ConfigRepr::parse(payload)?),
            Command::MacMaskList => Body::MacMask(MacMaskRepr::parse(payload)?),
            Command::ReserveRelease => Body::Reserve(ReserveRepr::parse(payload)?),
            Command::Other(_) => Body::Raw(payload),
        })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        FRAME_HEADER_LEN
            + match &self.body {
                Body::Ata { data, .. } => super::ATA_HEADER_LEN + data.len(),
                Body::Config(c) => c.buffer_len(),
                Body::MacMask(m) => m.buffer_len(),
                Body::Reserve(r) => r.buffer_len(),
                Body::Raw(raw) => raw.len(),
            }
    }

    /// Writes the frame into `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let need = self.buffer_len();
        let have = buf.len();
        let out = buf.get_mut(..need).ok_or(WireError::BufferTooSmall {
            what: "AoE frame",
            need,
            have,
        })?;
        let eth = EthernetRepr {
            dst: self.dst,
            src: self.src,
            ethertype: ETHERTYPE_AOE,
        };
        let mut at = eth.emit(out)?;
        at += self.header.emit(&mut out[at..])?;
        let body = &mut out[at..];
        match &self.body {
            Body::Ata { ata, data } => {
                let n = ata.emit(body)?;
                body[n..n + data.len()].copy_from_slice(data);
            }
            Body::Config(c) => {
                c.emit(body)?;
            }
            Body::MacMask(m) => {
                m.emit(body)?;
            }
            Body::Reserve(r) => {
                r.emit(body)?;
            }
            Body::Raw(raw) => body[..raw.len()].copy_from_slice(raw),
        }
        Ok(need)
    }
}
