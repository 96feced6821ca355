//! Compute nodes as the cloud knows them: the node record (its admission state and the claim
//! waiting under its id; who gets a token is `admission`'s, only the token's SHA-256 is
//! kept), authentication of an admitted node's token, registration (a new boot id means the
//! node rebooted and lost its instances), the desired state of a node, applying a node's report
//! (instances, image cache), console output, marking silent nodes down, each node's capacity and
//! usage, and placing a stopped instance again when it starts ([`start_placed`]). Only admitted
//! nodes authenticate, are placed on or count as capacity. Usage is
//! derived in one place, [`usage`], from the instances that hold room on a node; nothing keeps
//! a counter of it. Each operation is one store transaction; the HTTP side is `nodes/`.

use super::instances::{self as lifecycle, instances_on, release_on_termination};
use super::model::{Instance, State, Volume, CONSOLE, INSTANCE, VOLUME};
use super::{reconcile, volumes};
use crate::scheduler::{self, Need, NodeLoad};
use crate::store::{CloudTx, Store, StoreError};
use mallee_proto::{
    ActualState, CacheSummary, CachedImage, ConsoleReport, InstanceSpec, Mac, NodeInfo,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub const NODE: &str = "node";
pub(super) const SYSTEM: &str = "_system";
/// Console output kept per instance (EC2 keeps the last 64 KiB).
const CONSOLE_MAX: usize = 64 * 1024;

/// Why a node request was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("missing or unknown node token")]
    Unauthorized,
    #[error("wrong cluster secret")]
    BadSecret,
    #[error("cluster {0:?} is not configured")]
    UnknownCluster(String),
    #[error("node id {0:?} is not valid (1-64 of [A-Za-z0-9._-])")]
    BadId(String),
    /// An enrollment not let in (pending, rejected, or an id a live node holds); says what to do.
    #[error("{0}")]
    NotAdmitted(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("range {0:?} is not satisfiable")]
    Range(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub cluster: String,
    pub token_sha256: String,
    pub info: Option<NodeInfo>,
    pub last_seen_ms: i64,
    pub down: bool,
    pub image_cache: Vec<CachedImage>,
    /// The boot id the node last registered with (empty before its first registration).
    #[serde(default)]
    pub boot_id: String,
    /// When the node registered with that boot id (ms).
    #[serde(default)]
    pub booted_ms: i64,
    /// The image cache's totals from the node's last report.
    #[serde(default)]
    pub cache: CacheSummary,
    /// Whether the node may hold a token. Records stored before admission existed belong to
    /// nodes that were let in, so they read as admitted.
    #[serde(default)]
    pub admission: Admission,
    /// The latest enrollment under this id that was not let in, kept for an admin to see and
    /// approve. Nothing else on the record changes for it: a live node keeps its token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
}

/// Where a node id stands (see `admission`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admission {
    /// It holds a token (or held one until it was marked down); it gets work.
    #[default]
    Admitted,
    /// It enrolled but was never let in: no token, no work, no images.
    Pending,
    /// An admin rejected it: no token, and every enrollment is refused until an admin approves.
    Rejected,
}

/// An enrollment under a node id that was not let in: who asked, from where and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub cluster: String,
    pub macs: Vec<Mac>,
    /// The address the enrollment came from (`-` when unknown).
    pub source: String,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Enrolments it made (the agent retries every few seconds).
    pub attempts: u64,
    /// An admin approved it: the next enrollment that matches it gets the id's token.
    pub approved: bool,
}

impl Node {
    /// Admitted and holding a token, and not marked down: an enrollment under its id must prove
    /// it is this node (its current token) or have been approved.
    pub fn live(&self) -> bool {
        self.admission == Admission::Admitted && !self.down && !self.token_sha256.is_empty()
    }

    /// Whether the node is admitted and reporting (not marked down).
    pub fn is_up(&self) -> bool {
        self.admission == Admission::Admitted && !self.down
    }

    /// The admission state as `admin node list` and DescribeNodes name it: `admitted`,
    /// `pending`, `approved` (an admin let it in; its next enrollment gets a token) or `rejected`.
    pub fn admission_name(&self) -> &'static str {
        match self.admission {
            Admission::Admitted => "admitted",
            Admission::Pending if self.claim.as_ref().is_some_and(|c| c.approved) => "approved",
            Admission::Pending => "pending",
            Admission::Rejected => "rejected",
        }
    }
}

pub(super) fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub(super) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Constant-time equality for secrets.
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The admitted node a bearer token belongs to.
pub fn authenticate(store: &Store, token: &str) -> Result<Node, NodeError> {
    store
        .cloud(|tx| tx.by_name::<Node>(NODE, SYSTEM, &sha_hex(token)))?
        .filter(|n| n.admission == Admission::Admitted)
        .ok_or(NodeError::Unauthorized)
}

/// The stored record of an admitted node (a record rejected since its token was checked is
/// not).
fn admitted(tx: &CloudTx<'_>, id: &str) -> Result<Node, NodeError> {
    let n: Option<Node> = tx.get(NODE, id)?;
    n.filter(|n| n.admission == Admission::Admitted)
        .ok_or(NodeError::Unauthorized)
}

/// Writes the record, its token's hash as its name (none without a token).
pub(super) fn save(tx: &CloudTx<'_>, node: &Node) -> Result<(), StoreError> {
    let name = (!node.token_sha256.is_empty()).then_some(node.token_sha256.as_str());
    tx.put(NODE, &node.id, SYSTEM, name, node)
}

/// Records what the node offers. A node registering with a boot id other than the one stored
/// has rebooted: its instances are gone, and each one meant to run says so (see
/// [`reconcile::node_rebooted`]) until the node starts it again. The same boot id again (the
/// frontend restarted, or the node re-enrolled) changes nothing.
pub fn register(store: &Store, node: &Node, info: NodeInfo, now: i64) -> Result<(), NodeError> {
    if info.node_id != node.id || info.cluster != node.cluster {
        return Err(NodeError::Mismatch(format!(
            "token belongs to node {} in cluster {}, not {} in {}",
            node.id, node.cluster, info.node_id, info.cluster
        )));
    }
    store.cloud(|tx| {
        let mut n = admitted(tx, &node.id)?;
        tracing::info!(node = %n.id, cpus = info.cpus, memory_mib = info.memory_mib, disk_gib = info.disk_gib, macs = ?info.macs, agent = %info.agent_version, boot_id = %info.boot_id, "node registered");
        // An agent that cannot tell its boot id (empty) proves nothing either way.
        if !info.boot_id.is_empty() && info.boot_id != n.boot_id {
            if !n.boot_id.is_empty() {
                restart_after_reboot(tx, &n.id, now)?;
            }
            n.boot_id = info.boot_id.clone();
            n.booted_ms = now;
        }
        n.info = Some(info);
        n.last_seen_ms = now;
        n.down = false;
        save(tx, &n)?;
        Ok(())
    })
}

/// Marks the instances a rebooted node lost (see [`reconcile::node_rebooted`]).
fn restart_after_reboot(tx: &CloudTx<'_>, node: &str, now: i64) -> Result<(), StoreError> {
    let mut lost = Vec::new();
    for mut i in instances_on(tx, node)? {
        let before = i.state;
        if reconcile::node_rebooted(&mut i, now) {
            tracing::info!(instance = %i.id, node, from = before.name(), to = i.state.name(), "instance state");
            tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
            lost.push(i.id);
        }
    }
    tracing::warn!(node, instances = ?lost, "node rebooted: its instances were lost and will be started again");
    Ok(())
}

/// Every instance the node should hold, with its goal.
pub fn desired(store: &Store, node: &str) -> Result<Vec<InstanceSpec>, NodeError> {
    let (all, volumes) = store.cloud(|tx| {
        Ok::<_, StoreError>((instances_on(tx, node)?, tx.list::<Volume>(VOLUME, None)?))
    })?;
    Ok((all.iter())
        .filter_map(|i| {
            let mut spec = reconcile::spec(i)?;
            spec.volumes = volumes::wanted(&volumes, &i.id);
            // An EBS-backed instance waits (pending) until its root volume is made.
            if let Some(root) = volumes::root_of(&volumes, i) {
                spec.root_volume = Some(root?);
            }
            Some(spec)
        })
        .collect())
}

/// Applies a report (also the heartbeat). Returns whether any instance changed.
pub fn report(
    store: &Store,
    node: &str,
    actual: &ActualState,
    now: i64,
) -> Result<bool, NodeError> {
    store.cloud(|tx| {
        let mut n = admitted(tx, node)?;
        if n.down {
            tracing::info!(node, "node is reporting again");
        }
        n.down = false;
        n.last_seen_ms = now;
        n.image_cache = actual.image_cache.clone();
        n.cache = actual.cache.clone();
        let mut changed = false;
        let mut seen_instances = Vec::new();
        for mut i in instances_on(tx, node)? {
            let seen = actual.instances.iter().find(|r| r.instance_id == i.id);
            let before = i.state;
            let mut dirty = reconcile::apply(&mut i, seen, now);
            dirty |= std::mem::take(&mut i.node_down);
            if dirty {
                if i.state == State::Terminated && before != State::Terminated {
                    release_on_termination(tx, &mut i)?;
                }
                if i.state != before {
                    tracing::info!(instance = %i.id, node, from = before.name(), to = i.state.name(), "instance state");
                }
                tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
                changed = true;
            }
            seen_instances.push(i);
        }
        changed |= volumes::after_report(tx, &seen_instances, &actual.instances)?;
        save(tx, &n)?;
        Ok(changed)
    })
}

/// Keeps the console tail of an instance placed on `node`.
pub fn console(store: &Store, node: &str, rep: &ConsoleReport, now: i64) -> Result<(), NodeError> {
    store.cloud(|tx| {
        let inst: Option<Instance> = tx.get(INSTANCE, &rep.instance_id)?;
        let inst = inst.filter(|i| i.node == node).ok_or_else(|| {
            NodeError::Mismatch(format!(
                "instance {} is not on node {node}",
                rep.instance_id
            ))
        })?;
        let text = &rep.output;
        let mut start = text.len().saturating_sub(CONSOLE_MAX);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        tx.put(CONSOLE, &inst.id, &inst.owner, None, &(now, &text[start..]))?;
        Ok(())
    })
}

/// Marks admitted nodes silent for longer than `deadline_ms` down, and flags their instances.
/// Returns the ids newly marked.
pub fn sweep(store: &Store, deadline_ms: i64, now: i64) -> Result<Vec<String>, StoreError> {
    store.cloud(|tx| {
        let mut downed = Vec::new();
        for mut n in tx.list::<Node>(NODE, None)? {
            let admitted = n.admission == Admission::Admitted;
            if !admitted || n.down || now - n.last_seen_ms <= deadline_ms {
                continue;
            }
            mark_down(tx, &mut n)?;
            tracing::warn!(node = %n.id, silent_ms = now - n.last_seen_ms, "node marked down");
            downed.push(n.id);
        }
        Ok(downed)
    })
}

/// Marks `n` down and flags the instances that hold room on it (the frontend no longer hears
/// from it); saves it.
pub(super) fn mark_down(tx: &CloudTx<'_>, n: &mut Node) -> Result<(), StoreError> {
    n.down = true;
    save(tx, n)?;
    for mut i in instances_on(tx, &n.id)? {
        if i.holds_capacity() && !i.node_down {
            i.node_down = true;
            tx.put(INSTANCE, &i.id, &i.owner, None, &i)?;
        }
    }
    Ok(())
}

/// vCPUs and MiB that instances hold on each node (every instance neither terminated nor
/// stopped holds its room; see [`Instance::holds_capacity`]), summed by SQLite over the instance
/// documents. The one place node usage comes from: placement, zone capacity and DescribeNodes
/// all read it.
pub fn usage(tx: &CloudTx<'_>) -> Result<HashMap<String, [u64; 2]>, StoreError> {
    let roomless = State::ROOMLESS.map(State::name);
    let sums = tx.sum_by(
        INSTANCE,
        "node",
        ["vcpus", "memory_mib"],
        ("state", &roomless),
    )?;
    Ok(sums
        .into_iter()
        .map(|(node, [c, m])| (node, [c.max(0) as u64, m.max(0) as u64]))
        .collect())
}

/// Why a stopped instance did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Not stopped (nor already pending or running), or held by a CreateImage.
    #[error("not in a state from which it can be started")]
    NotNow,
    /// No node of its zone has room for it; the scheduler's reason.
    #[error("{0}")]
    NoRoom(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts `i` (see [`lifecycle::start`]): a stopped instance held no room anywhere, so it is
/// placed again, on the node of its zone with the most room — not necessarily the one it ran on
/// (its root volume is exported to wherever it lands). Pending or running: nothing to do.
pub fn start_placed(tx: &CloudTx<'_>, i: &mut Instance, now: i64) -> Result<(), StartError> {
    if i.state == State::Stopped && i.image_hold.is_none() {
        let need = Need {
            vcpus: i.vcpus,
            memory_mib: i.memory_mib,
        };
        let placed = scheduler::place(&loads(tx)?, &i.zone, need, 1, 1)
            .map_err(|s| StartError::NoRoom(s.0))?;
        if let Some(node) = placed.into_iter().next() {
            i.node = node;
            i.node_down = false;
        }
    }
    lifecycle::start(i, now).map_err(|lifecycle::NotNow| StartError::NotNow)
}

/// Capacity and use of every registered, admitted node, for the scheduler (a node pending or
/// rejected is never placed on).
pub fn loads(tx: &CloudTx<'_>) -> Result<Vec<NodeLoad>, StoreError> {
    let used = usage(tx)?;
    let nodes: Vec<Node> = tx.list(NODE, None)?;
    Ok(nodes
        .into_iter()
        .filter(|n| n.admission == Admission::Admitted)
        .filter_map(|n| {
            let info = n.info?;
            let [vcpus, mib] = used.get(&n.id).copied().unwrap_or_default();
            Some(NodeLoad {
                id: n.id,
                zone: n.cluster,
                up: !n.down,
                cpus: info.cpus,
                memory_mib: info.memory_mib,
                used_vcpus: u32::try_from(vcpus).unwrap_or(u32::MAX),
                used_mib: mib,
            })
        })
        .collect())
}

/// A node record, what it offered (`None` before it registered: a node pending admission), what
/// its instances use and the instances placed on it (not terminated).
pub struct NodeView {
    pub node: Node,
    pub info: Option<NodeInfo>,
    /// vCPUs and MiB in use (from [`usage`]).
    pub used: [u64; 2],
    pub instances: Vec<(String, State)>,
}

/// Every node record, whatever its admission state, by id.
pub fn views(tx: &CloudTx<'_>) -> Result<Vec<NodeView>, StoreError> {
    let used = usage(tx)?;
    let nodes: Vec<Node> = tx.list(NODE, None)?;
    let instances: Vec<Instance> = tx.list(INSTANCE, None)?;
    Ok(nodes
        .into_iter()
        .map(|node| {
            let on = instances
                .iter()
                .filter(|i| i.node == node.id && i.holds_capacity())
                .map(|i| (i.id.clone(), i.state))
                .collect();
            NodeView {
                info: node.info.clone(),
                used: used.get(&node.id).copied().unwrap_or_default(),
                node,
                instances: on,
            }
        })
        .collect())
}

#[cfg(test)]
#[path = "nodes_tests.rs"]
pub(crate) mod tests;
