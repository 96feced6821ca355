//! The flashable appliance's upgrades as the daemon sees them: the A/B slot status `mallee-init`
//! publishes, and staging a new image for init to install. Staging checks the image (a GPT disk
//! image with our ESP, a unified kernel image for the slot that is not running, naming that slot,
//! newer than what runs) and copies only that kernel image out; init checks it again as root,
//! writes it into the slot with its tries and reboots (the daemon exits with
//! [`UPGRADE_STAGED_EXIT`] to ask for that). The daemon itself never writes the ESP.

use mallee_proto::appliance::{
    version_cmp, write_file, ApplianceError, ApplianceStatus, Esp, StagedUpgrade, MAX_TRIES,
    STAGED_FILE, STATUS_FILE,
};
pub use mallee_proto::appliance::{DEFAULT_TRIES, UPGRADE_STAGED_EXIT};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "this frontend was not booted from the flashable image, so it has no slots to upgrade"
    )]
    NotAppliance,
    #[error("the appliance's slot status is not readable yet ({0}); try again once it has booted")]
    NoStatus(String),
    #[error("the image is not a Mallee frontend image: {0}")]
    BadImage(#[from] ApplianceError),
    #[error("the image has no unified kernel image for slot {0}")]
    NoSlotImage(String),
    #[error("the image's version {new} is not newer than the running {running}: the boot manager would never choose it")]
    NotNewer { new: String, running: String },
    #[error("Tries must be 1 to {MAX_TRIES}, not {0}")]
    Tries(u32),
    #[error("an upgrade is already staged")]
    Busy,
    #[error("staging into {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The appliance directory and the signal that an upgrade is staged.
#[derive(Debug)]
pub struct Appliance {
    pub dir: PathBuf,
    staged: tokio::sync::Notify,
    busy: std::sync::Mutex<bool>,
}

impl Appliance {
    pub fn new(dir: PathBuf) -> Appliance {
        Appliance {
            dir,
            staged: tokio::sync::Notify::new(),
            busy: std::sync::Mutex::new(false),
        }
    }

    /// What init published at boot.
    pub fn status(&self) -> Result<ApplianceStatus, UpgradeError> {
        let path = self.dir.join(STATUS_FILE);
        let bytes =
            std::fs::read(&path).map_err(|e| UpgradeError::NoStatus(format!("{path:?}: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| UpgradeError::NoStatus(format!("{path:?}: {e}")))
    }

    /// Checks `image` (a file holding a flashable image) and stages its kernel image for the
    /// slot that is not running with `tries` boot tries. Call [`Appliance::request_restart`]
    /// once the answer is on its way.
    pub fn stage(&self, image: &Path, tries: u32) -> Result<StagedUpgrade, UpgradeError> {
        if !(1..=MAX_TRIES).contains(&tries) {
            return Err(UpgradeError::Tries(tries));
        }
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if *busy {
            return Err(UpgradeError::Busy);
        }
        let status = self.status()?;
        let target = status.slot.other();
        let esp = Esp::in_image(image, false)?;
        let new = esp
            .slot_image(target)?
            .filter(|img| img.uki.slot() == Some(target))
            .ok_or_else(|| UpgradeError::NoSlotImage(target.to_string()))?;
        let version = new.uki.os_release.version_id;
        if version_cmp(&version, &status.version) != Ordering::Greater {
            return Err(UpgradeError::NotNewer {
                new: version,
                running: status.version,
            });
        }
        let staged = StagedUpgrade {
            slot: target,
            version,
            tries,
            file: format!("staged-{}", target.good_name()),
        };
        self.write(&staged.file, &new.bytes)?;
        self.write(
            STAGED_FILE,
            &serde_json::to_vec_pretty(&staged).unwrap_or_default(),
        )?;
        *busy = true;
        Ok(staged)
    }

    /// Into the appliance directory, whole or not at all ([`write_file`]).
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), UpgradeError> {
        write_file(&self.dir, name, bytes).map_err(|source| UpgradeError::Io {
            path: self.dir.join(name).display().to_string(),
            source,
        })
    }

    /// Asks the daemon to stop serving and exit with [`UPGRADE_STAGED_EXIT`].
    pub fn request_restart(&self) {
        self.staged.notify_one();
    }

    /// Resolves once an upgrade is staged and the restart asked for.
    pub async fn restart_requested(&self) {
        self.staged.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mallee_proto::appliance::{Slot, SlotStatus};

    fn appliance(name: &str, running: &str) -> Appliance {
        let dir =
            std::env::temp_dir().join(format!("mallee-appliance-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let status = ApplianceStatus {
            slot: Slot::A,
            version: running.into(),
            build: "x".into(),
            slots: vec![SlotStatus {
                slot: Slot::A,
                version: running.into(),
                state: "good".into(),
            }],
            last_upgrade: None,
        };
        std::fs::write(dir.join(STATUS_FILE), serde_json::to_vec(&status).unwrap()).unwrap();
        Appliance::new(dir)
    }

    #[test]
    fn tries_out_of_range_are_refused_before_reading_anything() {
        let a = appliance("tries", "0.1.0.1");
        assert!(matches!(
            a.stage(Path::new("/nonexistent"), 0),
            Err(UpgradeError::Tries(0))
        ));
        assert!(matches!(
            a.stage(Path::new("/nonexistent"), 10),
            Err(UpgradeError::Tries(10))
        ));
    }

    #[test]
    fn a_file_that_is_not_a_disk_image_is_refused_and_nothing_is_staged() {
        let a = appliance("junk", "0.1.0.1");
        let junk = a.dir.join("junk.img");
        std::fs::write(&junk, vec![0x5au8; 1 << 20]).unwrap();
        let e = a.stage(&junk, 3).unwrap_err();
        assert!(e.to_string().contains("not a Mallee frontend image"), "{e}");
        assert!(!a.dir.join(STAGED_FILE).exists());
    }

    #[test]
    fn without_a_published_status_upgrades_wait() {
        let a = appliance("nostatus", "0.1.0.1");
        std::fs::remove_file(a.dir.join(STATUS_FILE)).unwrap();
        assert!(matches!(a.status(), Err(UpgradeError::NoStatus(_))));
    }
}
