use std::net::Ipv4Addr;
use std::sync::Arc;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use smoltcp::wire::{
    ArpOperation, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket,
};

use super::*;

const GUEST: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const OTHER: Mac = Mac([0x52, 0x54, 0x00, 0x99, 0x99, 0x99]);
const ME: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 5);
const GW: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);

fn address() -> GuestAddress {
    GuestAddress {
        address: ME,
        prefix_len: 24,
        gateway: Some(GW),
        dns: vec![GW, Ipv4Addr::new(9, 9, 9, 9)],
        hostname: Some("i-0abc".into()),
    }
}

fn port(address: Option<GuestAddress>) -> (Port, Arc<PortCounters>) {
    let counters = Arc::new(PortCounters::default());
    (Port::new(GUEST, address, counters.clone()), counters)
}

/// A client message of `mtype` from `chaddr`, as a broadcast frame from `src_mac`/`src_ip`.
fn dhcp(mtype: MessageType, chaddr: Mac, src_mac: Mac, src_ip: Ipv4Addr) -> (Vec<u8>, Message) {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_xid(0x3903_f326)
        .set_flags(Flags::default().set_broadcast())
        .set_chaddr(&chaddr.octets());
    m.opts_mut().insert(DhcpOption::MessageType(mtype));
    if mtype == MessageType::Request {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ME));
    }
    let frame = udp_frame(
        (src_mac, Mac([0xff; 6])),
        src_ip,
        Ipv4Addr::BROADCAST,
        (68, 67),
        &m.to_vec().unwrap(),
    );
    (frame, m)
}

/// The DHCP reply inside an answer frame, after checking its Ethernet, IPv4 and UDP layers.
fn reply(verdict: Verdict) -> Message {
    let Verdict::Answer(frame) = verdict else {
        panic!("no answer: {verdict:?}");
    };
    let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!(eth.dst_addr().0, GUEST.octets(), "sent to the guest's MAC");
    assert_eq!(eth.src_addr().0, SERVICE_MAC.octets());
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    assert_eq!(ip.next_header(), IpProtocol::Udp);
    assert_eq!(ip.src_addr(), GW, "from the server identifier");
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
    assert_eq!((udp.src_port(), udp.dst_port()), (67, 68));
    Message::from_bytes(udp.payload()).unwrap()
}

#[test]
fn discover_gets_an_offer_of_the_guests_address_with_its_options() {
    let (p, c) = port(Some(address()));
    let (frame, req) = dhcp(MessageType::Discover, GUEST, GUEST, Ipv4Addr::UNSPECIFIED);
    let offer = reply(p.check(&frame));
    assert_eq!(offer.opcode(), Opcode::BootReply);
    assert_eq!(offer.xid(), req.xid());
    assert_eq!(offer.chaddr(), req.chaddr());
    assert_eq!(offer.yiaddr(), ME);
    let o = offer.opts();
    assert_eq!(o.msg_type(), Some(MessageType::Offer));
    assert_eq!(
        o.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        o.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![GW]))
    );
    assert_eq!(
        o.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(address().dns))
    );
    assert_eq!(
        o.get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("i-0abc".into()))
    );
    assert_eq!(
        o.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(GW))
    );
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(LEASE_SECS))
    );
    let s = c.status(GUEST);
    assert_eq!(s.dhcp_answered, 1);
    assert!(!s.address_taken, "an offer is not yet taken");
    assert_eq!(
        o.get(OptionCode::ClasslessStaticRoute),
        None,
        "no metadata service"
    );
}

#[test]
fn with_a_metadata_service_the_offer_routes_it_on_link() {
    let (p, _) = port(Some(address()));
    let p = p.with_metadata(Some(Arc::new(LiveMetadata::new(Default::default()))));
    let (frame, _) = dhcp(MessageType::Discover, GUEST, GUEST, Ipv4Addr::UNSPECIFIED);
    let offer = reply(p.check(&frame));
    let service = "169.254.169.254/32".parse().unwrap();
    assert_eq!(
        offer.opts().get(OptionCode::ClasslessStaticRoute),
        Some(&DhcpOption::ClasslessStaticRoute(vec![
            (service, Ipv4Addr::UNSPECIFIED),
            ("0.0.0.0/0".parse().unwrap(), GW),
        ]))
    );
}

#[test]
fn the_port_serves_what_the_api_last_set_and_a_disabled_service_keeps_frames_from_the_tap() {
    use mallee_proto::vmm::InstanceMetadata;
    use mallee_proto::{HttpEndpoint, MetadataOptions};
    let (p, _) = port(Some(address()));
    let live = Arc::new(LiveMetadata::new(Default::default()));
    let mut p = p.with_metadata(Some(live.clone()));
    let who_has = arp_frame(GUEST, ME, SERVICE_IP, ArpOperation::Request);
    assert_eq!(p.check(&who_has), Verdict::Forward);
    assert_eq!(p.serve(&who_has).map(|r| r.len()), Some(1), "an ARP reply");
    let off = MetadataOptions {
        http_endpoint: HttpEndpoint::Disabled,
        ..MetadataOptions::default()
    };
    live.replace(InstanceMetadata {
        options: off,
        ..Default::default()
    });
    assert_eq!(
        p.serve(&who_has),
        Some(vec![]),
        "taken (not sent to the tap), unanswered"
    );
    live.replace(InstanceMetadata::default());
    assert_eq!(
        p.serve(&who_has).map(|r| r.len()),
        Some(1),
        "answered again"
    );
    let elsewhere = arp_frame(GUEST, ME, GW, ArpOperation::Request);
    assert_eq!(
        p.serve(&elsewhere),
        None,
        "not the service's: on to the tap"
    );
}

#[test]
fn a_request_for_its_address_is_acked_and_marks_it_taken_another_is_refused() {
    let (p, c) = port(Some(address()));
    let (frame, _) = dhcp(MessageType::Request, GUEST, GUEST, Ipv4Addr::UNSPECIFIED);
    let ack = reply(p.check(&frame));
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), ME);
    assert!(c.status(GUEST).address_taken);

    let mut other = address();
    other.address = Ipv4Addr::new(10, 7, 0, 9);
    let (p, c) = port(Some(other));
    let nak = reply(p.check(&frame));
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(!c.status(GUEST).address_taken);
}

#[test]
fn the_server_identifier_is_the_service_address_without_a_gateway() {
    let mut a = address();
    a.gateway = None;
    let (p, _) = port(Some(a));
    let (frame, _) = dhcp(MessageType::Discover, GUEST, GUEST, Ipv4Addr::UNSPECIFIED);
    let Verdict::Answer(answer) = p.check(&frame) else {
        panic!("no answer");
    };
    let eth = EthernetFrame::new_checked(&answer[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.src_addr(), SERVICE_IP);
    let offer = Message::from_bytes(UdpPacket::new_checked(ip.payload()).unwrap().payload());
    assert!(offer.unwrap().opts().get(OptionCode::Router).is_none());
}

#[test]
fn release_and_decline_are_kept_from_the_wire_without_an_answer() {
    let (p, c) = port(Some(address()));
    for mtype in [MessageType::Release, MessageType::Decline] {
        let (frame, _) = dhcp(mtype, GUEST, GUEST, ME);
        assert_eq!(p.check(&frame), Verdict::Swallow);
    }
    assert_eq!(c.status(GUEST).dhcp_answered, 0);
}

#[test]
fn spoofed_frames_are_dropped_and_counted_by_reason() {
    let (p, c) = port(Some(address()));
    let udp = |mac, src| udp_frame((mac, OTHER), src, GW, (4000, 5000), b"hello");
    assert_eq!(p.check(&udp(GUEST, ME)), Verdict::Forward);
    assert_eq!(p.check(&udp(OTHER, ME)), Verdict::Drop(Spoof::Mac));
    assert_eq!(
        p.check(&udp(GUEST, Ipv4Addr::new(10, 7, 0, 6))),
        Verdict::Drop(Spoof::Ip)
    );
    // DHCP for another client's hardware address, from the guest's own MAC.
    let (frame, _) = dhcp(MessageType::Discover, OTHER, GUEST, Ipv4Addr::UNSPECIFIED);
    assert_eq!(p.check(&frame), Verdict::Drop(Spoof::Mac));
    // ARP claiming another address, or from another MAC.
    let arp = |mac, ip| arp_frame(mac, ip, GW, ArpOperation::Request);
    assert_eq!(
        p.check(&arp(GUEST, Ipv4Addr::new(10, 7, 0, 6))),
        Verdict::Drop(Spoof::Arp)
    );
    assert_eq!(p.check(&arp(OTHER, ME)), Verdict::Drop(Spoof::Mac));
    let mut lying = arp(GUEST, ME);
    lying[22..28].copy_from_slice(&OTHER.octets()); // ARP sender hardware address
    assert_eq!(p.check(&lying), Verdict::Drop(Spoof::Arp));
    // A VLAN tag, IPv6 and a runt.
    let mut tagged = udp(GUEST, ME);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
    assert_eq!(p.check(&tagged), Verdict::Drop(Spoof::Other));
    let mut v6 = udp(GUEST, ME);
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(p.check(&v6), Verdict::Drop(Spoof::Other));
    assert_eq!(p.check(&[0u8; 10]), Verdict::Drop(Spoof::Other));
    let s = c.status(GUEST);
    assert_eq!(
        s.dropped,
        Dropped {
            mac: 3,
            ip: 1,
            arp: 2,
            other: 3
        }
    );
    assert!(!s.address_taken);
}

#[test]
fn arp_for_its_own_address_or_a_probe_goes_out_and_the_first_marks_it_taken() {
    let (p, c) = port(Some(address()));
    let probe = arp_frame(GUEST, Ipv4Addr::UNSPECIFIED, ME, ArpOperation::Request);
    assert_eq!(p.check(&probe), Verdict::Forward);
    assert!(!c.status(GUEST).address_taken);
    let announce = arp_frame(GUEST, ME, GW, ArpOperation::Request);
    assert_eq!(p.check(&announce), Verdict::Forward);
    assert!(c.status(GUEST).address_taken);
}

#[test]
fn without_an_address_only_the_mac_and_vlan_tags_are_checked_and_dhcp_goes_out() {
    let (p, c) = port(None);
    let (frame, _) = dhcp(MessageType::Discover, GUEST, GUEST, Ipv4Addr::UNSPECIFIED);
    assert_eq!(p.check(&frame), Verdict::Forward, "the site's DHCP answers");
    let any = udp_frame(
        (GUEST, OTHER),
        Ipv4Addr::new(192, 0, 2, 9),
        GW,
        (1, 2),
        b"x",
    );
    assert_eq!(p.check(&any), Verdict::Forward);
    let mut tagged = any.clone();
    tagged.splice(12..12, [0x88, 0xa8, 0x00, 0x64]);
    assert_eq!(p.check(&tagged), Verdict::Drop(Spoof::Other));
    let mut other = any;
    other[6..12].copy_from_slice(&OTHER.octets());
    assert_eq!(p.check(&other), Verdict::Drop(Spoof::Mac));
    assert_eq!(c.status(GUEST).dhcp_answered, 0);
}

/// SYSTEM: the site's DHCP picks the guest's address, so the VMM learns it from what the guest
/// sends; a DHCP client's `0.0.0.0` and a spoofed frame teach it nothing.
#[test]
fn without_an_address_the_one_the_guest_uses_is_noted() {
    let (p, c) = port(None);
    let (discover, _) = dhcp(MessageType::Discover, GUEST, GUEST, Ipv4Addr::UNSPECIFIED);
    assert_eq!(p.check(&discover), Verdict::Forward);
    let probe = arp_frame(GUEST, Ipv4Addr::UNSPECIFIED, ME, ArpOperation::Request);
    assert_eq!(p.check(&probe), Verdict::Forward);
    let mut spoofed = arp_frame(GUEST, GW, ME, ArpOperation::Request);
    spoofed[6..12].copy_from_slice(&OTHER.octets());
    assert_eq!(p.check(&spoofed), Verdict::Drop(Spoof::Mac));
    let s = c.status(GUEST);
    assert_eq!((s.address_taken, s.address), (false, None));
    let leased = Ipv4Addr::new(10, 77, 0, 201);
    let announce = arp_frame(GUEST, leased, GW, ArpOperation::Request);
    assert_eq!(p.check(&announce), Verdict::Forward);
    let s = c.status(GUEST);
    assert_eq!((s.address_taken, s.address), (true, Some(leased)));
    let other = udp_frame(
        (GUEST, OTHER),
        Ipv4Addr::new(10, 77, 0, 202),
        GW,
        (1, 2),
        b"x",
    );
    assert_eq!(p.check(&other), Verdict::Forward);
    assert_eq!(c.status(GUEST).address, Some(Ipv4Addr::new(10, 77, 0, 202)));
}

#[test]
fn truncations_of_a_dhcp_request_never_panic() {
    let (p, _) = port(Some(address()));
    let (frame, _) = dhcp(MessageType::Request, GUEST, GUEST, Ipv4Addr::UNSPECIFIED);
    for len in 0..frame.len() {
        let _ = p.check(&frame[..len]);
    }
}
