//! The kernel's IPv4 routing table as `/proc/net/route` shows it: one parser for everyone who
//! asks where an address is routed.

use std::net::Ipv4Addr;

/// One route of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub interface: String,
    pub destination: Ipv4Addr,
    /// `0.0.0.0` when the destination is on-link.
    pub gateway: Ipv4Addr,
    pub mask: Ipv4Addr,
}

/// The routes of `/proc/net/route` text (after its header; addresses are little-endian hex).
/// Lines that do not parse are skipped.
pub fn routes(table: &str) -> Vec<Route> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = |i: usize| {
                let raw = u32::from_str_radix(f.get(i)?, 16).ok()?;
                Some(Ipv4Addr::from(raw.to_le_bytes()))
            };
            Some(Route {
                interface: f.first()?.to_string(),
                destination: addr(1)?,
                gateway: addr(2)?,
                mask: addr(7)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_little_endian_hex_reads_as_addresses() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t01004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     garbage\n";
        let r = routes(table);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].gateway, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(
            (r[1].destination, r[1].mask),
            (Ipv4Addr::new(10, 77, 0, 0), Ipv4Addr::new(255, 255, 255, 0))
        );
    }
}
