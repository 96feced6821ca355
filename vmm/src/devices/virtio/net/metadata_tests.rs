//! The metadata service against a real TCP/IP client: a second smoltcp interface plays the
//! guest, and every frame between them goes through [`MetadataService::handle`].

use super::*;
use mallee_proto::MetadataDocument;
use smoltcp::wire::Ipv4Address;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0xe2, 0xe0, 0x01];

/// The guest side: its interface, its frames in flight, its sockets.
struct Guest {
    iface: Interface,
    wire: Wire,
    sockets: SocketSet<'static>,
    ms: i64,
    /// Leave TCP checksums as an offloading guest does (partial: zero here).
    offload: bool,
}

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
        }
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
                assert!(MetadataService::wants(&frame), "the guest sent elsewhere");
                // Ethernet 14 + IPv4 20 (no options from smoltcp): TCP checksum at 16..18.
                if self.offload && frame.len() >= 54 && frame[12..14] == [8, 0] && frame[23] == 6 {
                    frame[50..52].copy_from_slice(&[0, 0]);
                }
                self.wire.rx.extend(service.handle(&frame));
            }
        }
        panic!("the exchange never settled");
    }

    /// One HTTP exchange on a fresh connection from local port `port`.
    fn fetch(&mut self, service: &mut MetadataService, port: u16, request: &str) -> Vec<u8> {
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

fn service(user_data: Option<Vec<u8>>) -> MetadataService {
    use base64::Engine;
    MetadataService::new(InstanceMetadata {
        document: MetadataDocument {
            instance_id: "i-0123456789abcdef0".into(),
            ..Default::default()
        },
        user_data: user_data.map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
    })
}

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
