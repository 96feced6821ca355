//! Instance attributes after launch, the domain of DescribeInstanceAttribute and
//! ModifyInstanceAttribute: which attribute may change in which state, and what a change does
//! to the record. Instance type, user data, kernel and ramdisk change only while the instance
//! is stopped, and the node's spec is built from the record (`reconcile::spec`), so they take
//! effect at its next start; a new type must fit in the room the stopped instance holds on its
//! node. Termination protection (which TerminateInstances honours) and the shutdown behaviour
//! change at any time before the instance ends. The security groups change only while the
//! first group stays: an instance's network is its first group's (`networks`), so another
//! first group would mean moving it to another VLAN and subnet, which nothing does. Also the
//! volumes attached to instances (their block device mappings) and their delete-on-termination
//! flag. No HTTP here; the Query API's side is `ec2/instance_attributes.rs`.

use super::model::{
    Image, Instance, InstanceType, ShutdownBehavior, State, Volume, INSTANCE, VOLUME,
};
use super::nodes;
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
    #[error("Insufficient capacity for {wanted} on node {node}, where the stopped instance '{instance}' holds its room: {free_vcpus} vCPUs and {free_mib} MiB would be free for it, {wanted} needs {vcpus} vCPUs and {mib} MiB.")]
    NoRoom {
        instance: String,
        node: String,
        wanted: &'static str,
        vcpus: u32,
        mib: u64,
        free_vcpus: u64,
        free_mib: u64,
    },
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

/// ModifyInstanceAttribute on `i`: [`apply`], with a new type checked to fit on its node
/// first ([`room_for`]), and `i` stored. Returns whether the node must hear of it.
pub fn modify(tx: &CloudTx<'_>, i: &mut Instance, change: Change) -> Result<bool, AttributeError> {
    let before = i.clone();
    let wanted = match &change {
        Change::InstanceType(t) => Some(*t),
        _ => None,
    };
    let notify = apply(i, change)?;
    if let Some(t) = wanted {
        room_for(tx, &before, t)?;
    }
    tx.put(INSTANCE, &i.id, &i.owner, None, i)?;
    Ok(notify)
}

/// Checks that the node of stopped instance `i` has room for type `wanted` in place of the
/// room `i` holds there now (a stopped instance keeps its room, see `nodes::usage`).
pub fn room_for(
    tx: &CloudTx<'_>,
    i: &Instance,
    wanted: &'static InstanceType,
) -> Result<(), AttributeError> {
    let Some(node) = nodes::loads(tx)?.into_iter().find(|n| n.id == i.node) else {
        // A node never registered holds nothing; it is checked again when it starts.
        return Ok(());
    };
    let free_vcpus = u64::from(node.cpus) + u64::from(i.vcpus);
    let free_vcpus = free_vcpus.saturating_sub(u64::from(node.used_vcpus));
    let free_mib = (node.memory_mib + i.memory_mib).saturating_sub(node.used_mib);
    if u64::from(wanted.vcpus) > free_vcpus || wanted.memory_mib > free_mib {
        return Err(AttributeError::NoRoom {
            instance: i.id.clone(),
            node: node.id,
            wanted: wanted.name,
            vcpus: wanted.vcpus,
            mib: wanted.memory_mib,
            free_vcpus,
            free_mib,
        });
    }
    Ok(())
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
