//! DescribeNodes, ApproveNode and RejectNode: the compute nodes as the frontend knows them and
//! who may be one, for administrators only (anyone else gets EC2's `UnauthorizedOperation`).
//! DescribeNodes gives per node: zone, up or down, its admission (`admitted`, `pending`,
//! `approved`, `rejected`) and the claim waiting under its id (MACs, source address, first and
//! last attempt), and once it registered its boot id and when it registered with it, capacity
//! and use, last report, the instances placed on it and its image cache (where it lives,
//! budget, use, downloads and hits since the node booted, the images held). ApproveNode and
//! RejectNode (`NodeId`) are `cloud::admission`'s approve and reject; like every change they go
//! into the audit log. Mallee actions: no AWS client models them, so callers sign a Query
//! request themselves (botocore's `SigV4Auth` does; `scripts/mallee-admin`). Eucalyptus's own
//! `euca-describe-nodes` spoke another service (`services/Configuration`, its admin API), which
//! this does not imitate.

use super::xml::{self, time, Xml};
use super::{Call, Ec2, Ec2Error};
use crate::cloud::admission::{self, AdmissionError};
use crate::cloud::nodes::{Claim, Node, NodeView};
use crate::store::{CloudTx, Role, User};
use mallee_proto::Storage;

/// Only administrators may call Mallee's admin actions (`action` names the one refused).
pub fn authorize(user: &User, action: &str) -> Result<(), Ec2Error> {
    if user.role == Role::Admin {
        return Ok(());
    }
    Err(Ec2Error::new(
        403,
        "UnauthorizedOperation",
        format!(
            "You are not authorized to perform this operation: {action} is for administrators."
        ),
    ))
}

/// Every registered node (or those named in `ids`, each of which must exist), by id.
pub fn views(tx: &CloudTx<'_>, ids: &[String]) -> Result<Vec<NodeView>, Ec2Error> {
    let all = crate::cloud::nodes::views(tx)?;
    if let Some(id) = ids.iter().find(|id| !all.iter().any(|v| v.node.id == **id)) {
        return Err(Ec2Error::client(
            "InvalidNodeID.NotFound",
            format!("The node '{id}' does not exist"),
        ));
    }
    Ok(all
        .into_iter()
        .filter(|v| ids.is_empty() || ids.contains(&v.node.id))
        .collect())
}

fn storage_name(s: Storage) -> &'static str {
    match s {
        Storage::Ram => "ram",
        Storage::Disk => "disk",
    }
}

/// `up` for an admitted node that reports; `down` for one marked down or not admitted.
fn up_or_down(n: &Node) -> &'static str {
    match n.is_up() {
        true => "up",
        false => "down",
    }
}

/// The `claim` element: the enrollment waiting under the node's id.
fn claim(x: &mut Xml, c: &Claim) {
    x.open("claim")
        .field("state", if c.approved { "approved" } else { "pending" });
    x.set("macSet", &c.macs, |x, m| {
        x.field("mac", m);
    });
    x.field("sourceAddress", &c.source)
        .field("firstAttempt", time(c.first_ms))
        .field("lastAttempt", time(c.last_ms))
        .field("attempts", c.attempts);
    x.close("claim");
}

/// One `item` of `nodeSet`.
fn node_item(x: &mut Xml, v: &NodeView) {
    let n = &v.node;
    x.field("nodeId", &n.id)
        .field("zone", &n.cluster)
        .field("state", up_or_down(n))
        .field("admission", n.admission_name());
    if let Some(c) = &n.claim {
        claim(x, c);
    }
    if let Some(info) = &v.info {
        x.field("bootId", &n.boot_id)
            .field("bootTime", time(n.booted_ms))
            .field("agentVersion", &info.agent_version)
            .field("cpus", info.cpus)
            .field("memoryMib", info.memory_mib)
            .field("diskGib", info.disk_gib)
            .field("usedVcpus", v.used[0])
            .field("usedMemoryMib", v.used[1])
            .field("lastSeen", time(n.last_seen_ms));
        x.set("macSet", &info.macs, |x, m| {
            x.field("mac", m);
        });
    }
    x.set("instanceSet", &v.instances, |x, (id, state)| {
        x.field("instanceId", id).field("state", state.name());
    });
    let c = &n.cache;
    x.open("imageCache")
        .field("storage", storage_name(c.storage))
        .field("budgetBytes", c.budget_bytes)
        .field("usedBytes", c.used_bytes)
        .field("downloads", c.downloads)
        .field("hits", c.hits);
    x.set("imageSet", &n.image_cache, |x, img| {
        x.field("sha256", &img.sha256).field("size", img.size);
    });
    x.close("imageCache");
}

/// The response document.
pub fn render(action: &str, rid: &str, views: &[NodeView]) -> String {
    let mut x = xml::response(action, rid);
    x.set("nodeSet", views, node_item);
    x.finish()
}

pub fn describe(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    authorize(c.user, c.action)?;
    let ids = c.p.list("NodeId");
    let views = ec2.store.cloud(|tx| views(tx, &ids))?;
    Ok(render(c.action, c.rid, &views))
}

impl From<AdmissionError> for Ec2Error {
    fn from(e: AdmissionError) -> Ec2Error {
        match e {
            AdmissionError::Store(e) => Ec2Error::internal(e),
            e => Ec2Error::client(e.code(), e.to_string()),
        }
    }
}

/// The answer of ApproveNode and RejectNode: the node's id and where it stands now.
pub fn render_admission(action: &str, rid: &str, n: &Node) -> String {
    let mut x = xml::response(action, rid);
    x.field("return", "true")
        .field("nodeId", &n.id)
        .field("admission", n.admission_name())
        .field("state", up_or_down(n));
    x.finish()
}

/// ApproveNode `NodeId`: lets the claim waiting under the id in (see `admission::approve`).
pub fn approve(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    authorize(c.user, c.action)?;
    let id = c.p.req("NodeId")?;
    let n = admission::approve(&ec2.store, id, c.now)?;
    Ok(render_admission(c.action, c.rid, &n))
}

/// RejectNode `NodeId`: ends the node's token now and refuses the id until approved (see
/// `admission::reject`). Nodes waiting on the desired state are woken, so a rejected one
/// hears at once.
pub fn reject(ec2: &Ec2, c: &Call<'_>) -> Result<String, Ec2Error> {
    authorize(c.user, c.action)?;
    let id = c.p.req("NodeId")?;
    let n = admission::reject(&ec2.store, id)?;
    ec2.changes.bump();
    Ok(render_admission(c.action, c.rid, &n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::model::State;
    use crate::cloud::nodes::Node;
    use mallee_proto::{CacheSummary, CachedImage, NodeInfo};

    fn view() -> NodeView {
        let info = NodeInfo {
            node_id: "node-1".into(),
            cluster: "zone-a".into(),
            cpus: 2,
            memory_mib: 2048,
            disk_gib: 0,
            macs: vec!["52:54:00:77:00:01".parse().unwrap()],
            agent_version: "0.1.0".into(),
            boot_id: "b<1>".into(),
        };
        let node = Node {
            id: "node-1".into(),
            cluster: "zone-a".into(),
            info: Some(info.clone()),
            last_seen_ms: 1_000,
            down: true,
            boot_id: "b<1>".into(),
            booted_ms: 500,
            image_cache: vec![CachedImage {
                sha256: "ab".repeat(32),
                size: 4096,
            }],
            cache: CacheSummary {
                storage: Storage::Ram,
                budget_bytes: 1 << 29,
                used_bytes: 4096,
                downloads: 3,
                hits: 6,
            },
            ..Node::default()
        };
        NodeView {
            node,
            info: Some(info),
            used: [1, 256],
            instances: vec![("i-00000001".into(), State::Running)],
        }
    }

    #[test]
    fn a_node_renders_its_state_capacity_instances_and_cache() {
        let xml = render("DescribeNodes", "R", &[view()]);
        for part in [
            "<DescribeNodesResponse xmlns=",
            "<nodeSet><item><nodeId>node-1</nodeId><zone>zone-a</zone><state>down</state>",
            "<admission>admitted</admission><bootId>b&lt;1&gt;</bootId><bootTime>1970-01-01T00:00:00.500Z</bootTime>",
            "<cpus>2</cpus><memoryMib>2048</memoryMib><diskGib>0</diskGib>",
            "<usedVcpus>1</usedVcpus><usedMemoryMib>256</usedMemoryMib>",
            "<lastSeen>1970-01-01T00:00:01.000Z</lastSeen>",
            "<instanceSet><item><instanceId>i-00000001</instanceId><state>running</state></item></instanceSet>",
            "<imageCache><storage>ram</storage><budgetBytes>536870912</budgetBytes><usedBytes>4096</usedBytes><downloads>3</downloads><hits>6</hits>",
            "<imageSet><item><sha256>abab",
        ] {
            assert!(xml.contains(part), "{part} not in {xml}");
        }
    }

    #[test]
    fn a_pending_node_renders_its_claim_and_no_capacity() {
        let node = Node {
            id: "node-525400990001".into(),
            cluster: "zone-a".into(),
            admission: crate::cloud::nodes::Admission::Pending,
            claim: Some(Claim {
                cluster: "zone-a".into(),
                macs: vec!["52:54:00:99:00:01".parse().unwrap()],
                source: "10.77.0.150".into(),
                first_ms: 1_000,
                last_ms: 3_000,
                attempts: 3,
                approved: false,
            }),
            ..Node::default()
        };
        let v = NodeView {
            node,
            info: None,
            used: [0, 0],
            instances: vec![],
        };
        let xml = render("DescribeNodes", "R", &[v]);
        for part in [
            "<state>down</state><admission>pending</admission><claim><state>pending</state>",
            "<macSet><item><mac>52:54:00:99:00:01</mac></item></macSet>",
            "<sourceAddress>10.77.0.150</sourceAddress><firstAttempt>1970-01-01T00:00:01.000Z</firstAttempt>",
            "<lastAttempt>1970-01-01T00:00:03.000Z</lastAttempt><attempts>3</attempts></claim><instanceSet>",
        ] {
            assert!(xml.contains(part), "{part} not in {xml}");
        }
        assert!(!xml.contains("<cpus>"), "{xml}");
    }

    #[test]
    fn only_administrators_may_describe_nodes() {
        let user = |role| User {
            name: "u".into(),
            access_key: "AK".into(),
            secret: "s".into(),
            role,
            created_ms: 0,
        };
        assert!(authorize(&user(Role::Admin), "DescribeNodes").is_ok());
        for role in [Role::User, Role::Node] {
            let e = authorize(&user(role), "DescribeNodes").unwrap_err();
            assert!(e.message.contains("DescribeNodes"), "{e}");
            assert_eq!((e.status, e.code.as_str()), (403, "UnauthorizedOperation"));
        }
    }
}
