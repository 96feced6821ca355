//! Tests of the node's instance links: names, the private NIC from the route table, and the
//! plumbing against the real kernel in a private network namespace.

use super::*;
use crate::net::link::MAX_IFNAME;
use mallee_proto::vmm::GuestAddress;

const MAC: Mac = Mac([0xd0, 0x0d, 0, 0, 0, 1]);

#[test]
fn names_fit_the_kernel_and_differ_per_instance() {
    let (a, b) = (
        tap_name("i-0123456789abcdef0"),
        tap_name("i-0123456789abcdef1"),
    );
    assert_eq!(a, "mt456789abcdef0");
    assert!(a.len() <= MAX_IFNAME && a != b);
    assert_eq!(tap_name("i-1"), "mti-1");
    assert!(bridge_name(4094).len() <= MAX_IFNAME && vlan_name(4094).len() <= MAX_IFNAME);
}

#[test]
fn the_private_nic_is_the_one_routing_to_the_frontend() {
    // 10.77.0.0/24 on eth1, default via eth0, 10.77.0.128/25 on eth2 (longest prefix wins).
    let table =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth1\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 eth2\t80004D0A\t00000000\t0001\t0\t0\t0\t80FFFFFF\t0\t0\t0\n";
    let via = |ip: [u8; 4]| route_interface(table, Ipv4Addr::from(ip));
    assert_eq!(via([10, 77, 0, 1]).as_deref(), Some("eth1"));
    assert_eq!(via([10, 77, 0, 200]).as_deref(), Some("eth2"));
    assert_eq!(via([8, 8, 8, 8]).as_deref(), Some("eth0"));
    assert_eq!(route_interface("Iface\n", Ipv4Addr::LOCALHOST), None);
    assert_eq!(
        route_interface("Iface\ngarbage line\n", Ipv4Addr::LOCALHOST),
        None
    );
}

fn network(segment: Segment) -> InstanceNetwork {
    InstanceNetwork {
        segment,
        address: Some(GuestAddress {
            address: Ipv4Addr::new(172, 31, 0, 2),
            prefix_len: 27,
            gateway: Some(Ipv4Addr::new(172, 31, 0, 1)),
            dns: vec![],
            hostname: None,
        }),
    }
}

/// Against the real kernel: two instances share VLAN 7's bridge, which goes with the last of
/// them. Where the kernel has no 802.1Q (this host kind's), the plug fails naming the VLAN link
/// and leaves nothing behind; the nested node's kernel has it and the cloud test covers it.
#[test]
fn instances_share_their_vlan_bridge_until_the_last_leaves() {
    crate::net::in_private_netns(
        "instances_share_their_vlan_bridge_until_the_last_leaves",
        || {
            tap::create_persistent("priv0").unwrap();
            let p = Plumbing::new("priv0");
            let e = p.plug("i-1", MAC, &network(Segment::Untagged)).unwrap_err();
            assert!(
                matches!(e, NetworkError::NotBridged(Segment::Untagged)),
                "{e}"
            );
            assert!(e.to_string().contains("reboot the node"), "{e}");
            assert_eq!(link::ifindex("mti-1"), None, "a failed plug leaves no tap");
            let links = crate::net::link::tests::ip_links;
            match p.plug("i-1", MAC, &network(Segment::Vlan(7))) {
                Ok(tap) => {
                    assert_eq!(tap, "mti-1");
                    assert_eq!(p.plug("i-1", MAC, &network(Segment::Vlan(7))).unwrap(), tap);
                    p.plug("i-2", MAC, &network(Segment::Vlan(7))).unwrap();
                    let l = links();
                    for port in ["mti-1", "mti-2", "mvl7@priv0"] {
                        let line = l.lines().find(|x| x.contains(&format!(": {port}:")));
                        assert!(
                            line.is_some_and(|x| x.contains("master mbr7")),
                            "{port}: {l}"
                        );
                    }
                    assert!(l.contains("vlan protocol 802.1Q id 7"), "{l}");
                    p.unplug("i-1");
                    assert!(link::ifindex("mbr7").is_some() && link::ifindex("mti-1").is_none());
                    p.unplug("i-2");
                    assert_eq!((link::ifindex("mbr7"), link::ifindex("mvl7")), (None, None));
                }
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.contains("VLAN 7 link mvl7 on priv0"), "{text}");
                    let l = links();
                    assert!(
                        !l.contains("mbr7") && !l.contains("mti-1"),
                        "left behind: {l}"
                    );
                }
            }
            let e = Plumbing::new("gone0")
                .plug("i-3", MAC, &network(Segment::Vlan(8)))
                .unwrap_err();
            assert!(matches!(e, NetworkError::NoUplink(_)), "{e}");
            assert_eq!(
                link::ifindex("mbr8"),
                None,
                "a failed plug leaves no bridge"
            );
        },
    );
}

/// Against the real kernel: MANAGED-NOVLAN and SYSTEM instances join the node's uplink bridge
/// (made at boot from its NIC), which stays when the last of them leaves.
#[test]
fn untagged_and_system_instances_join_the_uplink_bridge() {
    crate::net::in_private_netns(
        "untagged_and_system_instances_join_the_uplink_bridge",
        || {
            tap::create_persistent("eth0").unwrap();
            let nic = crate::net::Nic {
                name: "eth0".into(),
                ifindex: link::ifindex("eth0").unwrap(),
                mac: Mac([0x52, 0x54, 0, 1, 2, 3]),
            };
            crate::net::bridge::bridge_uplink(std::slice::from_ref(&nic), nic.mac).unwrap();
            let p = Plumbing::new(UPLINK_BRIDGE);
            let a = p.plug("i-a", MAC, &network(Segment::Untagged)).unwrap();
            let b = p
                .plug(
                    "i-b",
                    Mac([0xd0, 0x0d, 0, 0, 0, 2]),
                    &network(Segment::System),
                )
                .unwrap();
            let links = crate::net::link::tests::ip_links();
            for port in [&a, &b, &"eth0".to_string()] {
                let line = links.lines().find(|x| x.contains(&format!(": {port}:")));
                assert!(
                    line.is_some_and(|x| x.contains("master mbr0")),
                    "{port}: {links}"
                );
            }
            p.unplug("i-a");
            p.unplug("i-b");
            assert_eq!((link::ifindex(&a), link::ifindex(&b)), (None, None));
            assert!(
                link::ifindex(UPLINK_BRIDGE).is_some(),
                "the uplink bridge stays"
            );
        },
    );
}
