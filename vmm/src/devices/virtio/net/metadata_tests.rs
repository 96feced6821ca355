//! The metadata service against a real TCP/IP client: a second smoltcp interface plays the
//! guest, and every frame between them goes through [`MetadataService::handle`].

use super::*;
use mallee_proto::{HttpTokens, MetadataDocument};
use smoltcp::wire::{EthernetFrame, EthernetProtocol, Ipv4Address, Ipv4Packet};

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0xe2, 0xe0, 0x01];

/// The guest side: its interface, its frames in flight, its sockets.
struct Guest {
    iface: Interface,
    wire: Wire,
    sockets: SocketSet<'static>,
    ms: i64,
    /// Leave TCP checksums as an offloading guest does (partial: zero here).
    offload: bool,
    /// Every frame the service sent the guest.
    received: Vec<Vec<u8>>,
    /// Routed through [`ROUTER`] (no on-link route to the service): its ARP is answered here.
    routed: bool,
}

/// The site's router of a routed guest (SYSTEM), and its MAC.
const ROUTER: Ipv4Address = Ipv4Address::new(10, 77, 0, 250);
const ROUTER_MAC: [u8; 6] = [0x52, 0x54, 0, 0xe2, 0xe0, 0xfe];

impl Guest {
    fn new() -> Guest {
        let mut wire = Wire::default();
        let config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GUEST_MAC)));
        let mut iface = Interface::new(config, &mut wire, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            // Its own address, and 169.254/16 on-link (the route DHCP option 121 gives).
            let _ = a.push(IpCidr::new(IpAddress::v4(172, 31, 0, 2), 27));
            let _ = a.push(IpCidr::new(IpAddress::v4(169, 254, 0, 2), 16));
        });
        Guest {
            iface,
            wire,
            sockets: SocketSet::new(Vec::new()),
            ms: 0,
            offload: false,
            received: Vec::new(),
            routed: false,
        }
    }

    /// A guest whose lease (the site's) gave it an address and a default route only.
    fn routed() -> Guest {
        let mut g = Guest::new();
        g.iface.update_ip_addrs(|a| {
            a.clear();
            let _ = a.push(IpCidr::new(IpAddress::v4(10, 77, 0, 232), 24));
        });
        g.iface.routes_mut().add_default_ipv4_route(ROUTER).unwrap();
        g.routed = true;
        g
    }

    /// The router's answer to the guest's ARP request for it, if `frame` is one.
    fn router_arp(&self, frame: &[u8]) -> Option<Vec<u8>> {
        use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetRepr};
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
        let ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = arp
        else {
            return None;
        };
        (self.routed && target_protocol_addr == ROUTER).then_some(())?;
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(ROUTER_MAC),
            source_protocol_addr: ROUTER,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let header = EthernetRepr {
            src_addr: EthernetAddress(ROUTER_MAC),
            dst_addr: source_hardware_addr,
            ethertype: EthernetProtocol::Arp,
        };
        let mut out = vec![0u8; header.buffer_len() + reply.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
        header.emit(&mut eth);
        reply.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        Some(out)
    }

    /// Polls the guest and carries frames both ways until nothing moves.
    fn exchange(&mut self, service: &mut MetadataService) {
        for _ in 0..1000 {
            self.ms += 1;
            let _ = self.iface.poll(
                Instant::from_millis(self.ms),
                &mut self.wire,
                &mut self.sockets,
            );
            let out: Vec<Vec<u8>> = self.wire.tx.drain(..).collect();
            if out.is_empty() {
                return;
            }
            for mut frame in out {
                if let Some(reply) = self.router_arp(&frame) {
                    self.wire.rx.push_back(reply);
                    continue;
                }
                assert!(MetadataService::wants(&frame), "the guest sent elsewhere");
                // Ethernet 14 + IPv4 20 (no options from smoltcp): TCP checksum at 16..18.
                if self.offload && frame.len() >= 54 && frame[12..14] == [8, 0] && frame[23] == 6 {
                    frame[50..52].copy_from_slice(&[0, 0]);
                }
                let replies = service.handle(&frame);
                self.received.extend(replies.iter().cloned());
                self.wire.rx.extend(replies);
            }
        }
        panic!("the exchange never settled");
    }

    /// Opens a connection from local port `port` and carries frames until nothing moves.
    fn connect(&mut self, service: &mut MetadataService, port: u16) -> SocketHandle {
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        let h = self.sockets.add(socket);
        let remote = (IpAddress::Ipv4(Ipv4Address::new(169, 254, 169, 254)), 80);
        let cx = self.iface.context();
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(cx, remote, port)
            .unwrap();
        self.exchange(service);
        h
    }

    /// The IP TTL of every IPv4 frame the service sent.
    fn ttls(&self) -> Vec<u8> {
        (self.received.iter())
            .filter_map(|f| EthernetFrame::new_checked(&f[..]).ok())
            .filter(|eth| eth.ethertype() == EthernetProtocol::Ipv4)
            .map(|eth| Ipv4Packet::new_checked(eth.payload()).unwrap().hop_limit())
            .collect()
    }

    /// One HTTP exchange on a fresh connection from local port `port`.
    fn fetch(&mut self, service: &mut MetadataService, port: u16, request: &str) -> Vec<u8> {
        let h = self.connect(service, port);
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        assert!(s.may_send(), "not connected: {}", s.state());
        s.send_slice(request.as_bytes()).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            self.exchange(service);
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            while s.can_recv() {
                s.recv(|d| {
                    got.extend_from_slice(d);
                    (d.len(), ())
                })
                .unwrap();
            }
            if !s.may_recv() {
                break;
            }
        }
        self.sockets.get_mut::<tcp::Socket>(h).close();
        self.exchange(service);
        self.sockets.remove(h);
        got
    }
}

fn content(user_data: Option<Vec<u8>>, options: MetadataOptions) -> InstanceMetadata {
    use base64::Engine;
    InstanceMetadata {
        document: MetadataDocument {
            instance_id: "i-0123456789abcdef0".into(),
            ..Default::default()
        },
        user_data: user_data.map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
        options,
    }
}

fn service(user_data: Option<Vec<u8>>) -> MetadataService {
    MetadataService::new(content(user_data, MetadataOptions::default()))
}

fn hops(n: u8) -> MetadataOptions {
    MetadataOptions {
        http_put_response_hop_limit: n,
        ..MetadataOptions::default()
    }
}

fn disabled() -> MetadataOptions {
    MetadataOptions {
        http_endpoint: HttpEndpoint::Disabled,
        ..MetadataOptions::default()
    }
}

const INSTANCE_ID: &str = "GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n";

#[test]
fn a_guest_resolves_the_service_and_fetches_over_tcp() {
    let mut svc = service(None);
    let mut guest = Guest::new();
    let reply = guest.fetch(
        &mut svc,
        40000,
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    );
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\ni-0123456789abcdef0"), "{reply}");
}

/// SYSTEM: the guest's packets for the service go to its router's MAC (its only route is the
/// default one); the service takes them all the same.
#[test]
fn a_guest_that_routes_to_the_service_through_its_router_is_served() {
    let mut svc = service(None);
    let mut guest = Guest::routed();
    let reply = guest.fetch(
        &mut svc,
        40000,
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    );
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.ends_with("\r\n\r\ni-0123456789abcdef0"), "{reply}");
}

#[test]
fn a_guest_offloading_its_tcp_checksums_is_served() {
    let mut svc = service(None);
    let mut guest = Guest::new();
    guest.offload = true;
    let reply = guest.fetch(
        &mut svc,
        40002,
        "GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n",
    );
    assert!(
        reply.ends_with(b"i-0123456789abcdef0"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[test]
fn sixteen_kib_of_user_data_arrive_whole() {
    let data: Vec<u8> = (0..16 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut svc = service(Some(data.clone()));
    let mut guest = Guest::new();
    let reply = guest.fetch(&mut svc, 40001, "GET /latest/user-data HTTP/1.0\r\n\r\n");
    let at = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        reply[at..] == data[..],
        "{} bytes of user data came back",
        reply.len() - at
    );
}

#[test]
fn many_connections_in_a_row_are_all_served() {
    let mut svc = service(None);
    let mut guest = Guest::new();
    for n in 0..(3 * MAX_CONNECTIONS as u16) {
        let reply = guest.fetch(
            &mut svc,
            41000 + n,
            "GET /latest/meta-data/ HTTP/1.1\r\n\r\n",
        );
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("HTTP/1.1 200 OK"),
            "connection {n}: {reply:?}"
        );
    }
    assert!(
        svc.conns.len() <= SPARE_LISTENERS + 1,
        "closed connections were not let go"
    );
}

#[test]
fn only_arp_and_ipv4_for_the_service_address_are_taken() {
    use crate::devices::virtio::net::port::{arp_frame, udp_frame};
    use smoltcp::wire::ArpOperation;
    let mac = mallee_proto::Mac(GUEST_MAC);
    let me = std::net::Ipv4Addr::new(172, 31, 0, 2);
    let ask = |target| arp_frame(mac, me, target, ArpOperation::Request);
    assert!(MetadataService::wants(&ask(SERVICE_IP)));
    assert!(!MetadataService::wants(&ask(std::net::Ipv4Addr::new(
        172, 31, 0, 1
    ))));
    let udp = |dst| udp_frame((mac, SERVICE_MAC), me, dst, (5000, 80), b"x");
    assert!(MetadataService::wants(&udp(SERVICE_IP)));
    assert!(!MetadataService::wants(&udp(std::net::Ipv4Addr::new(
        8, 8, 8, 8
    ))));
    assert!(!MetadataService::wants(&[0u8; 10]));
}

#[test]
fn replies_carry_the_hop_limit_as_their_ip_ttl() {
    let mut svc = MetadataService::new(content(None, hops(3)));
    let mut guest = Guest::new();
    let reply = guest.fetch(&mut svc, 40100, INSTANCE_ID);
    assert!(reply.ends_with(b"i-0123456789abcdef0"));
    let ttls = guest.ttls();
    assert!(ttls.len() >= 3, "SYN-ACK, data and FIN at least: {ttls:?}");
    assert!(ttls.iter().all(|t| *t == 3), "{ttls:?}");
}

#[test]
fn the_default_hop_limit_is_one() {
    let mut svc = service(None);
    let mut guest = Guest::new();
    guest.fetch(&mut svc, 40101, INSTANCE_ID);
    let ttls = guest.ttls();
    assert!(!ttls.is_empty() && ttls.iter().all(|t| *t == 1), "{ttls:?}");
}

#[test]
fn a_disabled_endpoint_answers_neither_arp_nor_tcp() {
    use crate::devices::virtio::net::port::arp_frame;
    use smoltcp::wire::ArpOperation;
    let mut svc = MetadataService::new(content(None, disabled()));
    let who_has = arp_frame(
        mallee_proto::Mac(GUEST_MAC),
        std::net::Ipv4Addr::new(172, 31, 0, 2),
        SERVICE_IP,
        ArpOperation::Request,
    );
    assert!(
        MetadataService::wants(&who_has),
        "still taken from the wire"
    );
    assert_eq!(svc.handle(&who_has), Vec::<Vec<u8>>::new(), "no ARP reply");
    // The guest's stack gets no ARP answer, so no SYN ever leaves it; the service's own
    // TCP/IP holds nothing either.
    let mut guest = Guest::new();
    let h = guest.connect(&mut svc, 40102);
    assert!(guest.received.is_empty(), "{:?}", guest.received);
    assert_eq!(
        guest.sockets.get::<tcp::Socket>(h).state(),
        tcp::State::SynSent
    );
    assert!(svc.conns.is_empty(), "no listener while disabled");
}

#[test]
fn an_update_changes_the_ttl_and_keeps_the_tokens() {
    let mut svc = MetadataService::new(content(None, hops(1)));
    let mut guest = Guest::new();
    let put = "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n";
    let reply = String::from_utf8(guest.fetch(&mut svc, 40103, put)).unwrap();
    let token = reply.split("\r\n\r\n").nth(1).unwrap().to_string();
    svc.update(content(
        None,
        MetadataOptions {
            http_tokens: HttpTokens::Required,
            http_put_response_hop_limit: 9,
            ..MetadataOptions::default()
        },
    ));
    guest.received.clear();
    let v1 = String::from_utf8(guest.fetch(&mut svc, 40104, INSTANCE_ID)).unwrap();
    assert!(v1.starts_with("HTTP/1.1 401 "), "{v1}");
    let with = format!(
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n"
    );
    let v2 = String::from_utf8(guest.fetch(&mut svc, 40105, &with)).unwrap();
    assert!(v2.starts_with("HTTP/1.1 200 "), "{v2}");
    let ttls = guest.ttls();
    assert!(!ttls.is_empty() && ttls.iter().all(|t| *t == 9), "{ttls:?}");
}

#[test]
fn disabling_drops_open_connections_silently_and_enabling_serves_again() {
    let mut svc = service(None);
    let mut guest = Guest::new();
    let h = guest.connect(&mut svc, 40106);
    assert!(guest.sockets.get::<tcp::Socket>(h).may_send());
    svc.update(content(None, disabled()));
    guest.received.clear();
    let s = guest.sockets.get_mut::<tcp::Socket>(h);
    s.send_slice(INSTANCE_ID.as_bytes()).unwrap();
    guest.exchange(&mut svc);
    assert!(
        guest.received.is_empty(),
        "not even a reset: {:?}",
        guest.received
    );
    guest.sockets.get_mut::<tcp::Socket>(h).abort();
    guest.exchange(&mut svc);
    svc.update(content(None, MetadataOptions::default()));
    let reply = guest.fetch(&mut svc, 40107, INSTANCE_ID);
    assert!(reply.ends_with(b"i-0123456789abcdef0"));
}
