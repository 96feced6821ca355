//! The gateway's links and addresses: the `mgw*` 802.1Q links with their gateway addresses, the
//! untagged networks' gateway addresses on the private NIC, and the public /32 addresses on the
//! public NIC. Level-triggered over netlink dumps: each call makes the kernel match the whole
//! desired state. It touches no other link, and removes only addresses it added itself.

use super::{arp, GatewayError};
use crate::net::link::{ifindex, AddressInfo, LinkInfo, Netlink};
use mallee_proto::gateway::{link_name, link_vlan, Gateway, GatewayLink};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use tracing::info;

/// Whether `a` is inside the net of `on`'s address (a connected subnet, not a /32).
fn connected(on: &AddressInfo, a: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(on.prefix)).unwrap_or(0);
    on.prefix < 32 && (u32::from(on.address) & mask) == (u32::from(a) & mask)
}

/// The link public `address` belongs on: the one named, or else the NIC (not a gateway link)
/// whose connected subnet holds it, so its neighbours ARP for it there.
fn home<'a>(
    named: Option<&str>,
    address: Ipv4Addr,
    links: &'a [LinkInfo],
    addresses: &[AddressInfo],
) -> Option<&'a LinkInfo> {
    match named {
        Some(name) => links.iter().find(|l| l.name == name),
        None => (addresses.iter())
            .filter(|on| connected(on, address))
            .find_map(|on| {
                (links.iter()).find(|l| l.ifindex == on.ifindex && link_vlan(&l.name).is_none())
            }),
    }
}

/// An address this process adds beside a link's own: `(link name, address, prefix)`.
pub(super) type Added = (String, Ipv4Addr, u8);

/// The addresses the gateway adds beside links' own — each public address as a /32 on its
/// [`home`] link (announced by a gratuitous ARP), and each untagged network's gateway address
/// on the private interface itself (MANAGED-NOVLAN) — added where missing; those in `added`
/// (what this process added) that are no longer wanted are removed. No other address is
/// touched: the interfaces' own stay.
pub(super) fn apply_added(
    nl: &mut Netlink,
    gateway: &Gateway,
    added: &mut BTreeSet<Added>,
) -> Vec<GatewayError> {
    let mut errors = Vec::new();
    let (links, addresses) = match (nl.links(), nl.addresses()) {
        (Ok(l), Ok(a)) => (l, a),
        (Err(e), _) | (_, Err(e)) => return vec![e.into()],
    };
    let find = |name: &str| links.iter().find(|l| l.name == name);
    // What is wanted, and whether to announce it.
    let mut wanted: BTreeMap<Added, (&LinkInfo, bool)> = BTreeMap::new();
    if let Some(public) = &gateway.public {
        for &address in &public.addresses {
            // Addresses this process put there are /32s, never a connected subnet.
            match home(public.interface.as_deref(), address, &links, &addresses) {
                Some(link) => {
                    wanted.insert((link.name.clone(), address, 32), (link, true));
                }
                None => errors.push(GatewayError::NoInterface(match &public.interface {
                    Some(name) => name.clone(),
                    None => format!("(none has a subnet holding {address})"),
                })),
            }
        }
    }
    let untagged = gateway.links.iter().filter(|l| l.vlan.is_none());
    for link in untagged {
        match find(&gateway.interface) {
            Some(on) => {
                wanted.insert((on.name.clone(), link.address, link.prefix), (on, false));
            }
            None => errors.push(GatewayError::NoInterface(gateway.interface.clone())),
        }
    }
    let present = |(name, address, prefix): &Added| {
        find(name).filter(|link| {
            let here = AddressInfo {
                ifindex: link.ifindex,
                address: *address,
                prefix: *prefix,
            };
            addresses.contains(&here)
        })
    };
    let stale: Vec<Added> = (added.iter())
        .filter(|a| !wanted.contains_key(a))
        .cloned()
        .collect();
    for key in stale {
        if let Some(link) = present(&key) {
            let (interface, address, prefix) = key.clone();
            if let Err(source) = nl.del_address(link.ifindex, address, prefix) {
                errors.push(GatewayError::Address {
                    link: interface,
                    address,
                    prefix,
                    source,
                });
                continue;
            }
            info!("gateway: removed {address}/{prefix} from {interface}");
        }
        added.remove(&key);
    }
    for (key, (link, announce)) in &wanted {
        let (_, address, prefix) = *key;
        if present(key).is_some() {
            continue;
        }
        if let Err(source) = nl.add_address(link.ifindex, address, prefix) {
            errors.push(GatewayError::Address {
                link: link.name.clone(),
                address,
                prefix,
                source,
            });
            continue;
        }
        info!("gateway: added {address}/{prefix} to {}", link.name);
        added.insert(key.clone());
        if !announce {
            continue;
        }
        let announced = match link.mac {
            Some(mac) => arp::announce(link.ifindex, mac, address),
            None => Err(std::io::Error::other("the link has no Ethernet address")),
        };
        if let Err(source) = announced {
            errors.push(GatewayError::Arp {
                interface: link.name.clone(),
                address,
                source,
            });
        }
    }
    errors
}

#[cfg(test)]
pub(super) fn home_for_tests<'a>(
    named: Option<&str>,
    address: Ipv4Addr,
    links: &'a [LinkInfo],
    addresses: &[AddressInfo],
) -> Option<&'a LinkInfo> {
    home(named, address, links, addresses)
}

/// Makes the `mgw*` links exactly those of `gateway`'s tagged networks: each an 802.1Q link of
/// the interface with its tag, up, holding only its address; any other `mgw<tag>` link is
/// deleted. (Untagged networks' addresses are [`apply_added`]'s.)
pub(super) fn apply_links(nl: &mut Netlink, gateway: &Gateway) -> Vec<GatewayError> {
    let mut errors = Vec::new();
    let mut wanted: BTreeMap<u16, &GatewayLink> = BTreeMap::new();
    for link in &gateway.links {
        let Some(vlan) = link.vlan else { continue };
        if wanted.insert(vlan, link).is_some() {
            errors.push(GatewayError::DuplicateVlan(vlan));
        }
    }
    let links = match nl.links() {
        Ok(links) => links,
        Err(e) => {
            errors.push(e.into());
            return errors;
        }
    };
    let parent = (links.iter())
        .find(|l| l.name == gateway.interface)
        .map(|l| l.ifindex);
    if parent.is_none() && !wanted.is_empty() {
        errors.push(GatewayError::NoInterface(gateway.interface.clone()));
    }
    // Links already right, by tag.
    let mut ready: BTreeMap<u16, u32> = BTreeMap::new();
    for link in &links {
        let Some(vlan) = link_vlan(&link.name) else {
            continue;
        };
        if wanted.contains_key(&vlan) && is_vlan_of(link, parent, vlan) {
            ready.insert(vlan, link.ifindex);
            continue;
        }
        match nl.del_link(link.ifindex) {
            Ok(()) => info!("gateway: removed link {}", link.name),
            Err(source) => errors.push(GatewayError::Link {
                name: link.name.clone(),
                source,
            }),
        }
    }
    let Some(parent) = parent else {
        return errors;
    };
    for &vlan in wanted.keys() {
        let name = link_name(vlan);
        let made = match ready.get(&vlan) {
            Some(&index) => Ok(index),
            None => nl.new_vlan(&name, parent, vlan).map(|()| {
                info!(
                    "gateway: made link {name} (VLAN {vlan} on {})",
                    gateway.interface
                );
                ifindex(&name).unwrap_or(0)
            }),
        };
        match made.and_then(|index| nl.set_up(index).map(|()| index)) {
            Ok(index) => {
                ready.insert(vlan, index);
            }
            Err(source) => {
                ready.remove(&vlan);
                errors.push(GatewayError::Link { name, source });
            }
        }
    }
    let addresses = match nl.addresses() {
        Ok(a) => a,
        Err(e) => {
            errors.push(e.into());
            return errors;
        }
    };
    for (vlan, index) in ready {
        let want = wanted[&vlan];
        errors.extend(set_only_address(
            nl,
            index,
            &link_name(vlan),
            want,
            &addresses,
        ));
    }
    errors
}

/// Whether `link` is the 802.1Q link of tag `vlan` on `parent`.
fn is_vlan_of(link: &LinkInfo, parent: Option<u32>, vlan: u16) -> bool {
    parent.is_some() && link.parent == parent && link.vlan == Some(vlan)
}

/// Leaves `want`'s address as the only IPv4 address of link `index`.
fn set_only_address(
    nl: &mut Netlink,
    index: u32,
    name: &str,
    want: &GatewayLink,
    addresses: &[AddressInfo],
) -> Vec<GatewayError> {
    let mut errors = Vec::new();
    let fail = |address, prefix, source| GatewayError::Address {
        link: name.to_string(),
        address,
        prefix,
        source,
    };
    let mut present = false;
    let mut removed = false;
    for a in addresses.iter().filter(|a| a.ifindex == index) {
        if (a.address, a.prefix) == (want.address, want.prefix) {
            present = true;
            continue;
        }
        match nl.del_address(index, a.address, a.prefix) {
            Ok(()) => removed = true,
            Err(source) => errors.push(fail(a.address, a.prefix, source)),
        }
    }
    // Removing a primary address can take its secondaries along: add again after any removal.
    if !present || removed {
        if let Err(source) = nl.add_address(index, want.address, want.prefix) {
            errors.push(fail(want.address, want.prefix, source));
        }
    }
    errors
}
