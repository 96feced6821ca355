//! The cluster controller's gateway: the frontend as router of the instance networks. This
//! room turns the cloud's state (networks, security groups) into the desired
//! [`mallee_proto::gateway::Gateway`] — a VLAN link with the gateway address per network and
//! the nftables ruleset of [`rules`] — and hands it to the appliance's init, which applies it
//! as root, whenever it changes.

pub mod rules;

use crate::cloud::model::{Instance, SecurityGroup, State, GROUP, INSTANCE};
use crate::cloud::networks;
use crate::store::{Store, StoreError};
use ipnet::Ipv4Net;
use mallee_proto::gateway::{
    Applied, Gateway, GatewayLink, PublicSide, APPLIED_FILE, GATEWAY_FILE,
};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Where the gateway is handed over, and the fixed parts of it.
#[derive(Debug, Clone)]
pub struct GatewaySite {
    /// The directory init watches (`gateway_dir`).
    pub dir: PathBuf,
    /// The private NIC: instance VLANs ride on it, instances never reach it untagged.
    pub private_interface: String,
    /// The API port instances may reach at their gateway.
    pub api_port: u16,
    /// The private space networks are cut from (`[network] subnet`).
    pub subnet: Ipv4Net,
    /// The NIC public addresses go on (`[network] public_interface`); `None`: the one whose
    /// subnet holds each.
    pub public_interface: Option<String>,
}

/// The gateway the cloud's state asks for (generation 0: [`write`] stamps it).
pub fn desired(store: &Store, site: &GatewaySite) -> Result<Gateway, StoreError> {
    let (nets, groups, instances) = store.cloud(|tx| {
        Ok::<_, StoreError>((
            networks::list(tx)?,
            tx.list::<SecurityGroup>(GROUP, None)?,
            tx.list::<Instance>(INSTANCE, None)?,
        ))
    })?;
    // Every live instance with both addresses, lowest public first.
    let mut nat: Vec<(Ipv4Addr, Ipv4Addr)> = (instances.iter())
        .filter(|i| i.state != State::Terminated)
        .filter_map(|i| {
            let public = i.public_ip.as_ref()?.parse().ok()?;
            Some((i.private_ip.parse().ok()?, public))
        })
        .collect();
    nat.sort_by_key(|(_, public)| *public);
    let members: Vec<rules::Member> = (instances.iter())
        .filter(|i| i.state != State::Terminated && i.groups.len() > 1)
        .filter_map(|i| {
            Some(rules::Member {
                address: i.private_ip.parse().ok()?,
                groups: i.groups[1..].iter().map(|(id, _)| id.clone()).collect(),
            })
        })
        .collect();
    let links: Vec<GatewayLink> = (nets.iter())
        .map(|n| GatewayLink {
            vlan: n.vlan,
            address: n.gateway,
            prefix: n.subnet.prefix_len(),
        })
        .collect();
    let ruleset = rules::ruleset(&rules::Inputs {
        private_interface: &site.private_interface,
        subnet: site.subnet,
        nat: &nat,
        api_port: site.api_port,
        networks: &nets,
        groups: &groups,
        members: &members,
    });
    Ok(Gateway {
        generation: 0,
        interface: site.private_interface.clone(),
        public: (!links.is_empty()).then(|| PublicSide {
            interface: site.public_interface.clone(),
            addresses: nat.iter().map(|(_, public)| *public).collect(),
        }),
        links,
        ruleset,
    })
}

/// Writes `gateway` into `dir` whole (a temporary file renamed into place, so init never reads
/// half of it).
pub fn write(dir: &Path, gateway: &Gateway) -> Result<(), GatewayError> {
    let path = dir.join(GATEWAY_FILE);
    let err = |source| GatewayError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = dir.join(format!(".{GATEWAY_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(gateway).unwrap_or_default();
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

/// What init last applied, when it has said.
pub fn applied(dir: &Path) -> Option<Applied> {
    serde_json::from_slice(&std::fs::read(dir.join(APPLIED_FILE)).ok()?).ok()
}

/// How far init got with the gateway handed over, for DescribeNetworks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// No `gateway_dir`: nothing on this machine routes instance networks.
    Off,
    /// Handed over; init has not applied this generation yet.
    Pending,
    Applied,
    /// init could not apply it, and says why.
    Failed(String),
}

impl Status {
    pub fn as_str(&self) -> &str {
        match self {
            Status::Off => "off",
            Status::Pending => "pending",
            Status::Applied => "applied",
            Status::Failed(_) => "failed",
        }
    }
}

/// Compares what was handed over in `dir` with what init says it applied.
pub fn status(dir: Option<&Path>) -> Status {
    let Some(dir) = dir else {
        return Status::Off;
    };
    let handed: Option<Gateway> = std::fs::read(dir.join(GATEWAY_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match (handed, applied(dir)) {
        (Some(h), Some(a)) if a.generation == h.generation => match a.error {
            None => Status::Applied,
            Some(e) => Status::Failed(e),
        },
        (_, Some(Applied { error: Some(e), .. })) => Status::Failed(e),
        _ => Status::Pending,
    }
}

/// Hands over the gateway the state asks for unless it equals `last` (what was handed over
/// before); returns what is handed over now. Blocking: SQLite and files.
fn hand_over(store: &Store, site: &GatewaySite, last: Option<Gateway>) -> Option<Gateway> {
    let want = match desired(store, site) {
        Ok(want) => want,
        Err(e) => {
            tracing::error!("gateway: reading the state: {e}");
            return last;
        }
    };
    if last.as_ref() == Some(&want) {
        return last;
    }
    let stamped = Gateway {
        generation: crate::handover::now_ms(),
        ..want.clone()
    };
    match write(&site.dir, &stamped) {
        Ok(()) => {
            tracing::info!(
                generation = stamped.generation,
                links = stamped.links.len(),
                "gateway handed to init"
            );
            Some(want)
        }
        Err(e) => {
            tracing::error!("gateway: {e}");
            last
        }
    }
}

/// Keeps the handed-over gateway equal to what the state asks for: at start (a restarted
/// daemon hands it over again) and after every network change. The work runs on the blocking
/// pool, off the runtime's workers.
pub async fn run(store: Arc<Store>, site: GatewaySite, changed: watch::Receiver<u64>) {
    crate::handover::run("gateway", changed, None, move |last| {
        hand_over(&store, &site, last)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::config::NetworkConfig;
    use crate::cloud::networks::{Network, NETWORK};

    #[test]
    fn the_state_becomes_links_and_rules_and_is_handed_over_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let site = GatewaySite {
            dir: dir.path().to_path_buf(),
            private_interface: "eth1".into(),
            api_port: 8773,
            subnet: NetworkConfig::default().subnet,
            public_interface: None,
        };
        let empty = desired(&store, &site).unwrap();
        assert!(empty.links.is_empty() && empty.ruleset.contains("table inet mallee"));
        let subnet = NetworkConfig::default().slice(2);
        let net = Network {
            group_id: "sg-1".into(),
            group_name: "web".into(),
            owner: "alice".into(),
            vlan: Some(102),
            slice: 2,
            subnet,
            gateway: "172.31.0.65".parse().unwrap(),
            created_ms: 0,
        };
        store
            .cloud(|tx| tx.put(NETWORK, "sg-1", "alice", None, &net))
            .unwrap();
        let g = desired(&store, &site).unwrap();
        assert_eq!(
            g.links,
            [GatewayLink {
                vlan: Some(102),
                address: net.gateway,
                prefix: 27
            }]
        );
        assert!(g.ruleset.contains("oifname \"mgw102\" jump ingress_102"));
        write(dir.path(), &g).unwrap();
        let back: Gateway =
            serde_json::from_slice(&std::fs::read(dir.path().join(GATEWAY_FILE)).unwrap()).unwrap();
        assert_eq!(back, g);
        assert_eq!(applied(dir.path()), None);
        std::fs::write(
            dir.path().join(APPLIED_FILE),
            r#"{"generation":3,"error":"nft: no"}"#,
        )
        .unwrap();
        assert_eq!(
            applied(dir.path()).unwrap().error.as_deref(),
            Some("nft: no")
        );
    }
}
