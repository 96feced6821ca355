//! rtnetlink requests PID 1 and the node agent need: link up, IPv4 address add/remove, default
//! route, and the instance networks' links (bridge and 802.1Q link creation, bridge ports, link
//! removal).
//!
//! Messages are built by hand over byte vectors (`nlmsghdr` + `ifinfomsg`/`ifaddrmsg`/`rtmsg` +
//! attributes, see rtnetlink(7)) and sent on a `NETLINK_ROUTE` socket; every request asks for an
//! ACK and the kernel's errno comes back as [`LinkError::Kernel`]. Links are found by name with
//! `if_nametoindex` ([`ifindex`]), or listed with their IPv4 addresses by a dump
//! ([`Netlink::links`], [`Netlink::addresses`]); this module does not monitor links.

use rustix::fd::OwnedFd;
use rustix::net::{recv, send, socket, AddressFamily, RecvFlags, SendFlags, SocketType};
use std::net::Ipv4Addr;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWNEIGH: u16 = 28;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFF_UP: u32 = 0x1;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
/// Longest interface name the kernel takes (IFNAMSIZ less the NUL).
pub const MAX_IFNAME: usize = 15;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_LINK: u8 = 253;
const RTPROT_DHCP: u8 = 16;
const RTN_UNICAST: u8 = 1;
const AF_INET: u8 = 2;
const AF_BRIDGE: u8 = 7;
const NDA_LLADDR: u16 = 2;
/// A static entry (`bridge fdb ... static`).
const NUD_NOARP: u16 = 0x40;
/// The entry is the bridge's (not the port device's own table).
const NTF_MASTER: u8 = 0x04;
/// The entry never moves to another port, whatever comes in with its source address.
const NTF_STICKY: u8 = 0x40;
const HEADER_LEN: usize = 16;
/// Attribute type bits (NLA_F_NESTED, NLA_F_NET_BYTEORDER excluded).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Receive buffer of a dump: the kernel sizes dump messages to at most 32 KiB.
const DUMP_BUFFER: usize = 64 * 1024;

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
    #[error("{0:?} is not an interface name (1-15 bytes, no '/', ':', NUL or space)")]
    BadName(String),
}

/// One attribute's bytes, padded to 4: what [`Message::attr`] appends, and the body of a nested
/// attribute when several are joined.
fn nla(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len().next_multiple_of(4));
    out.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// `name` with its NUL, checked the way the kernel's `dev_valid_name` does.
fn ifname(name: &str) -> Result<Vec<u8>, LinkError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if !ok {
        return Err(LinkError::BadName(name.to_string()));
    }
    Ok([name.as_bytes(), &[0]].concat())
}

/// The index of the link called `name`, if there is one.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads the NUL-terminated string it is given and nothing else.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
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

    /// A dump request: answered by a series of messages and `NLMSG_DONE`, not an ACK.
    fn dump(kind: u16, seq: u32, fixed: &[u8]) -> Self {
        let mut msg = Message::new(kind, 0, seq, fixed);
        msg.0[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        msg
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        self.0.extend_from_slice(&nla(kind, data));
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// An `ifinfomsg`: family, pad, type, index, flags, change.
fn ifinfo(ifindex: u32, flags: u32) -> [u8; 16] {
    let mut ifinfo = [0u8; 16];
    ifinfo[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    ifinfo[8..12].copy_from_slice(&flags.to_ne_bytes());
    ifinfo[12..16].copy_from_slice(&flags.to_ne_bytes());
    ifinfo
}

/// `RTM_NEWLINK` setting IFF_UP on `ifindex`.
pub fn link_up_request(seq: u32, ifindex: u32) -> Vec<u8> {
    Message::new(RTM_NEWLINK, 0, seq, &ifinfo(ifindex, IFF_UP)).finish()
}

/// `RTM_NEWLINK` creating the bridge `name` (failing if a link has that name), with Ethernet
/// address `mac` when given (then fixed: ports joining later never change it).
pub fn new_bridge_request(
    seq: u32,
    name: &str,
    mac: Option<[u8; 6]>,
) -> Result<Vec<u8>, LinkError> {
    let flags = NLM_F_CREATE | NLM_F_EXCL;
    let mut msg = Message::new(RTM_NEWLINK, flags, seq, &ifinfo(0, 0))
        .attr(IFLA_IFNAME, &ifname(name)?)
        .attr(IFLA_LINKINFO, &nla(IFLA_INFO_KIND, b"bridge"));
    if let Some(mac) = mac {
        msg = msg.attr(IFLA_ADDRESS, &mac);
    }
    Ok(msg.finish())
}

/// `RTM_NEWLINK` creating `name`, the 802.1Q link of tag `vlan` on link `parent`.
pub fn new_vlan_request(
    seq: u32,
    name: &str,
    parent: u32,
    vlan: u16,
) -> Result<Vec<u8>, LinkError> {
    let flags = NLM_F_CREATE | NLM_F_EXCL;
    let info = [
        nla(IFLA_INFO_KIND, b"vlan"),
        nla(IFLA_INFO_DATA, &nla(IFLA_VLAN_ID, &vlan.to_ne_bytes())),
    ]
    .concat();
    Ok(Message::new(RTM_NEWLINK, flags, seq, &ifinfo(0, 0))
        .attr(IFLA_IFNAME, &ifname(name)?)
        .attr(IFLA_LINK, &parent.to_ne_bytes())
        .attr(IFLA_LINKINFO, &info)
        .finish())
}

/// `RTM_NEWLINK` making `ifindex` a port of bridge `master`.
pub fn set_master_request(seq: u32, ifindex: u32, master: u32) -> Vec<u8> {
    Message::new(RTM_NEWLINK, 0, seq, &ifinfo(ifindex, 0))
        .attr(IFLA_MASTER, &master.to_ne_bytes())
        .finish()
}

/// `RTM_NEWNEIGH` (create or replace) pinning `mac` to bridge port `ifindex`: a static, sticky
/// forwarding entry (`bridge fdb replace MAC dev PORT master static sticky`). The bridge then
/// never learns that address on another port — not even from its own frames coming back
/// from a segment that reflects them.
pub fn pin_fdb_request(seq: u32, ifindex: u32, mac: [u8; 6]) -> Vec<u8> {
    // struct ndmsg: family, pad, pad16, ifindex, state, flags, type.
    let mut ndm = [0u8; 12];
    ndm[0] = AF_BRIDGE;
    ndm[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    ndm[8..10].copy_from_slice(&NUD_NOARP.to_ne_bytes());
    ndm[10] = NTF_MASTER | NTF_STICKY;
    Message::new(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, seq, &ndm)
        .attr(NDA_LLADDR, &mac)
        .finish()
}

/// `RTM_DELLINK` removing `ifindex`.
pub fn del_link_request(seq: u32, ifindex: u32) -> Vec<u8> {
    Message::new(RTM_DELLINK, 0, seq, &ifinfo(ifindex, 0)).finish()
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

/// `RTM_NEWADDR` (create or replace) for `addr/prefix` on `ifindex`. A /31 or /32 gets no
/// broadcast address (as `ip addr add` gives none): it would be the address itself, and the
/// kernel would then route it as a broadcast.
pub fn add_address_request(seq: u32, ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Vec<u8> {
    let msg = Message::new(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        &ifaddr(ifindex, prefix),
    )
    .attr(IFA_LOCAL, &addr.octets())
    .attr(IFA_ADDRESS, &addr.octets());
    if prefix >= 31 {
        return msg.finish();
    }
    msg.attr(IFA_BROADCAST, &broadcast(addr, prefix).octets())
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
    route_request(seq, ifindex, (Ipv4Addr::UNSPECIFIED, 0), Some(gateway))
}

/// `RTM_NEWROUTE` (create or replace) for `dst/prefix` via `gateway` on `ifindex`, or straight
/// out of `ifindex` (scope link) without a gateway.
pub fn route_request(
    seq: u32,
    ifindex: u32,
    (dst, prefix): (Ipv4Addr, u8),
    gateway: Option<Ipv4Addr>,
) -> Vec<u8> {
    let scope = if gateway.is_some() { 0 } else { RT_SCOPE_LINK };
    // family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
    let rtmsg = [
        AF_INET,
        prefix,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_DHCP,
        scope,
        RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    let mut msg = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, &rtmsg);
    if prefix > 0 {
        msg = msg.attr(RTA_DST, &dst.octets());
    }
    if let Some(gateway) = gateway {
        msg = msg.attr(RTA_GATEWAY, &gateway.octets());
    }
    msg.attr(RTA_OIF, &ifindex.to_ne_bytes()).finish()
}

/// `RTM_GETLINK` dumping every link.
pub fn dump_links_request(seq: u32) -> Vec<u8> {
    Message::dump(RTM_GETLINK, seq, &ifinfo(0, 0)).finish()
}

/// `RTM_GETADDR` dumping every IPv4 address.
pub fn dump_addresses_request(seq: u32) -> Vec<u8> {
    Message::dump(RTM_GETADDR, seq, &ifaddr(0, 0)).finish()
}

/// A link as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    /// The link it sits on (`IFLA_LINK`: an 802.1Q link's parent).
    pub parent: Option<u32>,
    /// The 802.1Q tag, when the link is a VLAN link.
    pub vlan: Option<u16>,
    /// The hardware address, when it is an Ethernet one.
    pub mac: Option<[u8; 6]>,
}

/// An IPv4 address as a dump reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressInfo {
    pub ifindex: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// The attributes in `bytes` as `(type, payload)`; stops at the first malformed one.
fn attributes(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]));
        let kind = u16::from_ne_bytes([*bytes.get(2)?, *bytes.get(3)?]) & NLA_TYPE_MASK;
        let payload = bytes.get(4..len)?;
        bytes = bytes.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some((kind, payload))
    })
}

/// One `RTM_NEWLINK` body (`ifinfomsg` + attributes) of a dump; `None` when too short or
/// nameless.
pub fn parse_link(body: &[u8]) -> Option<LinkInfo> {
    let ifindex = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    let (mut name, mut parent, mut vlan, mut mac) = (None, None, None, None);
    for (kind, data) in attributes(body.get(16..)?) {
        match kind {
            IFLA_IFNAME => {
                let text = data.split(|&b| b == 0).next().unwrap_or_default();
                name = Some(String::from_utf8_lossy(text).into_owned());
            }
            IFLA_LINK => parent = data.try_into().ok().map(u32::from_ne_bytes),
            IFLA_ADDRESS => mac = data.try_into().ok(),
            IFLA_LINKINFO => {
                let is_vlan = attributes(data).any(|(k, d)| {
                    k == IFLA_INFO_KIND && d.strip_suffix(b"\0").unwrap_or(d) == b"vlan"
                });
                let info = attributes(data).find(|(k, _)| *k == IFLA_INFO_DATA);
                if let (true, Some((_, info))) = (is_vlan, info) {
                    vlan = attributes(info)
                        .find(|(k, _)| *k == IFLA_VLAN_ID)
                        .and_then(|(_, d)| d.get(..2)?.try_into().ok())
                        .map(u16::from_ne_bytes);
                }
            }
            _ => {}
        }
    }
    Some(LinkInfo {
        ifindex,
        name: name?,
        parent,
        vlan,
        mac,
    })
}

/// One `RTM_NEWADDR` body (`ifaddrmsg` + attributes) of a dump; `None` when it is not IPv4 or
/// too short.
pub fn parse_address(body: &[u8]) -> Option<AddressInfo> {
    let (family, prefix) = (*body.first()?, *body.get(1)?);
    if family != AF_INET {
        return None;
    }
    let ifindex = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
    let (mut local, mut address) = (None, None);
    for (kind, data) in attributes(body.get(8..)?) {
        let octets: Option<[u8; 4]> = data.try_into().ok();
        match kind {
            IFA_LOCAL => local = octets.map(Ipv4Addr::from),
            IFA_ADDRESS => address = octets.map(Ipv4Addr::from),
            _ => {}
        }
    }
    Some(AddressInfo {
        ifindex,
        address: local.or(address)?,
        prefix,
    })
}

/// What one buffer of a dump's reply held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DumpPart<'a> {
    /// The bodies (after the 16-byte header) of the messages answering the request.
    pub bodies: Vec<&'a [u8]>,
    /// `Some(0)` once `NLMSG_DONE` came, `Some(-errno)` when the kernel refused the dump.
    pub end: Option<i32>,
}

/// Splits a reply buffer of the dump `seq`; truncated messages are an error (the buffer's
/// length).
pub fn parse_dump(buf: &[u8], seq: u32) -> Result<DumpPart<'_>, usize> {
    let mut part = DumpPart::default();
    let mut rest = buf;
    while rest.len() >= HEADER_LEN && part.end.is_none() {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
        if len < HEADER_LEN || len > rest.len() {
            return Err(buf.len());
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap_or_default());
        let body = &rest[HEADER_LEN..len];
        if msg_seq == seq {
            match kind {
                NLMSG_DONE => part.end = Some(0),
                NLMSG_ERROR => {
                    let code = body.get(..4).ok_or(buf.len())?;
                    let code = i32::from_ne_bytes(code.try_into().unwrap_or_default());
                    part.end = Some(code.min(0));
                }
                _ => part.bodies.push(body),
            }
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    Ok(part)
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

    /// A route to `dst` via `gateway`, or on-link out of `ifindex` without one.
    pub fn add_route(
        &mut self,
        ifindex: u32,
        dst: (Ipv4Addr, u8),
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), LinkError> {
        self.request("route", |seq| route_request(seq, ifindex, dst, gateway))
    }

    pub fn new_bridge(&mut self, name: &str, mac: Option<[u8; 6]>) -> Result<(), LinkError> {
        let msg = new_bridge_request(0, name, mac)?;
        self.request("new bridge", |seq| with_seq(&msg, seq))
    }

    pub fn new_vlan(&mut self, name: &str, parent: u32, vlan: u16) -> Result<(), LinkError> {
        let msg = new_vlan_request(0, name, parent, vlan)?;
        self.request("new vlan link", |seq| with_seq(&msg, seq))
    }

    pub fn set_master(&mut self, ifindex: u32, master: u32) -> Result<(), LinkError> {
        self.request("bridge port", |seq| {
            set_master_request(seq, ifindex, master)
        })
    }

    /// Pins `mac` to bridge port `ifindex` ([`pin_fdb_request`]).
    pub fn pin_fdb(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), LinkError> {
        self.request("bridge fdb", |seq| pin_fdb_request(seq, ifindex, mac))
    }

    pub fn del_link(&mut self, ifindex: u32) -> Result<(), LinkError> {
        self.request("delete link", |seq| del_link_request(seq, ifindex))
    }

    /// Every link of this network namespace.
    pub fn links(&mut self) -> Result<Vec<LinkInfo>, LinkError> {
        self.dump("dump links", dump_links_request, parse_link)
    }

    /// Every IPv4 address of this network namespace.
    pub fn addresses(&mut self) -> Result<Vec<AddressInfo>, LinkError> {
        self.dump("dump addresses", dump_addresses_request, parse_address)
    }

    fn dump<T>(
        &mut self,
        what: &'static str,
        build: impl Fn(u32) -> Vec<u8>,
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, LinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        send(&self.fd, &build(seq), SendFlags::empty()).map_err(LinkError::Socket)?;
        let mut buf = vec![0u8; DUMP_BUFFER];
        let mut out = Vec::new();
        loop {
            let (n, _) =
                recv(&self.fd, &mut buf[..], RecvFlags::empty()).map_err(LinkError::Socket)?;
            let part =
                parse_dump(&buf[..n], seq).map_err(|len| LinkError::Malformed { what, len })?;
            out.extend(part.bodies.into_iter().filter_map(&parse));
            match part.end {
                None => continue,
                Some(0) => return Ok(out),
                Some(code) => {
                    let errno = rustix::io::Errno::from_raw_os_error(-code);
                    return Err(LinkError::Kernel { what, errno });
                }
            }
        }
    }
}

/// `msg` with its sequence number set to `seq`.
fn with_seq(msg: &[u8], seq: u32) -> Vec<u8> {
    let mut msg = msg.to_vec();
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    msg
}

#[cfg(test)]
#[path = "link_tests.rs"]
pub(crate) mod tests;
