//! The frontend's volume exports, the daemon ↔ storage controller contract: the daemon
//! (unprivileged) writes every volume that should be reachable over AoE as [`Exports`] into its
//! storage directory (`<data_dir>/storage/`); the storage controller (`mallee-frontend storage`,
//! root, because AoE needs an AF_PACKET socket) serves them with the `mallee-aoe` target and
//! answers with [`Applied`]. Level-triggered: each file is the complete state, so a restarted
//! daemon or controller converges by writing or reading it again.
//!
//! It fixes the shapes only; it does not say which volume goes to which node (the daemon's
//! core does) nor how a target serves (the `mallee-aoe` crate does).

use crate::Mac;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The desired exports, in the storage directory (written whole, then renamed into place).
pub const EXPORTS_FILE: &str = "exports.json";
/// What the storage controller serves, beside it.
pub const APPLIED_FILE: &str = "applied.json";
/// The storage directory's name under the daemon's `data_dir`.
pub const STORAGE_DIR: &str = "storage";

/// Every volume the frontend should serve over AoE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exports {
    /// Bumped by the daemon on every change; [`Applied::generation`] echoes it.
    pub generation: u64,
    /// The NIC the targets serve on (the private NIC, where the nodes are).
    pub interface: String,
    pub exports: Vec<VolumeExport>,
}

/// One volume served at one AoE shelf/slot to the initiators listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeExport {
    pub volume_id: String,
    /// The volume's backing file: an absolute path to a regular file owned by the same user
    /// as [`EXPORTS_FILE`] (the controller refuses anything else).
    pub path: PathBuf,
    /// AoE major address (0..=65534; 65535 is the broadcast address).
    pub shelf: u16,
    /// AoE minor address (0..=254; 255 is the broadcast address).
    pub slot: u8,
    /// The initiator MACs answered (the target's MAC mask list); frames from any other MAC are
    /// dropped. Never empty: an export with no MAC listed is refused rather than answering
    /// everyone.
    pub allowed: Vec<Mac>,
}

/// The controller's answer: which generation it serves, and each export's fate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub generation: u64,
    /// Every export of `generation`, in the order the daemon listed them.
    pub exports: Vec<ExportState>,
    /// Set when [`EXPORTS_FILE`] could not be read or parsed: `generation` and `exports` are
    /// then what is still served from before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether one export is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportState {
    pub volume_id: String,
    pub shelf: u16,
    pub slot: u8,
    /// `None` while the target answers; else why it does not (the shelf/slot is answered by
    /// another target on the segment, the backing file is missing, …). The controller retries
    /// failed exports on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Applied {
    /// The state of `volume_id`, when it was listed.
    pub fn export(&self, volume_id: &str) -> Option<&ExportState> {
        self.exports.iter().find(|e| e.volume_id == volume_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export() -> VolumeExport {
        VolumeExport {
            volume_id: "vol-0123abcd".into(),
            path: "/var/lib/mallee/frontend/volumes/vol-0123abcd".into(),
            shelf: 7,
            slot: 1,
            allowed: vec![Mac([0x52, 0x54, 0, 0x0a, 0x0b, 0x0c])],
        }
    }

    #[test]
    fn exports_round_trip_through_json() {
        let e = Exports {
            generation: 3,
            interface: "eth1".into(),
            exports: vec![export()],
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"52:54:00:0a:0b:0c\""), "{json}");
        assert_eq!(serde_json::from_str::<Exports>(&json).unwrap(), e);
    }

    #[test]
    fn applied_round_trips_and_omits_absent_errors() {
        let a = Applied {
            generation: 3,
            exports: vec![
                ExportState {
                    volume_id: "vol-1".into(),
                    shelf: 7,
                    slot: 1,
                    error: None,
                },
                ExportState {
                    volume_id: "vol-2".into(),
                    shelf: 7,
                    slot: 2,
                    error: Some("backing file missing".into()),
                },
            ],
            error: None,
        };
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("null"), "{json}");
        assert_eq!(serde_json::from_str::<Applied>(&json).unwrap(), a);
        assert_eq!(a.export("vol-2").map(|e| e.slot), Some(2));
        assert_eq!(a.export("vol-3"), None);
    }

    #[test]
    fn a_bad_mac_is_a_parse_error() {
        let json = r#"{"generation":1,"interface":"eth1","exports":[{"volume_id":"v",
            "path":"/v","shelf":1,"slot":1,"allowed":["52:54:00"]}]}"#;
        assert!(serde_json::from_str::<Exports>(json).is_err());
    }
}
