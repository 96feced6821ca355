//! The 14-byte Ethernet II header in front of every AoE frame, and the MAC address type (the workspace's one, from `mallee-mac`).

use super::{check_len, room, WireError};

pub const ETHERNET_HEADER_LEN: usize = 14;
pub const ETHERTYPE_AOE: u16 = 0x88a2;

pub use mallee_mac::Mac;

/// Destination, source and EtherType of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
}

impl EthernetRepr {
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), WireError> {
        check_len("Ethernet header", bytes, ETHERNET_HEADER_LEN)?;
        let mac = |at: usize| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&bytes[at..at + 6]);
            Mac(m)
        };
        let repr = EthernetRepr {
            dst: mac(0),
            src: mac(6),
            ethertype: u16::from_be_bytes([bytes[12], bytes[13]]),
        };
        Ok((repr, &bytes[ETHERNET_HEADER_LEN..]))
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let out = room("Ethernet header", buf, ETHERNET_HEADER_LEN)?;
        out[0..6].copy_from_slice(&self.dst.0);
        out[6..12].copy_from_slice(&self.src.0);
        out[12..14].copy_from_slice(&self.ethertype.to_be_bytes());
        Ok(ETHERNET_HEADER_LEN)
    }
}
