use super::*;

fn header(msg: &[u8]) -> (u32, u16, u16, u32) {
    (
        u32::from_ne_bytes(msg[0..4].try_into().unwrap()),
        u16::from_ne_bytes([msg[4], msg[5]]),
        u16::from_ne_bytes([msg[6], msg[7]]),
        u32::from_ne_bytes(msg[8..12].try_into().unwrap()),
    )
}

#[test]
fn address_request_has_aligned_attributes_and_correct_length() {
    let msg = add_address_request(9, 3, Ipv4Addr::new(10, 0, 2, 15), 24);
    let (len, kind, flags, seq) = header(&msg);
    assert_eq!(len as usize, msg.len());
    assert_eq!((kind, seq), (RTM_NEWADDR, 9));
    assert_eq!(
        flags,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    );
    assert_eq!(&msg[16..24], &[AF_INET, 24, 0, 0, 3, 0, 0, 0]);
    // three 8-byte attributes: LOCAL, ADDRESS, BROADCAST
    assert_eq!(msg.len(), 16 + 8 + 3 * 8);
    assert_eq!(&msg[24..32], &[8, 0, 2, 0, 10, 0, 2, 15]);
    assert_eq!(&msg[44..48], &[10, 0, 2, 255]);
}

#[test]
fn broadcast_covers_prefix_edges() {
    assert_eq!(
        broadcast(Ipv4Addr::new(10, 0, 2, 15), 24),
        Ipv4Addr::new(10, 0, 2, 255)
    );
    assert_eq!(
        broadcast(Ipv4Addr::new(10, 0, 2, 15), 32),
        Ipv4Addr::new(10, 0, 2, 15)
    );
    assert_eq!(
        broadcast(Ipv4Addr::new(10, 0, 2, 15), 0),
        Ipv4Addr::BROADCAST
    );
}

#[test]
fn ack_is_found_by_sequence_and_truncation_is_an_error() {
    let mut reply = Message::new(NLMSG_ERROR, 0, 4, &(-19i32).to_ne_bytes()).finish();
    reply.extend(Message::new(NLMSG_ERROR, 0, 5, &0i32.to_ne_bytes()).finish());
    assert_eq!(find_ack(&reply, 4), Ok(Some(-19)));
    assert_eq!(find_ack(&reply, 5), Ok(Some(0)));
    assert_eq!(find_ack(&reply, 6), Ok(None));
    assert!(find_ack(&reply[..reply.len() - 2], 5).is_err());
    let mut bogus = reply.clone();
    bogus[0..4].copy_from_slice(&3u32.to_ne_bytes());
    assert!(find_ack(&bogus, 5).is_err());
    // Found by the netlink_ack fuzz target: a positive "errno", and an error message whose
    // code would be read from the next message.
    let positive = Message::new(NLMSG_ERROR, 0, 7, &5i32.to_ne_bytes()).finish();
    assert!(find_ack(&positive, 7).is_err());
    let mut short = Message::new(NLMSG_ERROR, 0, 8, &[]).finish();
    short.extend(Message::new(NLMSG_ERROR, 0, 9, &0i32.to_ne_bytes()).finish());
    assert!(find_ack(&short, 8).is_err());
}

fn route_table() -> String {
    std::fs::read_to_string("/proc/thread-self/net/route").unwrap()
}

/// Runs against the real kernel inside a private network namespace (needs root, as CI has).
#[test]
fn kernel_accepts_link_address_and_route_requests() {
    if !crate::net::root_or_skip("kernel_accepts_link_address_and_route_requests") {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: only the network namespace is unshared; file descriptor tables stay shared.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .expect("unshare(CLONE_NEWNET) needs root: run the tests as root");
        let mut nl = Netlink::open().unwrap();
        nl.set_up(1).unwrap();
        let addr = Ipv4Addr::new(10, 77, 0, 1);
        nl.add_address(1, addr, 24).unwrap();
        std::net::UdpSocket::bind((addr, 0)).expect("address is local after RTM_NEWADDR");
        nl.set_default_route(1, Ipv4Addr::new(10, 77, 0, 2))
            .unwrap();
        // /proc/net/route: Iface Destination Gateway ... in little-endian hex
        assert!(
            route_table()
                .lines()
                .any(|l| l.starts_with("lo\t00000000\t02004D0A")),
            "{}",
            route_table()
        );
        nl.del_address(1, addr, 24).unwrap();
        assert!(std::net::UdpSocket::bind((addr, 0)).is_err());
        let err = nl.set_up(999_999).unwrap_err();
        assert!(
            matches!(
                err,
                LinkError::Kernel {
                    errno: rustix::io::Errno::NODEV,
                    ..
                }
            ),
            "{err}"
        );
    })
    .join()
    .unwrap();
}

#[test]
fn random_reply_buffers_never_panic() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // mostly small values so lengths and types look plausible
                (rng % 24) as u8
            })
            .collect();
        let _ = find_ack(&bytes, 0);
    }
}
