//! Instance attributes after launch, the domain of DescribeInstanceAttribute and
//! ModifyInstanceAttribute: which attribute may change in which state, and what a change does
//! to the record. Instance type, user data, kernel and ramdisk change only while the instance
//! is stopped, and the node's spec is built from the record (`reconcile::spec`), so they take
//! effect at its next start (which places it where the new type fits, `nodes::start_placed`).
//! Termination protection (which TerminateInstances honours) and the shutdown behaviour
//! change at any time before the instance ends. The security groups change only while the
//! first group stays: an instance's network is its first group's (`networks`), so another
//! first group would mean moving it to another VLAN and subnet, which nothing does. Also the
//! volumes attached to instances (their block device mappings) and their delete-on-termination
//! flag. No HTTP here; the Query API's side is `ec2/instance_attributes.rs`.

use super::model::{
    Image, Instance, InstanceType, ShutdownBehavior, State, Volume, INSTANCE, VOLUME,
};
use super::tags::{self, ResourceType, TagIndex};
use crate::store::{CloudTx, StoreError};
use mallee_proto::Segment;
use std::collections::HashMap;

/// One change ModifyInstanceAttribute asks for, its values resolved (the image found, the
/// type known, the groups the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    InstanceType(&'static InstanceType),
    /// Base64, as RunInstances takes it; `None` removes it.
    UserData(Option<String>),
    Kernel(Image),
    Ramdisk(Image),
    DisableApiTermination(bool),
    ShutdownBehavior(ShutdownBehavior),
    /// (group id, group name), in order; the first is the network's.
    Groups(Vec<(String, String)>),
}

/// Why a change was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AttributeError {
    #[error("The instance '{0}' is not in the 'stopped' state.")]
    NotStopped(String),
    #[error(
        "The instance '{0}' is shutting down or terminated; its attributes cannot be modified."
    )]
    Ended(String),
    #[error("The instance '{instance}' is on the network of its first security group {current}; making {wanted} its first group would move it to another VLAN and subnet, which is not done to a launched instance. Keep {current} first (other groups may change), or launch a new instance in {wanted}.")]
    NetworkGroup {
        instance: String,
        current: String,
        wanted: String,
    },
    #[error("An instance is in at least one security group.")]
    NoGroups,
    #[error("No device is currently mapped at {0}")]
    NoDevice(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// TerminateInstances was refused: the instance has termination protection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The instance '{0}' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.")]
pub struct Protected(pub String);

/// Whether TerminateInstances may end `i` (an instance already terminated is no change).
pub fn may_terminate(i: &Instance) -> Result<(), Protected> {
    if i.shutdown.disable_api_termination && i.state != State::Terminated {
        return Err(Protected(i.id.clone()));
    }
    Ok(())
}

/// Whether `i` sits on its first group's network (MANAGED and MANAGED-NOVLAN; in SYSTEM mode,
/// or launched before instances had networks, groups do not place it).
fn on_group_network(i: &Instance) -> bool {
    i.network
        .as_ref()
        .is_some_and(|n| n.segment != Segment::System)
}

/// Applies `change` to the record `i` ([`modify`] checks room for a new type and stores it).
/// Returns whether the node must hear of it: what it builds the instance from
/// changed (type, user data, kernel, ramdisk, the groups in its metadata).
pub fn apply(i: &mut Instance, change: Change) -> Result<bool, AttributeError> {
    if matches!(i.state, State::ShuttingDown | State::Terminated) {
        return Err(AttributeError::Ended(i.id.clone()));
    }
    let stopped = || match i.state {
        State::Stopped => Ok(()),
        _ => Err(AttributeError::NotStopped(i.id.clone())),
    };
    match change {
        Change::InstanceType(t) => {
            stopped()?;
            i.instance_type = t.name.to_string();
            i.vcpus = t.vcpus;
            i.memory_mib = t.memory_mib;
            i.metadata.instance_type = t.name.to_string();
        }
        Change::UserData(data) => {
            stopped()?;
            i.user_data = data;
        }
        Change::Kernel(k) => {
            stopped()?;
            i.kernel = Some(k.proto_ref());
            i.metadata.kernel_id = Some(k.id.clone());
            i.kernel_id = Some(k.id);
        }
        Change::Ramdisk(r) => {
            stopped()?;
            i.ramdisk = Some(r.proto_ref());
            i.metadata.ramdisk_id = Some(r.id.clone());
            i.ramdisk_id = Some(r.id);
        }
        Change::DisableApiTermination(on) => {
            i.shutdown.disable_api_termination = on;
            return Ok(false);
        }
        Change::ShutdownBehavior(b) => {
            i.shutdown.instance_initiated = b;
            return Ok(false);
        }
        Change::Groups(groups) => {
            let wanted = groups.first().ok_or(AttributeError::NoGroups)?;
            if let Some(current) = i.groups.first() {
                if on_group_network(i) && current.0 != wanted.0 {
                    return Err(AttributeError::NetworkGroup {
                        instance: i.id.clone(),
                        current: current.0.clone(),
                        wanted: wanted.0.clone(),
                    });
                }
            }
            i.metadata.security_groups = groups.iter().map(|(_, n)| n.clone()).collect();
            i.groups = groups;
        }
    }
    Ok(true)
}

/// ModifyInstanceAttribute on `i`: [`apply`], and `i` stored. Returns whether the node must
/// hear of it. A new type needs no room now: a stopped instance holds none, and its start
/// places it where the type fits (or answers InsufficientInstanceCapacity).
pub fn modify(tx: &CloudTx<'_>, i: &mut Instance, change: Change) -> Result<bool, AttributeError> {
    let notify = apply(i, change)?;
    tx.put(INSTANCE, &i.id, &i.owner, None, i)?;
    Ok(notify)
}

/// What an instance's description shows besides its record: its tags and the volumes
/// attached to it (its block device mapping).
#[derive(Debug, Default)]
pub struct Related {
    pub tags: TagIndex,
    /// By instance id, in device order.
    pub volumes: HashMap<String, Vec<Volume>>,
}

impl Related {
    /// For `owner`'s instances.
    pub fn load(tx: &CloudTx<'_>, owner: &str) -> Result<Related, StoreError> {
        Ok(Related {
            tags: tags::index(tx, owner, ResourceType::Instance)?,
            volumes: attached_volumes(tx, owner)?,
        })
    }

    /// The volumes attached to instance `id`.
    pub fn volumes_of(&self, id: &str) -> &[Volume] {
        self.volumes.get(id).map_or(&[], Vec::as_slice)
    }
}

/// The volumes of `owner` attached to each instance, by instance id, in device order.
pub fn attached_volumes(
    tx: &CloudTx<'_>,
    owner: &str,
) -> Result<HashMap<String, Vec<Volume>>, StoreError> {
    let mut out: HashMap<String, Vec<Volume>> = HashMap::new();
    for v in tx.list::<Volume>(VOLUME, Some(owner))? {
        if let Some(a) = &v.attachment {
            out.entry(a.instance_id.clone())
                .or_default()
                .push(v.clone());
        }
    }
    for vols in out.values_mut() {
        vols.sort_by(|a, b| device(a).cmp(device(b)));
    }
    Ok(out)
}

fn device(v: &Volume) -> &str {
    v.attachment.as_ref().map_or("", |a| a.device.as_str())
}

/// Sets whether the volume attached to `i` at `device` is deleted when `i` is terminated.
pub fn set_delete_on_termination(
    tx: &CloudTx<'_>,
    i: &Instance,
    device: &str,
    delete: bool,
) -> Result<(), AttributeError> {
    if matches!(i.state, State::ShuttingDown | State::Terminated) {
        return Err(AttributeError::Ended(i.id.clone()));
    }
    let mut v = attached_volumes(tx, &i.owner)?
        .remove(&i.id)
        .and_then(|vols| vols.into_iter().find(|v| self::device(v) == device))
        .ok_or_else(|| AttributeError::NoDevice(device.to_string()))?;
    if let Some(a) = v.attachment.as_mut() {
        a.delete_on_termination = delete;
    }
    tx.put(VOLUME, &v.id, &v.owner, None, &v)?;
    Ok(())
}

#[cfg(test)]
#[path = "instance_attributes_tests.rs"]
mod tests;
