//! What the controller must change: the pure comparison of the exports it serves with the
//! exports the daemon wants. It checks each wanted export ([`Refusal`]) and sorts the rest into
//! targets to stop, to start and to give a new MAC mask list. No sockets or files here.

use mallee_aoe::target::{SHELF_ANY, SLOT_ANY};
use mallee_proto::storage::{Exports, VolumeExport};
use mallee_proto::Mac;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Most MACs one export may allow: the AoE MAC mask list's count is one byte.
pub const MAX_LIST: usize = 255;

/// Why a wanted export is not served, whatever the machine's state: only a new exports file
/// can change it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no interface to serve on")]
    NoInterface,
    #[error("volume {0} is listed more than once")]
    Duplicate(String),
    #[error("shelf {shelf} slot {slot} is also given to {other}")]
    AddressTaken { shelf: u16, slot: u8, other: String },
    #[error(
        "shelf {shelf} slot {slot}: the broadcast shelf 65535 and slot 255 cannot be exported"
    )]
    Broadcast { shelf: u16, slot: u8 },
    #[error("no initiator MAC is allowed: an export answers only the MACs it lists")]
    NoneAllowed,
    #[error("{0} initiator MACs allowed; an AoE MAC mask list holds at most {MAX_LIST}")]
    TooManyAllowed(usize),
    #[error("backing file {0} is not an absolute path")]
    RelativePath(String),
}

/// The changes that take the served exports to the wanted ones, to be done in this order:
/// stop, relist, start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Served volumes no longer wanted, wanted elsewhere (another file, address or
    /// interface), or now refused.
    pub stop: Vec<String>,
    /// Served volumes whose target stays but answers a new list of MACs.
    pub relist: Vec<(String, Vec<Mac>)>,
    /// Wanted volumes not served (new, moved, or failed to start before).
    pub start: Vec<VolumeExport>,
    /// Wanted exports refused, by their index in [`Exports::exports`].
    pub refused: Vec<(usize, Refusal)>,
}

/// Checks every wanted export: the index and reason of each refused one. Of two exports with
/// the same volume or the same shelf/slot, the first listed wins.
pub fn refusals(desired: &Exports) -> Vec<(usize, Refusal)> {
    let mut refused = Vec::new();
    let mut volumes: HashSet<&str> = HashSet::new();
    let mut addresses: HashMap<(u16, u8), &str> = HashMap::new();
    for (i, e) in desired.exports.iter().enumerate() {
        let why = if desired.interface.is_empty() {
            Some(Refusal::NoInterface)
        } else if !volumes.insert(&e.volume_id) {
            Some(Refusal::Duplicate(e.volume_id.clone()))
        } else if e.shelf == SHELF_ANY || e.slot == SLOT_ANY {
            Some(Refusal::Broadcast {
                shelf: e.shelf,
                slot: e.slot,
            })
        } else if let Some(other) = addresses.get(&(e.shelf, e.slot)) {
            Some(Refusal::AddressTaken {
                shelf: e.shelf,
                slot: e.slot,
                other: (*other).to_owned(),
            })
        } else if e.allowed.is_empty() {
            Some(Refusal::NoneAllowed)
        } else if e.allowed.len() > MAX_LIST {
            Some(Refusal::TooManyAllowed(e.allowed.len()))
        } else if !e.path.is_absolute() {
            Some(Refusal::RelativePath(e.path.display().to_string()))
        } else {
            None
        };
        match why {
            Some(why) => refused.push((i, why)),
            None => drop(addresses.insert((e.shelf, e.slot), &e.volume_id)),
        }
    }
    refused
}

/// Whether a served target can go on serving `want`: same file, address and interface.
fn same_target(served: &VolumeExport, want: &VolumeExport, same_interface: bool) -> bool {
    same_interface
        && served.path == want.path
        && served.shelf == want.shelf
        && served.slot == want.slot
}

/// Compares `served` (by volume id, on `served_interface`) with `desired`.
pub fn plan(
    served_interface: &str,
    served: &BTreeMap<String, VolumeExport>,
    desired: &Exports,
) -> Plan {
    let refused = refusals(desired);
    let accepted: BTreeMap<&str, &VolumeExport> = (desired.exports.iter().enumerate())
        .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i))
        .map(|(_, e)| (e.volume_id.as_str(), e))
        .collect();
    let same_interface = served_interface == desired.interface;
    let mut plan = Plan {
        refused,
        ..Plan::default()
    };
    for (id, have) in served {
        match accepted.get(id.as_str()) {
            Some(want) if same_target(have, want, same_interface) => {
                if have.allowed != want.allowed {
                    plan.relist.push((id.clone(), want.allowed.clone()));
                }
            }
            _ => plan.stop.push(id.clone()),
        }
    }
    for want in desired.exports.iter() {
        let kept = served
            .get(&want.volume_id)
            .is_some_and(|have| same_target(have, want, same_interface));
        let is_accepted = accepted
            .get(want.volume_id.as_str())
            .is_some_and(|a| std::ptr::eq(*a, want));
        if is_accepted && !kept {
            plan.start.push(want.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
    const NODE_B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);

    fn export(id: &str, slot: u8) -> VolumeExport {
        VolumeExport {
            volume_id: id.into(),
            path: format!("/data/{id}").into(),
            shelf: 1,
            slot,
            allowed: vec![NODE_A],
        }
    }

    fn wanted(exports: Vec<VolumeExport>) -> Exports {
        Exports {
            generation: 1,
            interface: "eth1".into(),
            exports,
        }
    }

    fn served(exports: &[VolumeExport]) -> BTreeMap<String, VolumeExport> {
        (exports.iter())
            .map(|e| (e.volume_id.clone(), e.clone()))
            .collect()
    }

    #[test]
    fn nothing_served_starts_every_wanted_export() {
        let want = wanted(vec![export("vol-1", 1), export("vol-2", 2)]);
        let p = plan("", &BTreeMap::new(), &want);
        assert_eq!(p.start, want.exports);
        assert!(p.stop.is_empty() && p.relist.is_empty() && p.refused.is_empty());
    }

    #[test]
    fn an_unchanged_export_is_left_alone() {
        let want = wanted(vec![export("vol-1", 1)]);
        assert_eq!(plan("eth1", &served(&want.exports), &want), Plan::default());
    }

    #[test]
    fn an_export_no_longer_wanted_is_stopped() {
        let p = plan("eth1", &served(&[export("vol-1", 1)]), &wanted(vec![]));
        assert_eq!(p.stop, ["vol-1"]);
        assert!(p.start.is_empty());
    }

    #[test]
    fn a_new_mac_list_relists_without_a_restart() {
        let mut moved = export("vol-1", 1);
        moved.allowed = vec![NODE_B];
        let p = plan("eth1", &served(&[export("vol-1", 1)]), &wanted(vec![moved]));
        assert_eq!(p.relist, [("vol-1".to_owned(), vec![NODE_B])]);
        assert!(p.stop.is_empty() && p.start.is_empty());
    }

    #[test]
    fn a_new_address_file_or_interface_restarts_the_target() {
        let have = served(&[export("vol-1", 1)]);
        let readdressed = wanted(vec![export("vol-1", 9)]);
        let p = plan("eth1", &have, &readdressed);
        assert_eq!(
            (p.stop, p.start),
            (vec!["vol-1".into()], readdressed.exports)
        );
        let mut refiled = export("vol-1", 1);
        refiled.path = "/elsewhere".into();
        assert_eq!(plan("eth1", &have, &wanted(vec![refiled])).stop, ["vol-1"]);
        let p = plan("eth0", &have, &wanted(vec![export("vol-1", 1)]));
        assert_eq!((p.stop.len(), p.start.len()), (1, 1));
    }

    #[test]
    fn an_export_with_no_allowed_mac_is_refused_and_stopped() {
        let mut open = export("vol-1", 1);
        open.allowed.clear();
        let p = plan("eth1", &served(&[export("vol-1", 1)]), &wanted(vec![open]));
        assert_eq!(p.refused, [(0, Refusal::NoneAllowed)]);
        assert_eq!(p.stop, ["vol-1"]);
        assert!(p.start.is_empty());
    }

    #[test]
    fn the_first_of_two_exports_on_one_address_or_volume_wins() {
        let mut twin = export("vol-1", 5);
        twin.path = "/data/other".into();
        let want = wanted(vec![export("vol-1", 1), export("vol-2", 1), twin]);
        let p = plan("", &BTreeMap::new(), &want);
        assert_eq!(p.start, [export("vol-1", 1)]);
        assert_eq!(
            p.refused,
            [
                (
                    1,
                    Refusal::AddressTaken {
                        shelf: 1,
                        slot: 1,
                        other: "vol-1".into()
                    }
                ),
                (2, Refusal::Duplicate("vol-1".into())),
            ]
        );
    }

    #[test]
    fn broadcast_addresses_relative_paths_and_a_missing_interface_are_refused() {
        let mut relative = export("vol-3", 3);
        relative.path = "data/vol-3".into();
        let mut broadcast = export("vol-1", 1);
        broadcast.shelf = SHELF_ANY;
        let want = wanted(vec![broadcast, export("vol-2", SLOT_ANY), relative]);
        let why: Vec<_> = refusals(&want).into_iter().map(|(_, r)| r).collect();
        assert!(matches!(why[0], Refusal::Broadcast { .. }));
        assert!(matches!(why[1], Refusal::Broadcast { .. }));
        assert!(matches!(why[2], Refusal::RelativePath(_)));
        let mut nowhere = wanted(vec![export("vol-1", 1)]);
        nowhere.interface.clear();
        assert_eq!(refusals(&nowhere), [(0, Refusal::NoInterface)]);
    }
}
