//! The node's uplink bridge (MANAGED-NOVLAN and SYSTEM, whose instances share the node's own
//! segment): the NIC the node booted from becomes a port of bridge [`UPLINK_BRIDGE`], which
//! takes that NIC's MAC — fixed, so the node's DHCP lease and its neighbours' ARP entries stay
//! what they were when instance taps join later — and its place as the node's interface: DHCP
//! runs on the bridge. Made at boot, before DHCP (`mallee.bridge=MAC`, put on the command line by
//! the frontend's PXE service), because moving a leased address onto a bridge later would race
//! the DHCP client.

use super::link::{self, LinkError, Netlink};
use super::Nic;
use mallee_proto::Mac;
use tracing::info;

/// The uplink bridge's name (VLAN tags start at 1, so no VLAN bridge `mbr<tag>` is called this).
pub const UPLINK_BRIDGE: &str = "mbr0";

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("no wired NIC has MAC {0} (mallee.bridge names the NIC the node booted from)")]
    NoNic(Mac),
    #[error("{what}: {source}")]
    Link {
        what: String,
        #[source]
        source: LinkError,
    },
}

fn kernel(what: impl Into<String>) -> impl FnOnce(LinkError) -> BridgeError {
    let what = what.into();
    move |source| BridgeError::Link { what, source }
}

/// Puts the NIC with MAC `mac` into [`UPLINK_BRIDGE`] (made unless it exists), both up; `nics`
/// with the bridge in that NIC's place.
pub fn bridge_uplink(nics: &[Nic], mac: Mac) -> Result<Vec<Nic>, BridgeError> {
    let nic = nics
        .iter()
        .find(|n| n.mac == mac)
        .ok_or(BridgeError::NoNic(mac))?;
    let mut nl = Netlink::open().map_err(kernel("netlink"))?;
    if link::ifindex(UPLINK_BRIDGE).is_none() {
        nl.new_bridge(UPLINK_BRIDGE, Some(mac.0))
            .map_err(kernel(format!("bridge {UPLINK_BRIDGE}")))?;
    }
    let bridge = link::ifindex(UPLINK_BRIDGE).ok_or_else(|| BridgeError::Link {
        what: format!("{UPLINK_BRIDGE} made but not found"),
        source: LinkError::BadName(UPLINK_BRIDGE.to_string()),
    })?;
    // The port carries frames only: no IPv6 address of its own beside the bridge's.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", nic.name),
        "1",
    );
    nl.set_master(nic.ifindex, bridge)
        .map_err(kernel(format!("{} into {UPLINK_BRIDGE}", nic.name)))?;
    for (index, name) in [(nic.ifindex, nic.name.as_str()), (bridge, UPLINK_BRIDGE)] {
        nl.set_up(index).map_err(kernel(format!("{name} up")))?;
    }
    info!(
        "{} ({mac}) is a port of {UPLINK_BRIDGE}, which takes its place",
        nic.name
    );
    Ok((nics.iter())
        .map(|n| match n.mac == mac {
            true => Nic {
                name: UPLINK_BRIDGE.to_string(),
                ifindex: bridge,
                mac,
            },
            false => n.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tap;

    /// Against the real kernel: the bridge keeps the NIC's MAC even after a port with a lower
    /// MAC joins, and replaces the NIC in the list; an unknown MAC changes nothing.
    #[test]
    fn the_bridge_takes_the_nics_place_and_keeps_its_mac() {
        crate::net::in_private_netns("the_bridge_takes_the_nics_place_and_keeps_its_mac", || {
            tap::create_persistent("eth9").unwrap();
            let index = link::ifindex("eth9").unwrap();
            let mac = Mac([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
            let nics = vec![Nic {
                name: "eth9".into(),
                ifindex: index,
                mac,
            }];
            let other = Mac([0x52, 0x54, 0, 0, 0, 1]);
            assert!(matches!(
                bridge_uplink(&nics, other),
                Err(BridgeError::NoNic(m)) if m == other
            ));
            assert_eq!(link::ifindex(UPLINK_BRIDGE), None);
            let bridged = bridge_uplink(&nics, mac).unwrap();
            assert_eq!(bridged[0].name, UPLINK_BRIDGE);
            assert_eq!(bridged[0].mac, mac);
            // A later port with a lower MAC does not change the bridge's.
            tap::create_persistent("low0").unwrap();
            let low = link::ifindex("low0").unwrap();
            let mut nl = Netlink::open().unwrap();
            nl.set_master(low, bridged[0].ifindex).unwrap();
            let links = nl.links().unwrap();
            let br = links.iter().find(|l| l.name == UPLINK_BRIDGE).unwrap();
            assert_eq!(br.mac, Some(mac.0));
            let text = crate::net::link::tests::ip_links();
            let port = text.lines().find(|l| l.contains(": eth9:"));
            assert!(port.is_some_and(|l| l.contains("master mbr0")), "{text}");
            // Booting again with the bridge present is fine.
            assert_eq!(bridge_uplink(&nics, mac).unwrap(), bridged);
        });
    }
}
