//! Attachments moved by node reports, the attachments a node is asked for, and AoE addresses.

use super::*;
use crate::cloud::reconcile::tests::{attached_volume, instance, seen};
use crate::store::Store;
use mallee_proto::Observed;

fn attached(status: AttachStatus) -> Volume {
    let mut v = attached_volume("vol-0123456789abcdef0", "/dev/sdf");
    let a = v.attachment.as_mut().unwrap();
    (a.status, a.shelf) = (status, 100);
    v
}

fn report(volumes: &[&str]) -> InstanceReport {
    InstanceReport {
        volumes: volumes.iter().map(|v| v.to_string()).collect(),
        ..seen(Observed::Running, None)
    }
}

fn running() -> Instance {
    let mut i = instance();
    i.state = State::Running;
    i
}

fn status(v: &Volume) -> Option<AttachStatus> {
    v.attachment.as_ref().map(|a| a.status)
}

#[test]
fn an_attachment_is_attached_only_once_the_node_says_its_vmm_has_the_disk() {
    let mut v = attached(AttachStatus::Attaching);
    assert!(!apply(&mut v, Some(&running()), Some(&report(&[]))));
    assert_eq!(status(&v), Some(AttachStatus::Attaching));
    assert!(
        !apply(&mut v, Some(&running()), None),
        "a silent node proves nothing"
    );
    let id = v.id.clone();
    assert!(apply(&mut v, Some(&running()), Some(&report(&[&id]))));
    assert_eq!(status(&v), Some(AttachStatus::Attached));
    // A VMM that lost it (restarted) is attaching it again, not attached.
    assert!(apply(&mut v, Some(&running()), Some(&report(&[]))));
    assert_eq!(status(&v), Some(AttachStatus::Attaching));
}

#[test]
fn a_stopped_instance_keeps_its_attachment_as_it_was() {
    let mut stopped = instance();
    stopped.state = State::Stopped;
    let mut v = attached(AttachStatus::Attached);
    assert!(!apply(&mut v, Some(&stopped), None));
    assert_eq!(status(&v), Some(AttachStatus::Attached));
}

#[test]
fn a_detach_finishes_only_once_the_node_no_longer_holds_the_disk() {
    let mut v = attached(AttachStatus::Detaching);
    let id = v.id.clone();
    assert!(!apply(&mut v, Some(&running()), Some(&report(&[&id]))));
    assert_eq!(status(&v), Some(AttachStatus::Detaching));
    assert_eq!(v.state, "in-use");
    assert!(apply(&mut v, Some(&running()), Some(&report(&[]))));
    assert_eq!(v.attachment, None);
    assert_eq!(v.state, "available");
}

#[test]
fn a_terminated_or_vanished_instance_lets_its_volumes_go() {
    let mut gone = instance();
    gone.state = State::Terminated;
    for i in [Some(&gone), None] {
        let mut v = attached(AttachStatus::Attached);
        assert!(apply(&mut v, i, None));
        assert_eq!(
            (v.attachment.is_none(), v.state.as_str()),
            (true, "available")
        );
    }
}

#[test]
fn a_node_is_asked_for_the_attachments_that_are_not_being_detached() {
    let mut other = attached(AttachStatus::Attached);
    other.id = "vol-1".into();
    other.attachment.as_mut().unwrap().instance_id = "i-2".into();
    let mut leaving = attached(AttachStatus::Detaching);
    leaving.id = "vol-2".into();
    let vols = [attached(AttachStatus::Attaching), other, leaving];
    let want = wanted(&vols, "i-00000001");
    assert_eq!(want.len(), 1);
    assert_eq!(
        (want[0].volume_id.as_str(), want[0].shelf, want[0].slot),
        ("vol-0123456789abcdef0", 100, 0)
    );
}

#[test]
fn aoe_addresses_are_the_lowest_free_in_the_range_and_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let range = ShelfRange { first: 7, last: 7 };
    store
        .cloud(|tx| {
            assert_eq!(free_address(tx, range)?, Some((7, 0)));
            let v = attached(AttachStatus::Attached);
            let mut at = v.clone();
            at.attachment.as_mut().unwrap().shelf = 7;
            tx.put(VOLUME, &at.id, &at.owner, None, &at)?;
            assert_eq!(free_address(tx, range)?, Some((7, 1)));
            for slot in 1..=254u8 {
                let mut more = at.clone();
                more.id = format!("vol-{slot}");
                more.attachment.as_mut().unwrap().slot = slot;
                tx.put(VOLUME, &more.id, &more.owner, None, &more)?;
            }
            assert_eq!(free_address(tx, range)?, None, "slot 255 is never used");
            Ok::<_, StoreError>(())
        })
        .unwrap();
}
