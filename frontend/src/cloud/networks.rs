//! Instance networks, the cluster controller's addressing (Eucalyptus's MANAGED modes): each
//! security group with instances is a network with a VLAN tag from the configured range (none in
//! MANAGED-NOVLAN), a slice of the private subnet and the frontend as its gateway. A launch
//! takes (or makes) its first group's network and the lowest free addresses in it, in the
//! launch's transaction; a group's network is freed when its last instance is terminated.

use super::config::{NetMode, NetworkConfig};
use super::model::{Instance, State, INSTANCE};
use crate::store::{CloudTx, StoreError};
use ipnet::Ipv4Net;
use mallee_proto::vmm::GuestAddress;
use mallee_proto::{InstanceNetwork, Segment};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Record kind of a group's network, keyed by the group id.
pub const NETWORK: &str = "network";

/// One security group's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub group_id: String,
    pub group_name: String,
    pub owner: String,
    /// The 802.1Q tag (MANAGED); `None` on the untagged bridge (MANAGED-NOVLAN).
    pub vlan: Option<u16>,
    /// Which slice of the configured subnet.
    pub slice: u32,
    pub subnet: Ipv4Net,
    /// The frontend's address in it.
    pub gateway: Ipv4Addr,
    pub created_ms: i64,
}

impl Network {
    /// Where its instances' taps join on a node.
    pub fn segment(&self) -> Segment {
        self.vlan.map_or(Segment::Untagged, Segment::Vlan)
    }

    /// The addresses instances may have: after the gateway, before broadcast.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.gateway) + 1;
        let last = u32::from(self.subnet.broadcast()) - 1;
        (first..=last).map(Ipv4Addr::from)
    }
}

/// Why a launch got no network or address; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    #[error("every VLAN tag of the configured range {0} carries another security group's network; terminate the instances of a group you no longer use, or widen [network] vlans")]
    Vlans(String),
    #[error("every {per}-address slice of the private subnet {subnet} is another security group's network; terminate the instances of a group you no longer use, or widen [network] subnet")]
    Slices { subnet: Ipv4Net, per: u32 },
    #[error("the network of security group {group} ({subnet}) has {free} free addresses and {want} were asked for; launch fewer, or raise [network] addrs_per_net")]
    Addresses {
        group: String,
        subnet: Ipv4Net,
        free: usize,
        want: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
}

/// The lowest free slice and (MANAGED) the lowest free tag, given the networks that exist.
pub fn free_slot(cfg: &NetworkConfig, taken: &[Network]) -> Result<(u32, Option<u16>), Exhausted> {
    let slices: BTreeSet<u32> = taken.iter().map(|n| n.slice).collect();
    let slice = (0..cfg.slices())
        .find(|s| !slices.contains(s))
        .ok_or(Exhausted::Slices {
            subnet: cfg.subnet,
            per: cfg.addrs_per_net,
        })?;
    let vlan = match cfg.mode {
        NetMode::Managed => {
            let tags: BTreeSet<u16> = taken.iter().filter_map(|n| n.vlan).collect();
            let tag = (cfg.vlans.first..=cfg.vlans.last)
                .find(|t| !tags.contains(t))
                .ok_or_else(|| Exhausted::Vlans(cfg.vlans.to_string()))?;
            Some(tag)
        }
        _ => None,
    };
    Ok((slice, vlan))
}

/// The lowest `want` addresses of `net` not in `used`; fewer when fewer are free.
pub fn free_addresses(net: &Network, used: &BTreeSet<Ipv4Addr>, want: usize) -> Vec<Ipv4Addr> {
    net.hosts()
        .filter(|a| !used.contains(a))
        .take(want)
        .collect()
}

/// The group whose network an instance is on: its first.
fn network_group(i: &Instance) -> Option<&str> {
    i.groups.first().map(|(id, _)| id.as_str())
}

/// Instances that still hold an address in group `group_id`'s network.
fn holders(tx: &CloudTx<'_>, group_id: &str) -> Result<Vec<Instance>, StoreError> {
    Ok(tx
        .list::<Instance>(INSTANCE, None)?
        .into_iter()
        .filter(|i| i.state != State::Terminated && network_group(i) == Some(group_id))
        .collect())
}

/// Group `group`'s network, made now when it has none, and up to `want` free addresses in it.
/// The caller checks it got enough. SYSTEM mode has no networks: not called.
pub fn assign(
    tx: &CloudTx<'_>,
    cfg: &NetworkConfig,
    owner: &str,
    group: &(String, String),
    want: usize,
    now: i64,
) -> Result<(Network, Vec<Ipv4Addr>), NetworkError> {
    let net = match tx.get::<Network>(NETWORK, &group.0)? {
        Some(net) => net,
        None => {
            let (slice, vlan) = free_slot(cfg, &tx.list(NETWORK, None)?)?;
            let subnet = cfg.slice(slice);
            let net = Network {
                group_id: group.0.clone(),
                group_name: group.1.clone(),
                owner: owner.to_string(),
                vlan,
                slice,
                subnet,
                gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
                created_ms: now,
            };
            tx.put(NETWORK, &net.group_id, owner, None, &net)?;
            tracing::info!(group = %net.group_id, vlan = ?net.vlan, subnet = %net.subnet, "network made");
            net
        }
    };
    let used: BTreeSet<Ipv4Addr> = holders(tx, &group.0)?
        .iter()
        .filter_map(|i| i.private_ip.parse().ok())
        .collect();
    let addrs = free_addresses(&net, &used, want);
    Ok((net, addrs))
}

/// What the node is told about instance `address` on `net`: its segment and DHCP answer.
pub fn instance_network(
    cfg: &NetworkConfig,
    net: &Network,
    address: Ipv4Addr,
    hostname: &str,
) -> InstanceNetwork {
    InstanceNetwork {
        segment: net.segment(),
        address: Some(GuestAddress {
            address,
            prefix_len: net.subnet.prefix_len(),
            gateway: Some(net.gateway),
            dns: cfg.dns.clone(),
            hostname: Some(hostname.to_string()),
        }),
    }
}

/// Frees the network of terminated instance `i`'s group when no other instance holds an
/// address in it.
pub fn release(tx: &CloudTx<'_>, i: &Instance) -> Result<(), StoreError> {
    let Some(group_id) = network_group(i) else {
        return Ok(());
    };
    if holders(tx, group_id)?.iter().all(|h| h.id == i.id) && tx.delete(NETWORK, group_id)? {
        tracing::info!(
            group = group_id,
            "network freed: its last instance is terminated"
        );
    }
    Ok(())
}

/// Every network, by group id.
pub fn list(tx: &CloudTx<'_>) -> Result<Vec<Network>, StoreError> {
    tx.list(NETWORK, None)
}

#[cfg(test)]
#[path = "networks_tests.rs"]
mod tests;
