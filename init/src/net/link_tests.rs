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
    let host = add_address_request(9, 3, Ipv4Addr::new(192, 0, 2, 7), 32);
    assert_eq!(host.len(), 16 + 8 + 2 * 8, "a /32 has no broadcast address");
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
    crate::net::in_private_netns("kernel_accepts_link_address_and_route_requests", || {
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
        // An on-link host route (DHCP option 121 with router 0.0.0.0), then one via a gateway.
        let service = Ipv4Addr::new(169, 254, 169, 254);
        nl.add_route(1, (service, 32), None).unwrap();
        nl.add_route(
            1,
            (Ipv4Addr::new(10, 9, 0, 0), 16),
            Some(Ipv4Addr::new(10, 77, 0, 3)),
        )
        .unwrap();
        let table = route_table();
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("lo\tFEA9FEA9\t00000000\t0005\t")),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("lo\t0000090A\t03004D0A\t0003\t")),
            "{table}"
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
    });
}

/// `len` pseudo-random bytes from `rng` (xorshift), mostly small values so lengths and types
/// look plausible to a parser.
fn plausible_bytes(rng: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            (*rng % 24) as u8
        })
        .collect()
}

#[test]
fn random_reply_buffers_never_panic() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for len in 0..200 {
        let bytes = plausible_bytes(&mut rng, len);
        let _ = find_ack(&bytes, 0);
    }
}

#[test]
fn vlan_request_nests_kind_and_tag_as_iproute2_does() {
    let msg = new_vlan_request(7, "mvl5", 3, 5).unwrap();
    let (len, kind, flags, seq) = header(&msg);
    assert_eq!((len as usize, kind, seq), (msg.len(), RTM_NEWLINK, 7));
    assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    assert_eq!(
        &msg[16..32],
        &[0; 16],
        "ifinfomsg of a new link is all zero"
    );
    // IFLA_IFNAME "mvl5\0" (9 bytes, padded to 12), IFLA_LINK 3, IFLA_LINKINFO
    // { IFLA_INFO_KIND "vlan", IFLA_INFO_DATA { IFLA_VLAN_ID 5 } }.
    assert_eq!(&msg[32..44], b"\x09\x00\x03\x00mvl5\x00\x00\x00\x00");
    assert_eq!(&msg[44..52], &[8, 0, 5, 0, 3, 0, 0, 0]);
    assert_eq!(&msg[52..56], &[24, 0, 18, 0]);
    assert_eq!(&msg[56..64], b"\x08\x00\x01\x00vlan");
    assert_eq!(&msg[64..76], &[12, 0, 2, 0, 6, 0, 1, 0, 5, 0, 0, 0]);
    assert_eq!(msg.len(), 76);
    let port = set_master_request(8, 4, 9);
    assert_eq!(&port[20..24], &4u32.to_ne_bytes());
    assert_eq!(&port[32..40], &[8, 0, 10, 0, 9, 0, 0, 0]);
    // ndmsg { AF_BRIDGE, ifindex 4, NUD_NOARP, NTF_MASTER|NTF_STICKY }, NDA_LLADDR (6 + pad).
    let pin = pin_fdb_request(9, 4, [0xd0, 0x0d, 0, 0, 0, 5]);
    assert_eq!(&pin[4..6], &28u16.to_ne_bytes());
    assert_eq!(&pin[16..28], &[7, 0, 0, 0, 4, 0, 0, 0, 0x40, 0, 0x44, 0]);
    assert_eq!(&pin[28..40], &[10, 0, 2, 0, 0xd0, 0x0d, 0, 0, 0, 5, 0, 0]);
    assert_eq!(pin.len(), 40);
    for bad in ["", "a-name-of-16-chr", "a/b", "a b", "x:1", "..", "nul\0"] {
        assert!(
            matches!(new_bridge_request(1, bad, None), Err(LinkError::BadName(_))),
            "{bad:?}"
        );
    }
}

/// `ip -o link` as seen from the calling thread's network namespace (a forked child inherits
/// it): iproute2 checks what our requests did.
pub(crate) fn ip_links() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "-d", "link", "show"])
        .output()
        .expect("iproute2's ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kernel_makes_bridges_ports_and_removes_links() {
    crate::net::in_private_netns("kernel_makes_bridges_ports_and_removes_links", || {
        let mut nl = Netlink::open().unwrap();
        nl.new_bridge("mbr9", None).unwrap();
        let err = nl.new_bridge("mbr9", None).unwrap_err();
        assert!(
            matches!(
                err,
                LinkError::Kernel {
                    errno: rustix::io::Errno::EXIST,
                    ..
                }
            ),
            "{err}"
        );
        crate::net::tap::create_persistent("mt9").unwrap();
        let (br, tap) = (ifindex("mbr9").unwrap(), ifindex("mt9").unwrap());
        nl.set_master(tap, br).unwrap();
        nl.set_up(br).unwrap();
        nl.set_up(tap).unwrap();
        let links = ip_links();
        let line = links.lines().find(|l| l.contains(": mt9:")).unwrap_or("");
        assert!(
            line.contains("master mbr9") && line.contains("tun type tap"),
            "{links}"
        );
        // A guest's MAC pinned to its tap: static and sticky in the bridge's table.
        nl.pin_fdb(tap, [0xd0, 0x0d, 0, 0, 0, 9]).unwrap();
        let out = std::process::Command::new("bridge")
            .args(["fdb", "show", "dev", "mt9"])
            .output()
            .expect("iproute2's bridge");
        let fdb = String::from_utf8_lossy(&out.stdout);
        let entry = fdb.lines().find(|l| l.starts_with("d0:0d:00:00:00:09"));
        assert!(
            entry.is_some_and(|l| l.contains("master mbr9")
                && l.contains("static")
                && l.contains("sticky")),
            "{fdb}"
        );
        nl.del_link(tap).unwrap();
        nl.del_link(br).unwrap();
        assert_eq!((ifindex("mt9"), ifindex("mbr9")), (None, None));
        assert!(nl.set_master(999_999, 999_998).is_err());
    });
}

#[test]
fn dump_requests_ask_for_a_dump_without_an_ack() {
    let links = dump_links_request(3);
    let (len, kind, flags, seq) = header(&links);
    assert_eq!(
        (len as usize, kind, flags, seq),
        (links.len(), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 3)
    );
    assert_eq!(&links[16..], &[0; 16], "an ifinfomsg of family AF_UNSPEC");
    let addrs = dump_addresses_request(4);
    let (len, kind, flags, seq) = header(&addrs);
    assert_eq!(
        (len as usize, kind, flags, seq),
        (addrs.len(), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 4)
    );
    assert_eq!(
        &addrs[16..],
        &[AF_INET, 0, 0, 0, 0, 0, 0, 0],
        "an ifaddrmsg of family AF_INET"
    );
}

/// An `RTM_NEWLINK` as the kernel dumps a VLAN link: `mgw100` (index 7) on link 3, tag 100.
fn vlan_link_message(seq: u32) -> Vec<u8> {
    let info = [
        nla(IFLA_INFO_KIND, b"vlan\0"),
        // NLA_F_NESTED set, as newer kernels do
        nla(
            IFLA_INFO_DATA | 0x8000,
            &nla(IFLA_VLAN_ID, &100u16.to_ne_bytes()),
        ),
    ]
    .concat();
    let mut msg = Message::new(RTM_NEWLINK, 0, seq, &ifinfo(7, IFF_UP))
        .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 9])
        .attr(IFLA_IFNAME, b"mgw100\0")
        .attr(IFLA_LINK, &3u32.to_ne_bytes())
        .attr(IFLA_LINKINFO, &info)
        .finish();
    msg[6..8].copy_from_slice(&0x2u16.to_ne_bytes()); // NLM_F_MULTI
    msg
}

#[test]
fn a_dumped_vlan_link_gives_its_name_parent_tag_and_mac() {
    let msg = vlan_link_message(1);
    let link = parse_link(&msg[16..]).unwrap();
    assert_eq!(
        link,
        LinkInfo {
            ifindex: 7,
            name: "mgw100".into(),
            parent: Some(3),
            vlan: Some(100),
            mac: Some([2, 0, 0, 0, 0, 9]),
        }
    );
    let bridge = Message::new(RTM_NEWLINK, 0, 1, &ifinfo(8, 0))
        .attr(IFLA_IFNAME, b"br0\0")
        .attr(IFLA_LINKINFO, &nla(IFLA_INFO_KIND, b"bridge\0"))
        .finish();
    let bridge = parse_link(&bridge[16..]).unwrap();
    assert_eq!((bridge.vlan, bridge.parent, bridge.mac), (None, None, None));
    let nameless = Message::new(RTM_NEWLINK, 0, 1, &ifinfo(9, 0)).finish();
    assert_eq!(parse_link(&nameless[16..]), None);
}

#[test]
fn a_dumped_address_prefers_the_local_one_and_skips_other_families() {
    let msg = Message::new(RTM_NEWADDR, 0, 1, &ifaddr(5, 27))
        .attr(IFA_ADDRESS, &[10, 0, 0, 2])
        .attr(IFA_LOCAL, &[10, 0, 0, 1])
        .finish();
    assert_eq!(
        parse_address(&msg[16..]),
        Some(AddressInfo {
            ifindex: 5,
            address: Ipv4Addr::new(10, 0, 0, 1),
            prefix: 27,
        })
    );
    let mut v6 = msg.clone();
    v6[16] = 10; // AF_INET6
    assert_eq!(parse_address(&v6[16..]), None);
}

#[test]
fn a_dump_ends_at_done_or_error_and_ignores_other_sequences() {
    let mut buf = vlan_link_message(6);
    buf.extend(vlan_link_message(5));
    buf.extend(Message::new(NLMSG_DONE, 0, 6, &0i32.to_ne_bytes()).finish());
    let part = parse_dump(&buf, 6).unwrap();
    assert_eq!((part.bodies.len(), part.end), (1, Some(0)));
    assert_eq!(part.bodies[0], &vlan_link_message(6)[16..]);
    let more = parse_dump(&buf[..vlan_link_message(6).len()], 6).unwrap();
    assert_eq!((more.bodies.len(), more.end), (1, None), "the dump goes on");
    let refused = Message::new(NLMSG_ERROR, 0, 6, &(-1i32).to_ne_bytes()).finish();
    assert_eq!(parse_dump(&refused, 6).unwrap().end, Some(-1));
    assert!(parse_dump(&buf[..buf.len() - 3], 6).is_err());
}

#[test]
fn random_dump_buffers_never_panic() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..300 {
        let bytes = plausible_bytes(&mut rng, len);
        let _ = parse_dump(&bytes, 0);
        let _ = parse_link(&bytes);
        let _ = parse_address(&bytes);
    }
}

#[test]
fn kernel_dumps_links_and_their_addresses() {
    crate::net::in_private_netns("kernel_dumps_links_and_their_addresses", || {
        let mut nl = Netlink::open().unwrap();
        nl.new_bridge("mbr8", None).unwrap();
        let br = ifindex("mbr8").unwrap();
        let addr = Ipv4Addr::new(10, 78, 0, 1);
        nl.add_address(br, addr, 26).unwrap();
        let links = nl.links().unwrap();
        let link = links
            .iter()
            .find(|l| l.name == "mbr8")
            .expect("the bridge is dumped");
        assert_eq!((link.ifindex, link.vlan), (br, None));
        assert!(link.mac.is_some(), "a bridge has an Ethernet address");
        assert!(links.iter().any(|l| l.name == "lo" && l.ifindex == 1));
        let found = AddressInfo {
            ifindex: br,
            address: addr,
            prefix: 26,
        };
        assert!(nl.addresses().unwrap().contains(&found));
        nl.del_address(br, addr, 26).unwrap();
        assert!(!nl.addresses().unwrap().contains(&found));
        nl.del_link(br).unwrap();
        assert!(!nl.links().unwrap().iter().any(|l| l.name == "mbr8"));
    });
}
