//! Tests of network allocation over a real store in a temporary directory (no socket): launches
//! through `launch::write_instances`, terminations through `release_on_termination`.

use super::*;
use crate::cloud::config::VlanRange;
use crate::cloud::instances::release_on_termination;
use crate::cloud::launch::{write_instances, Launch};
use crate::cloud::model::{instance_type, Image, ImageKind};
use crate::store::Store;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn cfg(mode: NetMode, vlans: (u16, u16), addrs_per_net: u32) -> NetworkConfig {
    NetworkConfig {
        mode,
        vlans: VlanRange {
            first: vlans.0,
            last: vlans.1,
        },
        subnet: "10.10.0.0/24".parse().unwrap(),
        addrs_per_net,
        dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
        public_interface: None,
    }
}

fn launch(group: &str, min: u32) -> Launch {
    Launch {
        owner: "alice".into(),
        image: Image {
            id: "emi-00000001".into(),
            owner: "alice".into(),
            name: "i".into(),
            description: None,
            kind: ImageKind::Machine,
            bucket: "b".into(),
            key: "k".into(),
            size: 1,
            sha256: "00".into(),
            architecture: "x86_64".into(),
            kernel_id: None,
            ramdisk_id: None,
            public: false,
            launch_users: vec![],
            created_ms: 0,
            root_snapshot: None,
            source_instance: None,
            root_device: None,
        },
        kernel: None,
        ramdisk: None,
        itype: instance_type("m1.small").unwrap(),
        key: None,
        groups: vec![(format!("sg-{group}"), group.to_string())],
        user_data: None,
        metadata_options: mallee_proto::MetadataOptions {
            http_put_response_hop_limit: 3,
            ..Default::default()
        },
        client_token: None,
        min,
        max: min,
    }
}

/// A two-address public pool.
const POOL: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 10),
    Ipv4Addr::new(198, 51, 100, 11),
];

/// Launches `count` instances of group `group` (at least `min`), as RunInstances does.
fn run(
    store: &Store,
    cfg: &NetworkConfig,
    group: &str,
    count: usize,
    min: u32,
) -> Result<Vec<Instance>, NetworkError> {
    let nodes = vec!["n1".to_string(); count];
    store.cloud(|tx| write_instances(tx, &launch(group, min), cfg, &POOL, "z", &nodes, 1))
}

fn terminate(store: &Store, i: &Instance) {
    store
        .cloud(|tx| {
            let mut i = i.clone();
            i.state = State::Terminated;
            release_on_termination(tx, &mut i)?;
            tx.put(INSTANCE, &i.id, &i.owner, None, &i)
        })
        .unwrap();
}

fn networks(store: &Store) -> Vec<Network> {
    store.cloud(list).unwrap()
}

fn ips(instances: &[Instance]) -> Vec<&str> {
    instances.iter().map(|i| i.private_ip.as_str()).collect()
}

#[test]
fn launched_instances_carry_their_metadata_options_to_the_node_pending_until_it_reports() {
    let (_d, store) = store();
    let cfg = cfg(NetMode::Managed, (300, 302), 32);
    let made = run(&store, &cfg, "a", 1, 1).unwrap();
    assert_eq!(made[0].metadata_options.http_put_response_hop_limit, 3);
    assert!(!made[0].metadata_options_applied());
    let spec = crate::cloud::reconcile::spec(&made[0]).unwrap();
    assert_eq!(spec.metadata_options, made[0].metadata_options);
}

#[test]
fn each_group_gets_its_own_tag_slice_and_gateway_and_instances_the_lowest_free_addresses() {
    let (_d, store) = store();
    let cfg = cfg(NetMode::Managed, (300, 302), 32);
    let a = run(&store, &cfg, "a", 2, 1).unwrap();
    assert_eq!(ips(&a), ["10.10.0.2", "10.10.0.3"]);
    let b = run(&store, &cfg, "b", 1, 1).unwrap();
    assert_eq!(ips(&b), ["10.10.0.34"]);
    let nets = networks(&store);
    let a_net = nets.iter().find(|n| n.group_id == "sg-a").unwrap();
    assert_eq!(
        (
            a_net.vlan,
            a_net.subnet.to_string(),
            a_net.gateway.to_string()
        ),
        (Some(300), "10.10.0.0/27".into(), "10.10.0.1".into())
    );
    let b_net = nets.iter().find(|n| n.group_id == "sg-b").unwrap();
    assert_eq!((b_net.vlan, b_net.slice), (Some(301), 1));

    // What the node is told: the tag, and the DHCP answer the VMM gives.
    let net = a[0].network.clone().unwrap();
    assert_eq!(net.segment, Segment::Vlan(300));
    let addr = net.address.unwrap();
    assert_eq!(addr.address.to_string(), "10.10.0.2");
    assert_eq!((addr.prefix_len, addr.gateway), (27, Some(a_net.gateway)));
    assert_eq!(addr.dns, cfg.dns);
    assert_eq!(addr.hostname.as_deref(), Some("ip-10-10-0-2"));
    assert_eq!(a[0].metadata.local_ipv4, "10.10.0.2");

    // A terminated instance's address is taken again; the others keep theirs.
    terminate(&store, &a[0]);
    assert_eq!(networks(&store).len(), 2, "a still has an instance");
    let again = run(&store, &cfg, "a", 2, 1).unwrap();
    assert_eq!(ips(&again), ["10.10.0.2", "10.10.0.4"]);
}

#[test]
fn a_network_is_freed_with_its_last_instance_and_its_tag_reused() {
    let (_d, store) = store();
    let cfg = cfg(NetMode::Managed, (300, 301), 32);
    let a = run(&store, &cfg, "a", 2, 1).unwrap();
    run(&store, &cfg, "b", 1, 1).unwrap();
    // Two tags, both taken: a third group gets nothing, and nothing is written.
    let e = run(&store, &cfg, "c", 1, 1).unwrap_err();
    assert!(
        matches!(&e, NetworkError::Exhausted(Exhausted::Vlans(r)) if r == "300-301"),
        "{e}"
    );
    assert!(e.to_string().contains("widen [network] vlans"), "{e}");
    assert_eq!(networks(&store).len(), 2);
    let count = |store: &Store| {
        store
            .cloud(|tx| tx.list::<Instance>(INSTANCE, None))
            .unwrap()
    };
    assert_eq!(
        count(&store).len(),
        3,
        "the refused launch wrote no instance"
    );

    terminate(&store, &a[0]);
    assert!(networks(&store).iter().any(|n| n.group_id == "sg-a"));
    terminate(&store, &a[1]);
    assert!(!networks(&store).iter().any(|n| n.group_id == "sg-a"));
    let c = run(&store, &cfg, "c", 1, 1).unwrap();
    assert_eq!(c[0].network.as_ref().unwrap().segment, Segment::Vlan(300));
    assert_eq!(ips(&c), ["10.10.0.2"]);
}

#[test]
fn a_full_network_launches_fewer_down_to_min_count_and_never_half() {
    let (_d, store) = store();
    // 8 addresses: network, gateway, broadcast and 5 for instances.
    let cfg = cfg(NetMode::Managed, (300, 399), 8);
    let first = run(&store, &cfg, "a", 3, 3).unwrap();
    assert_eq!(ips(&first), ["10.10.0.2", "10.10.0.3", "10.10.0.4"]);
    // MaxCount 4, MinCount 2: the two that fit are launched.
    let more = run(&store, &cfg, "a", 4, 2).unwrap();
    assert_eq!(ips(&more), ["10.10.0.5", "10.10.0.6"]);
    let e = run(&store, &cfg, "a", 1, 1).unwrap_err();
    assert!(matches!(
        e,
        NetworkError::Exhausted(Exhausted::Addresses {
            free: 0,
            want: 1,
            ..
        })
    ));
}

/// MANAGED-NOVLAN: the same addressing as MANAGED, on the untagged bridge (no tag taken).
/// SYSTEM: no network, no address, no public address: the site's DHCP server answers.
#[test]
fn novlan_networks_are_untagged_and_system_instances_have_no_address_of_ours() {
    let (_d, store) = store();
    let made = run(
        &store,
        &cfg(NetMode::ManagedNoVlan, (300, 300), 32),
        "a",
        2,
        1,
    )
    .unwrap();
    let other = run(
        &store,
        &cfg(NetMode::ManagedNoVlan, (300, 300), 32),
        "b",
        1,
        1,
    )
    .unwrap();
    let nets = networks(&store);
    assert_eq!(nets.len(), 2);
    assert!(nets.iter().all(|n| n.vlan.is_none()), "{nets:?}");
    assert_eq!(ips(&made), ["10.10.0.2", "10.10.0.3"]);
    assert_eq!(ips(&other), ["10.10.0.34"]);
    let net = made[0].network.as_ref().unwrap();
    assert_eq!(net.segment, Segment::Untagged);
    assert_eq!(
        net.address.as_ref().unwrap().address,
        Ipv4Addr::new(10, 10, 0, 2)
    );
    assert!(made[0].public_ip.is_some());

    let (_d2, site) = self::store();
    let made = run(&site, &cfg(NetMode::System, (300, 300), 32), "a", 1, 1).unwrap();
    assert!(networks(&site).is_empty());
    let net = made[0].network.as_ref().unwrap();
    assert_eq!((net.segment, net.address.as_ref()), (Segment::System, None));
    assert_eq!(
        (made[0].private_ip.as_str(), &made[0].public_ip),
        ("", &None)
    );
}

/// Instances take dynamic public addresses while the pool lasts (then none: the launch still
/// succeeds); a terminated instance's returns to the pool; an instance an elastic IP leaves gets
/// a dynamic one again, never the elastic IP itself.
#[test]
fn dynamic_public_addresses_come_from_the_pool_and_return_to_it() {
    use crate::cloud::model::{Address, ADDRESS};
    use crate::cloud::public;
    let (_d, store) = store();
    let cfg = cfg(NetMode::Managed, (100, 199), 32);
    let a = run(&store, &cfg, "a", 2, 1).unwrap();
    let b = run(&store, &cfg, "a", 1, 1).unwrap();
    let public_of =
        |i: &[Instance]| -> Vec<Option<String>> { i.iter().map(|i| i.public_ip.clone()).collect() };
    assert_eq!(
        public_of(&a),
        [Some("198.51.100.10".into()), Some("198.51.100.11".into())]
    );
    assert_eq!(a[0].metadata.public_ipv4.as_deref(), Some("198.51.100.10"));
    assert_eq!(public_of(&b), [None]);
    let free = |store: &Store| store.cloud(|tx| public::free(tx, &POOL)).unwrap();
    assert!(free(&store).is_empty());
    terminate(&store, &a[0]);
    assert_eq!(free(&store), [POOL[0]]);
    // An elastic IP (the freed .10) is associated with a[1]; its .11 returns to the pool...
    store
        .cloud(|tx| {
            let eip = Address {
                public_ip: "198.51.100.10".into(),
                allocation_id: "eipalloc-1".into(),
                owner: "alice".into(),
                instance_id: Some(a[1].id.clone()),
                association_id: Some("eipassoc-1".into()),
            };
            tx.put(ADDRESS, &eip.public_ip, "alice", None, &eip)?;
            let mut i = tx.get::<Instance>(INSTANCE, &a[1].id)?.unwrap();
            public::set(&mut i, Some(eip.public_ip.clone()));
            tx.put(INSTANCE, &i.id, &i.owner, None, &i)
        })
        .unwrap();
    assert_eq!(free(&store), [POOL[1]]);
    let held = store.cloud(public::held).unwrap();
    assert_eq!(
        held,
        [public::Held {
            ip: "198.51.100.10".into(),
            owner: "alice".into(),
            allocation_id: Some("eipalloc-1".into()),
            instance_id: Some(a[1].id.clone()),
        }]
    );
    // ...and when the elastic IP leaves, a[1] gets a dynamic one, not the elastic IP.
    store
        .cloud(|tx| public::give_dynamic(tx, &POOL, &a[1].id))
        .unwrap();
    let i = store
        .cloud(|tx| tx.get::<Instance>(INSTANCE, &a[1].id))
        .unwrap()
        .unwrap();
    assert_eq!(i.public_ip.as_deref(), Some("198.51.100.11"));
    assert_eq!(i.metadata.public_ipv4.as_deref(), Some("198.51.100.11"));
    let held = store.cloud(public::held).unwrap();
    let dynamic = public::Held {
        ip: "198.51.100.11".into(),
        owner: i.owner.clone(),
        allocation_id: None,
        instance_id: Some(i.id.clone()),
    };
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(held[1], dynamic);
}
