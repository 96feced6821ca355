//! Tests of the node records and their admission over a real store in a temporary directory
//! (no socket).

use super::*;
use crate::cloud::admission::{approve, enroll, reject, AdmissionError, MAX_PENDING};
use crate::cloud::config::Ec2Config;
use crate::cloud::model::Reason;
use crate::cloud::reconcile::tests::{instance, seen};
use crate::cloud::reconcile::NODE_REBOOTED;
use mallee_proto::{EnrollRequest, Goal, Observed, Storage};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// The MAC the tests' nodes enroll from, listed by [`admitting`].
pub(crate) const MAC: &str = "52:54:00:12:34:56";
/// A MAC no test config lists.
const UNLISTED: &str = "52:54:00:99:00:01";
/// Where the tests' enrollments come from.
const SOURCE: &str = "10.77.0.150";

fn mac(text: &str) -> Mac {
    text.parse().unwrap()
}

/// The default `[ec2]` table with [`MAC`] in `admit_macs` and clusters `zones`.
pub(crate) fn admitting(zones: &[&str]) -> Ec2Config {
    Ec2Config {
        clusters: zones.iter().map(|z| z.to_string()).collect(),
        admit_macs: vec![mac(MAC)],
        ..Ec2Config::default()
    }
}

/// An enrollment of `id` in `cfg`'s first cluster from `from`, presenting `token`.
fn request(cfg: &Ec2Config, id: &str, from: &str, token: Option<&str>) -> EnrollRequest {
    EnrollRequest {
        node_id: id.into(),
        cluster: cfg.clusters[0].clone(),
        secret: cfg.cluster_secret.clone(),
        macs: vec![mac(from)],
        token: token.map(str::to_string),
    }
}

/// Node `id` enrolled in `zone` from a listed MAC (so admitted at once): its record and token.
pub(crate) fn admitted(store: &Store, id: &str, zone: &str) -> (Node, String) {
    let cfg = admitting(&[zone]);
    let token = enroll(store, &cfg, &request(&cfg, id, MAC, None), SOURCE, 1).unwrap();
    (authenticate(store, &token).unwrap(), token)
}

/// Node `n1` admitted (see [`admitted`]); its record.
fn enrolled(store: &Store) -> Node {
    admitted(store, "n1", &Ec2Config::default().clusters[0]).0
}

fn record(store: &Store, id: &str) -> Node {
    store.cloud(|tx| tx.get(NODE, id)).unwrap().unwrap()
}

/// The message of a refused enrollment (panics on anything else).
fn refused(r: Result<String, NodeError>) -> String {
    match r {
        Err(NodeError::NotAdmitted(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
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
    let (node, _) = admitted(store, id, zone);
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

/// `n1` registered with boot `b1`, running `i-00000001`, plus a terminated `i-00000002`; its
/// record and token.
fn node_with_instances(store: &Store) -> (Node, String) {
    let (node, token) = admitted(store, "n1", &Ec2Config::default().clusters[0]);
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
    (node, token)
}

#[test]
fn a_new_boot_id_marks_the_nodes_instances_rebooted_and_pending() {
    let (_d, store) = store();
    let (node, _) = node_with_instances(&store);
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
    let (node, token) = node_with_instances(&store);
    // The frontend restarted, or the agent enrolled again with the token it held: same boot.
    register(&store, &node, info(&node, "b1"), 3).unwrap();
    let cfg = admitting(&[&node.cluster]);
    let again = request(&cfg, "n1", MAC, Some(&token));
    let node = authenticate(&store, &enroll(&store, &cfg, &again, SOURCE, 3).unwrap()).unwrap();
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
    // Stored before admission: a node that was let in, so an upgraded frontend keeps it.
    assert_eq!(n.admission_name(), "admitted");
    assert_eq!((n.admission, n.claim), (Admission::Admitted, None));
}

#[test]
fn usage_sums_the_instances_holding_room_and_drops_one_once_terminated() {
    let (_d, store) = store();
    let (node, _) = node_with_instances(&store);
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

#[test]
fn an_unlisted_node_is_pending_without_a_token_until_an_admin_approves_it() {
    let (_d, store) = store();
    let cfg = admitting(&["cluster1"]);
    let id = "node-525400990001";
    let req = request(&cfg, id, UNLISTED, None);
    let why = refused(enroll(&store, &cfg, &req, SOURCE, 10));
    assert!(
        why.contains(&format!("node {id} is waiting for admission")),
        "{why}"
    );
    assert!(
        why.contains(&format!("\"mallee-frontend admin node approve {id}\"")),
        "{why}"
    );
    assert!(why.contains("[ec2] admit_macs"), "{why}");
    refused(enroll(&store, &cfg, &req, "10.77.0.151", 20));
    // Kept for the admin: who, from where, first and last attempt; no token, no work.
    let n = record(&store, id);
    assert_eq!(
        (n.admission, n.admission_name()),
        (Admission::Pending, "pending")
    );
    assert!(n.token_sha256.is_empty());
    let c = n.claim.clone().unwrap();
    assert_eq!(c.macs, [mac(UNLISTED)]);
    assert_eq!(
        (c.source.as_str(), c.first_ms, c.last_ms),
        ("10.77.0.151", 10, 20)
    );
    assert_eq!((c.attempts, c.approved), (2, false));
    assert!(store.cloud(loads).unwrap().is_empty());
    let listed = store.cloud(views).unwrap();
    assert_eq!((listed.len(), listed[0].info.is_none()), (1, true));

    let n = approve(&store, id, 30).unwrap();
    assert_eq!(n.admission_name(), "approved");
    // An enrollment that is not the approved claim (other MACs) gets nothing.
    refused(enroll(
        &store,
        &cfg,
        &request(&cfg, id, "52:54:00:99:00:02", None),
        SOURCE,
        35,
    ));
    let token = enroll(&store, &cfg, &req, SOURCE, 40).unwrap();
    let n = authenticate(&store, &token).unwrap();
    assert_eq!(
        (n.admission, n.claim, n.last_seen_ms),
        (Admission::Admitted, None, 40)
    );
}

#[test]
fn a_listed_mac_is_admitted_at_once() {
    let (_d, store) = store();
    let cfg = admitting(&["cluster1"]);
    let mut req = request(&cfg, "node-525400123456", UNLISTED, None);
    // Any one of its MACs listed is enough.
    req.macs.push(mac(MAC));
    let token = enroll(&store, &cfg, &req, SOURCE, 1).unwrap();
    let n = authenticate(&store, &token).unwrap();
    assert_eq!(
        (n.id.as_str(), n.admission_name()),
        ("node-525400123456", "admitted")
    );
    assert_eq!(n.claim, None);
    // The secret is still checked first.
    req.secret = "wrong".into();
    assert!(matches!(
        enroll(&store, &cfg, &req, SOURCE, 2),
        Err(NodeError::BadSecret)
    ));
}

#[test]
fn a_claim_on_a_live_nodes_id_is_refused_without_its_token_and_changes_nothing() {
    let (_d, store) = store();
    let (node, token) = node_with_instances(&store);
    let cfg = admitting(&[&node.cluster]);
    let before = record(&store, "n1");
    // Even from a listed MAC, and with a token that is not the node's.
    for token in [None, Some("not-the-token")] {
        let why = refused(enroll(
            &store,
            &cfg,
            &request(&cfg, "n1", MAC, token),
            SOURCE,
            5,
        ));
        assert!(why.contains("node id n1 is held by a live node"), "{why}");
        assert!(why.contains("current token"), "{why}");
        assert!(why.contains("admin node approve n1"), "{why}");
    }
    let after = record(&store, "n1");
    let claim = after
        .claim
        .clone()
        .expect("the claim is kept for the admin");
    assert_eq!((claim.attempts, claim.approved), (2, false));
    // The live node is as it was: same token, state, registration; it still authenticates.
    assert_eq!(
        Node {
            claim: None,
            ..after
        },
        before
    );
    assert_eq!(authenticate(&store, &token).unwrap().id, "n1");
    let l = store.cloud(loads).unwrap();
    assert_eq!((l.len(), l[0].up), (1, true));
}

#[test]
fn the_live_node_itself_enrolls_again_with_its_current_token() {
    let (_d, store) = store();
    let (node, token) = node_with_instances(&store);
    let cfg = admitting(&[&node.cluster]);
    // Its own token also lets it in from a MAC nobody listed.
    let again = request(&cfg, "n1", UNLISTED, Some(&token));
    let fresh = enroll(&store, &cfg, &again, SOURCE, 5).unwrap();
    assert_ne!(fresh, token);
    assert!(matches!(
        authenticate(&store, &token),
        Err(NodeError::Unauthorized)
    ));
    let n = authenticate(&store, &fresh).unwrap();
    assert_eq!((n.boot_id.as_str(), n.info.is_some()), ("b1", true));
}

#[test]
fn an_admin_approving_a_claim_on_a_live_id_lets_that_claim_replace_the_node() {
    let (_d, store) = store();
    let (node, token) = node_with_instances(&store);
    let cfg = admitting(&[&node.cluster]);
    let claim = request(&cfg, "n1", UNLISTED, None);
    refused(enroll(&store, &cfg, &claim, SOURCE, 5));
    let n = approve(&store, "n1", 6).unwrap();
    // Approved, not yet enrolled: the live node keeps working until the claim comes back.
    assert_eq!(n.admission_name(), "admitted");
    assert!(n.claim.as_ref().unwrap().approved);
    assert!(authenticate(&store, &token).is_ok());
    let taken = enroll(&store, &cfg, &claim, SOURCE, 7).unwrap();
    assert!(matches!(
        authenticate(&store, &token),
        Err(NodeError::Unauthorized)
    ));
    assert_eq!(authenticate(&store, &taken).unwrap().claim, None);
    // The approval was for that one enrollment: the old holder without the token is refused.
    let why = refused(enroll(
        &store,
        &cfg,
        &request(&cfg, "n1", MAC, Some(&token)),
        SOURCE,
        8,
    ));
    assert!(why.contains("held by a live node"), "{why}");
}

#[test]
fn approving_an_unknown_id_or_a_live_node_with_nothing_waiting_is_an_error() {
    let (_d, store) = store();
    node_with_instances(&store);
    assert!(matches!(
        approve(&store, "n9", 1),
        Err(AdmissionError::NotFound(id)) if id == "n9"
    ));
    let e = approve(&store, "n1", 1).unwrap_err();
    assert!(matches!(e, AdmissionError::NothingToApprove(_)), "{e}");
    assert_eq!(e.code(), "IncorrectState");
    assert!(matches!(
        reject(&store, "n9"),
        Err(AdmissionError::NotFound(_))
    ));
}

#[test]
fn a_rebooted_node_gets_in_again_once_its_old_record_is_down_and_restarts_its_instances() {
    let (_d, store) = store();
    let (node, _lost_with_the_reboot) = node_with_instances(&store);
    let cfg = admitting(&[&node.cluster]);
    let back = request(&cfg, "n1", MAC, None);
    // Back before the deadline: the old record is live, so the id is held.
    refused(enroll(&store, &cfg, &back, SOURCE, 1_000));
    assert_eq!(sweep(&store, 60_000, 30_000).unwrap(), Vec::<String>::new());
    assert_eq!(sweep(&store, 60_000, 70_000).unwrap(), ["n1"]);
    assert!(get(&store, "i-00000001").node_down);
    // Down: ordinary admission, and its MAC is listed.
    let token = enroll(&store, &cfg, &back, SOURCE, 71_000).unwrap();
    let node = authenticate(&store, &token).unwrap();
    assert_eq!((node.down, node.claim.clone()), (false, None));
    register(&store, &node, info(&node, "b2"), 72_000).unwrap();
    let i = get(&store, "i-00000001");
    assert_eq!((i.state, i.node_down), (State::Pending, false));
    assert_eq!(i.reason.unwrap().code, NODE_REBOOTED);
}

#[test]
fn a_down_node_whose_mac_is_not_listed_waits_for_an_admin_again() {
    let (_d, store) = store();
    let cfg = admitting(&["cluster1"]);
    let id = "node-525400990001";
    let req = request(&cfg, id, UNLISTED, None);
    refused(enroll(&store, &cfg, &req, SOURCE, 1));
    approve(&store, id, 2).unwrap();
    enroll(&store, &cfg, &req, SOURCE, 3).unwrap();
    sweep(&store, 10, 100).unwrap();
    let why = refused(enroll(&store, &cfg, &req, SOURCE, 101));
    assert!(why.contains("waiting for admission"), "{why}");
    // Its down record stays admitted; the claim waits beside it.
    let n = record(&store, id);
    assert_eq!((n.admission_name(), n.down), ("admitted", true));
    assert!(!n.claim.unwrap().approved);
    approve(&store, id, 102).unwrap();
    assert!(enroll(&store, &cfg, &req, SOURCE, 103).is_ok());
}

#[test]
fn rejecting_a_node_ends_its_token_at_once_and_refuses_it_until_approved() {
    let (_d, store) = store();
    let (node, token) = node_with_instances(&store);
    let cfg = admitting(&[&node.cluster]);
    let n = reject(&store, "n1").unwrap();
    assert_eq!((n.admission_name(), n.down), ("rejected", true));
    assert!(matches!(
        authenticate(&store, &token),
        Err(NodeError::Unauthorized)
    ));
    // A request it had authenticated before is refused at the store too.
    assert!(matches!(
        register(&store, &node, info(&node, "b1"), 5),
        Err(NodeError::Unauthorized)
    ));
    let actual = ActualState {
        instances: vec![],
        image_cache: vec![],
        cache: Default::default(),
    };
    assert!(matches!(
        report(&store, "n1", &actual, 5),
        Err(NodeError::Unauthorized)
    ));
    // No work: not placed on, its instances flagged as on a node the frontend lost.
    assert!(store.cloud(loads).unwrap().is_empty());
    assert!(get(&store, "i-00000001").node_down);
    // Listed MAC, its old token: refused all the same.
    for token in [None, Some(token.as_str())] {
        let why = refused(enroll(
            &store,
            &cfg,
            &request(&cfg, "n1", MAC, token),
            SOURCE,
            6,
        ));
        assert!(why.contains("node n1 was rejected by an admin"), "{why}");
    }
    assert_eq!(
        approve(&store, "n1", 7).unwrap().admission_name(),
        "approved"
    );
    let token = enroll(&store, &cfg, &request(&cfg, "n1", MAC, None), SOURCE, 8).unwrap();
    let n = authenticate(&store, &token).unwrap();
    register(&store, &n, info(&n, "b1"), 9).unwrap();
    assert_eq!(store.cloud(loads).unwrap().len(), 1);
}

#[test]
fn a_rejected_node_that_never_enrolled_again_is_approved_for_the_macs_it_registered() {
    let (_d, store) = store();
    let (node, _) = admitted(&store, "n1", "cluster1");
    let mut i = info(&node, "b1");
    i.macs = vec![mac(MAC)];
    register(&store, &node, i, 2).unwrap();
    reject(&store, "n1").unwrap();
    let n = approve(&store, "n1", 3).unwrap();
    assert_eq!(n.claim.unwrap().macs, [mac(MAC)]);
    let cfg = admitting(&["cluster1"]);
    refused(enroll(
        &store,
        &cfg,
        &request(&cfg, "n1", UNLISTED, None),
        SOURCE,
        4,
    ));
    assert!(enroll(&store, &cfg, &request(&cfg, "n1", MAC, None), SOURCE, 5).is_ok());
}

#[test]
fn a_node_not_admitted_is_never_placed_on() {
    let (_d, store) = store();
    node_in(&store, "n1", "cluster1");
    // A record with room that is not admitted (as a pending or rejected node's would be).
    let mut idle = record(&store, "n1");
    (idle.id, idle.token_sha256) = ("n2".into(), String::new());
    (idle.admission, idle.down) = (Admission::Pending, false);
    idle.info.as_mut().unwrap().cpus = 64;
    store.cloud(|tx| save(tx, &idle)).unwrap();
    let l = store.cloud(loads).unwrap();
    assert_eq!(l.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["n1"]);
    let need = Need {
        vcpus: 1,
        memory_mib: 256,
    };
    let placed = scheduler::place(&l, "cluster1", need, 1, 8).unwrap();
    assert!(placed.iter().all(|n| n == "n1"), "{placed:?}");
    // DescribeNodes still lists it, with its state.
    let v = store.cloud(views).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].node.admission_name(), "pending");
}

#[test]
fn pending_records_are_bounded_and_known_ids_keep_their_claims() {
    let (_d, store) = store();
    let cfg = admitting(&["cluster1"]);
    for n in 0..MAX_PENDING {
        refused(enroll(
            &store,
            &cfg,
            &request(&cfg, &format!("p{n}"), UNLISTED, None),
            SOURCE,
            1,
        ));
    }
    let why = refused(enroll(
        &store,
        &cfg,
        &request(&cfg, "one-more", UNLISTED, None),
        SOURCE,
        2,
    ));
    assert!(why.contains("already waiting for admission"), "{why}");
    assert!(store
        .cloud(|tx| tx.get::<Node>(NODE, "one-more"))
        .unwrap()
        .is_none());
    // An id already waiting still counts its attempts; a listed node still gets in.
    refused(enroll(
        &store,
        &cfg,
        &request(&cfg, "p0", UNLISTED, None),
        SOURCE,
        3,
    ));
    assert_eq!(record(&store, "p0").claim.unwrap().attempts, 2);
    assert!(enroll(&store, &cfg, &request(&cfg, "listed", MAC, None), SOURCE, 4).is_ok());
}
