//! EBS volumes on the node: which of a VMM's volume slots holds which volume, and the requests
//! that attach one (an AoE disk the frontend's storage controller exports to this node) or
//! detach it (the VMM flushes it and shows the guest an empty slot). The agent asks for these
//! when the desired state and what the VMM holds differ (see `reconcile::plan`); a volume counts
//! as attached, in the node's report, only once its VMM said yes.

use mallee_proto::vmm::{DiskSource, Request};
use mallee_proto::{VolumeAttachment, MAX_VOLUMES};
use std::collections::BTreeMap;
use std::time::Duration;

/// The volume slots every VMM the agent starts has.
pub const SLOTS: u8 = MAX_VOLUMES as u8;

/// How long a VMM may take to attach (find the AoE target) or detach (flush) a volume.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a volume is in its VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Asked for; the VMM has not said yes.
    Attaching,
    /// The VMM has it in the slot.
    Attached,
    /// Asked to let it go; until it says so, it still has it.
    Detaching,
}

/// A volume in one of a VMM's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub slot: u8,
    pub stage: Stage,
}

/// Volume id → where it is, for one instance's VMM.
pub type Slots = BTreeMap<String, Held>;

/// The lowest slot nothing holds.
pub fn free_slot(held: &Slots) -> Option<u8> {
    (0..SLOTS).find(|s| held.values().all(|h| h.slot != *s))
}

/// The volumes the VMM has (a detach not yet done included), for the node's report.
pub fn reported(held: &Slots) -> Vec<String> {
    (held.iter())
        .filter(|(_, h)| h.stage != Stage::Attaching)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Where `volume`'s blocks come from: its AoE export, reached on `interface`.
pub fn source(volume: &VolumeAttachment, interface: &str) -> DiskSource {
    DiskSource::Aoe {
        iface: interface.to_string(),
        shelf: volume.shelf,
        slot: volume.slot,
    }
}

/// The request that puts `volume` into `slot`, read over AoE on `interface`.
pub fn attach_request(slot: u8, volume: &VolumeAttachment, interface: &str) -> Request {
    Request::AttachVolume {
        slot,
        volume_id: volume.volume_id.clone(),
        source: source(volume, interface),
        read_only: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(slot: u8, stage: Stage) -> Held {
        Held { slot, stage }
    }

    #[test]
    fn slots_are_taken_lowest_first_and_run_out() {
        let mut s = Slots::new();
        assert_eq!(free_slot(&s), Some(0));
        s.insert("vol-a".into(), held(0, Stage::Attached));
        s.insert("vol-b".into(), held(2, Stage::Attaching));
        assert_eq!(free_slot(&s), Some(1));
        for n in 0..SLOTS {
            s.insert(format!("vol-{n}"), held(n, Stage::Attached));
        }
        assert_eq!(free_slot(&s), None);
    }

    #[test]
    fn only_what_the_vmm_said_yes_to_is_reported() {
        let mut s = Slots::new();
        s.insert("vol-a".into(), held(0, Stage::Attaching));
        s.insert("vol-b".into(), held(1, Stage::Attached));
        s.insert("vol-c".into(), held(2, Stage::Detaching));
        assert_eq!(reported(&s), vec!["vol-b".to_string(), "vol-c".to_string()]);
    }

    #[test]
    fn the_attach_request_names_the_export_and_the_node_nic() {
        let v = VolumeAttachment {
            volume_id: "vol-1".into(),
            device: "/dev/sdf".into(),
            shelf: 100,
            slot: 3,
        };
        let r = attach_request(1, &v, "eth0");
        let json = String::from_utf8(mallee_proto::vmm::encode_line(&r)).unwrap();
        assert!(json.contains(r#""op":"attach_volume""#), "{json}");
        assert!(
            json.contains(r#""slot":1"#) && json.contains(r#""shelf":100"#),
            "{json}"
        );
    }
}
