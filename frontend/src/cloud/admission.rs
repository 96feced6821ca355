//! Node admission: who may hold a node token. The cluster secret reaches every machine on the
//! private segment, so it admits nobody by itself: an enrolling node is let in when one of its
//! MACs is listed in `[ec2] admit_macs` or an admin approved it (`admin node approve`,
//! ApproveNode); until then it is pending and gets no token, hence no work and no images.
//! An id held by a live node (admitted, holding a token, not marked down) goes to a new
//! enrollment only with that node's current token or an admin's approval of the new claim, so a
//! claim never displaces a working node. Rejecting a node ends its token at once and refuses
//! its enrollments until an admin approves it again. The enrollment a node is refused is kept on
//! its record as its [`Claim`] (cluster, MACs, source, first and last attempt) for the admin to
//! see and approve.
//!
//! [`decide`] is the plain rule; [`enroll`], [`approve`] and [`reject`] apply it to the store,
//! one transaction each. The node record and its liveness are `nodes`'; who calls approve and
//! reject (the admin CLI, the EC2 actions) and the audit log are theirs.

use super::config::Ec2Config;
use super::nodes::{
    mark_down, same, save, sha_hex, valid_id, Admission, Claim, Node, NodeError, NODE,
};
use crate::store::{Store, StoreError};
use mallee_proto::{EnrollRequest, Mac};
use rand::RngCore;

/// Most node records kept pending at once: past it, an enrollment under a new id is refused
/// without a record, so a holder of the cluster secret cannot fill the store with claims.
pub const MAX_PENDING: usize = 256;

/// Why an approve or reject did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("The node '{0}' does not exist (no node ever enrolled under that id)")]
    NotFound(String),
    #[error("node {0} is admitted and no other enrollment waits under its id: nothing to approve")]
    NothingToApprove(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdmissionError {
    /// The EC2 error code it is answered (and audited) with.
    pub fn code(&self) -> &'static str {
        match self {
            AdmissionError::NotFound(_) => "InvalidNodeID.NotFound",
            AdmissionError::NothingToApprove(_) => "IncorrectState",
            AdmissionError::Store(_) => "InternalError",
        }
    }
}

/// How an enrollment is let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// It presented the id's current token: the node itself, enrolling again.
    OwnToken,
    /// An admin approved its claim.
    Approved,
    /// One of its MACs is listed in `admit_macs` (and no live node holds the id).
    Listed,
}

/// Why an enrollment is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not listed and not approved: it waits for an admin.
    Waiting,
    /// A live node holds the id and the enrollment did not present its token.
    Held,
    /// An admin rejected the id.
    Rejected,
}

/// What becomes of an enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit(Admit),
    Refuse(Refusal),
}

/// The admission rule for an enrollment `req` under an id whose record is `node` (none: never
/// seen); `listed`: one of its MACs is in `admit_macs`.
pub fn decide(node: Option<&Node>, req: &EnrollRequest, listed: bool) -> Verdict {
    let Some(n) = node else {
        return match listed {
            true => Verdict::Admit(Admit::Listed),
            false => Verdict::Refuse(Refusal::Waiting),
        };
    };
    let own_token = n.admission == Admission::Admitted
        && !n.token_sha256.is_empty()
        && (req.token.as_deref())
            .is_some_and(|t| same(sha_hex(t).as_bytes(), n.token_sha256.as_bytes()));
    if own_token {
        return Verdict::Admit(Admit::OwnToken);
    }
    if n.claim
        .as_ref()
        .is_some_and(|c| c.approved && matches(c, req))
    {
        return Verdict::Admit(Admit::Approved);
    }
    match n.admission {
        Admission::Rejected => Verdict::Refuse(Refusal::Rejected),
        _ if n.live() => Verdict::Refuse(Refusal::Held),
        _ if listed => Verdict::Admit(Admit::Listed),
        _ => Verdict::Refuse(Refusal::Waiting),
    }
}

/// The MACs of a claim as compared: sorted, each once.
fn mac_set(macs: &[Mac]) -> Vec<Mac> {
    let mut out = macs.to_vec();
    out.sort();
    out.dedup();
    out
}

/// Whether `req` is the enrollment `claim` describes: the same cluster and MACs (a claim an
/// admin approved without having seen one names no MACs and takes any).
fn matches(claim: &Claim, req: &EnrollRequest) -> bool {
    claim.cluster == req.cluster && (claim.macs.is_empty() || claim.macs == mac_set(&req.macs))
}

/// Keeps a refused `req` as `node`'s claim: the same claim again counts one more attempt; a
/// different one replaces it, unless the one there is approved (another claim cannot undo an
/// admin's approval). Returns whether the claim is new.
fn note_claim(node: &mut Node, req: &EnrollRequest, source: &str, now: i64) -> bool {
    match &mut node.claim {
        Some(c) if matches(c, req) => {
            c.last_ms = now;
            c.attempts += 1;
            c.source = source.to_string();
            false
        }
        Some(c) if c.approved => false,
        _ => {
            node.claim = Some(Claim {
                cluster: req.cluster.clone(),
                macs: mac_set(&req.macs),
                source: source.to_string(),
                first_ms: now,
                last_ms: now,
                attempts: 1,
                approved: false,
            });
            true
        }
    }
}

/// What a refused node is told: why, and what lets it in.
pub fn message(why: Refusal, id: &str, cfg: &Ec2Config) -> String {
    let approve = format!("\"mallee-frontend admin node approve {id}\"");
    match why {
        Refusal::Waiting => format!(
            "node {id} is waiting for admission: an admin runs {approve} (or calls ApproveNode) \
             or lists its MAC in [ec2] admit_macs"
        ),
        Refusal::Held => format!(
            "node id {id} is held by a live node: enroll with that node's current token, or an \
             admin approves this claim with {approve}; a node that rebooted is let in again \
             once its old record is marked down ({} s without a report)",
            cfg.node_deadline_secs
        ),
        Refusal::Rejected => format!(
            "node {id} was rejected by an admin: it gets no token until an admin runs {approve} \
             (or calls ApproveNode)"
        ),
    }
}

fn fresh_token() -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// Checks the cluster secret and admits `req` as [`decide`] says: a fresh token (replacing the
/// id's older one) for an enrollment let in; for one refused, its claim kept on the id's record
/// (a new id's record made pending) and [`NodeError::NotAdmitted`] saying what to do. `source`
/// is the address it came from.
pub fn enroll(
    store: &Store,
    cfg: &Ec2Config,
    req: &EnrollRequest,
    source: &str,
    now: i64,
) -> Result<String, NodeError> {
    if !same(req.secret.as_bytes(), cfg.cluster_secret.as_bytes()) {
        return Err(NodeError::BadSecret);
    }
    if !cfg.clusters.contains(&req.cluster) {
        return Err(NodeError::UnknownCluster(req.cluster.clone()));
    }
    if !valid_id(&req.node_id) {
        return Err(NodeError::BadId(req.node_id.clone()));
    }
    let listed = req.macs.iter().any(|m| cfg.admit_macs.contains(m));
    let token = fresh_token();
    let id = &req.node_id;
    // A refusal is an answer, not a failure: its claim is committed with it.
    let answer = store.cloud(|tx| {
        let old: Option<Node> = tx.get(NODE, id)?;
        let verdict = decide(old.as_ref(), req, listed);
        let fresh = || Node {
            id: id.clone(),
            cluster: req.cluster.clone(),
            ..Node::default()
        };
        match verdict {
            Verdict::Admit(how) => {
                // Everything else (boot id included) is kept until the node registers.
                let mut node = old.unwrap_or_else(fresh);
                node.cluster = req.cluster.clone();
                node.token_sha256 = sha_hex(&token);
                node.last_seen_ms = now;
                node.down = false;
                node.admission = Admission::Admitted;
                // The node re-enrolling with its token leaves another's claim for the admin.
                if how != Admit::OwnToken {
                    node.claim = None;
                }
                save(tx, &node)?;
                tracing::info!(node = %id, cluster = %req.cluster, macs = ?req.macs, source, admitted = ?how, "node enrolled");
                Ok::<_, StoreError>(Ok(token.clone()))
            }
            Verdict::Refuse(why) => {
                let mut node = match old {
                    Some(n) => n,
                    None if too_many_pending(tx)? => {
                        return Ok(Err(format!(
                            "{MAX_PENDING} nodes are already waiting for admission: an admin \
                             approves or rejects them (\"mallee-frontend admin node list\") \
                             before node {id} is recorded"
                        )))
                    }
                    None => Node {
                        admission: Admission::Pending,
                        ..fresh()
                    },
                };
                if note_claim(&mut node, req, source, now) {
                    tracing::warn!(node = %id, cluster = %req.cluster, macs = ?req.macs, source, refused = ?why, "node enrollment waits for an admin");
                }
                save(tx, &node)?;
                Ok(Err(message(why, id, cfg)))
            }
        }
    })?;
    answer.map_err(NodeError::NotAdmitted)
}

fn too_many_pending(tx: &crate::store::CloudTx<'_>) -> Result<bool, StoreError> {
    let nodes: Vec<Node> = tx.list(NODE, None)?;
    let pending = nodes.iter().filter(|n| n.admission == Admission::Pending);
    Ok(pending.count() >= MAX_PENDING)
}

/// Approves what waits under `id`: its claim (the next enrollment matching it gets the id's
/// token, replacing a live node's), or, for a rejected node that has not enrolled since, its
/// next enrollment from the MACs it registered with. A rejection is lifted. Returns the record.
pub fn approve(store: &Store, id: &str, now: i64) -> Result<Node, AdmissionError> {
    store.cloud(|tx| {
        let mut n: Node = tx
            .get(NODE, id)?
            .ok_or_else(|| AdmissionError::NotFound(id.to_string()))?;
        match (&mut n.claim, n.admission) {
            (Some(c), _) => c.approved = true,
            (None, Admission::Admitted) => {
                return Err(AdmissionError::NothingToApprove(id.to_string()))
            }
            (None, _) => {
                n.claim = Some(Claim {
                    cluster: n.cluster.clone(),
                    macs: mac_set(&n.info.as_ref().map(|i| i.macs.clone()).unwrap_or_default()),
                    source: "-".into(),
                    first_ms: now,
                    last_ms: now,
                    attempts: 0,
                    approved: true,
                })
            }
        }
        if n.admission == Admission::Rejected {
            n.admission = Admission::Pending;
        }
        save(tx, &n)?;
        tracing::info!(node = %id, "node approved: its next enrollment gets a token");
        Ok(n)
    })
}

/// Rejects `id`: its token ends now (the node's next request is refused), a node that was
/// admitted is marked down (its instances flagged as on a silent node) and no longer placed
/// on, and every enrollment under the id is refused until an admin approves it. Returns the
/// record.
pub fn reject(store: &Store, id: &str) -> Result<Node, AdmissionError> {
    store.cloud(|tx| {
        let mut n: Node = tx
            .get(NODE, id)?
            .ok_or_else(|| AdmissionError::NotFound(id.to_string()))?;
        let was_admitted = n.admission == Admission::Admitted;
        n.admission = Admission::Rejected;
        n.token_sha256.clear();
        if let Some(c) = &mut n.claim {
            c.approved = false;
        }
        match was_admitted {
            true => mark_down(tx, &mut n)?,
            false => save(tx, &n)?,
        }
        tracing::warn!(node = %id, "node rejected: its token no longer works");
        Ok(n)
    })
}

/// Every node record (admitted, pending, approved, rejected), by id.
pub fn list(store: &Store) -> Result<Vec<Node>, StoreError> {
    store.cloud(|tx| tx.list(NODE, None))
}
