//! What a DHCP lease is and how it is read out of an OFFER or ACK.
//!
//! Owns the defaults RFC 2131 gives for missing options (T1 = lease/2, T2 = 7/8 lease; a /24
//! when no netmask is sent, one hour when no lease time is). It does not decide when a lease is
//! renewed; that is [`super::dhcp`].

use dhcproto::v4::{DhcpOption, Message, OptionCode};
use std::net::Ipv4Addr;
use std::time::Duration;

/// An address lease as the server granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    /// Classless static routes (option 121) other than the default one: destination, prefix
    /// and router (`None`: on-link).
    pub routes: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_time: Duration,
    pub t1: Duration,
    pub t2: Duration,
}

/// Prefix length of a contiguous netmask (leading one bits).
pub fn prefix_len(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

/// Reads a lease out of an OFFER or ACK; `None` without an address or server identifier.
pub fn lease_from(msg: &Message, known_server: Option<Ipv4Addr>) -> Option<Lease> {
    let opts = msg.opts();
    let addr = msg.yiaddr();
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => known_server?,
    };
    if addr.is_unspecified() {
        return None;
    }
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => prefix_len(*mask),
        _ => 24,
    };
    let mut router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let mut routes = Vec::new();
    if let Some(DhcpOption::ClasslessStaticRoute(classless)) =
        opts.get(OptionCode::ClasslessStaticRoute)
    {
        // RFC 3442: with option 121 the Router option is ignored; its default route counts.
        router = None;
        for (net, via) in classless {
            let via = (!via.is_unspecified()).then_some(*via);
            match net.prefix_len() {
                0 => router = via,
                len => routes.push((net.network(), len, via)),
            }
        }
    }
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let secs = |code, default: u32| match opts.get(code) {
        Some(
            DhcpOption::AddressLeaseTime(s) | DhcpOption::Renewal(s) | DhcpOption::Rebinding(s),
        ) => *s,
        _ => default,
    };
    let lease = secs(OptionCode::AddressLeaseTime, 3600).max(1);
    let t1 = secs(OptionCode::Renewal, lease / 2).min(lease);
    let t2 = secs(OptionCode::Rebinding, lease / 8 * 7).clamp(t1, lease);
    Some(Lease {
        addr,
        prefix,
        router,
        routes,
        dns,
        server,
        lease_time: Duration::from_secs(lease.into()),
        t1: Duration::from_secs(t1.into()),
        t2: Duration::from_secs(t2.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classless_routes_replace_the_router_option() {
        let mut m = Message::default();
        m.set_yiaddr(Ipv4Addr::new(172, 31, 0, 2));
        let opts = m.opts_mut();
        opts.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(172, 31, 0, 1)));
        opts.insert(DhcpOption::Router(vec![Ipv4Addr::new(172, 31, 0, 9)]));
        let lease = lease_from(&m, None).unwrap();
        assert_eq!(
            (lease.router, lease.routes.len()),
            (Some(Ipv4Addr::new(172, 31, 0, 9)), 0)
        );
        m.opts_mut().insert(DhcpOption::ClasslessStaticRoute(vec![
            ("169.254.169.254/32".parse().unwrap(), Ipv4Addr::UNSPECIFIED),
            ("10.9.0.0/16".parse().unwrap(), Ipv4Addr::new(172, 31, 0, 5)),
            ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(172, 31, 0, 1)),
        ]));
        let lease = lease_from(&m, None).unwrap();
        assert_eq!(lease.router, Some(Ipv4Addr::new(172, 31, 0, 1)));
        assert_eq!(
            lease.routes,
            vec![
                (Ipv4Addr::new(169, 254, 169, 254), 32, None),
                (
                    Ipv4Addr::new(10, 9, 0, 0),
                    16,
                    Some(Ipv4Addr::new(172, 31, 0, 5))
                ),
            ]
        );
    }

    #[test]
    fn netmask_prefix_lengths() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), 24);
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 240, 0)), 20);
        assert_eq!(prefix_len(Ipv4Addr::UNSPECIFIED), 0);
    }
}
