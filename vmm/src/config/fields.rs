//! The per-field parsers behind both configuration front ends: sizes, counts, disks (files and
//! AoE addresses), MAC addresses and NICs. Each returns a [`ConfigError`] naming its field.

use std::path::PathBuf;

use super::{err, ConfigError, DiskConfig, DiskSource, NetConfig, TapSource};

/// Default guest RAM when `mem` is not given.
pub const DEFAULT_MEM: u64 = 256 << 20;
/// Most vCPUs the MP table and APIC ID space here allow.
pub const MAX_VCPUS: u8 = 64;
/// Most disks plus nets (PCI slots 1..=30 minus rng).
pub const MAX_DEVICES: usize = 24;

/// Parses a size like `256M`, `1G`, `65536` or `64K` into bytes.
pub fn parse_size(field: &str, s: &str) -> Result<u64, ConfigError> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| err(field, format!("`{s}` is not a size like 256M")))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| err(field, format!("`{s}` is too large")))
}

pub(super) fn parse_mem(s: &str) -> Result<u64, ConfigError> {
    let bytes = parse_size("mem", s)?;
    if bytes < (16 << 20) {
        return Err(err("mem", format!("`{s}` is below the 16M minimum")));
    }
    if bytes > (1 << 40) {
        return Err(err("mem", format!("`{s}` is above the 1T maximum")));
    }
    if bytes % 4096 != 0 {
        return Err(err("mem", format!("`{s}` is not a multiple of 4K")));
    }
    Ok(bytes)
}

pub(super) fn parse_vcpus(s: &str) -> Result<u8, ConfigError> {
    let n: u8 = s.trim().parse().map_err(|_| {
        err(
            "vcpus",
            format!("`{s}` is not a number from 1 to {MAX_VCPUS}"),
        )
    })?;
    if n == 0 || n > MAX_VCPUS {
        return Err(err("vcpus", format!("`{s}` is not from 1 to {MAX_VCPUS}")));
    }
    Ok(n)
}

/// Parses `aoe:IFACE:SHELF.SLOT`.
fn parse_aoe(spec: &str) -> Result<DiskSource, ConfigError> {
    let bad = || err("disk", format!("`{spec}` is not aoe:IFACE:SHELF.SLOT"));
    let rest = spec.strip_prefix("aoe:").ok_or_else(bad)?;
    let (iface, addr) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (shelf, slot) = addr.split_once('.').ok_or_else(bad)?;
    if iface.is_empty() || iface.len() >= 16 {
        return Err(bad());
    }
    Ok(DiskSource::Aoe {
        iface: iface.to_string(),
        shelf: shelf
            .parse()
            .ok()
            .filter(|s| *s != 0xffff)
            .ok_or_else(bad)?,
        slot: slot.parse().ok().filter(|s| *s != 0xff).ok_or_else(bad)?,
    })
}

/// Parses `PATH[,ro][,serial=S]` or `aoe:IFACE:SHELF.SLOT[,ro][,serial=S]`.
pub fn parse_disk(s: &str) -> Result<DiskConfig, ConfigError> {
    let mut parts = s.split(',');
    let path = parts.next().unwrap_or_default();
    if path.is_empty() {
        return Err(err("disk", "empty path"));
    }
    let source = if path.starts_with("aoe:") {
        parse_aoe(path)?
    } else {
        DiskSource::File(PathBuf::from(path))
    };
    let mut disk = DiskConfig {
        source,
        read_only: false,
        serial: None,
    };
    for opt in parts {
        match opt.split_once('=') {
            None if opt == "ro" => disk.read_only = true,
            None if opt == "rw" => disk.read_only = false,
            Some(("serial", v)) if v.len() <= 20 => disk.serial = Some(v.to_string()),
            Some(("serial", v)) => {
                return Err(err("disk", format!("serial `{v}` is longer than 20 bytes")));
            }
            _ => return Err(err("disk", format!("unknown option `{opt}` in `{s}`"))),
        }
    }
    Ok(disk)
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(field: &str, s: &str) -> Result<[u8; 6], ConfigError> {
    let bad = || {
        err(
            field,
            format!("`{s}` is not a MAC address like 52:54:00:12:34:56"),
        )
    };
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        return Err(err(field, format!("`{s}` is a multicast address")));
    }
    Ok(mac)
}

/// Parses `tap=NAME,mac=M` or `fd=N,mac=M`.
pub fn parse_net(s: &str) -> Result<NetConfig, ConfigError> {
    let mut tap = None;
    let mut mac = None;
    for opt in s.split(',') {
        match opt.split_once('=') {
            Some(("tap", name)) if !name.is_empty() && name.len() < 16 => {
                tap = Some(TapSource::Name(name.to_string()));
            }
            Some(("tap", name)) => {
                return Err(err("net", format!("tap name `{name}` must be 1-15 bytes")));
            }
            Some(("fd", n)) => {
                let fd = n
                    .parse::<i32>()
                    .ok()
                    .filter(|fd| *fd >= 0)
                    .ok_or_else(|| err("net", format!("fd `{n}` is not a file descriptor")))?;
                tap = Some(TapSource::Fd(fd));
            }
            Some(("mac", m)) => mac = Some(parse_mac("net", m)?),
            _ => return Err(err("net", format!("unknown option `{opt}` in `{s}`"))),
        }
    }
    Ok(NetConfig {
        tap: tap.ok_or_else(|| err("net", format!("`{s}` names no tap= or fd=")))?,
        mac: mac.ok_or_else(|| err("net", format!("`{s}` has no mac=")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aoe_disks_parse_and_bad_addresses_name_the_field() {
        let d = parse_disk("aoe:eth1:12.3,ro").unwrap();
        assert_eq!(
            d.source,
            DiskSource::Aoe {
                iface: "eth1".into(),
                shelf: 12,
                slot: 3
            }
        );
        assert!(d.read_only);
        for bad in [
            "aoe:eth1",
            "aoe::1.2",
            "aoe:eth1:1",
            "aoe:eth1:65535.1",
            "aoe:eth1:1.255",
        ] {
            assert_eq!(parse_disk(bad).unwrap_err().field, "disk", "{bad}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("mem", "64K").unwrap(), 65536);
        assert_eq!(parse_size("mem", "1G").unwrap(), 1 << 30);
        assert!(parse_size("mem", "99999999999999G").is_err());
    }
}
