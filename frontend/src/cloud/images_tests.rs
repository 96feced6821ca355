//! Image states, and CreateImage from start to finish without a socket: how it goes about each
//! instance state, what it stores, and how its hold moves as the node and the storage keeper
//! report.

use super::*;
use crate::cloud::model::Attachment;
use crate::cloud::reconcile::{self, tests::attached_volume, tests::instance};
use crate::store::Store;
use mallee_proto::Observed;

const ROOT: &str = "vol-0000beef";
const SNAP: &str = "snap-0123456789abcdef0";
const IMG: &str = "emi-0000c0de";

fn ebs_instance(state: State) -> Instance {
    let mut i = instance();
    i.state = state;
    i.goal = match state {
        State::Stopping | State::Stopped => Goal::Stopped,
        State::ShuttingDown | State::Terminated => Goal::Terminated,
        _ => Goal::Running,
    };
    i.root_volume = Some(ROOT.into());
    i.kernel_id = Some("eki-00000002".into());
    i.ramdisk_id = Some("eri-00000003".into());
    i
}

fn root_volume() -> Volume {
    let mut v = attached_volume(ROOT, ROOT_DEVICE_NAME);
    v.size_gib = 2;
    let a = v.attachment.as_mut().unwrap();
    (a.root, a.delete_on_termination) = (true, true);
    v
}

fn source_image() -> Image {
    Image {
        id: "emi-00000001".into(),
        owner: "u".into(),
        name: "source".into(),
        description: None,
        kind: ImageKind::Machine,
        bucket: String::new(),
        key: String::new(),
        size: 2 << 30,
        sha256: String::new(),
        architecture: "arm64".into(),
        kernel_id: Some("eki-00000002".into()),
        ramdisk_id: None,
        public: false,
        launch_users: vec![],
        created_ms: 0,
        root_snapshot: Some("snap-00000000000000001".into()),
        source_instance: None,
        root_device: None,
    }
}

/// A store holding `i`, its root volume and the image it was launched from.
fn stored(i: &Instance) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let (v, src) = (root_volume(), source_image());
    store
        .cloud(|tx| {
            tx.put(INSTANCE, &i.id, &i.owner, None, i)?;
            tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
            tx.put(IMAGE, &src.id, &src.owner, Some(&src.name), &src)
        })
        .unwrap();
    (dir, store)
}

fn request(no_reboot: bool) -> Request<'static> {
    Request {
        name: "made",
        description: Some("from i-00000001"),
        no_reboot,
        excluded: &[],
    }
}

fn ids() -> (String, String) {
    (IMG.into(), SNAP.into())
}

fn read<T: serde::de::DeserializeOwned>(store: &Store, kind: &str, id: &str) -> T {
    store
        .cloud(|tx| tx.get::<T>(kind, id))
        .unwrap()
        .unwrap_or_else(|| panic!("no {kind} {id}"))
}

/// Begins CreateImage on the stored instance; returns what it answered.
fn begin_on(store: &Store, req: &Request<'_>) -> Result<(Image, Snapshot, Approach), ImagingError> {
    store.cloud(|tx| {
        let mut i: Instance = tx.get(INSTANCE, "i-00000001")?.unwrap();
        begin(tx, &mut i, req, ids(), 7)
    })
}

fn advance_now(store: &Store) -> bool {
    store.cloud(|tx| advance(tx, 9)).unwrap()
}

fn update<T: serde::Serialize + serde::de::DeserializeOwned>(
    store: &Store,
    kind: &str,
    id: &str,
    f: impl FnOnce(&mut T),
) {
    store
        .cloud(|tx| {
            let mut t: T = tx.get(kind, id)?.unwrap();
            f(&mut t);
            tx.put(kind, id, "u", None, &t)
        })
        .unwrap();
}

fn image_state(store: &Store) -> ImageState {
    let img: Image = read(store, IMAGE, IMG);
    store.cloud(|tx| state_of(tx, &img)).unwrap()
}

#[test]
fn an_ebs_image_is_available_only_once_its_root_snapshot_is_completed() {
    let mut img = source_image();
    let mut snap = Snapshot::pending("snap-00000000000000001".into(), "u", &root_volume(), "", 0);
    assert_eq!(state(&img, Some(&snap)), ImageState::Pending);
    snap.copied = true;
    snap.progress = 99;
    assert_eq!(
        state(&img, Some(&snap)),
        ImageState::Pending,
        "copied is not stored"
    );
    snap.state = "completed".into();
    assert_eq!(state(&img, Some(&snap)), ImageState::Available);
    snap.state = "error".into();
    snap.state_message = Some("walrus is full".into());
    let failed = state(&img, Some(&snap));
    assert_eq!(failed.name(), "failed");
    let reason = failed.reason().unwrap();
    assert_eq!(reason.code, "Server.InternalError");
    assert!(reason.message.contains("walrus is full"), "{reason:?}");
    assert_eq!(state(&img, None).name(), "failed", "its snapshot is gone");
    img.root_snapshot = None;
    assert_eq!(state(&img, None), ImageState::Available, "instance-store");
}

#[test]
fn a_created_image_boots_the_root_its_instance_booted() {
    let root: mallee_proto::RootDevice = "PARTUUID=0badcafe-01".parse().unwrap();
    let mut i = ebs_instance(State::Stopped);
    i.root_device = Some(root);
    let (_dir, store) = stored(&i);
    let (img, _, _) = begin_on(&store, &request(true)).unwrap();
    assert_eq!(img.root_device, Some(root));
    let stored: Image = read(&store, IMAGE, IMG);
    assert_eq!(stored.root_device, Some(root));
}

#[test]
fn only_running_stopping_and_stopped_ebs_instances_are_imaged() {
    let mut plain = ebs_instance(State::Running);
    plain.root_volume = None;
    assert!(matches!(
        approach(&plain, false),
        Err(ImagingError::NotEbsBacked)
    ));
    for state in [State::Pending, State::ShuttingDown, State::Terminated] {
        let r = approach(&ebs_instance(state), true);
        assert!(matches!(r, Err(ImagingError::State)), "{state:?}: {r:?}");
    }
    let running = ebs_instance(State::Running);
    assert_eq!(approach(&running, false).unwrap(), Approach::Reboot);
    assert_eq!(approach(&running, true).unwrap(), Approach::Live);
    for state in [State::Stopping, State::Stopped] {
        for no_reboot in [false, true] {
            let a = approach(&ebs_instance(state), no_reboot).unwrap();
            assert_eq!(a, Approach::AtRest, "{state:?}");
        }
    }
    let mut held = ebs_instance(State::Stopped);
    held.image_hold = Some(ImageHold {
        image_id: IMG.into(),
        snapshot_id: SNAP.into(),
        restart: false,
    });
    assert!(matches!(
        approach(&held, true),
        Err(ImagingError::Busy { image }) if image == IMG
    ));
}

#[test]
fn a_reboot_stops_and_holds_the_instance_and_the_snapshot_waits_for_the_stop() {
    let (_dir, store) = stored(&ebs_instance(State::Running));
    let (img, snap, approach) = begin_on(&store, &request(false)).unwrap();
    assert_eq!(approach, Approach::Reboot);
    // The image: the instance's kernel and ramdisk, its source image's architecture, its root
    // volume's size, rooted in the new snapshot.
    assert_eq!(img.kernel_id.as_deref(), Some("eki-00000002"));
    assert_eq!(img.ramdisk_id.as_deref(), Some("eri-00000003"));
    assert_eq!(img.architecture, "arm64");
    assert_eq!(img.size, 2 << 30);
    assert_eq!(img.root_snapshot.as_deref(), Some(SNAP));
    assert_eq!(img.source_instance.as_deref(), Some("i-00000001"));
    assert_eq!(img.description.as_deref(), Some("from i-00000001"));
    assert_eq!(
        snap.description,
        format!("Created by CreateImage(i-00000001) for {IMG} from {ROOT}")
    );
    assert_eq!((snap.volume_id.as_str(), snap.volume_size), (ROOT, 2));
    assert!(snap.held, "not copied while the guest runs");
    assert_eq!(read::<Image>(&store, IMAGE, IMG), img);
    assert_eq!(image_state(&store), ImageState::Pending);
    let i: Instance = read(&store, INSTANCE, "i-00000001");
    assert_eq!((i.state, i.goal), (State::Stopping, Goal::Stopped));
    let hold = i.image_hold.unwrap();
    assert!(hold.restart && hold.snapshot_id == SNAP && hold.image_id == IMG);
    // Still stopping: nothing moves.
    assert!(!advance_now(&store));
    assert!(read::<Snapshot>(&store, SNAPSHOT, SNAP).held);
}

#[test]
fn no_reboot_copies_the_running_volume_and_leaves_the_instance_alone() {
    let running = ebs_instance(State::Running);
    let (_dir, store) = stored(&running);
    let (_, snap, approach) = begin_on(&store, &request(true)).unwrap();
    assert_eq!(approach, Approach::Live);
    assert!(!snap.held, "the keeper copies it at once");
    assert_eq!(read::<Instance>(&store, INSTANCE, "i-00000001"), running);
    assert!(!advance_now(&store), "no hold to move");
}

#[test]
fn a_stopped_instance_is_copied_at_once_and_stays_stopped() {
    let (_dir, store) = stored(&ebs_instance(State::Stopped));
    let (_, snap, approach) = begin_on(&store, &request(false)).unwrap();
    assert_eq!(approach, Approach::AtRest);
    assert!(!snap.held);
    let mut i: Instance = read(&store, INSTANCE, "i-00000001");
    assert!(!i.image_hold.as_ref().unwrap().restart);
    assert_eq!(
        lifecycle::start(&mut i, 8),
        Err(lifecycle::NotNow),
        "no start before the copy"
    );
    update::<Snapshot>(&store, SNAPSHOT, SNAP, |s| s.copied = true);
    assert!(advance_now(&store));
    let i: Instance = read(&store, INSTANCE, "i-00000001");
    assert_eq!((i.state, i.image_hold), (State::Stopped, None));
}

#[test]
fn attached_data_volumes_must_be_left_out_by_name() {
    let (_dir, store) = stored(&ebs_instance(State::Running));
    let data = attached_volume("vol-0000da7a", "/dev/vdb");
    store
        .cloud(|tx| tx.put(VOLUME, &data.id, &data.owner, None, &data))
        .unwrap();
    let refused = begin_on(&store, &request(true));
    assert!(
        matches!(&refused, Err(ImagingError::DataVolume { volume, device }) if volume == "vol-0000da7a" && device == "/dev/vdb"),
        "{refused:?}"
    );
    assert!(store
        .cloud(|tx| tx.get::<Image>(IMAGE, IMG))
        .unwrap()
        .is_none());
    let excluded = ["/dev/vdb".to_string()];
    let req = Request {
        excluded: &excluded,
        ..request(true)
    };
    let (img, _, _) = begin_on(&store, &req).unwrap();
    assert_eq!(img.root_snapshot.as_deref(), Some(SNAP));
}

#[test]
fn the_hold_lets_the_copy_happen_once_stopped_and_restarts_the_instance_after_it() {
    let i = ebs_instance(State::Running);
    let (_dir, store) = stored(&i);
    crate::cloud::nodes::tests::node_in(&store, &i.node, &i.zone);
    begin_on(&store, &request(false)).unwrap();
    // The node says the VMM is gone.
    update::<Instance>(&store, INSTANCE, "i-00000001", |i| {
        let seen = reconcile::tests::seen(Observed::Stopped, None);
        assert!(reconcile::apply(i, Some(&seen), 8));
        assert_eq!(i.state, State::Stopped);
    });
    assert!(
        !advance_now(&store),
        "the instance waits; only the snapshot moves"
    );
    assert!(!read::<Snapshot>(&store, SNAPSHOT, SNAP).held);
    assert!(!advance_now(&store), "not copied yet");
    // The keeper made the point-in-time copy: the instance starts again while the chunks go
    // to Walrus, and the image stays pending until they are there.
    update::<Snapshot>(&store, SNAPSHOT, SNAP, |s| s.copied = true);
    assert!(advance_now(&store));
    let i: Instance = read(&store, INSTANCE, "i-00000001");
    assert_eq!(
        (i.state, i.goal, i.image_hold),
        (State::Pending, Goal::Running, None)
    );
    assert_eq!(image_state(&store), ImageState::Pending);
    update::<Snapshot>(&store, SNAPSHOT, SNAP, |s| s.state = "completed".into());
    assert_eq!(image_state(&store), ImageState::Available);
    assert!(!advance_now(&store));
}

#[test]
fn a_stop_asked_for_meanwhile_keeps_the_instance_stopped_after_the_copy() {
    let mut i = ebs_instance(State::Stopping);
    let hold = ImageHold {
        image_id: IMG.into(),
        snapshot_id: SNAP.into(),
        restart: true,
    };
    i.image_hold = Some(hold);
    lifecycle::stop(&mut i, 3).unwrap();
    let hold = i.image_hold.clone().unwrap();
    assert!(!hold.restart);
    i.state = State::Stopped;
    let mut snap = Snapshot::pending(SNAP.into(), "u", &root_volume(), "", 0);
    snap.copied = true;
    assert_eq!(step(&i, &hold, Some(&snap)), Step::Release { start: false });
}

#[test]
fn steps_follow_the_instance_and_the_snapshot() {
    let hold = ImageHold {
        image_id: IMG.into(),
        snapshot_id: SNAP.into(),
        restart: true,
    };
    let mut snap = Snapshot::pending(SNAP.into(), "u", &root_volume(), "", 0);
    snap.held = true;
    let stopping = ebs_instance(State::Stopping);
    let stopped = ebs_instance(State::Stopped);
    assert_eq!(step(&stopping, &hold, Some(&snap)), Step::Wait);
    assert_eq!(step(&stopped, &hold, Some(&snap)), Step::Copy);
    let mut terminating = ebs_instance(State::ShuttingDown);
    terminating.goal = Goal::Terminated;
    let Step::Fail(why) = step(&terminating, &hold, Some(&snap)) else {
        panic!("a terminated instance's image cannot be made");
    };
    assert!(
        why.contains("terminated before its root volume could be copied"),
        "{why}"
    );
    snap.held = false;
    assert_eq!(step(&stopped, &hold, Some(&snap)), Step::Wait, "copying");
    snap.copied = true;
    assert_eq!(
        step(&stopped, &hold, Some(&snap)),
        Step::Release { start: true }
    );
    snap.copied = false;
    snap.state = "error".into();
    assert_eq!(
        step(&stopped, &hold, Some(&snap)),
        Step::Release { start: true },
        "a failed copy still lets the instance go"
    );
    assert_eq!(step(&stopped, &hold, None), Step::Release { start: true });
    assert_eq!(
        step(&terminating, &hold, None),
        Step::Release { start: false }
    );
}

#[test]
fn terminating_a_held_instance_fails_its_image_with_the_reason() {
    let (_dir, store) = stored(&ebs_instance(State::Running));
    begin_on(&store, &request(false)).unwrap();
    update::<Instance>(&store, INSTANCE, "i-00000001", |i| {
        lifecycle::terminate(i, 8)
    });
    assert!(advance_now(&store));
    let snap: Snapshot = read(&store, SNAPSHOT, SNAP);
    assert_eq!(snap.state, "error");
    assert!(!snap.held);
    let i: Instance = read(&store, INSTANCE, "i-00000001");
    assert_eq!((i.goal, i.image_hold), (Goal::Terminated, None));
    let ImageState::Failed(reason) = image_state(&store) else {
        panic!("the image must fail");
    };
    assert!(
        reason.message.contains("i-00000001 was terminated"),
        "{reason:?}"
    );
}

#[test]
fn an_unattached_data_volume_is_no_obstacle() {
    let (_dir, store) = stored(&ebs_instance(State::Running));
    let mut loose = attached_volume("vol-0000da7a", "/dev/vdb");
    loose.attachment = None::<Attachment>;
    loose.state = "available".into();
    store
        .cloud(|tx| tx.put(VOLUME, &loose.id, &loose.owner, None, &loose))
        .unwrap();
    assert!(begin_on(&store, &request(true)).is_ok());
}
