//! The guest's port: every frame the guest transmits is checked against its MAC and address
//! before it reaches the tap (anti-spoofing, each drop counted by reason), and the guest's DHCP is
//! answered here, from its [`GuestAddress`], so no DHCP daemon on the node or the frontend is
//! reconfigured per launch.
//!
//! [`Port::check`] is a plain function of one frame: it forwards it, drops it, or answers it with
//! a frame for the guest. A NIC without an address (SYSTEM mode, the site's DHCP) only has its
//! source MAC checked and VLAN tags refused, and the address its guest uses (the source of its
//! ARP or IPv4) is noted for the node to report; a NIC with one lets out only ARP and IPv4 from
//! that address (and DHCP, which never leaves the VMM).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::metadata::{LiveMetadata, MetadataService};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Encodable};
use mallee_proto::vmm::{Dropped, GuestAddress, NicStatus};
use mallee_proto::Mac;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

/// The VMM's own MAC and link-local address (its DHCP answers come from them; the DHCP server
/// identifier when the subnet has no gateway).
pub use super::metadata::{SERVICE_IP, SERVICE_MAC};
/// How long a lease lasts; the address never changes, so renewals only confirm it.
pub const LEASE_SECS: u32 = 86_400;

const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
/// 802.1Q and 802.1ad tags: a guest never chooses its VLAN.
const VLAN_ETHERTYPES: [u16; 2] = [0x8100, 0x88a8];

/// What to do with one frame the guest sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on to the tap.
    Forward,
    /// Drop it (counted under this reason).
    Drop(Spoof),
    /// Keep it from the tap and give the guest this frame instead.
    Answer(Vec<u8>),
    /// Keep it from the tap, answer nothing (a DHCP release or decline).
    Swallow,
}

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoof {
    /// Another source MAC (or another client MAC in a DHCP request).
    Mac,
    /// IPv4 from another source address.
    Ip,
    /// ARP claiming another address or MAC.
    Arp,
    /// VLAN-tagged, not ARP/IPv4 on an addressed NIC, or malformed.
    Other,
}

/// A NIC's counters, shared between its device (which outlives no VM) and the API (which
/// outlives every VM of a restarting guest).
#[derive(Debug, Default)]
pub struct PortCounters {
    address_taken: AtomicBool,
    /// The address the guest was seen using (no address of ours), as a `u32`; 0: none yet.
    seen: AtomicU32,
    dhcp_answered: AtomicU64,
    dropped_mac: AtomicU64,
    dropped_ip: AtomicU64,
    dropped_arp: AtomicU64,
    dropped_other: AtomicU64,
}

impl PortCounters {
    fn count(&self, why: Spoof) {
        let c = match why {
            Spoof::Mac => &self.dropped_mac,
            Spoof::Ip => &self.dropped_ip,
            Spoof::Arp => &self.dropped_arp,
            Spoof::Other => &self.dropped_other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as the status reply gives them.
    pub fn status(&self, mac: Mac) -> NicStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NicStatus {
            mac,
            address_taken: self.address_taken.load(Ordering::Relaxed),
            address: match self.seen.load(Ordering::Relaxed) {
                0 => None,
                seen => Some(Ipv4Addr::from(seen)),
            },
            dhcp_answered: get(&self.dhcp_answered),
            dropped: Dropped {
                mac: get(&self.dropped_mac),
                ip: get(&self.dropped_ip),
                arp: get(&self.dropped_arp),
                other: get(&self.dropped_other),
            },
        }
    }
}

/// A NIC's metadata service and the shared content it follows.
struct Served {
    live: Arc<LiveMetadata>,
    /// The version of `live` the service has.
    version: u64,
    service: MetadataService,
}

/// One guest NIC's rules, and its metadata service.
pub struct Port {
    mac: Mac,
    address: Option<GuestAddress>,
    counters: Arc<PortCounters>,
    metadata: Option<Served>,
}

impl Port {
    /// The port of a NIC with guest MAC `mac` and, unless the site's DHCP gives it, `address`.
    pub fn new(mac: Mac, address: Option<GuestAddress>, counters: Arc<PortCounters>) -> Port {
        Port {
            mac,
            address,
            counters,
            metadata: None,
        }
    }

    /// Serves `live`'s content at 169.254.169.254 to the guest, following its replacements
    /// (nothing of it reaches the tap).
    pub fn with_metadata(mut self, live: Option<Arc<LiveMetadata>>) -> Port {
        self.metadata = live.map(|live| {
            let (version, content) = live.current();
            Served {
                live,
                version,
                service: MetadataService::new(content),
            }
        });
        self
    }

    /// Takes a frame [`Port::check`] let out when it is for the metadata service: the frames
    /// for the guest it led to (none while the endpoint is disabled). `None`: not the
    /// service's, send it on. Content the API replaced is taken up first.
    pub fn serve(&mut self, frame: &[u8]) -> Option<Vec<Vec<u8>>> {
        let served = self.metadata.as_mut()?;
        if !MetadataService::wants(frame) {
            return None;
        }
        if served.live.version() != served.version {
            let (version, content) = served.live.current();
            served.service.update(content);
            served.version = version;
        }
        Some(served.service.handle(frame))
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Decides what happens to `frame` (an Ethernet frame, no virtio header) and counts drops.
    pub fn check(&self, frame: &[u8]) -> Verdict {
        let verdict = self.judge(frame);
        if let Verdict::Drop(why) = verdict {
            self.counters.count(why);
        }
        verdict
    }

    fn judge(&self, frame: &[u8]) -> Verdict {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Verdict::Drop(Spoof::Other);
        };
        if eth.src_addr() != EthernetAddress(self.mac.octets()) {
            return Verdict::Drop(Spoof::Mac);
        }
        let ethertype = eth.ethertype();
        if VLAN_ETHERTYPES.contains(&u16::from(ethertype)) {
            return Verdict::Drop(Spoof::Other);
        }
        let Some(addr) = &self.address else {
            self.note_source(ethertype, eth.payload());
            return Verdict::Forward;
        };
        match ethertype {
            EthernetProtocol::Arp => self.judge_arp(addr, eth.payload()),
            EthernetProtocol::Ipv4 => self.judge_ipv4(addr, eth.payload()),
            _ => Verdict::Drop(Spoof::Other),
        }
    }

    /// Without an address of ours: notes the address the guest uses, from the sender of its
    /// ARP or the source of its IPv4 (a DHCP client's `0.0.0.0` claims nothing).
    fn note_source(&self, ethertype: EthernetProtocol, payload: &[u8]) {
        let source = match ethertype {
            EthernetProtocol::Arp => {
                match ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) {
                    Ok(ArpRepr::EthernetIpv4 {
                        source_protocol_addr,
                        ..
                    }) => source_protocol_addr,
                    _ => return,
                }
            }
            EthernetProtocol::Ipv4 => match Ipv4Packet::new_checked(payload) {
                Ok(ip) => ip.src_addr(),
                Err(_) => return,
            },
            _ => return,
        };
        if source.is_unspecified() || source.is_broadcast() || source.is_multicast() {
            return;
        }
        self.counters
            .seen
            .store(u32::from(source), Ordering::Relaxed);
        self.counters.address_taken.store(true, Ordering::Relaxed);
    }

    fn judge_arp(&self, addr: &GuestAddress, payload: &[u8]) -> Verdict {
        let Ok(ArpRepr::EthernetIpv4 {
            source_hardware_addr,
            source_protocol_addr,
            ..
        }) = ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p))
        else {
            return Verdict::Drop(Spoof::Other);
        };
        if source_hardware_addr != EthernetAddress(self.mac.octets()) {
            return Verdict::Drop(Spoof::Arp);
        }
        if source_protocol_addr == addr.address {
            self.counters.address_taken.store(true, Ordering::Relaxed);
            Verdict::Forward
        } else if source_protocol_addr.is_unspecified() {
            // An address probe (RFC 5227) claims nothing.
            Verdict::Forward
        } else {
            Verdict::Drop(Spoof::Arp)
        }
    }

    fn judge_ipv4(&self, addr: &GuestAddress, payload: &[u8]) -> Verdict {
        let Ok(ip) = Ipv4Packet::new_checked(payload) else {
            return Verdict::Drop(Spoof::Other);
        };
        if let Some(dhcp) = dhcp_request(&ip) {
            return self.answer_dhcp(addr, dhcp);
        }
        if ip.src_addr() == addr.address {
            Verdict::Forward
        } else {
            Verdict::Drop(Spoof::Ip)
        }
    }

    fn answer_dhcp(&self, addr: &GuestAddress, payload: &[u8]) -> Verdict {
        let Ok(req) = Message::from_bytes(payload) else {
            return Verdict::Drop(Spoof::Other);
        };
        if req.opcode() != Opcode::BootRequest {
            return Verdict::Drop(Spoof::Other);
        }
        if req.chaddr().get(..6) != Some(&self.mac.octets()[..]) {
            return Verdict::Drop(Spoof::Mac);
        }
        let mtype = req.opts().msg_type();
        let reply = match mtype {
            Some(MessageType::Discover) => {
                offer(addr, &req, MessageType::Offer, self.metadata.is_some())
            }
            Some(MessageType::Request) => {
                let wanted = match req.opts().get(dhcproto::v4::OptionCode::RequestedIpAddress) {
                    Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
                    _ => req.ciaddr(),
                };
                if wanted == addr.address || wanted.is_unspecified() {
                    self.counters.address_taken.store(true, Ordering::Relaxed);
                    offer(addr, &req, MessageType::Ack, self.metadata.is_some())
                } else {
                    nak(addr, &req)
                }
            }
            Some(MessageType::Inform) => {
                offer(addr, &req, MessageType::Ack, self.metadata.is_some())
            }
            Some(MessageType::Release | MessageType::Decline) => return Verdict::Swallow,
            _ => return Verdict::Drop(Spoof::Other),
        };
        self.counters.dhcp_answered.fetch_add(1, Ordering::Relaxed);
        let to = if req.ciaddr().is_unspecified() || reply.0 == MessageType::Nak {
            Ipv4Addr::BROADCAST
        } else {
            req.ciaddr()
        };
        Verdict::Answer(udp_frame(
            (SERVICE_MAC, self.mac),
            server_id(addr),
            to,
            (DHCP_SERVER_PORT, DHCP_CLIENT_PORT),
            &reply.1,
        ))
    }
}

/// The DHCP payload of a client → server datagram, if `ip` is one.
fn dhcp_request<'a>(ip: &Ipv4Packet<&'a [u8]>) -> Option<&'a [u8]> {
    if ip.next_header() != IpProtocol::Udp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let payload = ip.payload();
    let udp = UdpPacket::new_checked(payload).ok()?;
    let is_dhcp = udp.src_port() == DHCP_CLIENT_PORT && udp.dst_port() == DHCP_SERVER_PORT;
    let len = usize::from(udp.len()).clamp(8, payload.len());
    is_dhcp.then(|| &payload[8..len])
}

fn server_id(addr: &GuestAddress) -> Ipv4Addr {
    addr.gateway.unwrap_or(SERVICE_IP)
}

fn base_reply(req: &Message, mtype: MessageType, server: Ipv4Addr) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_chaddr(req.chaddr());
    m.opts_mut().clear();
    m.opts_mut().insert(DhcpOption::MessageType(mtype));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    m
}

/// An OFFER or ACK of the guest's address (for INFORM, the options without an address). With
/// a metadata service, classless static routes (RFC 3442) put 169.254.169.254 on-link (router
/// 0.0.0.0), so the guest reaches it with or without a gateway, and repeat the default route
/// (a client honouring option 121 ignores option 3).
fn offer(
    addr: &GuestAddress,
    req: &Message,
    mtype: MessageType,
    metadata: bool,
) -> (MessageType, Vec<u8>) {
    let mut m = base_reply(req, mtype, server_id(addr));
    let inform = req.opts().msg_type() == Some(MessageType::Inform);
    if !inform {
        m.set_yiaddr(addr.address);
    }
    m.set_ciaddr(req.ciaddr());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::SubnetMask(addr.netmask()));
    if let Some(gw) = addr.gateway {
        opts.insert(DhcpOption::Router(vec![gw]));
    }
    if metadata {
        let service = ipnet::Ipv4Net::new(SERVICE_IP, 32).expect("a /32");
        let mut routes = vec![(service, Ipv4Addr::UNSPECIFIED)];
        if let Some(gw) = addr.gateway {
            routes.push((ipnet::Ipv4Net::default(), gw));
        }
        opts.insert(DhcpOption::ClasslessStaticRoute(routes));
    }
    if !addr.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(addr.dns.clone()));
    }
    if let Some(name) = &addr.hostname {
        opts.insert(DhcpOption::Hostname(name.clone()));
    }
    if !inform {
        opts.insert(DhcpOption::AddressLeaseTime(LEASE_SECS));
        opts.insert(DhcpOption::Renewal(LEASE_SECS / 2));
        opts.insert(DhcpOption::Rebinding(LEASE_SECS / 8 * 7));
    }
    (mtype, encode(&m))
}

fn nak(addr: &GuestAddress, req: &Message) -> (MessageType, Vec<u8>) {
    let m = base_reply(req, MessageType::Nak, server_id(addr));
    (MessageType::Nak, encode(&m))
}

fn encode(m: &Message) -> Vec<u8> {
    // Encoding a message we built into a Vec cannot fail.
    m.to_vec().unwrap_or_default()
}

/// An Ethernet/IPv4/UDP frame between the `(source, destination)` MACs.
pub fn udp_frame(
    (src_mac, dst_mac): (Mac, Mac),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    (src_port, dst_port): (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac.octets()),
        dst_addr: EthernetAddress(dst_mac.octets()),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + udp_len];
    let caps = ChecksumCapabilities::default();
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &caps);
    let mut udp = UdpPacket::new_unchecked(packet.payload_mut());
    UdpRepr { src_port, dst_port }.emit(
        &mut udp,
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    buf
}

/// A broadcast ARP frame: `op` from `mac`/`ip` about `target`.
pub fn arp_frame(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr, op: ArpOperation) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(mac.octets()),
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac.octets()),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

#[cfg(test)]
#[path = "port_tests.rs"]
mod tests;
