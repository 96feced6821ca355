//! Volume and snapshot records and their state machines (the AoE data path comes later):
//! volumes are `available` ⇄ `in-use` (attach/detach) and deleted only when `available`;
//! snapshots of one's own volumes complete at once (no data to copy yet). Both take tags
//! (TagSpecifications, `tagSet`, tag filters; see `tags`), which go when they are deleted.

use super::instances::owned;
use super::params::filter_matches;
use super::tags;
use super::xml::{self, time, Xml};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::model::{
    new_id, well_formed, Attachment, Snapshot, State, Volume, SNAPSHOT, VOLUME,
};
use crate::cloud::tags::{self as tagging, ResourceType, TagSet};
use crate::store::CloudTx;

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

fn save(tx: &CloudTx<'_>, v: &Volume) -> Result<(), Ec2Error> {
    Ok(tx.put(VOLUME, &v.id, &v.owner, None, v)?)
}

fn attachment(x: &mut Xml, v: &Volume, a: &Attachment, status: &str) {
    x.field("volumeId", &v.id)
        .field("instanceId", &a.instance_id)
        .field("device", &a.device)
        .field("status", status)
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
    x.set("attachmentSet", &atts, |x, a| {
        attachment(x, v, a, "attached")
    });
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
            Some(id) => Some(snapshot(tx, id, &c.user.name)?),
            None => None,
        };
        let size = match (c.p.int("Size")?, &snap) {
            (Some(s), _) if !(1..=16384).contains(&s) => {
                return Err(Ec2Error::invalid(
                    "Size",
                    &s.to_string(),
                    "Size is 1..16384 GiB.",
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
            id: new_id("vol", 17),
            owner: c.user.name.clone(),
            size_gib: size,
            zone: zone.to_string(),
            snapshot_id: snap.map(|s| s.id),
            state: "available".into(),
            created_ms: c.now,
            attachment: None,
        };
        save(tx, &v)?;
        tagging::attach(tx, &v.owner, &v.id, ResourceType::Volume, &tag_set)?;
        Ok(v)
    })?;
    let mut x = xml::response(c.action, c.rid);
    render_volume(&mut x, &v, &tag_set);
    Ok(x.finish())
}

pub fn delete(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("VolumeId")?;
    ec2.store.cloud(|tx| {
        let v = volume(tx, id, &c.user.name)?;
        if v.state != "available" {
            return Err(Ec2Error::client(
                "VolumeInUse",
                format!(
                    "Volume {id} is currently attached to {}",
                    v.attachment.map(|a| a.instance_id).unwrap_or_default()
                ),
            ));
        }
        tx.delete(VOLUME, id)?;
        tagging::forget(tx, id)?;
        Ok(())
    })?;
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
        if v.state != "available" {
            return Err(Ec2Error::client(
                "VolumeInUse",
                format!("{vid} is already attached to an instance"),
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
        v.state = "in-use".into();
        v.attachment = Some(Attachment {
            instance_id: inst.id,
            device: device.to_string(),
            attached_ms: c.now,
            delete_on_termination: false,
        });
        save(tx, &v)?;
        Ok(v)
    })?;
    let mut x = xml::response(c.action, c.rid);
    if let Some(a) = &v.attachment {
        attachment(&mut x, &v, a, "attaching");
    }
    Ok(x.finish())
}

pub fn detach(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let vid = c.p.req("VolumeId")?;
    let (v, a) = ec2.store.cloud(|tx| {
        let mut v = volume(tx, vid, &c.user.name)?;
        let a = v.attachment.take().ok_or_else(|| {
            Ec2Error::client(
                "IncorrectState",
                format!("Volume '{vid}' is in the 'available' state."),
            )
        })?;
        if c.p.get("InstanceId").is_some_and(|i| i != a.instance_id) {
            return Err(Ec2Error::client(
                "InvalidAttachment.NotFound",
                format!("The volume {vid} is not attached to that instance"),
            ));
        }
        v.state = "available".into();
        save(tx, &v)?;
        Ok((v, a))
    })?;
    let mut x = xml::response(c.action, c.rid);
    attachment(&mut x, &v, &a, "detaching");
    Ok(x.finish())
}

fn render_snapshot(x: &mut Xml, s: &Snapshot, tags: &TagSet) {
    x.field("snapshotId", &s.id)
        .field("volumeId", &s.volume_id)
        .field("status", &s.state)
        .field("startTime", time(s.started_ms))
        .field("progress", "100%")
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
        let s = Snapshot {
            id: new_id("snap", 17),
            owner: c.user.name.clone(),
            volume_id: v.id,
            volume_size: v.size_gib,
            description: c.p.get("Description").unwrap_or("").to_string(),
            state: "completed".into(),
            started_ms: c.now,
        };
        tx.put(SNAPSHOT, &s.id, &s.owner, None, &s)?;
        tagging::attach(tx, &s.owner, &s.id, ResourceType::Snapshot, &tag_set)?;
        Ok::<_, Ec2Error>(s)
    })?;
    let mut x = xml::response(c.action, c.rid);
    render_snapshot(&mut x, &s, &tag_set);
    Ok(x.finish())
}

pub fn delete_snapshot(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    let id = c.p.req("SnapshotId")?;
    ec2.store.cloud(|tx| {
        snapshot(tx, id, &c.user.name)?;
        tx.delete(SNAPSHOT, id)?;
        tagging::forget(tx, id)?;
        Ok::<_, Ec2Error>(())
    })?;
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
