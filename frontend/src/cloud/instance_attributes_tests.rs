//! Tests of instance attribute changes, over plain records and a real store in a temporary
//! directory (no socket).

use super::*;
use crate::cloud::config::Ec2Config;
use crate::cloud::instances as lifecycle;
use crate::cloud::model::{instance_type, ImageKind};
use crate::cloud::nodes;
use crate::cloud::reconcile::{spec, tests::attached_volume, tests::instance};
use crate::store::Store;
use mallee_proto::{Goal, InstanceNetwork};

fn stopped() -> Instance {
    let mut i = instance();
    i.state = State::Stopped;
    i.goal = Goal::Stopped;
    i
}

fn kernel() -> Image {
    Image {
        id: "eki-00000002".into(),
        owner: "u".into(),
        name: "k".into(),
        description: None,
        kind: ImageKind::Kernel,
        bucket: "b".into(),
        key: "vmlinuz-2".into(),
        size: 9,
        sha256: "ab".into(),
        architecture: "x86_64".into(),
        kernel_id: None,
        ramdisk_id: None,
        public: false,
        launch_users: vec![],
        created_ms: 0,
        root_snapshot: None,
        source_instance: None,
        root_device: None,
    }
}

#[test]
fn type_user_data_kernel_and_ramdisk_change_only_while_stopped() {
    let large = instance_type("m1.large").unwrap();
    for state in [State::Pending, State::Running, State::Stopping] {
        let mut i = instance();
        i.state = state;
        let before = i.clone();
        for change in [
            Change::InstanceType(large),
            Change::UserData(Some("aGk=".into())),
            Change::Kernel(kernel()),
            Change::Ramdisk(kernel()),
        ] {
            let e = apply(&mut i, change).unwrap_err();
            assert!(matches!(e, AttributeError::NotStopped(_)), "{state:?}: {e}");
            assert!(
                e.to_string().contains("is not in the 'stopped' state"),
                "{e}"
            );
        }
        assert_eq!(i, before, "{state:?}: nothing changed");
    }
}

#[test]
fn a_type_changed_while_stopped_reaches_the_nodes_spec_and_runs_at_the_next_start() {
    let mut i = stopped();
    assert!(apply(
        &mut i,
        Change::InstanceType(instance_type("m1.large").unwrap())
    )
    .unwrap());
    assert!(apply(&mut i, Change::UserData(Some("aGk=".into()))).unwrap());
    assert!(apply(&mut i, Change::Kernel(kernel())).unwrap());
    let s = spec(&i).unwrap();
    assert_eq!(
        (s.instance_type.as_str(), s.vcpus, s.memory_mib),
        ("m1.large", 2, 1024)
    );
    assert_eq!(s.ephemeral_gib, 10, "the disk of the new type");
    assert_eq!(
        s.metadata.instance_type, "m1.large",
        "the guest's metadata too"
    );
    assert_eq!(s.user_data.as_deref(), Some("aGk="));
    assert_eq!(s.kernel.as_ref().map(|k| k.key.as_str()), Some("vmlinuz-2"));
    assert_eq!(s.metadata.kernel_id.as_deref(), Some("eki-00000002"));
    assert_eq!(i.kernel_id.as_deref(), Some("eki-00000002"));
    // Started: the node is asked to run it with what the record now says.
    lifecycle::start(&mut i, 5).unwrap();
    let s = spec(&i).unwrap();
    assert_eq!((s.goal, s.vcpus, s.memory_mib), (Goal::Running, 2, 1024));
}

#[test]
fn protection_and_shutdown_behaviour_change_until_the_instance_ends() {
    let mut i = instance();
    i.state = State::Running;
    assert!(
        !apply(&mut i, Change::DisableApiTermination(true)).unwrap(),
        "the node need not hear of it"
    );
    assert!(!apply(
        &mut i,
        Change::ShutdownBehavior(ShutdownBehavior::Terminate)
    )
    .unwrap());
    assert!(i.shutdown.disable_api_termination);
    assert_eq!(i.shutdown.instance_initiated, ShutdownBehavior::Terminate);
    let e = may_terminate(&i).unwrap_err();
    assert!(
        e.to_string()
            .contains("may not be terminated. Modify its 'disableApiTermination'"),
        "{e}"
    );
    apply(&mut i, Change::DisableApiTermination(false)).unwrap();
    assert_eq!(may_terminate(&i), Ok(()));
    for ended in [State::ShuttingDown, State::Terminated] {
        i.state = ended;
        let e = apply(&mut i, Change::DisableApiTermination(true)).unwrap_err();
        assert!(matches!(e, AttributeError::Ended(_)), "{e}");
    }
    assert!(!i.shutdown.disable_api_termination);
}

#[test]
fn a_terminated_instance_is_no_longer_protected_from_a_repeated_terminate() {
    let mut i = instance();
    i.shutdown.disable_api_termination = true;
    i.state = State::Terminated;
    assert_eq!(may_terminate(&i), Ok(()));
}

fn on_vlan(mut i: Instance) -> Instance {
    i.network = Some(InstanceNetwork {
        segment: Segment::Vlan(100),
        address: None,
    });
    i.groups = vec![("sg-a".into(), "a".into())];
    i
}

#[test]
fn groups_change_while_the_first_group_and_so_the_network_stays() {
    let g = |ids: &[&str]| {
        Change::Groups(
            ids.iter()
                .map(|id| (id.to_string(), id.trim_start_matches("sg-").to_string()))
                .collect(),
        )
    };
    let mut i = on_vlan(instance());
    i.state = State::Running;
    assert!(apply(&mut i, g(&["sg-a", "sg-b"])).unwrap());
    assert_eq!(i.groups.len(), 2);
    assert_eq!(
        i.metadata.security_groups,
        ["a", "b"],
        "the guest's metadata follows"
    );
    let before = i.clone();
    let e = apply(&mut i, g(&["sg-b", "sg-a"])).unwrap_err();
    assert!(matches!(e, AttributeError::NetworkGroup { .. }), "{e}");
    assert!(e.to_string().contains("another VLAN and subnet"), "{e}");
    assert_eq!(i, before);
    assert!(matches!(
        apply(&mut i, g(&[])),
        Err(AttributeError::NoGroups)
    ));
    // SYSTEM mode: groups do not place the instance, any first group will do.
    i.network = Some(InstanceNetwork {
        segment: Segment::System,
        address: None,
    });
    apply(&mut i, g(&["sg-b"])).unwrap();
    assert_eq!(i.groups[0].0, "sg-b");
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Node `n1` (2 vCPUs, 2048 MiB) registered, holding stopped `i-00000001` (m1.small) and a
/// running `i-00000002` (m1.small).
fn node_with_a_stopped_instance(store: &Store) {
    let cfg = Ec2Config::default();
    let (node, _) = crate::cloud::nodes::tests::admitted(store, "n1", &cfg.clusters[0]);
    let info = mallee_proto::NodeInfo {
        node_id: "n1".into(),
        cluster: node.cluster.clone(),
        cpus: 2,
        memory_mib: 2048,
        disk_gib: 0,
        macs: vec![],
        agent_version: "t".into(),
        boot_id: "b1".into(),
    };
    nodes::register(store, &node, info, 2).unwrap();
    let mut other = instance();
    other.id = "i-00000002".into();
    other.state = State::Running;
    store
        .cloud(|tx| {
            let mut i = stopped();
            i.zone = cfg.clusters[0].clone();
            tx.put(INSTANCE, "i-00000001", "u", None, &i)?;
            tx.put(INSTANCE, &other.id, "u", None, &other)
        })
        .unwrap();
}

fn stored(store: &Store, id: &str) -> Instance {
    store.cloud(|tx| tx.get(INSTANCE, id)).unwrap().unwrap()
}

#[test]
fn a_new_type_is_stored_at_once_and_placed_where_it_fits_at_the_start() {
    let (_d, store) = store();
    node_with_a_stopped_instance(&store);
    let retype = |store: &Store, t: &str| {
        store
            .cloud(|tx| {
                let mut i = stored_in(tx);
                modify(tx, &mut i, Change::InstanceType(instance_type(t).unwrap()))
            })
            .unwrap()
    };
    // m1.large wants 2 vCPUs; the running instance holds 1 of n1's 2, the stopped one none.
    assert!(retype(&store, "m1.large"));
    let i = stored(&store, "i-00000001");
    assert_eq!((i.instance_type.as_str(), i.vcpus), ("m1.large", 2));
    assert_eq!(store.cloud(nodes::usage).unwrap()["n1"], [1, 256]);
    let start = |store: &Store| {
        store.cloud(|tx| {
            let mut i = stored_in(tx);
            let r = nodes::start_placed(tx, &mut i, 9);
            tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
            Ok::<_, StoreError>(r)
        })
    };
    let refused = start(&store).unwrap();
    assert!(
        matches!(&refused, Err(nodes::StartError::NoRoom(why)) if why.contains("vCPUs ran out")),
        "{refused:?}"
    );
    assert_eq!(stored(&store, "i-00000001").state, State::Stopped);
    // c1.medium: 1 vCPU and 512 MiB fit; it starts with the new type's room.
    assert!(retype(&store, "c1.medium"));
    start(&store).unwrap().unwrap();
    let i = stored(&store, "i-00000001");
    assert_eq!(
        (i.instance_type.as_str(), i.vcpus, i.memory_mib, i.state),
        ("c1.medium", 1, 512, State::Pending)
    );
    let used = store.cloud(nodes::usage).unwrap()["n1"];
    assert_eq!(used, [2, 768], "the node's usage follows the stored type");
}

fn stored_in(tx: &CloudTx<'_>) -> Instance {
    tx.get(INSTANCE, "i-00000001").unwrap().unwrap()
}

#[test]
fn delete_on_termination_is_set_on_the_volume_at_the_device_and_only_there() {
    let (_d, store) = store();
    node_with_a_stopped_instance(&store);
    let volume = attached_volume;
    store
        .cloud(|tx| {
            tx.put(
                VOLUME,
                "vol-00000002",
                "u",
                None,
                &volume("vol-00000002", "/dev/sdg"),
            )?;
            tx.put(
                VOLUME,
                "vol-00000001",
                "u",
                None,
                &volume("vol-00000001", "/dev/sdf"),
            )
        })
        .unwrap();
    let i = stored(&store, "i-00000001");
    store
        .cloud(|tx| set_delete_on_termination(tx, &i, "/dev/sdf", true))
        .unwrap();
    let e = store
        .cloud(|tx| set_delete_on_termination(tx, &i, "/dev/sdz", true))
        .unwrap_err();
    assert!(
        matches!(&e, AttributeError::NoDevice(d) if d == "/dev/sdz"),
        "{e}"
    );
    let attached = store.cloud(|tx| attached_volumes(tx, "u")).unwrap();
    let flags: Vec<(&str, bool)> = attached["i-00000001"]
        .iter()
        .map(|v| {
            let a = v.attachment.as_ref().unwrap();
            (a.device.as_str(), a.delete_on_termination)
        })
        .collect();
    assert_eq!(
        flags,
        [("/dev/sdf", true), ("/dev/sdg", false)],
        "in device order"
    );
    // At termination the flagged volume goes, the other is detached.
    store
        .cloud(|tx| {
            let mut i = stored_in(tx);
            crate::cloud::instances::release_on_termination(tx, &mut i)
        })
        .unwrap();
    let left: Vec<Volume> = store.cloud(|tx| tx.list(VOLUME, None)).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].id.as_str(), left[0].state.as_str()),
        ("vol-00000002", "available")
    );
}
