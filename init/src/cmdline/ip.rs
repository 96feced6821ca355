//! The kernel's own `ip=` parameter, read for a guest that no DHCP server answers (one run by a
//! VMM other than ours): its nfsroot form
//! `ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip>:<ntp0-ip>`
//! (trailing fields optional), as the kernel's `Documentation/admin-guide/nfs/nfsroot.rst`
//! describes it. Only the static form becomes a [`StaticIp`]: a client address with autoconf
//! `off`, `none` or empty. Every other valid value (`ip=dhcp`, `ip=on`, a form that asks for
//! autoconfiguration) leaves the NIC to DHCP, as no `ip=` does. The server and NTP addresses
//! are checked but not used. Applying the result is [`crate::net::static_ip`]'s job.

use std::net::Ipv4Addr;

/// A NIC's static configuration from `ip=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub address: Ipv4Addr,
    /// From the netmask; the address's class (8, 16 or 24) when the netmask is empty, as the
    /// kernel does.
    pub prefix: u8,
    /// The default route's next hop.
    pub gateway: Option<Ipv4Addr>,
    /// The part of the hostname field before its first `.` (the rest is a NIS domain).
    pub hostname: Option<String>,
    /// `None`: the first wired NIC.
    pub device: Option<String>,
    /// dns0 and dns1, those given.
    pub dns: Vec<Ipv4Addr>,
}

/// What is wrong with an `ip=` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpParamError {
    #[error("{0} fields (expected at most 10)")]
    TooManyFields(usize),
    #[error("bad {field} {text:?} (expected an IPv4 address)")]
    Address { field: &'static str, text: String },
    #[error("bad netmask {0:?} (expected a contiguous one such as 255.255.255.0)")]
    Netmask(String),
    #[error("bad hostname {0:?}")]
    Hostname(String),
    #[error("bad device {0:?} (expected an interface name)")]
    Device(String),
    #[error("bad autoconf {0:?} (expected off, none, on, any, dhcp, bootp, rarp or both)")]
    Autoconf(String),
}

/// The autoconf values that ask for static configuration.
const STATIC: [&str; 3] = ["", "off", "none"];
/// Those that ask the kernel for autoconfiguration (`dhcp` may carry `,client-id...`).
const AUTOCONF: [&str; 6] = ["on", "any", "dhcp", "bootp", "rarp", "both"];

fn is_autoconf(word: &str) -> bool {
    let protocol = word.split(',').next().unwrap_or(word);
    AUTOCONF.contains(&protocol)
}

/// The static configuration `value` (what follows `ip=`) asks for; `Ok(None)` for a valid
/// value that leaves the NIC to DHCP.
pub fn parse(value: &str) -> Result<Option<StaticIp>, IpParamError> {
    if is_autoconf(value) || STATIC[1..].contains(&value) {
        return Ok(None);
    }
    let fields: Vec<&str> = value.split(':').collect();
    if fields.len() > 10 {
        return Err(IpParamError::TooManyFields(fields.len()));
    }
    let field = |i: usize| fields.get(i).copied().unwrap_or("");
    let autoconf = field(6);
    if !STATIC.contains(&autoconf) && !is_autoconf(autoconf) {
        return Err(IpParamError::Autoconf(autoconf.to_string()));
    }
    let client = optional_address("client-ip", field(0))?;
    optional_address("server-ip", field(1))?;
    let gateway = optional_address("gw-ip", field(2))?;
    let hostname = hostname(field(4))?;
    let device = device(field(5))?;
    let dns0 = optional_address("dns0-ip", field(7))?;
    let dns1 = optional_address("dns1-ip", field(8))?;
    optional_address("ntp0-ip", field(9))?;
    let Some(address) = client.filter(|_| STATIC.contains(&autoconf)) else {
        return Ok(None);
    };
    Ok(Some(StaticIp {
        address,
        prefix: prefix(field(3), address)?,
        gateway,
        hostname,
        device,
        dns: dns0.into_iter().chain(dns1).collect(),
    }))
}

fn optional_address(field: &'static str, text: &str) -> Result<Option<Ipv4Addr>, IpParamError> {
    if text.is_empty() {
        return Ok(None);
    }
    (text.parse().map(Some)).map_err(|_| IpParamError::Address {
        field,
        text: text.to_string(),
    })
}

/// The prefix length of a contiguous netmask; the class of `address` for an empty one.
fn prefix(netmask: &str, address: Ipv4Addr) -> Result<u8, IpParamError> {
    if netmask.is_empty() {
        return Ok(match address.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        });
    }
    let bad = || IpParamError::Netmask(netmask.to_string());
    let mask = netmask.parse::<Ipv4Addr>().map_err(|_| bad())?;
    // ipnet refuses a mask that is not contiguous; an all-zero one is no subnet either.
    (ipnet::ipv4_mask_to_prefix(mask).ok())
        .filter(|&prefix| prefix > 0)
        .ok_or_else(bad)
}

fn hostname(text: &str) -> Result<Option<String>, IpParamError> {
    let name = text.split('.').next().unwrap_or("");
    match (text.is_empty(), super::is_valid_hostname(name)) {
        (true, _) => Ok(None),
        (false, true) => Ok(Some(name.to_string())),
        (false, false) => Err(IpParamError::Hostname(text.to_string())),
    }
}

/// 1-15 bytes, none of them `/` or whitespace (the `:` separates fields already).
fn device(text: &str) -> Result<Option<String>, IpParamError> {
    if text.is_empty() {
        return Ok(None);
    }
    let ok = text.len() <= 15
        && text != "."
        && text != ".."
        && !text.bytes().any(|b| b == b'/' || b.is_ascii_whitespace());
    ok.then(|| Some(text.to_string()))
        .ok_or_else(|| IpParamError::Device(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
        Ipv4Addr::new(a, b, c, d)
    }

    #[test]
    fn the_autoconf_shorthands_leave_the_nic_to_dhcp() {
        for value in ["dhcp", "on", "any", "bootp", "rarp", "both", "off", "none"] {
            assert_eq!(parse(value), Ok(None), "ip={value}");
        }
        assert_eq!(parse("dhcp,01,00:11:22:33:44:55"), Ok(None));
    }

    #[test]
    fn every_field_of_the_static_form_is_read() {
        let value = "10.0.2.15:10.0.2.2:10.0.2.2:255.255.255.0:guest.example:eth0:off:10.0.2.3:9.9.9.9:10.0.2.4";
        let got = parse(value).unwrap().unwrap();
        assert_eq!(
            got,
            StaticIp {
                address: ip(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(ip(10, 0, 2, 2)),
                hostname: Some("guest".into()),
                device: Some("eth0".into()),
                dns: vec![ip(10, 0, 2, 3), ip(9, 9, 9, 9)],
            }
        );
    }

    /// The common nfsroot line: trailing fields left off, autoconf empty.
    #[test]
    fn trailing_fields_may_be_left_off() {
        let got = parse("192.168.1.55:192.168.1.254:192.168.1.254:255.255.255.0::eth0")
            .unwrap()
            .unwrap();
        assert_eq!((got.address, got.prefix), (ip(192, 168, 1, 55), 24));
        assert_eq!(got.gateway, Some(ip(192, 168, 1, 254)));
        assert_eq!((got.hostname, got.device), (None, Some("eth0".into())));
        assert!(got.dns.is_empty());
        let bare = parse("10.1.2.3").unwrap().unwrap();
        assert_eq!((bare.prefix, bare.gateway, bare.device), (8, None, None));
    }

    #[test]
    fn an_empty_netmask_takes_the_addresss_class() {
        let prefix = |value: &str| parse(value).unwrap().unwrap().prefix;
        assert_eq!(prefix("10.0.0.2::::::none"), 8);
        assert_eq!(prefix("172.16.0.2::::::none"), 16);
        assert_eq!(prefix("192.168.0.2::::::none"), 24);
        assert_eq!(prefix("192.168.0.2:::255.255.240.0:::none"), 20);
    }

    #[test]
    fn a_client_address_with_autoconf_or_autoconf_without_an_address_is_dhcp() {
        assert_eq!(
            parse("10.0.0.2::10.0.0.1:255.255.255.0::eth0:dhcp"),
            Ok(None)
        );
        assert_eq!(parse(":::::eth0:off"), Ok(None));
        assert_eq!(parse("::::myhost::"), Ok(None));
    }

    #[test]
    fn malformed_values_are_errors_naming_the_field() {
        let err = |value: &str| parse(value).unwrap_err();
        assert_eq!(
            err("10.0.0:::::eth0:off"),
            IpParamError::Address {
                field: "client-ip",
                text: "10.0.0".into()
            }
        );
        assert!(matches!(
            err("10.0.0.2::gw"),
            IpParamError::Address { field: "gw-ip", .. }
        ));
        assert_eq!(
            err("10.0.0.2:::255.0.255.0"),
            IpParamError::Netmask("255.0.255.0".into())
        );
        assert_eq!(
            err("10.0.0.2:::0.0.0.0"),
            IpParamError::Netmask("0.0.0.0".into())
        );
        assert_eq!(
            err("10.0.0.2::::-bad"),
            IpParamError::Hostname("-bad".into())
        );
        assert_eq!(err("10.0.0.2:::::a/b"), IpParamError::Device("a/b".into()));
        assert_eq!(
            err("10.0.0.2::::::static"),
            IpParamError::Autoconf("static".into())
        );
        assert!(matches!(
            err("10.0.0.2:::::::1.1.1"),
            IpParamError::Address {
                field: "dns0-ip",
                ..
            }
        ));
        assert_eq!(
            err("1:2:3:4:5:6:7:8:9:10:11"),
            IpParamError::TooManyFields(11)
        );
    }
}
