//! Images beyond their records: the state an image shows, and CreateImage's making of one from
//! an EBS-backed instance. An EBS-backed image is as far as its root snapshot is: `pending`,
//! `available` only once the snapshot's chunks are in Walrus (`completed`), `failed` with the
//! snapshot's reason. CreateImage ([`begin`]) snapshots the instance's root volume at once when
//! it runs and NoReboot is set (crash-consistent), else copies it at rest: a running instance
//! is stopped (its guest shuts down), held stopped until the storage keeper has made the
//! snapshot's point-in-time copy, then started again ([`advance`], run by the keeper).
//!
//! It does not parse requests (`ec2::create_image`) nor copy volumes (`storage::keeper`).

use super::instances as lifecycle;
use super::model::{
    Image, ImageHold, ImageKind, Instance, Reason, Snapshot, State, Volume, DEFAULT_ARCHITECTURE,
    IMAGE, INSTANCE, ROOT_DEVICE_NAME, SNAPSHOT, VOLUME,
};
use super::nodes::{start_placed, StartError};
use crate::store::{CloudTx, StoreError};
use mallee_proto::Goal;

/// What DescribeImages says of an image (`imageState`, `stateReason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageState {
    Pending,
    Available,
    Failed(Reason),
}

impl ImageState {
    pub fn name(&self) -> &'static str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Available => "available",
            ImageState::Failed(_) => "failed",
        }
    }

    pub fn reason(&self) -> Option<&Reason> {
        match self {
            ImageState::Failed(r) => Some(r),
            _ => None,
        }
    }
}

fn failed(message: String) -> ImageState {
    ImageState::Failed(Reason {
        code: "Server.InternalError".into(),
        message: format!("Server.InternalError: {message}"),
    })
}

/// The state of `img`, whose root snapshot (if it has one) is `root`.
pub fn state(img: &Image, root: Option<&Snapshot>) -> ImageState {
    let Some(id) = &img.root_snapshot else {
        return ImageState::Available; // its object is in Walrus since RegisterImage
    };
    match root.filter(|s| s.id == *id) {
        None => failed(format!("its root snapshot {id} no longer exists")),
        Some(s) => match s.state.as_str() {
            "completed" => ImageState::Available,
            "error" => failed(format!(
                "snapshot {} of {} failed: {}",
                s.id,
                s.volume_id,
                s.state_message.as_deref().unwrap_or("no reason recorded")
            )),
            _ => ImageState::Pending,
        },
    }
}

/// [`state`] of `img`, its root snapshot read in `tx`.
pub fn state_of(tx: &CloudTx<'_>, img: &Image) -> Result<ImageState, StoreError> {
    let root = match &img.root_snapshot {
        Some(id) => tx.get::<Snapshot>(SNAPSHOT, id)?,
        None => None,
    };
    Ok(state(img, root.as_ref()))
}

/// The images `user` may see and launch (their own, public ones and those shared with them),
/// each with its [`state`]: what DescribeImages lists for `user` before its filters.
pub fn launchable(tx: &CloudTx<'_>, user: &str) -> Result<Vec<(Image, ImageState)>, StoreError> {
    let mut out = Vec::new();
    for img in tx.list::<Image>(IMAGE, None)? {
        if img.launchable_by(user) {
            let state = state_of(tx, &img)?;
            out.push((img, state));
        }
    }
    Ok(out)
}

/// How CreateImage copies an instance's root volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approach {
    /// NoReboot on a running instance: copied now, while the guest runs (crash-consistent;
    /// its disk I/O stalls while the copy is made).
    Live,
    /// A running instance: stopped (its guest shuts down), copied at rest, started again.
    Reboot,
    /// Stopped or stopping already: copied once stopped; it stays stopped.
    AtRest,
}

/// Why CreateImage cannot image an instance.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    #[error("Instance does not have a volume attached at root ({ROOT_DEVICE_NAME})")]
    NotEbsBacked,
    #[error("Instance is not in state 'running' or 'stopping' or 'stopped'")]
    State,
    #[error("the instance is already being imaged as {image}; its root volume is not copied yet")]
    Busy { image: String },
    #[error("volume {volume} is attached at {device}; images here hold only the root volume ({ROOT_DEVICE_NAME}): leave it out with a NoDevice mapping for {device}")]
    DataVolume { volume: String, device: String },
    #[error("the instance has no kernel; an EBS-backed image needs one")]
    NoKernel,
    #[error("its root volume {0} does not exist")]
    RootVolumeMissing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How CreateImage goes about `i` in its state.
pub fn approach(i: &Instance, no_reboot: bool) -> Result<Approach, ImagingError> {
    if i.root_volume.is_none() {
        return Err(ImagingError::NotEbsBacked);
    }
    if let Some(h) = &i.image_hold {
        return Err(ImagingError::Busy {
            image: h.image_id.clone(),
        });
    }
    match i.state {
        State::Running if no_reboot => Ok(Approach::Live),
        State::Running => Ok(Approach::Reboot),
        State::Stopping | State::Stopped => Ok(Approach::AtRest),
        State::Pending | State::ShuttingDown | State::Terminated => Err(ImagingError::State),
    }
}

/// What CreateImage asked for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub no_reboot: bool,
    /// Devices the image leaves out (`NoDevice` mappings).
    pub excluded: &'a [String],
}

/// AWS's description of a snapshot CreateImage made.
pub fn snapshot_description(instance: &str, image: &str, volume: &str) -> String {
    format!("Created by CreateImage({instance}) for {image} from {volume}")
}

/// Starts making image `image_id` from `i` (the caller's, already read in `tx`): a `pending`
/// snapshot `snapshot_id` of its root volume (held until `i` is stopped unless it is copied
/// live), the image naming it as its root (same kernel, ramdisk and architecture as `i`'s), and
/// `i` stopped and held as the [`Approach`] asks. Stores all three.
pub fn begin(
    tx: &CloudTx<'_>,
    i: &mut Instance,
    req: &Request<'_>,
    (image_id, snapshot_id): (String, String),
    now: i64,
) -> Result<(Image, Snapshot, Approach), ImagingError> {
    let approach = approach(i, req.no_reboot)?;
    let root_id = i.root_volume.clone().unwrap_or_default();
    let root: Volume = (tx.get(VOLUME, &root_id)?)
        .ok_or_else(|| ImagingError::RootVolumeMissing(root_id.clone()))?;
    for v in tx.list::<Volume>(VOLUME, Some(&i.owner))? {
        let Some(a) = v.attachment.as_ref().filter(|a| a.instance_id == i.id) else {
            continue;
        };
        if !a.root && !req.excluded.contains(&a.device) {
            return Err(ImagingError::DataVolume {
                volume: v.id.clone(),
                device: a.device.clone(),
            });
        }
    }
    let kernel_id = i.kernel_id.clone().ok_or(ImagingError::NoKernel)?;
    let source: Option<Image> = tx.get(IMAGE, &i.image_id)?;
    let description = snapshot_description(&i.id, &image_id, &root.id);
    let mut snapshot = Snapshot::pending(snapshot_id, &i.owner, &root, &description, now);
    snapshot.held = approach != Approach::Live && i.state != State::Stopped;
    let image = Image {
        id: image_id,
        owner: i.owner.clone(),
        name: req.name.to_string(),
        description: req.description.map(str::to_string),
        kind: ImageKind::Machine,
        bucket: String::new(),
        key: String::new(),
        size: root.size_gib << 30,
        sha256: String::new(),
        architecture: (source.map(|s| s.architecture))
            .unwrap_or_else(|| DEFAULT_ARCHITECTURE.to_string()),
        kernel_id: Some(kernel_id),
        ramdisk_id: i.ramdisk_id.clone(),
        public: false,
        launch_users: Vec::new(),
        created_ms: now,
        root_snapshot: Some(snapshot.id.clone()),
        source_instance: Some(i.id.clone()),
        // The instance's root volume began as its image's snapshot: same file systems, same
        // partition table, so the same root.
        root_device: i.root_device,
    };
    if approach != Approach::Live {
        if approach == Approach::Reboot {
            // Running: the stop cannot be refused.
            let _ = lifecycle::stop(i, now);
        }
        i.image_hold = Some(ImageHold {
            image_id: image.id.clone(),
            snapshot_id: snapshot.id.clone(),
            restart: approach == Approach::Reboot,
        });
        tx.put(INSTANCE, &i.id, &i.owner, None, &*i)?;
    }
    tx.put(SNAPSHOT, &snapshot.id, &snapshot.owner, None, &snapshot)?;
    tx.put(IMAGE, &image.id, &image.owner, Some(&image.name), &image)?;
    Ok((image, snapshot, approach))
}

/// What a hold on an instance comes to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Its guest is still stopping, or the copy is not made yet.
    Wait,
    /// It is stopped: the snapshot may be copied now.
    Copy,
    /// It ended (terminated) before the copy: the snapshot fails with this reason.
    Fail(String),
    /// The copy is made (or the snapshot ended): the hold goes, and `start` says whether the
    /// instance starts again.
    Release { start: bool },
}

/// What `hold` on `i` comes to, its snapshot being `snap`.
pub fn step(i: &Instance, hold: &ImageHold, snap: Option<&Snapshot>) -> Step {
    let stopped = i.goal == Goal::Stopped && i.state == State::Stopped;
    let release = Step::Release {
        start: hold.restart && stopped,
    };
    let Some(s) = snap.filter(|s| s.state == "pending") else {
        return release;
    };
    match (s.held, s.copied) {
        (false, true) => release,
        (false, false) => Step::Wait,
        (true, _) if stopped => Step::Copy,
        (true, _) if i.goal == Goal::Stopped => Step::Wait,
        (true, _) => Step::Fail(format!(
            "instance {} was {} before its root volume could be copied",
            i.id,
            match i.goal {
                Goal::Running => "started",
                _ => "terminated",
            }
        )),
    }
}

/// Moves every hold one [`step`]. Returns whether an instance changed (nodes must hear of a
/// start).
pub fn advance(tx: &CloudTx<'_>, now: i64) -> Result<bool, StoreError> {
    let mut changed = false;
    for mut i in tx.list::<Instance>(INSTANCE, None)? {
        let Some(hold) = i.image_hold.clone() else {
            continue;
        };
        let snap: Option<Snapshot> = tx.get(SNAPSHOT, &hold.snapshot_id)?;
        match (step(&i, &hold, snap.as_ref()), snap) {
            (Step::Wait, _) => continue,
            (Step::Copy, Some(mut s)) => {
                s.held = false;
                tx.put(SNAPSHOT, &s.id, &s.owner, None, &s)?;
                tracing::info!(instance = %i.id, image = %hold.image_id, snapshot = %s.id, "CreateImage: instance stopped; its root volume may be copied");
                continue;
            }
            (Step::Fail(why), Some(mut s)) => {
                tracing::warn!(instance = %i.id, image = %hold.image_id, snapshot = %s.id, "CreateImage failed: {why}");
                (s.state, s.state_message, s.held) = ("error".into(), Some(why), false);
                tx.put(SNAPSHOT, &s.id, &s.owner, None, &s)?;
                i.image_hold = None;
            }
            (Step::Release { start }, _) => {
                i.image_hold = None;
                if start {
                    match start_placed(tx, &mut i, now) {
                        Ok(()) => {
                            tracing::info!(instance = %i.id, image = %hold.image_id, node = %i.node, "CreateImage: root volume copied; instance started again")
                        }
                        Err(StartError::Store(e)) => return Err(e),
                        Err(e) => {
                            tracing::warn!(instance = %i.id, image = %hold.image_id, "CreateImage: root volume copied; the instance stays stopped: {e}")
                        }
                    }
                }
            }
            (Step::Copy | Step::Fail(_), None) => i.image_hold = None,
        }
        tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod tests;
