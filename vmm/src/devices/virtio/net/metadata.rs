//! The metadata service's TCP/IP: a smoltcp interface at 169.254.169.254 (MAC
//! [`SERVICE_MAC`]) that takes the guest's ARP and TCP for that address out of the transmit path
//! and answers with frames for the guest; nothing of it reaches the tap. Port 80 speaks the
//! HTTP of [`super::imds`]. Listening sockets are added as connections take them (up to
//! [`MAX_CONNECTIONS`]) and dropped when closed, so a guest fetching many paths in a row is never
//! refused while earlier connections sit in TIME-WAIT.
//!
//! The content's options rule the wire: `http_put_response_hop_limit` is the IP TTL of every
//! reply, and `http_endpoint: disabled` takes the guest's frames for the service and answers
//! nothing (no ARP reply, no TCP, not even a reset). [`LiveMetadata`] is where the API puts new
//! content while the guest runs; each NIC's port hands it to its service with
//! [`MetadataService::update`] before the next guest frame, so nothing is ever answered from
//! content the API has replaced.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant as StdInstant;

use mallee_proto::vmm::InstanceMetadata;
use mallee_proto::{HttpEndpoint, Mac, MetadataOptions};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use std::net::Ipv4Addr;

use super::imds::{random_bytes, take_head, Imds, Parsed};

/// The MAC the VMM's own frames come from (locally administered, never a guest's).
pub const SERVICE_MAC: Mac = Mac([0x02, 0x4d, 0x41, 0x4c, 0x4c, 0x45]);
/// The link-local address of the metadata service (and of the VMM's DHCP answers).
pub const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Connections open at once; a SYN beyond them is answered with a reset.
pub const MAX_CONNECTIONS: usize = 64;
/// Listening sockets kept ready.
const SPARE_LISTENERS: usize = 2;
const HTTP_PORT: u16 = 80;
const RX_BUFFER: usize = 16 * 1024;
const TX_BUFFER: usize = 64 * 1024;
/// Frames the service holds for the guest at most; beyond, they are dropped (TCP resends).
const MAX_OUT: usize = 256;

/// Frames in from the guest, frames out to it.
#[derive(Default)]
struct Wire {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        if self.0.len() < MAX_OUT {
            self.0.push_back(frame);
        }
        r
    }
}

impl Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        // A guest that negotiated checksum offload sends TCP with only the pseudo-header sum
        // (VIRTIO_NET_HDR_F_NEEDS_CSUM): nothing on a virtio ring corrupts frames, so checksums
        // are made for the guest but not checked from it.
        caps.checksum.ipv4 = Checksum::Tx;
        caps.checksum.tcp = Checksum::Tx;
        caps.checksum.udp = Checksum::Tx;
        caps.checksum.icmpv4 = Checksum::Tx;
        caps
    }
}

/// One connection's request bytes so far.
#[derive(Default)]
struct Conn {
    request: Vec<u8>,
    answered: bool,
}

/// What the service answers now, shared by the API (which replaces it while the guest runs) and
/// every NIC's port (which serves it); like the port counters it outlives each VM of a guest
/// that restarts.
pub struct LiveMetadata {
    /// Bumped by every replacement, so a port sees one with an atomic load per frame.
    version: AtomicU64,
    content: Mutex<InstanceMetadata>,
}

impl LiveMetadata {
    pub fn new(content: InstanceMetadata) -> LiveMetadata {
        LiveMetadata {
            version: AtomicU64::new(0),
            content: Mutex::new(content),
        }
    }

    /// Serves `content` from the next guest frame on.
    pub fn replace(&self, content: InstanceMetadata) {
        let mut held = crate::bus::lock(&self.content);
        *held = content;
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    /// The version of the content now; changes with every [`LiveMetadata::replace`].
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The content now, and its version.
    pub fn current(&self) -> (u64, InstanceMetadata) {
        let held = crate::bus::lock(&self.content);
        (self.version(), held.clone())
    }

    /// The options served now.
    pub fn options(&self) -> MetadataOptions {
        crate::bus::lock(&self.content).options
    }
}

/// For a guest IPv4 frame: an ARP reply from its sender to the service, which fills the
/// service's neighbour cache with the guest's address and MAC (smoltcp learns neighbours only
/// from ARP). `None` for anything else.
fn neighbour_hint(frame: &[u8]) -> Option<Vec<u8>> {
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr, Ipv4Packet,
    };
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let (mac, source) = (eth.src_addr(), ip.src_addr());
    if !mac.is_unicast() || source.is_unspecified() || source.is_broadcast() {
        return None;
    }
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: mac,
        source_protocol_addr: source,
        target_hardware_addr: EthernetAddress(SERVICE_MAC.0),
        target_protocol_addr: SERVICE_IP,
    };
    let header = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress(SERVICE_MAC.0),
        ethertype: EthernetProtocol::Arp,
    };
    let mut out = vec![0u8; header.buffer_len() + arp.buffer_len()];
    let mut out_eth = EthernetFrame::new_unchecked(&mut out[..]);
    header.emit(&mut out_eth);
    arp.emit(&mut ArpPacket::new_unchecked(out_eth.payload_mut()));
    Some(out)
}

/// The TTL of the service's replies: smoltcp refuses 0, which the configuration check and the
/// API refuse before it gets here.
fn hop_limit(options: &MetadataOptions) -> u8 {
    options.http_put_response_hop_limit.max(1)
}

/// The service on one guest NIC.
pub struct MetadataService {
    iface: Interface,
    wire: Wire,
    sockets: SocketSet<'static>,
    conns: Vec<(SocketHandle, Conn)>,
    imds: Imds,
    epoch: StdInstant,
    /// The IP TTL of every reply.
    hop_limit: u8,
    /// Whether it answers at all.
    enabled: bool,
}

impl MetadataService {
    pub fn new(content: InstanceMetadata) -> MetadataService {
        let mut wire = Wire::default();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(SERVICE_MAC.0)));
        let mut seed = [0u8; 8];
        random_bytes(&mut seed); // only TCP sequence numbers depend on it
        config.random_seed = u64::from_ne_bytes(seed);
        let mut iface = Interface::new(config, &mut wire, Instant::from_millis(0));
        // Prefix 0: every guest address is on-link, so replies go straight back to the guest
        // (resolved by ARP) whatever its subnet.
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(SERVICE_IP), 0));
        });
        let options = content.options;
        let mut service = MetadataService {
            iface,
            wire,
            sockets: SocketSet::new(Vec::new()),
            conns: Vec::new(),
            imds: Imds::new(content),
            epoch: StdInstant::now(),
            hop_limit: hop_limit(&options),
            enabled: options.http_endpoint == HttpEndpoint::Enabled,
        };
        service.keep_listening();
        service
    }

    /// Serves `content` under its options from now on. IMDSv2 tokens handed out stay valid;
    /// open connections take the new hop limit; disabling forgets every connection and frame
    /// in flight without a word to the guest.
    pub fn update(&mut self, content: InstanceMetadata) {
        let options = content.options;
        self.imds.update(content);
        self.hop_limit = hop_limit(&options);
        for (handle, _) in &self.conns {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            socket.set_hop_limit(Some(self.hop_limit));
        }
        let enabled = options.http_endpoint == HttpEndpoint::Enabled;
        if !enabled {
            for (handle, _) in self.conns.drain(..) {
                self.sockets.remove(handle);
            }
            self.wire = Wire::default();
        }
        self.enabled = enabled;
        self.keep_listening();
    }

    /// Whether a guest frame is the service's: ARP about 169.254.169.254 or IPv4 to it.
    pub fn wants(frame: &[u8]) -> bool {
        use smoltcp::wire::{ArpPacket, EthernetFrame, EthernetProtocol, Ipv4Packet};
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return false;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => ArpPacket::new_checked(eth.payload())
                .is_ok_and(|a| a.target_protocol_addr() == SERVICE_IP.octets()),
            EthernetProtocol::Ipv4 => {
                Ipv4Packet::new_checked(eth.payload()).is_ok_and(|ip| ip.dst_addr() == SERVICE_IP)
            }
            _ => false,
        }
    }

    /// Takes one guest frame; returns the frames for the guest it led to (none while the
    /// endpoint is disabled: the frame is dropped).
    pub fn handle(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        if !self.enabled {
            return Vec::new();
        }
        let mut frame = frame.to_vec();
        // A guest without an on-link route to the service (SYSTEM: the site's DHCP knows
        // nothing of it) sends through its router and never ARPs for the service: take the
        // packet whichever MAC it names, as EC2's hypervisor does, and learn the guest's MAC
        // from it, so the replies need no ARP either.
        if let Some(hint) = neighbour_hint(&frame) {
            frame[..6].copy_from_slice(&SERVICE_MAC.0);
            self.wire.rx.push_back(hint);
        }
        self.wire.rx.push_back(frame);
        self.pump();
        self.wire.tx.drain(..).collect()
    }

    fn now(&self) -> (Instant, StdInstant) {
        let now = StdInstant::now();
        let ms = now.duration_since(self.epoch).as_millis() as i64;
        (Instant::from_millis(ms), now)
    }

    /// Polls until nothing moves: frames in, requests answered, sockets recycled.
    fn pump(&mut self) {
        loop {
            let (now, wall) = self.now();
            let _ = self.iface.poll(now, &mut self.wire, &mut self.sockets);
            let served = self.serve(wall);
            self.keep_listening();
            if !served && self.wire.rx.is_empty() {
                let (now, _) = self.now();
                let _ = self.iface.poll(now, &mut self.wire, &mut self.sockets);
                return;
            }
        }
    }

    /// Reads requests and writes answers; whether any socket made progress.
    fn serve(&mut self, now: StdInstant) -> bool {
        let mut progress = false;
        for (handle, conn) in &mut self.conns {
            let socket = self.sockets.get_mut::<tcp::Socket>(*handle);
            if !conn.answered && socket.can_recv() {
                let _ = socket.recv(|data| {
                    conn.request.extend_from_slice(data);
                    (data.len(), ())
                });
                progress = true;
            }
            if !conn.answered {
                if let Parsed::Done(head, _) = take_head(&conn.request) {
                    let reply = self.imds.answer(&head, now);
                    // The reply fits the send buffer (user data is 16 KiB at most).
                    let _ = socket.send_slice(&reply);
                    socket.close();
                    conn.answered = true;
                    progress = true;
                } else if socket.state() == tcp::State::CloseWait {
                    socket.close(); // the guest closed before sending a whole request
                }
            }
        }
        progress
    }

    /// Drops closed connections and keeps [`SPARE_LISTENERS`] sockets listening (none while
    /// disabled).
    fn keep_listening(&mut self) {
        let sockets = &mut self.sockets;
        self.conns.retain(|(handle, _)| {
            // TIME-WAIT is over too: a lost final ACK on a virtio ring is not worth a socket.
            let state = sockets.get::<tcp::Socket>(*handle).state();
            let closed = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            if closed {
                sockets.remove(*handle);
            }
            !closed
        });
        let listening = (self.conns.iter())
            .filter(|(h, _)| self.sockets.get::<tcp::Socket>(*h).state() == tcp::State::Listen)
            .count();
        let wanted = if self.enabled { SPARE_LISTENERS } else { 0 };
        for _ in listening..wanted {
            if self.conns.len() >= MAX_CONNECTIONS {
                break;
            }
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; RX_BUFFER]),
                tcp::SocketBuffer::new(vec![0; TX_BUFFER]),
            );
            socket.set_ack_delay(None);
            socket.set_nagle_enabled(false);
            socket.set_hop_limit(Some(self.hop_limit));
            if socket.listen(HTTP_PORT).is_ok() {
                let handle = self.sockets.add(socket);
                self.conns.push((handle, Conn::default()));
            }
        }
    }
}

#[cfg(test)]
#[path = "metadata_tests.rs"]
mod tests;
