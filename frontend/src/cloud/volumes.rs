//! EBS volumes as the cloud records them, between the EC2 API, the nodes and the storage
//! controller: the AoE address an attachment is exported at, the attachments each node is
//! asked to hold, and how a node's report moves an attachment (attaching → attached, detaching
//! → gone). Plain functions over records; the exports they call for are the storage keeper's.

use super::config::ShelfRange;
use super::model::{AttachStatus, Instance, State, Volume, VOLUME};
use crate::store::{CloudTx, StoreError};
use mallee_proto::{InstanceReport, VolumeAttachment};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The slots of a shelf exports use (255 is the broadcast slot).
const SLOTS: std::ops::RangeInclusive<u8> = 0..=254;

/// The lowest shelf/slot in `range` no attachment uses, or `None` when all are taken.
pub fn free_address(tx: &CloudTx<'_>, range: ShelfRange) -> Result<Option<(u16, u8)>, StoreError> {
    let used: BTreeSet<(u16, u8)> = (tx.list::<Volume>(VOLUME, None)?.iter())
        .filter_map(|v| v.attachment.as_ref().map(|a| (a.shelf, a.slot)))
        .collect();
    Ok((range.first..=range.last)
        .flat_map(|shelf| SLOTS.map(move |slot| (shelf, slot)))
        .find(|a| !used.contains(a)))
}

/// Where the backing file of volume `id` lives under the volumes directory.
pub fn backing_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.img"))
}

/// The volume ids whose backing files are in `dir` (named by [`backing_path`]).
pub fn backing_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".img")) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

fn node_view(v: &Volume, a: &super::model::Attachment) -> VolumeAttachment {
    VolumeAttachment {
        volume_id: v.id.clone(),
        device: a.device.clone(),
        shelf: a.shelf,
        slot: a.slot,
    }
}

/// The attachments the node of instance `i` must hold for it: all but those being detached,
/// and but its root volume (see [`root_of`]).
pub fn wanted(volumes: &[Volume], instance_id: &str) -> Vec<VolumeAttachment> {
    let mut out: Vec<VolumeAttachment> = (volumes.iter())
        .filter_map(|v| {
            let a = v.attachment.as_ref()?;
            (a.instance_id == instance_id && a.status != AttachStatus::Detaching && !a.root)
                .then(|| node_view(v, a))
        })
        .collect();
    out.sort();
    out
}

/// An EBS-backed instance's root volume as its node boots from it, once the volume is made
/// (`Some(None)` while it is still being restored from its snapshot: the node must not start
/// the instance yet); `None` for an instance-store instance.
pub fn root_of(volumes: &[Volume], i: &Instance) -> Option<Option<VolumeAttachment>> {
    let id = i.root_volume.as_ref()?;
    let v = volumes.iter().find(|v| v.id == *id);
    let a = v.and_then(|v| v.attachment.as_ref().map(|a| (v, a)));
    Some(
        a.filter(|(v, _)| v.state != "creating")
            .map(|(v, a)| node_view(v, a)),
    )
}

/// Makes the root volume of EBS-backed instance `i` from `snapshot` (`creating` until the
/// storage keeper restored it), attached to `i` at `device`, deleted with it, at the next free
/// AoE address; records it in `i`. `None` when every address of `shelves` is taken.
pub fn make_root(
    tx: &CloudTx<'_>,
    i: &mut Instance,
    snapshot: &super::model::Snapshot,
    device: &str,
    shelves: ShelfRange,
    id: String,
    now: i64,
) -> Result<Option<Volume>, StoreError> {
    let Some((shelf, slot)) = free_address(tx, shelves)? else {
        return Ok(None);
    };
    let v = Volume {
        id,
        owner: i.owner.clone(),
        size_gib: snapshot.volume_size,
        zone: i.zone.clone(),
        snapshot_id: Some(snapshot.id.clone()),
        state: "creating".into(),
        created_ms: now,
        attachment: Some(super::model::Attachment {
            instance_id: i.id.clone(),
            device: device.to_string(),
            attached_ms: now,
            delete_on_termination: true,
            status: AttachStatus::Attaching,
            shelf,
            slot,
            root: true,
        }),
        dirty_base: None,
    };
    tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
    i.root_volume = Some(v.id.clone());
    Ok(Some(v))
}

/// What `v`'s attachment becomes now that the node of its instance `i` reported (`seen`:
/// `None` when the node did not list the instance). Returns whether `v` changed; a volume
/// whose detach finished is `available` again.
pub fn apply(v: &mut Volume, i: Option<&Instance>, seen: Option<&InstanceReport>) -> bool {
    let Some(a) = v.attachment.as_mut() else {
        return false;
    };
    let held = seen.is_some_and(|s| s.volumes.contains(&v.id));
    let before = a.status;
    let gone = i.is_none_or(|i| i.state == State::Terminated);
    // A VMM that runs says what it holds; an instance with none (stopped, pending, its node
    // silent) holds nothing, and nothing it was asked to let go of is held.
    let running = i.is_some_and(|i| i.state == State::Running) && seen.is_some();
    match a.status {
        AttachStatus::Detaching if gone || !held => {
            v.attachment = None;
            v.state = "available".into();
            return true;
        }
        _ if gone => {
            v.attachment = None;
            v.state = "available".into();
            return true;
        }
        AttachStatus::Attaching if held => a.status = AttachStatus::Attached,
        AttachStatus::Attached if running && !held => a.status = AttachStatus::Attaching,
        _ => {}
    }
    a.status != before
}

/// Moves every attachment of an instance on `node` by the node's report `seen` (its instance
/// reports). Returns whether any volume changed.
pub fn after_report(
    tx: &CloudTx<'_>,
    instances: &[Instance],
    seen: &[InstanceReport],
) -> Result<bool, StoreError> {
    let mut changed = false;
    for mut v in tx.list::<Volume>(VOLUME, None)? {
        let Some(a) = &v.attachment else { continue };
        let Some(i) = instances.iter().find(|i| i.id == a.instance_id) else {
            continue;
        };
        let report = seen.iter().find(|r| r.instance_id == i.id);
        let before = v.attachment.as_ref().map(|a| a.status);
        if apply(&mut v, Some(i), report) {
            let after = v.attachment.as_ref().map(|a| a.status.as_str());
            tracing::info!(volume = %v.id, instance = %i.id, from = ?before.map(|s| s.as_str()), to = after.unwrap_or("detached"), "volume attachment");
            tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
