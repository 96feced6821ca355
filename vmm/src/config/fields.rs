//! The command line's per-flag parsers: sizes, counts, disks (files and AoE addresses), NICs and
//! named choices, each into its [`VmmConfig`](super::VmmConfig) field. Each returns a
//! [`ConfigError`] naming its flag; limits (ranges, lengths) are [`super::check`]'s.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use mallee_proto::Mac;
use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::Deserialize;

use super::{err, ConfigError, Disk, DiskSource, GuestAddress, Nic, SystemIdentity, TapSource};

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

/// `--mem`: a size in whole MiB.
pub(super) fn parse_mem(s: &str) -> Result<u64, ConfigError> {
    let bytes = parse_size("mem", s)?;
    if bytes % (1 << 20) != 0 {
        return Err(err("mem", format!("`{s}` is not a whole number of MiB")));
    }
    Ok(bytes >> 20)
}

/// `--vcpus`: a count (its range is checked with the rest of the configuration).
pub(super) fn parse_vcpus(s: &str) -> Result<u8, ConfigError> {
    s.trim().parse().map_err(|_| {
        err(
            "vcpus",
            format!("`{s}` is not a number from 1 to {}", super::MAX_VCPUS),
        )
    })
}

/// `--volume-slots N`.
pub(super) fn parse_volume_slots(s: &str) -> Result<u8, ConfigError> {
    s.trim().parse().map_err(|_| {
        err(
            "volume_slots",
            format!(
                "`{s}` is not a number from 0 to {}",
                super::MAX_VOLUME_SLOTS
            ),
        )
    })
}

/// A named choice (`--on-reboot restart`, `--log-level debug`) spelled as in the JSON form.
pub(super) fn parse_choice<'de, T: Deserialize<'de>>(
    field: &str,
    s: &'de str,
) -> Result<T, ConfigError> {
    T::deserialize(StrDeserializer::<ValueError>::new(s)).map_err(|e| err(field, e.to_string()))
}

/// Parses `aoe:IFACE:SHELF.SLOT`.
fn parse_aoe(spec: &str) -> Result<DiskSource, ConfigError> {
    let bad = || err("disk", format!("`{spec}` is not aoe:IFACE:SHELF.SLOT"));
    let rest = spec.strip_prefix("aoe:").ok_or_else(bad)?;
    let (iface, addr) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (shelf, slot) = addr.split_once('.').ok_or_else(bad)?;
    Ok(DiskSource::Aoe {
        iface: iface.to_string(),
        shelf: shelf.parse().map_err(|_| bad())?,
        slot: slot.parse().map_err(|_| bad())?,
    })
}

/// `--disk`: `PATH[,ro][,serial=S][,base=BASE]` or `aoe:IFACE:SHELF.SLOT[,ro][,serial=S]`;
/// `base=` makes PATH a copy-on-write top over the read-only image BASE.
pub(super) fn parse_disk(s: &str) -> Result<Disk, ConfigError> {
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
    let mut disk = Disk {
        source,
        serial: None,
        read_only: false,
    };
    for opt in parts {
        match opt.split_once('=') {
            None if opt == "ro" => disk.read_only = true,
            None if opt == "rw" => disk.read_only = false,
            Some(("serial", v)) => disk.serial = Some(v.to_string()),
            Some(("base", v)) if !v.is_empty() => match &disk.source {
                DiskSource::File(top) => {
                    disk.source = DiskSource::Overlay {
                        base: PathBuf::from(v),
                        top: top.clone(),
                    }
                }
                _ => return Err(err("disk", format!("`base=` needs a file top in `{s}`"))),
            },
            _ => return Err(err("disk", format!("unknown option `{opt}` in `{s}`"))),
        }
    }
    Ok(disk)
}

/// `--net`: `tap=NAME,mac=M` or `fd=N,mac=M`, then optionally the guest's address and its DHCP
/// answer: `ip=A/PREFIX[,gw=G][,dns=D]...[,hostname=H]`.
pub(super) fn parse_net(s: &str) -> Result<Nic, ConfigError> {
    let mut tap = None;
    let mut mac = None;
    let mut ip: Option<(Ipv4Addr, u8)> = None;
    let (mut gateway, mut dns, mut hostname) = (None, Vec::new(), None);
    let addr = |v: &str| {
        v.parse::<Ipv4Addr>()
            .map_err(|_| err("net", format!("`{v}` is not an IPv4 address")))
    };
    for opt in s.split(',') {
        match opt.split_once('=') {
            Some(("tap", name)) => tap = Some(TapSource::Name(name.to_string())),
            Some(("fd", n)) => {
                let fd = n
                    .parse::<i32>()
                    .map_err(|_| err("net", format!("fd `{n}` is not a file descriptor")))?;
                tap = Some(TapSource::Fd(fd));
            }
            Some(("mac", m)) => {
                mac = Some(m.parse::<Mac>().map_err(|e| err("net", e.to_string()))?);
            }
            Some(("ip", v)) => {
                let (a, p) = v
                    .split_once('/')
                    .ok_or_else(|| err("net", format!("ip `{v}` needs a /prefix")))?;
                let p = p
                    .parse::<u8>()
                    .map_err(|_| err("net", format!("`/{p}` is not a prefix length")))?;
                ip = Some((addr(a)?, p));
            }
            Some(("gw", v)) => gateway = Some(addr(v)?),
            Some(("dns", v)) => dns.push(addr(v)?),
            Some(("hostname", v)) => hostname = Some(v.to_string()),
            _ => return Err(err("net", format!("unknown option `{opt}` in `{s}`"))),
        }
    }
    let address = match ip {
        Some((address, prefix_len)) => Some(GuestAddress {
            address,
            prefix_len,
            gateway,
            dns,
            hostname,
        }),
        None if gateway.is_some() || !dns.is_empty() || hostname.is_some() => {
            return Err(err(
                "net",
                format!("`{s}`: gw=, dns= and hostname= need ip="),
            ));
        }
        None => None,
    };
    Ok(Nic {
        tap: tap.ok_or_else(|| err("net", format!("`{s}` names no tap= or fd=")))?,
        mac: mac.ok_or_else(|| err("net", format!("`{s}` has no mac=")))?,
        address,
    })
}

/// `--smbios`: `manufacturer=M,product=P,uuid=U[,serial=S][,asset-tag=T]` (values without
/// commas).
pub(super) fn parse_smbios(s: &str) -> Result<SystemIdentity, ConfigError> {
    let (mut manufacturer, mut product, mut uuid) = (None, None, None);
    let (mut serial, mut asset_tag) = (None, None);
    for opt in s.split(',') {
        match opt.split_once('=') {
            Some(("manufacturer", v)) => manufacturer = Some(v.to_string()),
            Some(("product", v)) => product = Some(v.to_string()),
            Some(("uuid", v)) => {
                let u = v
                    .parse()
                    .map_err(|e| err("smbios", format!("uuid `{v}`: {e}")))?;
                uuid = Some(u);
            }
            Some(("serial", v)) => serial = Some(v.to_string()),
            Some(("asset-tag", v)) => asset_tag = Some(v.to_string()),
            _ => return Err(err("smbios", format!("unknown option `{opt}` in `{s}`"))),
        }
    }
    let missing = |what| err("smbios", format!("`{s}` has no {what}="));
    Ok(SystemIdentity {
        manufacturer: manufacturer.ok_or_else(|| missing("manufacturer"))?,
        product: product.ok_or_else(|| missing("product"))?,
        uuid: uuid.ok_or_else(|| missing("uuid"))?,
        serial,
        asset_tag,
    })
}

#[cfg(test)]
#[path = "fields_tests.rs"]
mod tests;
