//! The 48-bit Ethernet (MAC) address: one type for AoE frames, DHCP leases, NICs, taps and the
//! node protocol, written the way Linux and EC2 write it (`52:54:00:0a:0b:0c`, lowercase).

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

/// Why a text is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address like 52:54:00:12:34:56")]
pub struct BadMac(pub String);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// The address in the first six bytes of `bytes` (an Ethernet header field).
    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        Some(Mac(bytes.get(..6)?.try_into().ok()?))
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit set: the address names many stations and can never be a NIC's own.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Locally administered (the bit every generated address sets).
    pub fn is_local(&self) -> bool {
        self.0[0] & 2 != 0
    }

    /// The twelve hex digits with no separators (`5254000a0b0c`), as in node ids.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Logs and assertion messages show the text form (`52:54:00:12:34:56`), not the bytes.
impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
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

/// Six two-digit hex octets separated by `:` (or `-`, as Windows and PXE firmware write them);
/// either case. Surrounding whitespace (a sysfs `address` file's newline) is ignored.
impl FromStr for Mac {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let bad = || BadMac(s.to_owned());
        let text = s.trim();
        let sep = if text.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = text.split(sep);
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl From<[u8; 6]> for Mac {
    fn from(b: [u8; 6]) -> Self {
        Mac(b)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(m: Mac) -> Self {
        m.0
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_either_case_and_separator_and_prints_lowercase_colons() {
        let m: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(m, Mac([0x52, 0x54, 0, 0xab, 0xcd, 1]));
        assert_eq!(m.to_string(), "52:54:00:ab:cd:01");
        assert_eq!("52-54-00-ab-cd-01\n".parse::<Mac>().unwrap(), m);
        assert_eq!(m.hex(), "525400abcd01");
    }

    #[test]
    fn rejects_wrong_shapes() {
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "52:54:00:ab:cd:zz",
            "52:54:00:ab:cd:1",
            "52:54:00:ab:cd:+1",
            "525:4:00:ab:cd:01",
            "52:54-00:ab:cd:01",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn serde_is_the_text_form() {
        let m = Mac([2, 0, 0, 0, 0, 1]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"02:00:00:00:00:01\"");
        assert_eq!(serde_json::from_str::<Mac>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Mac>("\"02:00\"").is_err());
    }

    #[test]
    fn bits_and_slices() {
        assert!(Mac::BROADCAST.is_broadcast() && Mac::BROADCAST.is_multicast());
        assert!(Mac([2, 0, 0, 0, 0, 1]).is_local());
        assert!(!Mac([0x00, 0x1b, 0x21, 0, 0, 1]).is_local());
        assert_eq!(
            Mac::from_slice(&[1, 2, 3, 4, 5, 6, 7]),
            Some(Mac([1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(Mac::from_slice(&[1, 2, 3]), None);
    }
}
