//! The EBS volume and snapshot actions. A volume is `creating` until the storage keeper has
//! made its backing file, then `available`; AttachVolume gives it an AoE address and leaves
//! the attachment `attaching` until the instance's node says its VMM has the disk (see
//! `cloud::volumes`); DetachVolume leaves it `detaching` until the node says the disk is
//! flushed and gone (`--force` lets go at once). A snapshot is `pending`, with its progress,
//! until the storage keeper has copied the volume at one instant and stored its chunks in
//! Walrus (`storage::keeper`); a volume made from one is `creating` until restored. Both take tags (TagSpecifications, `tagSet`,
//! tag filters; see `tags`), which go when they are deleted.

use super::instances::owned;
use super::params::filter_matches;
use super::tags;
use super::xml::{self, time, Xml};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::model::{
    new_id, well_formed, AttachStatus, Attachment, Snapshot, State, Volume, SNAPSHOT, VOLUME,
};
use crate::cloud::tags::{self as tagging, ResourceType, TagSet};
use crate::cloud::volumes::free_address;
use crate::storage::keeper::free_snapshot;
use crate::store::CloudTx;
use mallee_proto::MAX_VOLUMES;

/// A volume id no volume has. Eight hex digits (the older EC2 form, as Eucalyptus had): the
/// guest reads the id as its disk's virtio serial, which holds 20 bytes, so
/// `/dev/disk/by-id/virtio-vol-…` names the whole id.
pub(crate) fn fresh_volume_id(tx: &CloudTx<'_>) -> Result<String, Ec2Error> {
    loop {
        let id = new_id("vol", 8);
        if tx.get::<Volume>(VOLUME, &id)?.is_none() {
            return Ok(id);
        }
    }
}

/// The largest volume CreateVolume makes, in GiB.
pub const MAX_SIZE_GIB: u64 = 1024;

fn volume(tx: &CloudTx<'_>, id: &str, user: &str) -> Result<Volume, Ec2Error> {
    if !well_formed(id, &["vol"]) {
        return Err(Ec2Error::malformed("InvalidVolumeID", id));
    }
    tx.get::<Volume>(VOLUME, id)?
        .filter(|v| v.owner == user)
        .ok_or_else(|| {
            Ec2Error::client(
                "InvalidVolume.NotFound",
                format!("The volume '{id}' does not exist."),
            )
        })
}

fn snapshot(tx: &CloudTx<'_>, id: &str, user: &str) -> Result<Snapshot, Ec2Error> {
    if !well_formed(id, &["snap"]) {
        return Err(Ec2Error::malformed("InvalidSnapshotID", id));
    }
    tx.get::<Snapshot>(SNAPSHOT, id)?
        .filter(|s| s.owner == user)
        .ok_or_else(|| {
            Ec2Error::client(
                "InvalidSnapshot.NotFound",
                format!("The snapshot '{id}' does not exist."),
            )
        })
}

/// Snapshot `id` of `user`, refused unless it is completed.
pub(crate) fn completed_snapshot(
    tx: &CloudTx<'_>,
    id: &str,
    user: &str,
) -> Result<Snapshot, Ec2Error> {
    let s = snapshot(tx, id, user)?;
    if s.state != "completed" {
        return Err(Ec2Error::client(
            "IncorrectState",
            format!("Snapshot '{id}' is in the '{}' state.", s.state),
        ));
    }
    Ok(s)
}

fn save(tx: &CloudTx<'_>, v: &Volume) -> Result<(), Ec2Error> {
    Ok(tx.put(VOLUME, &v.id, &v.owner, None, v)?)
}

fn attachment(x: &mut Xml, v: &Volume, a: &Attachment) {
    x.field("volumeId", &v.id)
        .field("instanceId", &a.instance_id)
        .field("device", &a.device)
        .field("status", a.status.as_str())
        .field("attachTime", time(a.attached_ms))
        .field("deleteOnTermination", a.delete_on_termination);
}

fn render_volume(x: &mut Xml, v: &Volume, tags: &TagSet) {
    x.field("volumeId", &v.id)
        .field("size", v.size_gib)
        .field("snapshotId", v.snapshot_id.as_deref().unwrap_or(""))
        .field("availabilityZone", &v.zone)
        .field("status", &v.state)
        .field("createTime", time(v.created_ms));
    let atts: Vec<&Attachment> = v.attachment.iter().collect();
    x.set("attachmentSet", &atts, |x, a| attachment(x, v, a));
    x.field("volumeType", "standard").field("encrypted", false);
    tags::render(x, tags);
}

pub fn create(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let zone = c.p.req("AvailabilityZone")?;
    if !ec2.cfg.clusters.iter().any(|z| z == zone) {
        return Err(Ec2Error::invalid(
            "AvailabilityZone",
            zone,
            "No such availability zone.",
        ));
    }
    let tag_set = tags::specified_for(c.p, ResourceType::Volume)?;
    let v = ec2.store.cloud(|tx| {
        let snap = match c.p.get("SnapshotId") {
            Some(id) => Some(completed_snapshot(tx, id, &c.user.name)?),
            None => None,
        };
        let size = match (c.p.int("Size")?, &snap) {
            (Some(s), _) if !(1..=MAX_SIZE_GIB as i64).contains(&s) => {
                return Err(Ec2Error::invalid(
                    "Size",
                    &s.to_string(),
                    &format!("Size is 1..{MAX_SIZE_GIB} GiB."),
                ))
            }
            (Some(s), Some(sn)) if (s as u64) < sn.volume_size => {
                return Err(Ec2Error::invalid(
                    "Size",
                    &s.to_string(),
                    "Smaller than the snapshot.",
                ))
            }
            (Some(s), _) => s as u64,
            (None, Some(sn)) => sn.volume_size,
            (None, None) => return Err(Ec2Error::missing("Size")),
        };
        let v = Volume {
            id: fresh_volume_id(tx)?,
            owner: c.user.name.clone(),
            size_gib: size,
            zone: zone.to_string(),
            snapshot_id: snap.map(|s| s.id),
            state: "creating".into(),
            created_ms: c.now,
            attachment: None,
            dirty_base: None,
        };
        save(tx, &v)?;
        tagging::attach(tx, &v.owner, &v.id, ResourceType::Volume, &tag_set)?;
        Ok(v)
    })?;
    ec2.changes.bump(); // the storage keeper makes the backing file
    let mut x = xml::response(c.action, c.rid);
    render_volume(&mut x, &v, &tag_set);
    Ok(x.finish())
}

pub fn delete(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("VolumeId")?;
    ec2.store.cloud(|tx| {
        let v = volume(tx, id, &c.user.name)?;
        if let Some(a) = &v.attachment {
            return Err(Ec2Error::client(
                "VolumeInUse",
                format!("Volume {id} is currently attached to {}", a.instance_id),
            ));
        }
        tx.delete(VOLUME, id)?;
        tagging::forget(tx, id)?;
        Ok(())
    })?;
    ec2.changes.bump(); // the storage keeper removes the backing file
    Ok(xml::ok(c.action, c.rid))
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let ids = c.p.list("VolumeId");
    let filters = c.p.filters()?;
    let (all, tag_index) = ec2.store.cloud(|tx| {
        for id in &ids {
            volume(tx, id, &c.user.name)?;
        }
        let all = tx.list::<Volume>(VOLUME, Some(&c.user.name))?;
        let tag_index = tagging::index(tx, &c.user.name, ResourceType::Volume)?;
        Ok::<_, Ec2Error>((all, tag_index))
    })?;
    let shown: Vec<&Volume> = all
        .iter()
        .filter(|v| ids.is_empty() || ids.contains(&v.id))
        .filter(|v| {
            filters.iter().all(|f| match f.name.as_str() {
                "volume-id" => filter_matches(f, &v.id),
                "status" => filter_matches(f, &v.state),
                "availability-zone" => filter_matches(f, &v.zone),
                "size" => filter_matches(f, &v.size_gib.to_string()),
                "attachment.instance-id" => v
                    .attachment
                    .as_ref()
                    .is_some_and(|a| filter_matches(f, &a.instance_id)),
                _ => tags::tag_filter(f, tag_index.of(&v.id)).unwrap_or(false),
            })
        })
        .collect();
    let mut x = xml::response(c.action, c.rid);
    x.set("volumeSet", &shown, |x, v| {
        render_volume(x, v, tag_index.of(&v.id))
    });
    Ok(x.finish())
}

pub fn attach(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let (vid, iid, device) = (
        c.p.req("VolumeId")?,
        c.p.req("InstanceId")?,
        c.p.req("Device")?,
    );
    let v = ec2.store.cloud(|tx| {
        let mut v = volume(tx, vid, &c.user.name)?;
        let inst = owned(tx, iid, &c.user.name)?;
        if let Some(a) = &v.attachment {
            return Err(Ec2Error::client(
                "VolumeInUse",
                format!("{vid} is already attached to an instance ({})", a.instance_id),
            ));
        }
        if v.state != "available" {
            return Err(Ec2Error::client(
                "IncorrectState",
                format!("Volume '{vid}' is in the '{}' state.", v.state),
            ));
        }
        if !matches!(inst.state, State::Running | State::Pending | State::Stopped) {
            return Err(Ec2Error::client(
                "IncorrectState",
                format!("Instance '{iid}' is not 'running'."),
            ));
        }
        if inst.zone != v.zone {
            return Err(Ec2Error::invalid(
                "VolumeId",
                vid,
                "The volume is not in the same availability zone as the instance.",
            ));
        }
        let volumes = tx.list::<Volume>(VOLUME, None)?;
        let on_instance: Vec<&Attachment> = (volumes.iter())
            .filter_map(|v| v.attachment.as_ref())
            .filter(|a| a.instance_id == inst.id)
            .collect();
        if on_instance.iter().any(|a| a.device == device) {
            return Err(Ec2Error::invalid(
                "Device",
                device,
                &format!("Attachment point {device} is already in use"),
            ));
        }
        if on_instance.len() >= MAX_VOLUMES {
            return Err(Ec2Error::client(
                "AttachmentLimitExceeded",
                format!("Instance '{iid}' already has {MAX_VOLUMES} volumes attached, the most it can have."),
            ));
        }
        let (shelf, slot) = free_address(tx, ec2.storage.shelves)?.ok_or_else(|| {
            Ec2Error::new(
                503,
                "InsufficientVolumeCapacity",
                format!(
                    "Every AoE address of shelves {} is exporting a volume; detach one or widen [storage] shelves.",
                    ec2.storage.shelves
                ),
            )
        })?;
        v.state = "in-use".into();
        v.attachment = Some(Attachment {
            instance_id: inst.id,
            device: device.to_string(),
            attached_ms: c.now,
            delete_on_termination: false,
            status: AttachStatus::Attaching,
            shelf,
            slot,
            root: false,
        });
        save(tx, &v)?;
        Ok(v)
    })?;
    ec2.changes.bump();
    let mut x = xml::response(c.action, c.rid);
    if let Some(a) = &v.attachment {
        attachment(&mut x, &v, a);
    }
    Ok(x.finish())
}

/// DetachVolume: the attachment is `detaching` until the node says its VMM let the disk go;
/// `Force` lets go at once (the guest's outstanding I/O fails).
pub fn detach(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let vid = c.p.req("VolumeId")?;
    let force =
        c.p.get("Force")
            .is_some_and(|f| f.eq_ignore_ascii_case("true"));
    let (v, a) = ec2.store.cloud(|tx| {
        let mut v = volume(tx, vid, &c.user.name)?;
        let Some(a) = v.attachment.as_mut() else {
            return Err(Ec2Error::client(
                "IncorrectState",
                format!("Volume '{vid}' is in the '{}' state.", v.state),
            ));
        };
        if c.p.get("InstanceId").is_some_and(|i| i != a.instance_id) {
            return Err(Ec2Error::client(
                "InvalidAttachment.NotFound",
                format!("The volume {vid} is not attached to that instance"),
            ));
        }
        if a.root {
            return Err(Ec2Error::client(
                "OperationNotPermitted",
                format!("Volume '{vid}' is the root device of instance {}; terminate the instance instead.", a.instance_id),
            ));
        }
        if a.status == AttachStatus::Detaching && !force {
            return Err(Ec2Error::client(
                "IncorrectState",
                format!("Volume '{vid}' is already detaching."),
            ));
        }
        a.status = AttachStatus::Detaching;
        let a = a.clone();
        if force {
            v.attachment = None;
            v.state = "available".into();
        }
        save(tx, &v)?;
        Ok((v, a))
    })?;
    ec2.changes.bump();
    let mut x = xml::response(c.action, c.rid);
    attachment(&mut x, &v, &a);
    Ok(x.finish())
}

fn render_snapshot(x: &mut Xml, s: &Snapshot, tags: &TagSet) {
    x.field("snapshotId", &s.id)
        .field("volumeId", &s.volume_id)
        .field("status", &s.state)
        .field("startTime", time(s.started_ms))
        .field("progress", format!("{}%", s.progress))
        .field("ownerId", crate::store::account_id(&s.owner))
        .field("volumeSize", s.volume_size)
        .field("description", &s.description)
        .field("encrypted", false);
    tags::render(x, tags);
}

pub fn create_snapshot(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let vid = c.p.req("VolumeId")?;
    let tag_set = tags::specified_for(c.p, ResourceType::Snapshot)?;
    let s = ec2.store.cloud(|tx| {
        let v = volume(tx, vid, &c.user.name)?;
        if !matches!(v.state.as_str(), "available" | "in-use") {
            return Err(Ec2Error::client(
                "IncorrectState",
                format!("Volume '{vid}' is in the '{}' state.", v.state),
            ));
        }
        let description = c.p.get("Description").unwrap_or("");
        let s = Snapshot::pending(new_id("snap", 17), &c.user.name, &v, description, c.now);
        tx.put(SNAPSHOT, &s.id, &s.owner, None, &s)?;
        tagging::attach(tx, &s.owner, &s.id, ResourceType::Snapshot, &tag_set)?;
        Ok::<_, Ec2Error>(s)
    })?;
    ec2.changes.bump(); // the storage keeper copies the volume and stores its chunks
    let mut x = xml::response(c.action, c.rid);
    render_snapshot(&mut x, &s, &tag_set);
    Ok(x.finish())
}

pub fn delete_snapshot(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("SnapshotId")?;
    ec2.store.cloud(|tx| {
        let s = snapshot(tx, id, &c.user.name)?;
        if s.state == "pending" {
            return Err(Ec2Error::client(
                "IncorrectState",
                format!(
                    "Snapshot '{id}' is still pending ({}%); delete it once it completes.",
                    s.progress
                ),
            ));
        }
        let restoring = tx
            .list::<Volume>(VOLUME, None)?
            .into_iter()
            .find(|v| v.state == "creating" && v.snapshot_id.as_deref() == Some(id));
        if let Some(v) = restoring {
            return Err(Ec2Error::client(
                "InvalidSnapshot.InUse",
                format!("The snapshot {id} is being restored into volume {}.", v.id),
            ));
        }
        let image = (tx.list::<crate::cloud::model::Image>(crate::cloud::model::IMAGE, None)?)
            .into_iter()
            .find(|i| i.root_snapshot.as_deref() == Some(id));
        if let Some(image) = image {
            return Err(Ec2Error::client(
                "InvalidSnapshot.InUse",
                format!("The snapshot {id} is currently in use by {}", image.id),
            ));
        }
        Ok::<_, Ec2Error>(())
    })?;
    // The chunks go first: a failure leaves the snapshot listed, to be deleted again.
    let freed = free_snapshot(&ec2.store, id).map_err(Ec2Error::internal)?;
    ec2.store.cloud(|tx| {
        tx.delete(SNAPSHOT, id)?;
        tagging::forget(tx, id)?;
        Ok::<_, Ec2Error>(())
    })?;
    tracing::info!(snapshot = %id, freed_bytes = freed, "snapshot deleted");
    Ok(xml::ok(c.action, c.rid))
}

pub fn describe_snapshots(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let ids = c.p.list("SnapshotId");
    let filters = c.p.filters()?;
    let (all, tag_index) = ec2.store.cloud(|tx| {
        for id in &ids {
            snapshot(tx, id, &c.user.name)?;
        }
        let all = tx.list::<Snapshot>(SNAPSHOT, Some(&c.user.name))?;
        let tag_index = tagging::index(tx, &c.user.name, ResourceType::Snapshot)?;
        Ok::<_, Ec2Error>((all, tag_index))
    })?;
    let shown: Vec<&Snapshot> = all
        .iter()
        .filter(|s| ids.is_empty() || ids.contains(&s.id))
        .filter(|s| {
            filters.iter().all(|f| match f.name.as_str() {
                "snapshot-id" => filter_matches(f, &s.id),
                "volume-id" => filter_matches(f, &s.volume_id),
                "status" => filter_matches(f, &s.state),
                _ => tags::tag_filter(f, tag_index.of(&s.id)).unwrap_or(false),
            })
        })
        .collect();
    let mut x = xml::response(c.action, c.rid);
    x.set("snapshotSet", &shown, |x, s| {
        render_snapshot(x, s, tag_index.of(&s.id))
    });
    Ok(x.finish())
}
