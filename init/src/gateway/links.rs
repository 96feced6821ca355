//! The gateway's links and addresses: the `mgw*` 802.1Q links with their gateway addresses, and
//! the public /32 addresses on the public NIC. Level-triggered over netlink dumps: each call
//! makes the kernel match the whole desired state. It touches no other link, and removes only
//! public addresses it was told it added.

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

/// Adds each public address as /32 where missing (announcing it) on its [`home`] link, and
/// removes those in `added` (what this process added) that are no longer wanted there.
pub(super) fn apply_public(
    nl: &mut Netlink,
    gateway: &Gateway,
    added: &mut BTreeSet<(String, Ipv4Addr)>,
) -> Vec<GatewayError> {
    let mut errors = Vec::new();
    let (links, addresses) = match (nl.links(), nl.addresses()) {
        (Ok(l), Ok(a)) => (l, a),
        (Err(e), _) | (_, Err(e)) => return vec![e.into()],
    };
    let find = |name: &str| links.iter().find(|l| l.name == name);
    let mut wanted: BTreeMap<Ipv4Addr, &LinkInfo> = BTreeMap::new();
    if let Some(public) = &gateway.public {
        for &address in &public.addresses {
            // Addresses this process put there are /32s, never a connected subnet.
            match home(public.interface.as_deref(), address, &links, &addresses) {
                Some(link) => drop(wanted.insert(address, link)),
                None => errors.push(GatewayError::NoInterface(match &public.interface {
                    Some(name) => name.clone(),
                    None => format!("(none has a subnet holding {address})"),
                })),
            }
        }
    }
    let wanted_names: BTreeSet<(String, Ipv4Addr)> =
        (wanted.iter()).map(|(a, l)| (l.name.clone(), *a)).collect();
    let stale: Vec<_> = added.difference(&wanted_names).cloned().collect();
    for (interface, address) in stale {
        let on = find(&interface).filter(|link| {
            let here = AddressInfo {
                ifindex: link.ifindex,
                address,
                prefix: 32,
            };
            addresses.contains(&here)
        });
        if let Some(link) = on {
            if let Err(source) = nl.del_address(link.ifindex, address, 32) {
                errors.push(GatewayError::Address {
                    link: interface,
                    address,
                    prefix: 32,
                    source,
                });
                continue;
            }
            info!("gateway: removed {address}/32 from {interface}");
        }
        added.remove(&(interface, address));
    }
    for (&address, link) in &wanted {
        let present = (addresses.iter()).any(|a| a.ifindex == link.ifindex && a.address == address);
        if present {
            continue;
        }
        if let Err(source) = nl.add_address(link.ifindex, address, 32) {
            errors.push(GatewayError::Address {
                link: link.name.clone(),
                address,
                prefix: 32,
                source,
            });
            continue;
        }
        info!("gateway: added {address}/32 to {}", link.name);
        added.insert((link.name.clone(), address));
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

/// Makes the `mgw*` links exactly those of `gateway`: each an 802.1Q link of the interface with
/// its tag, up, holding only its address; any other `mgw<tag>` link is deleted.
pub(super) fn apply_links(nl: &mut Netlink, gateway: &Gateway) -> Vec<GatewayError> {
    let mut errors = Vec::new();
    let mut wanted: BTreeMap<u16, &GatewayLink> = BTreeMap::new();
    for link in &gateway.links {
        if wanted.insert(link.vlan, link).is_some() {
            errors.push(GatewayError::DuplicateVlan(link.vlan));
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
        errors.extend(set_only_address(nl, index, want, &addresses));
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
    want: &GatewayLink,
    addresses: &[AddressInfo],
) -> Vec<GatewayError> {
    let mut errors = Vec::new();
    let name = link_name(want.vlan);
    let fail = |address, prefix, source| GatewayError::Address {
        link: name.clone(),
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
