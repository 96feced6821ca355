//! Answers IPv6 router solicitations on the private NIC with a router advertisement that
//! configures nothing (router lifetime 0, no prefixes, no DHCPv6 flags).
//!
//! iPXE configures IPv6 alongside DHCPv4 and, on a segment without a router, waits about ten
//! seconds of solicitations before it fetches its boot file. One empty advertisement ends that
//! wait. It makes no host use the frontend as an IPv6 router and hands out no addresses.

use socket2::{Domain, Protocol, Socket, Type};
use std::io::Read;
use std::net::{Ipv6Addr, SocketAddrV6};
use tokio::io::unix::AsyncFd;

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
/// RFC 4861 §6.1: neighbour discovery messages must arrive with hop limit 255.
const ND_HOP_LIMIT: u32 = 255;
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Whether `icmp` (an ICMPv6 message, IPv6 header already stripped) is a router solicitation.
pub fn is_router_solicitation(icmp: &[u8]) -> bool {
    icmp.len() >= 8 && icmp[0] == ROUTER_SOLICITATION && icmp[1] == 0
}

/// The advertisement: type 134, code 0, checksum left to the kernel, hop limit 0
/// (unspecified), flags 0, router lifetime 0, reachable and retransmit times 0.
pub fn empty_router_advertisement() -> [u8; 16] {
    let mut ra = [0u8; 16];
    ra[0] = ROUTER_ADVERTISEMENT;
    ra
}

/// A raw ICMPv6 socket on `interface` that receives router solicitations, and the interface's
/// index.
pub fn socket(interface: &str) -> std::io::Result<(AsyncFd<Socket>, u32)> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(interface.as_bytes()))?;
    s.set_multicast_hops_v6(ND_HOP_LIMIT)?;
    s.set_unicast_hops_v6(ND_HOP_LIMIT)?;
    // The socket's own network namespace, unlike /sys, which shows the mounter's.
    let index = rustix::net::netdevice::name_to_index(&s, interface)?;
    s.join_multicast_v6(&ALL_ROUTERS, index)?;
    s.set_multicast_if_v6(index)?;
    s.set_nonblocking(true)?;
    // SAFETY: `s` owns its descriptor and is moved into the `AsyncFd`, so the descriptor stays
    // open and the same until the `AsyncFd` drops the socket.
    let fd = unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)?;
    Ok((fd, index))
}

/// Answers every solicitation on `fd` (multicast to all nodes on the link) until the task is
/// dropped.
pub async fn run(fd: AsyncFd<Socket>, interface_index: u32) {
    let all_nodes = SocketAddrV6::new(ALL_NODES, 0, 0, interface_index);
    let mut buf = [0u8; 1500];
    loop {
        let received = fd
            .async_io(tokio::io::Interest::READABLE, |mut s| s.read(&mut buf))
            .await;
        let n = match received {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("ra: receive: {e}");
                continue;
            }
        };
        if !is_router_solicitation(&buf[..n]) {
            continue;
        }
        let ra = empty_router_advertisement();
        let sent = fd
            .async_io(tokio::io::Interest::WRITABLE, |s| {
                s.send_to(&ra, &all_nodes.into())
            })
            .await;
        if let Err(e) = sent {
            tracing::debug!("ra: advertisement: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicitation_recognised_by_type_and_code() {
        // RS as iPXE sends it: type 133, code 0, checksum, reserved, source link-layer option.
        let rs = [
            133, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 0x21, 0x30, 0x01,
        ];
        assert!(is_router_solicitation(&rs));
        assert!(!is_router_solicitation(&rs[..4]));
        let mut other = rs;
        other[0] = 135; // neighbour solicitation
        assert!(!is_router_solicitation(&other));
    }

    #[test]
    fn advertisement_configures_nothing() {
        let ra = empty_router_advertisement();
        assert_eq!(ra[0], 134);
        assert_eq!(ra[1], 0);
        assert_eq!(ra[5] & 0xc0, 0, "no managed/other-config flags");
        assert_eq!(u16::from_be_bytes([ra[6], ra[7]]), 0, "router lifetime 0");
        assert_eq!(ra.len(), 16, "no prefix options");
    }
}
