//! The 14-byte Ethernet II header in front of every AoE frame, and the MAC address type.

use super::{check_len, room, WireError};
use std::fmt;

pub const ETHERNET_HEADER_LEN: usize = 14;
pub const ETHERTYPE_AOE: u16 = 0x88a2;

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts
                .next()
                .ok_or_else(|| format!("MAC {s:?} has fewer than 6 octets"))?;
            *b = u8::from_str_radix(p, 16).map_err(|e| format!("MAC {s:?}: {e}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("MAC {s:?} has more than 6 octets"));
        }
        Ok(Mac(out))
    }
}

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
