use super::*;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn sent(actions: &[Action]) -> (Message, Destination) {
    match actions.last() {
        Some(Action::Send { bytes, to }) => (Message::from_bytes(bytes).unwrap(), *to),
        other => panic!("expected a datagram, got {other:?}"),
    }
}

/// A server reply to `request`, as slirp would send it (lease 3600 s, T1/T2 defaults).
fn reply(request: &Message, kind: MessageType, addr: Ipv4Addr) -> Vec<u8> {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(request.xid(), zero, addr, SERVER, zero, &MAC);
    msg.set_opcode(Opcode::BootReply);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(SERVER));
    if kind != MessageType::Nak {
        opts.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        opts.insert(DhcpOption::Router(vec![SERVER]));
        opts.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        opts.insert(DhcpOption::AddressLeaseTime(3600));
    }
    msg.to_vec().unwrap()
}

/// Runs DISCOVER → OFFER → REQUEST → ACK at time 0 and returns the bound client.
fn bound_client() -> DhcpClient {
    let mut client = DhcpClient::new(MAC, Some("n1".into()), 42);
    let (discover, _) = sent(&client.on_timeout(secs(0)).unwrap());
    let (request, _) = sent(
        &client
            .on_packet(secs(0), &reply(&discover, MessageType::Offer, ADDR))
            .unwrap(),
    );
    client
        .on_packet(secs(0), &reply(&request, MessageType::Ack, ADDR))
        .unwrap();
    assert_eq!(client.state_name(), "BOUND");
    client
}

#[test]
fn discover_offer_request_ack_configures_the_lease() {
    let mut client = DhcpClient::new(MAC, Some("n1".into()), 42);
    let (discover, to) = sent(&client.on_timeout(secs(0)).unwrap());
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(discover.opts().msg_type(), Some(MessageType::Discover));
    assert!(discover.flags().broadcast());
    assert_eq!(&discover.chaddr()[..6], &MAC);
    assert_eq!(
        discover.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("n1".into()))
    );
    assert_eq!(client.state_name(), "SELECTING");

    let (request, to) = sent(
        &client
            .on_packet(secs(1), &reply(&discover, MessageType::Offer, ADDR))
            .unwrap(),
    );
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(request.xid(), discover.xid());
    assert_eq!(request.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(
        request.opts().get(OptionCode::RequestedIpAddress),
        Some(&DhcpOption::RequestedIpAddress(ADDR))
    );
    assert_eq!(
        request.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );

    let actions = client
        .on_packet(secs(2), &reply(&request, MessageType::Ack, ADDR))
        .unwrap();
    let expected = Lease {
        addr: ADDR,
        prefix: 24,
        router: Some(SERVER),
        routes: vec![],
        dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
        server: SERVER,
        lease_time: secs(3600),
        t1: secs(1800),
        t2: secs(3150),
    };
    assert_eq!(actions, vec![Action::Configure(expected)]);
    assert_eq!(client.deadline(), secs(2 + 1800));
}

#[test]
fn nak_while_requesting_restarts_discovery_after_a_growing_backoff() {
    let mut client = DhcpClient::new(MAC, None, 7);
    let mut now = secs(0);
    let mut waits = Vec::new();
    for _ in 0..3 {
        let (discover, _) = sent(&client.on_timeout(now).unwrap());
        assert_eq!(discover.opts().msg_type(), Some(MessageType::Discover));
        let offer = reply(&discover, MessageType::Offer, ADDR);
        let (request, _) = sent(&client.on_packet(now, &offer).unwrap());
        let nak = reply(&request, MessageType::Nak, ADDR);
        assert_eq!(client.on_packet(now, &nak).unwrap(), vec![]);
        assert_eq!(client.state_name(), "INIT");
        waits.push(client.deadline() - now);
        now = client.deadline();
    }
    assert!(
        waits[0] >= secs(7) && waits[1] > waits[0] && waits[2] > waits[1],
        "{waits:?}"
    );
}

#[test]
fn silence_backs_off_exponentially_with_jitter_up_to_64s() {
    let mut client = DhcpClient::new(MAC, None, 99);
    let mut now = secs(0);
    let mut waits = Vec::new();
    for _ in 0..7 {
        sent(&client.on_timeout(now).unwrap());
        waits.push(client.deadline() - now);
        now = client.deadline();
    }
    for (wait, base) in waits.iter().zip([4, 8, 16, 32, 64, 64, 64]) {
        assert!(
            *wait >= secs(base - 1) && *wait <= secs(base + 1),
            "{waits:?}"
        );
    }
    assert!(
        waits
            .windows(2)
            .any(|w| w[0].subsec_millis() != w[1].subsec_millis()),
        "no jitter: {waits:?}"
    );
}

#[test]
fn renews_unicast_at_t1_and_a_new_ack_extends_the_lease() {
    let mut client = bound_client();
    assert_eq!(client.deadline(), secs(1800));
    let (renew, to) = sent(&client.on_timeout(secs(1800)).unwrap());
    assert_eq!(to, Destination::Unicast(SERVER));
    assert_eq!(renew.ciaddr(), ADDR);
    assert!(!renew.flags().broadcast());
    assert_eq!(renew.opts().get(OptionCode::RequestedIpAddress), None);
    assert_eq!(client.state_name(), "RENEWING");
    let actions = client
        .on_packet(secs(1801), &reply(&renew, MessageType::Ack, ADDR))
        .unwrap();
    assert!(
        matches!(&actions[..], [Action::Configure(l)] if l.addr == ADDR),
        "{actions:?}"
    );
    assert_eq!(client.deadline(), secs(1801 + 1800));
}

#[test]
fn rebinds_broadcast_at_t2_then_expiry_deconfigures_and_rediscovers() {
    let mut client = bound_client();
    let mut now = client.deadline();
    while client.state_name() != "REBINDING" {
        sent(&client.on_timeout(now).unwrap());
        assert!(client.deadline() > now);
        now = client.deadline();
    }
    assert!(now > secs(3150) - secs(1) && now <= secs(3600), "{now:?}");
    let actions = loop {
        let actions = client.on_timeout(now).unwrap();
        if client.state_name() != "REBINDING" {
            break actions;
        }
        assert_eq!(sent(&actions).1, Destination::Broadcast);
        now = client.deadline();
    };
    assert_eq!(now, secs(3600));
    assert!(
        matches!(&actions[0], Action::Deconfigure(l) if l.addr == ADDR),
        "{actions:?}"
    );
    assert_eq!(
        sent(&actions).0.opts().msg_type(),
        Some(MessageType::Discover)
    );
}

#[test]
fn ack_with_a_new_address_while_renewing_replaces_the_old_one() {
    let mut client = bound_client();
    let (renew, _) = sent(&client.on_timeout(secs(1800)).unwrap());
    let new = Ipv4Addr::new(10, 0, 2, 16);
    let actions = client
        .on_packet(secs(1800), &reply(&renew, MessageType::Ack, new))
        .unwrap();
    assert!(
        matches!(&actions[..], [Action::Deconfigure(o), Action::Configure(n)] if o.addr == ADDR && n.addr == new)
    );
}

#[test]
fn nak_while_renewing_drops_the_lease_and_rediscovers() {
    let mut client = bound_client();
    let (renew, _) = sent(&client.on_timeout(secs(1800)).unwrap());
    let actions = client
        .on_packet(secs(1800), &reply(&renew, MessageType::Nak, ADDR))
        .unwrap();
    assert!(
        matches!(&actions[..], [Action::Deconfigure(l)] if l.addr == ADDR),
        "{actions:?}"
    );
    assert_eq!(client.state_name(), "INIT");
    let (discover, _) = sent(&client.on_timeout(client.deadline()).unwrap());
    assert_eq!(discover.opts().msg_type(), Some(MessageType::Discover));
}

#[test]
fn foreign_transactions_and_garbage_are_ignored_or_errors() {
    let mut client = DhcpClient::new(MAC, None, 5);
    let (discover, _) = sent(&client.on_timeout(secs(0)).unwrap());
    let mut other = discover.clone();
    other.set_xid(discover.xid().wrapping_add(1));
    assert_eq!(
        client
            .on_packet(secs(0), &reply(&other, MessageType::Offer, ADDR))
            .unwrap(),
        vec![]
    );
    assert!(client.on_packet(secs(0), &[1, 2, 3]).is_err());
    assert!(client.on_packet(secs(0), &[]).is_err());
    // our own broadcast DISCOVER echoed back is a BootRequest: ignored
    assert_eq!(
        client
            .on_packet(secs(0), &discover.to_vec().unwrap())
            .unwrap(),
        vec![]
    );
    assert_eq!(client.state_name(), "SELECTING");
}

#[test]
fn requesting_gives_up_after_four_tries_and_rediscovers() {
    let mut client = DhcpClient::new(MAC, None, 3);
    let (discover, _) = sent(&client.on_timeout(secs(0)).unwrap());
    sent(
        &client
            .on_packet(secs(0), &reply(&discover, MessageType::Offer, ADDR))
            .unwrap(),
    );
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let now = client.deadline();
        kinds.push(sent(&client.on_timeout(now).unwrap()).0.opts().msg_type());
    }
    use MessageType::{Discover, Request};
    assert_eq!(
        kinds,
        vec![Some(Request), Some(Request), Some(Request), Some(Discover)]
    );
}

#[test]
fn blank_request_matches_the_library_constructor() {
    let ours = blank_request(0x1234_5678, ADDR, MAC);
    let theirs = Message::new_with_id(
        0x1234_5678,
        ADDR,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    assert_eq!(ours.to_vec().unwrap(), theirs.to_vec().unwrap());
}

#[test]
fn truncated_and_random_datagrams_never_panic() {
    let mut client = DhcpClient::new(MAC, None, 11);
    let (discover, _) = sent(&client.on_timeout(secs(0)).unwrap());
    let offer = reply(&discover, MessageType::Offer, ADDR);
    for len in 0..offer.len() {
        let mut probe = DhcpClient::new(MAC, None, 11);
        sent(&probe.on_timeout(secs(0)).unwrap());
        let _ = probe.on_packet(secs(0), &offer[..len]);
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..2000 {
        let mut bytes = offer.clone();
        for _ in 0..(round % 16 + 1) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = (rng % bytes.len() as u64) as usize;
            bytes[at] = (rng >> 32) as u8;
        }
        let _ = client.on_packet(secs(0), &bytes);
    }
}
