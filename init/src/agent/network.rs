//! Instance networks on the node: each instance's persistent tap (`mt` + the end of its id) is a
//! port of its network's bridge. MANAGED: bridge `mbr<tag>` over `mvl<tag>`, the 802.1Q link of
//! that tag on the private NIC (the one the frontend is reached through), made when the first
//! instance of the network comes and removed when the last one leaves. The node has no address
//! on these links (IPv6 is switched off on them, so it does not even autoconfigure one): it
//! only carries frames. MANAGED-NOVLAN and SYSTEM: the tap joins the node's uplink bridge
//! ([`UPLINK_BRIDGE`], made at boot), so the instance is on the node's own segment. The guest's
//! address, DHCP answer and anti-spoofing are its VMM's (`Nic.address`). Everything is made
//! idempotently, so a relaunch after a node reboot makes the same links again.

use crate::net::bridge::UPLINK_BRIDGE;
use crate::net::link::{self, LinkError, Netlink};
use crate::net::{route, tap};
use mallee_proto::{InstanceNetwork, Mac, Segment};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use tracing::{info, warn};

/// Why an instance's network could not be plugged.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{what}: {source}")]
    Link {
        what: String,
        #[source]
        source: LinkError,
    },
    #[error("tap {0}: {1}")]
    Tap(String, std::io::Error),
    #[error("the instance shares the node's segment ({0:?}) but this node has no uplink bridge {UPLINK_BRIDGE}: it booted while the frontend's [network] mode was MANAGED; reboot the node so it boots bridged")]
    NotBridged(Segment),
    #[error("the private NIC {0} is gone")]
    NoUplink(String),
}

/// The tap of instance `id`: `mt` and the last 13 characters of the id.
pub fn tap_name(id: &str) -> String {
    let tail: String = id.chars().rev().take(13).collect();
    format!("mt{}", tail.chars().rev().collect::<String>())
}

/// The bridge of VLAN `tag`.
pub fn bridge_name(tag: u16) -> String {
    format!("mbr{tag}")
}

/// The 802.1Q link of VLAN `tag` on the private NIC.
pub fn vlan_name(tag: u16) -> String {
    format!("mvl{tag}")
}

/// The interface the kernel routes `to` through, from `/proc/net/route` text (longest prefix
/// wins; addresses and masks are little-endian hex).
pub fn route_interface(table: &str, to: Ipv4Addr) -> Option<String> {
    let to = u32::from(to);
    (route::routes(table).into_iter())
        .filter(|r| to & u32::from(r.mask) == u32::from(r.destination))
        .max_by_key(|r| u32::from(r.mask).leading_ones())
        .map(|r| r.interface)
}

/// The node's instance links; one per node.
pub struct Plumbing {
    /// The private NIC VLAN links are made on.
    uplink: String,
    /// Each segment's instance taps on this node.
    ports: Mutex<BTreeMap<Segment, BTreeSet<String>>>,
}

fn kernel(what: impl Into<String>) -> impl FnOnce(LinkError) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Link { what, source }
}

/// No IPv6 (hence no link-local address or router solicitation) on `name`; best effort, the
/// kernel may have no IPv6 at all.
fn no_ipv6(name: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
}

/// Makes the link `name` with `make` unless it exists; its index.
fn ensure(
    nl: &mut Netlink,
    name: &str,
    make: impl FnOnce(&mut Netlink) -> Result<(), NetworkError>,
) -> Result<u32, NetworkError> {
    if let Some(index) = link::ifindex(name) {
        return Ok(index);
    }
    make(nl)?;
    no_ipv6(name);
    link::ifindex(name).ok_or_else(|| NetworkError::Link {
        what: format!("{name} made but not found"),
        source: LinkError::BadName(name.to_string()),
    })
}

/// Removes the link `name` if it exists (best effort: logged).
fn remove(nl: &mut Netlink, name: &str) {
    if let Some(index) = link::ifindex(name) {
        if let Err(e) = nl.del_link(index) {
            warn!("agent: removing {name}: {e}");
        }
    }
}

/// Makes instance tap `tap` (unless it exists) a port of bridge `br` (named `bridge`), up, with
/// the guest's `mac` pinned to it.
fn join(nl: &mut Netlink, br: u32, bridge: &str, tap: &str, mac: Mac) -> Result<(), NetworkError> {
    let tp = ensure(nl, tap, |_| {
        tap::create_persistent(tap).map_err(|e| NetworkError::Tap(tap.to_string(), e))
    })?;
    nl.set_master(tp, br)
        .map_err(kernel(format!("{tap} into {bridge}")))?;
    nl.set_up(tp).map_err(kernel(format!("{tap} up")))?;
    nl.pin_fdb(tp, mac.0)
        .map_err(kernel(format!("pinning {mac} to {tap}")))
}

impl Plumbing {
    pub fn new(uplink: &str) -> Plumbing {
        Plumbing {
            uplink: uplink.to_string(),
            ports: Mutex::new(BTreeMap::new()),
        }
    }

    /// The node's link on the private segment (the NIC, or the bridge it was enslaved to): where
    /// the frontend's AoE exports are reached too.
    pub fn uplink(&self) -> &str {
        &self.uplink
    }

    /// Plugs instance `id` (its guest's MAC `mac`) into `net`'s segment; the tap's name for its
    /// VMM. The bridge pins `mac` to the tap, so frames for the guest reach it even when the
    /// segment reflects the guest's own frames back up the VLAN link. On failure nothing this
    /// call made is left behind.
    pub fn plug(&self, id: &str, mac: Mac, net: &InstanceNetwork) -> Result<String, NetworkError> {
        let segment = net.segment;
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let mut nl = Netlink::open().map_err(kernel("netlink"))?;
        let tap = tap_name(id);
        let made = match segment {
            Segment::Vlan(tag) => self.make(&mut nl, tag, &tap, mac),
            Segment::Untagged | Segment::System => match link::ifindex(UPLINK_BRIDGE) {
                Some(bridge) => join(&mut nl, bridge, UPLINK_BRIDGE, &tap, mac),
                None => Err(NetworkError::NotBridged(segment)),
            },
        };
        match made {
            Ok(()) => {
                if ports.entry(segment).or_default().insert(tap.clone()) {
                    let on = match segment {
                        Segment::Vlan(tag) => {
                            format!("{} (VLAN {tag} on {})", bridge_name(tag), self.uplink)
                        }
                        _ => format!("{UPLINK_BRIDGE} (the node's own segment)"),
                    };
                    info!("agent: {id} plugged: tap {tap} on bridge {on}");
                }
                Ok(tap)
            }
            Err(e) => {
                let alone = ports.get(&segment).is_none_or(|taps| taps.is_empty());
                remove(&mut nl, &tap);
                if let (Segment::Vlan(tag), true) = (segment, alone) {
                    remove(&mut nl, &vlan_name(tag));
                    remove(&mut nl, &bridge_name(tag));
                }
                Err(e)
            }
        }
    }

    /// Bridge, VLAN link and tap of `tag`, each made unless it exists, joined and up, with the
    /// guest's `mac` pinned to its tap.
    fn make(&self, nl: &mut Netlink, tag: u16, tap: &str, mac: Mac) -> Result<(), NetworkError> {
        let (bridge, vlan) = (bridge_name(tag), vlan_name(tag));
        let br = ensure(nl, &bridge, |nl| {
            nl.new_bridge(&bridge, None)
                .map_err(kernel(format!("bridge {bridge}")))
        })?;
        let parent = link::ifindex(&self.uplink)
            .ok_or_else(|| NetworkError::NoUplink(self.uplink.clone()))?;
        let vl = ensure(nl, &vlan, |nl| {
            let what = format!("VLAN {tag} link {vlan} on {}", self.uplink);
            nl.new_vlan(&vlan, parent, tag).map_err(kernel(what))
        })?;
        nl.set_master(vl, br)
            .map_err(kernel(format!("{vlan} into {bridge}")))?;
        for (index, name) in [(br, &bridge), (vl, &vlan)] {
            nl.set_up(index).map_err(kernel(format!("{name} up")))?;
        }
        join(nl, br, &bridge, tap, mac)
    }

    /// Unplugs instance `id`: its tap goes, and its VLAN network's bridge and VLAN link with it
    /// when it was the last instance on them (the uplink bridge stays: it is the node's own).
    pub fn unplug(&self, id: &str) {
        let tap = tap_name(id);
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let Some((&segment, _)) = ports.iter().find(|(_, taps)| taps.contains(&tap)) else {
            return;
        };
        let mut nl = match Netlink::open() {
            Ok(nl) => nl,
            Err(e) => return warn!("agent: unplugging {id}: {e}"),
        };
        remove(&mut nl, &tap);
        let taps = ports.entry(segment).or_default();
        taps.remove(&tap);
        let last = taps.is_empty();
        if last {
            ports.remove(&segment);
        }
        match (segment, last) {
            (Segment::Vlan(tag), true) => {
                remove(&mut nl, &vlan_name(tag));
                remove(&mut nl, &bridge_name(tag));
                info!(
                    "agent: {id} unplugged; VLAN {tag} has no instance left here: bridge removed"
                );
            }
            (Segment::Vlan(tag), false) => info!("agent: {id} unplugged from VLAN {tag}"),
            _ => info!("agent: {id} unplugged from {UPLINK_BRIDGE}"),
        }
    }
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
