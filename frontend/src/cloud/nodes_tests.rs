//! Tests of the node records over a real store in a temporary directory (no socket).

use super::*;
use crate::cloud::model::Reason;
use crate::cloud::reconcile::tests::{instance, seen};
use crate::cloud::reconcile::NODE_REBOOTED;
use mallee_proto::{Goal, Observed, Storage};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Enrolls node `n1` and returns its record.
fn enrolled(store: &Store) -> Node {
    let cfg = Ec2Config::default();
    let req = EnrollRequest {
        node_id: "n1".into(),
        cluster: cfg.clusters[0].clone(),
        secret: cfg.cluster_secret.clone(),
    };
    let token = enroll(store, &cfg, &req, 1).unwrap();
    authenticate(store, &token).unwrap()
}

fn info(node: &Node, boot_id: &str) -> NodeInfo {
    NodeInfo {
        node_id: node.id.clone(),
        cluster: node.cluster.clone(),
        cpus: 2,
        memory_mib: 2048,
        disk_gib: 0,
        macs: vec![],
        agent_version: "t".into(),
        boot_id: boot_id.into(),
    }
}

/// Node `id` enrolled and registered in `zone` (2 vCPUs, 2048 MiB), for tests elsewhere that
/// need room for an instance to start.
pub(crate) fn node_in(store: &Store, id: &str, zone: &str) {
    let cfg = Ec2Config {
        clusters: vec![zone.to_string()],
        ..Ec2Config::default()
    };
    let req = EnrollRequest {
        node_id: id.into(),
        cluster: zone.into(),
        secret: cfg.cluster_secret.clone(),
    };
    let node = authenticate(store, &enroll(store, &cfg, &req, 1).unwrap()).unwrap();
    register(store, &node, info(&node, "b1"), 2).unwrap();
}

fn put(store: &Store, i: &Instance) {
    store
        .cloud(|tx| tx.put(INSTANCE, &i.id, &i.owner, None, i))
        .unwrap();
}

fn get(store: &Store, id: &str) -> Instance {
    store.cloud(|tx| tx.get(INSTANCE, id)).unwrap().unwrap()
}

/// `n1` registered with boot `b1`, running `i-00000001`, plus a terminated `i-00000002`.
fn node_with_instances(store: &Store) -> Node {
    let node = enrolled(store);
    register(store, &node, info(&node, "b1"), 2).unwrap();
    let mut running = instance();
    running.state = State::Running;
    put(store, &running);
    let mut gone = instance();
    gone.id = "i-00000002".into();
    gone.goal = Goal::Terminated;
    gone.state = State::Terminated;
    gone.reason = Some(Reason {
        code: "Client.UserInitiatedShutdown".into(),
        message: "Client.UserInitiatedShutdown: User initiated shutdown".into(),
    });
    put(store, &gone);
    node
}

#[test]
fn a_new_boot_id_marks_the_nodes_instances_rebooted_and_pending() {
    let (_d, store) = store();
    let node = node_with_instances(&store);
    register(&store, &node, info(&node, "b2"), 1_000).unwrap();
    let i = get(&store, "i-00000001");
    assert_eq!(i.state, State::Pending);
    assert_eq!(i.state_ms, 1_000);
    let r = i.reason.unwrap();
    assert_eq!(r.code, NODE_REBOOTED);
    assert!(r.message.contains("node n1 rebooted at"), "{r:?}");
    let gone = get(&store, "i-00000002");
    assert_eq!(gone.reason.unwrap().code, "Client.UserInitiatedShutdown");
    let n: Node = store.cloud(|tx| tx.get(NODE, "n1")).unwrap().unwrap();
    assert_eq!((n.boot_id.as_str(), n.booted_ms), ("b2", 1_000));
    // The node starts it again: running, and the reason stays.
    let report_running = ActualState {
        instances: vec![seen(Observed::Running, None)],
        image_cache: vec![],
        cache: Default::default(),
    };
    assert!(report(&store, "n1", &report_running, 1_500).unwrap());
    let i = get(&store, "i-00000001");
    assert_eq!(i.state, State::Running);
    assert_eq!(i.reason.unwrap().code, NODE_REBOOTED);
}

#[test]
fn the_same_boot_id_again_is_no_reboot() {
    let (_d, store) = store();
    let node = node_with_instances(&store);
    // The frontend restarted, or the node lost its token and enrolled again: same boot.
    register(&store, &node, info(&node, "b1"), 3).unwrap();
    let node = enrolled(&store);
    register(&store, &node, info(&node, "b1"), 4).unwrap();
    let i = get(&store, "i-00000001");
    assert_eq!((i.state, i.reason), (State::Running, None));
    let n: Node = store.cloud(|tx| tx.get(NODE, "n1")).unwrap().unwrap();
    assert_eq!((n.boot_id.as_str(), n.booted_ms), ("b1", 2));
}

#[test]
fn a_first_registration_or_an_agent_without_boot_id_is_no_reboot() {
    let (_d, store) = store();
    let node = enrolled(&store);
    let mut i = instance();
    i.state = State::Running;
    put(&store, &i);
    register(&store, &node, info(&node, ""), 2).unwrap();
    register(&store, &node, info(&node, "b1"), 3).unwrap();
    let i = get(&store, "i-00000001");
    assert_eq!((i.state, i.reason), (State::Running, None));
}

#[test]
fn the_report_keeps_the_cache_summary() {
    let (_d, store) = store();
    let node = enrolled(&store);
    register(&store, &node, info(&node, "b1"), 2).unwrap();
    let cache = CacheSummary {
        storage: Storage::Ram,
        budget_bytes: 512 << 20,
        used_bytes: 3 << 20,
        downloads: 3,
        hits: 6,
    };
    let actual = ActualState {
        instances: vec![],
        image_cache: vec![CachedImage {
            sha256: "ab".repeat(32),
            size: 3 << 20,
        }],
        cache: cache.clone(),
    };
    report(&store, "n1", &actual, 5).unwrap();
    let n: Node = store.cloud(|tx| tx.get(NODE, "n1")).unwrap().unwrap();
    assert_eq!((n.cache, n.image_cache.len()), (cache, 1));
}

#[test]
fn a_node_record_stored_before_boot_ids_and_cache_totals_still_reads() {
    let old = r#"{"id":"n1","cluster":"cluster1","token_sha256":"00","info":null,
        "last_seen_ms":1,"down":false,"image_cache":[]}"#;
    let n: Node = serde_json::from_str(old).unwrap();
    assert_eq!((n.boot_id.as_str(), n.cache.downloads), ("", 0));
}

#[test]
fn usage_sums_the_instances_holding_room_and_drops_one_once_terminated() {
    let (_d, store) = store();
    let node = node_with_instances(&store);
    let load = |store: &Store| store.cloud(loads).unwrap().remove(0);
    let l = load(&store);
    assert_eq!((l.id.as_str(), l.used_vcpus, l.used_mib), ("n1", 1, 256));
    let mut big = instance();
    big.id = "i-00000003".into();
    (big.vcpus, big.memory_mib) = (2, 1024);
    put(&store, &big);
    assert_eq!((load(&store).used_vcpus, load(&store).used_mib), (3, 1280));
    let mut gone = get(&store, "i-00000003");
    gone.goal = Goal::Terminated;
    put(&store, &gone);
    let actual = ActualState {
        instances: vec![],
        image_cache: vec![],
        cache: Default::default(),
    };
    report(&store, &node.id, &actual, 9).unwrap();
    assert_eq!(get(&store, "i-00000003").state, State::Terminated);
    let views = store.cloud(views).unwrap();
    assert_eq!(views[0].used, [1, 256]);
}

#[test]
fn a_stopped_instance_holds_no_room_and_starts_wherever_there_is_room() {
    let (_d, store) = store();
    let cfg = Ec2Config::default();
    for id in ["n1", "n2"] {
        node_in(&store, id, &cfg.clusters[0]);
    }
    // `i` stopped on n2; n2 then filled by `big`; n1 holds `small`.
    let mut i = instance();
    (i.zone, i.node, i.state, i.goal) = (
        cfg.clusters[0].clone(),
        "n2".into(),
        State::Stopped,
        Goal::Stopped,
    );
    put(&store, &i);
    let mut big = instance();
    (big.id, big.zone, big.node, big.state) = (
        "i-00000003".into(),
        cfg.clusters[0].clone(),
        "n2".into(),
        State::Running,
    );
    (big.vcpus, big.memory_mib) = (2, 1024);
    put(&store, &big);
    let used = store.cloud(usage).unwrap();
    assert_eq!(
        used.get("n2"),
        Some(&[2, 1024]),
        "a stopped instance holds no room"
    );

    let start = |store: &Store, id: &str| {
        store.cloud(|tx| {
            let mut i: Instance = tx.get(INSTANCE, id)?.unwrap();
            let r = start_placed(tx, &mut i, 5);
            tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
            Ok::<_, StoreError>(r.map(|()| i))
        })
    };
    let started = start(&store, &i.id).unwrap().unwrap();
    assert_eq!(
        (started.node.as_str(), started.state, started.goal),
        ("n1", State::Pending, Goal::Running),
        "started on the node with room, not back on the full one"
    );
    // Starting it again is nothing to do; it stays where it is.
    assert_eq!(start(&store, &i.id).unwrap().unwrap().node, "n1");

    // Stopped again with both nodes full: no room, and it stays stopped where it was.
    let mut again = get(&store, &i.id);
    (again.state, again.goal) = (State::Stopped, Goal::Stopped);
    put(&store, &again);
    let mut filler = instance();
    (filler.id, filler.zone, filler.node, filler.state) = (
        "i-00000004".into(),
        cfg.clusters[0].clone(),
        "n1".into(),
        State::Running,
    );
    (filler.vcpus, filler.memory_mib) = (2, 1024);
    put(&store, &filler);
    let refused = start(&store, &i.id).unwrap();
    assert!(
        matches!(&refused, Err(StartError::NoRoom(why)) if why.contains("room for 0")),
        "{refused:?}"
    );
    assert_eq!(get(&store, &i.id).state, State::Stopped);

    // A terminated instance does not start.
    let mut gone = get(&store, &i.id);
    gone.state = State::Terminated;
    put(&store, &gone);
    assert!(matches!(
        start(&store, &i.id).unwrap(),
        Err(StartError::NotNow)
    ));
}
