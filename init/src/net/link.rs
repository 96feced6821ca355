//! rtnetlink requests PID 1 needs: link up, IPv4 address add/remove, default route.
//!
//! Messages are built by hand over byte vectors (`nlmsghdr` + `ifinfomsg`/`ifaddrmsg`/`rtmsg` +
//! attributes, see rtnetlink(7)) and sent on a `NETLINK_ROUTE` socket; every request asks for an
//! ACK and the kernel's errno comes back as [`LinkError::Kernel`]. Link discovery is done through
//! sysfs by the caller; this module does not dump or monitor links.

use rustix::fd::OwnedFd;
use rustix::net::{recv, send, socket, AddressFamily, RecvFlags, SendFlags, SocketType};
use std::net::Ipv4Addr;

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_DHCP: u8 = 16;
const RTN_UNICAST: u8 = 1;
const AF_INET: u8 = 2;
const HEADER_LEN: usize = 16;

/// Why a netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("netlink socket: {0}")]
    Socket(rustix::io::Errno),
    #[error("netlink {what}: kernel said {errno}")]
    Kernel {
        what: &'static str,
        errno: rustix::io::Errno,
    },
    #[error("netlink {what}: malformed reply ({0} bytes)", .len)]
    Malformed { what: &'static str, len: usize },
}

/// One request under construction: header placeholder, fixed part, then attributes.
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16, seq: u32, fixed: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(fixed);
        Message(bytes)
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// `RTM_NEWLINK` setting IFF_UP on `ifindex`.
pub fn link_up_request(seq: u32, ifindex: u32) -> Vec<u8> {
    let mut ifinfo = [0u8; 16]; // family, pad, type, index, flags, change
    ifinfo[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    ifinfo[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
    ifinfo[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
    Message::new(RTM_NEWLINK, 0, seq, &ifinfo).finish()
}

fn ifaddr(ifindex: u32, prefix: u8) -> [u8; 8] {
    let mut fixed = [AF_INET, prefix, 0, 0, 0, 0, 0, 0]; // family, prefixlen, flags, scope, index
    fixed[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    fixed
}

/// The directed broadcast address of `addr/prefix`.
pub fn broadcast(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) | host_bits)
}

/// `RTM_NEWADDR` (create or replace) for `addr/prefix` on `ifindex`.
pub fn add_address_request(seq: u32, ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Vec<u8> {
    Message::new(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        &ifaddr(ifindex, prefix),
    )
    .attr(IFA_LOCAL, &addr.octets())
    .attr(IFA_ADDRESS, &addr.octets())
    .attr(IFA_BROADCAST, &broadcast(addr, prefix).octets())
    .finish()
}

/// `RTM_DELADDR` for `addr/prefix` on `ifindex`.
pub fn del_address_request(seq: u32, ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Vec<u8> {
    Message::new(RTM_DELADDR, 0, seq, &ifaddr(ifindex, prefix))
        .attr(IFA_LOCAL, &addr.octets())
        .finish()
}

/// `RTM_NEWROUTE` (create or replace) for the default route via `gateway` on `ifindex`.
pub fn default_route_request(seq: u32, ifindex: u32, gateway: Ipv4Addr) -> Vec<u8> {
    // family, dst_len, src_len, tos, table, protocol, scope (universe), type, flags (u32)
    let rtmsg = [
        AF_INET,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_DHCP,
        0,
        RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, &rtmsg)
        .attr(RTA_GATEWAY, &gateway.octets())
        .attr(RTA_OIF, &ifindex.to_ne_bytes())
        .finish()
}

/// Looks through a reply buffer for the `NLMSG_ERROR` answering `seq`: `Some(0)` is an ACK,
/// `Some(-errno)` a failure, `None` not in this buffer. Truncated messages, and an error message
/// too short for its code or with a positive one (the kernel only sends 0 or `-errno`), are an
/// error.
pub fn find_ack(buf: &[u8], seq: u32) -> Result<Option<i32>, usize> {
    let mut rest = buf;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
        if len < HEADER_LEN || len > rest.len() {
            return Err(buf.len());
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap_or_default());
        if kind == NLMSG_ERROR && msg_seq == seq {
            let code = rest[..len].get(16..20).ok_or(buf.len())?;
            let code = i32::from_ne_bytes(code.try_into().unwrap_or_default());
            return if code <= 0 {
                Ok(Some(code))
            } else {
                Err(buf.len())
            };
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    Ok(None)
}

/// A `NETLINK_ROUTE` socket that sends one request at a time and waits for its ACK.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Self, LinkError> {
        let fd = socket(
            AddressFamily::NETLINK,
            SocketType::RAW,
            None, /* NETLINK_ROUTE */
        )
        .map_err(LinkError::Socket)?;
        Ok(Netlink { fd, seq: 1 })
    }

    fn request(
        &mut self,
        what: &'static str,
        build: impl Fn(u32) -> Vec<u8>,
    ) -> Result<(), LinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        send(&self.fd, &build(seq), SendFlags::empty()).map_err(LinkError::Socket)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, _) =
                recv(&self.fd, &mut buf[..], RecvFlags::empty()).map_err(LinkError::Socket)?;
            match find_ack(&buf[..n], seq) {
                Ok(Some(0)) => return Ok(()),
                Ok(Some(code)) => {
                    let errno = rustix::io::Errno::from_raw_os_error(-code);
                    return Err(LinkError::Kernel { what, errno });
                }
                Ok(None) => continue,
                Err(len) => return Err(LinkError::Malformed { what, len }),
            }
        }
    }

    pub fn set_up(&mut self, ifindex: u32) -> Result<(), LinkError> {
        self.request("link up", |seq| link_up_request(seq, ifindex))
    }

    pub fn add_address(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), LinkError> {
        self.request("add address", |seq| {
            add_address_request(seq, ifindex, addr, prefix)
        })
    }

    pub fn del_address(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), LinkError> {
        self.request("delete address", |seq| {
            del_address_request(seq, ifindex, addr, prefix)
        })
    }

    pub fn set_default_route(&mut self, ifindex: u32, gateway: Ipv4Addr) -> Result<(), LinkError> {
        self.request("default route", |seq| {
            default_route_request(seq, ifindex, gateway)
        })
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
