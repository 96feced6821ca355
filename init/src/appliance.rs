//! The flashable appliance's A/B slots at boot (role `frontend`, booted from a slot): what each
//! slot holds, published for the daemon's `DescribeAppliance`; a slot on trial marked good once
//! the daemon serves, or rebooted when it does not in time (the boot manager counts the try); the
//! result of the last upgrade, including the fall back to the old slot; and installing an upgrade
//! the daemon staged into the slot that is not running. The rules of the slots themselves (names,
//! counters, order) are `mallee_proto::appliance`.

use crate::partition::{self, PartitionError};
use mallee_proto::appliance::{
    self as slots, version_cmp, write_file, ApplianceError, ApplianceStatus, Esp, Slot, SlotImage,
    SlotStatus, StagedUpgrade, Uki, UpgradeRecord, ESP_PARTLABEL, LOADER_CONF, STAGED_FILE,
    STATUS_FILE,
};
use serde::{de::DeserializeOwned, Serialize};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// Where init publishes the slots and the daemon stages upgrades (on the data disk).
pub const DIR: &str = "/var/lib/mallee/appliance";
/// The last upgrade's record, kept across boots.
const RECORD_FILE: &str = "upgrade.json";
/// How long a slot on trial may take from boot to a serving daemon before init reboots it.
pub const TRIAL_PATIENCE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum SlotsError {
    #[error("the ESP: {0}")]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Appliance(#[from] ApplianceError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: {1}")]
    Json(String, serde_json::Error),
    #[error("the staged upgrade is refused: {0}")]
    Refused(String),
}

/// The slots as found at boot.
#[derive(Debug, Clone)]
pub struct Slots {
    /// The slot running now.
    pub slot: Slot,
    /// The ESP's partition device.
    pub esp: PathBuf,
    /// This boot is a try of a newly installed slot (its file still carries a counter).
    pub trial: bool,
    /// The running slot's version and build id.
    pub version: String,
    pub build: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SlotsError + '_ {
    move |source| SlotsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, SlotsError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| SlotsError::Json(path.display().to_string(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes `value` as JSON to `dir/name`, readable by the daemon ([`write_file`]).
fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), SlotsError> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    write_file(dir, name, &bytes).map_err(io_err(&dir.join(name)))
}

fn now_ms() -> u64 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What each slot of `esp` holds.
fn slot_statuses(esp: &Esp) -> Vec<SlotStatus> {
    Slot::ALL
        .iter()
        .map(|&slot| {
            let (version, state) = match esp.slot_image(slot) {
                Ok(None) => (String::new(), "empty".to_string()),
                Ok(Some(SlotImage { file, uki, .. })) => {
                    let state = if file.failed() {
                        "failed"
                    } else if file.trying() {
                        "trying"
                    } else {
                        "good"
                    };
                    (uki.os_release.version_id, state.to_string())
                }
                Err(e) => (String::new(), format!("unreadable: {e}")),
            };
            SlotStatus {
                slot,
                version,
                state,
            }
        })
        .collect()
}

/// Looks at the slots when the appliance booted from `slot`: settles the last upgrade's record
/// (a try in progress, or a slot that used up its tries and fell back here) and publishes the
/// status. Creates `dir` for the daemon, owned by its `uid:gid` (it stages upgrades there).
pub fn boot(slot: Slot, dir: &Path, (uid, gid): (u32, u32)) -> Result<Slots, SlotsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io_err(dir))?;
    let part = partition::wait_for_label(ESP_PARTLABEL, Duration::from_secs(30))?;
    let esp = Esp::partition(&part.device, true)?;
    let own = esp.slot_image(slot)?;
    let (trial, version, build) = match &own {
        Some(img) => (
            img.file.trying(),
            img.uki.os_release.version_id.clone(),
            img.uki.os_release.build_id.clone(),
        ),
        None => (false, String::new(), String::new()),
    };
    let other = esp.slot_file(slot.other())?;
    let mut record: Option<UpgradeRecord> = read_json(&dir.join(RECORD_FILE))?;
    if let Some(r) = record.as_mut().filter(|r| r.result == "trying") {
        if r.slot == slot && trial {
            let done = (own.as_ref())
                .and_then(|img| img.file.tries)
                .map_or(0, |t| t.done);
            r.detail = format!("try {done} of {}", r.tries);
            info!(
                "upgrade: trying slot {slot} version {version} ({})",
                r.detail
            );
        } else if r.slot != slot {
            r.result = "failed".into();
            r.detail = match other.as_ref().map(|(_, f)| f) {
                Some(f) if f.failed() => format!(
                    "slot {} did not become ready in {} tries; back on slot {slot}",
                    r.slot, r.tries
                ),
                _ => format!("slot {} did not boot; back on slot {slot}", r.slot),
            };
            warn!("upgrade to {} failed: {}", r.version, r.detail);
        }
        r.at_ms = now_ms();
        write_json(dir, RECORD_FILE, r)?;
    }
    let slots = Slots {
        slot,
        esp: part.device,
        trial,
        version,
        build,
    };
    publish(&slots, &esp, dir)?;
    esp.close()?;
    Ok(slots)
}

/// Writes the status the daemon reads: the running slot, what each slot of `esp` holds and the
/// last upgrade's record.
fn publish(slots: &Slots, esp: &Esp, dir: &Path) -> Result<(), SlotsError> {
    let status = ApplianceStatus {
        slot: slots.slot,
        version: slots.version.clone(),
        build: slots.build.clone(),
        slots: slot_statuses(esp),
        last_upgrade: read_json(&dir.join(RECORD_FILE))?,
    };
    write_json(dir, STATUS_FILE, &status)
}

/// The daemon serves: a slot on trial has proved itself, so its counter is dropped and the
/// upgrade recorded as good.
pub fn mark_good(slots: &Slots, dir: &Path) -> Result<(), SlotsError> {
    if !slots.trial {
        return Ok(());
    }
    let esp = Esp::partition(&slots.esp, true)?;
    esp.mark_good(slots.slot)?;
    let mut record: UpgradeRecord =
        read_json(&dir.join(RECORD_FILE))?.unwrap_or_else(|| UpgradeRecord {
            slot: slots.slot,
            version: slots.version.clone(),
            tries: 0,
            result: String::new(),
            detail: String::new(),
            at_ms: 0,
        });
    record.result = "good".into();
    record.detail = format!("slot {} version {} serves", slots.slot, slots.version);
    record.at_ms = now_ms();
    write_json(dir, RECORD_FILE, &record)?;
    publish(slots, &esp, dir)?;
    esp.close()?;
    info!(
        "upgrade: slot {} version {} marked good",
        slots.slot, slots.version
    );
    Ok(())
}

/// Records that a slot on trial did not serve within [`TRIAL_PATIENCE`] (init reboots next, and
/// the boot manager counts the try).
pub fn trial_timed_out(slots: &Slots, dir: &Path) {
    let detail = format!(
        "slot {} version {} was not serving {} s after boot",
        slots.slot,
        slots.version,
        TRIAL_PATIENCE.as_secs()
    );
    warn!("upgrade: {detail}; rebooting to count the try");
    if let Ok(Some(mut r)) = read_json::<UpgradeRecord>(&dir.join(RECORD_FILE)) {
        r.detail = detail;
        r.at_ms = now_ms();
        let _ = write_json(dir, RECORD_FILE, &r);
    }
}

/// Checks the upgrade the daemon staged (for the other slot, one of ours naming that slot, newer
/// than what runs) and installs it there with its tries; the running slot is not touched. The
/// record says `trying` from then on; the caller reboots.
pub fn install_staged(slots: &Slots, dir: &Path) -> Result<StagedUpgrade, SlotsError> {
    let staged_path = dir.join(STAGED_FILE);
    let staged: StagedUpgrade =
        read_json(&staged_path)?.ok_or_else(|| SlotsError::Refused("nothing is staged".into()))?;
    let result = install(slots, dir, &staged);
    let _ = std::fs::remove_file(&staged_path);
    let _ = std::fs::remove_file(dir.join(Path::new(&staged.file).file_name().unwrap_or_default()));
    let record = UpgradeRecord {
        slot: staged.slot,
        version: staged.version.clone(),
        tries: staged.tries,
        result: if result.is_ok() { "trying" } else { "failed" }.into(),
        detail: match &result {
            Ok(()) => format!("installed in slot {}; rebooting to try it", staged.slot),
            Err(e) => e.to_string(),
        },
        at_ms: now_ms(),
    };
    write_json(dir, RECORD_FILE, &record)?;
    if let Ok(esp) = Esp::partition(&slots.esp, false) {
        let _ = publish(slots, &esp, dir);
    }
    result.map(|()| staged)
}

fn install(slots: &Slots, dir: &Path, staged: &StagedUpgrade) -> Result<(), SlotsError> {
    let refuse = |why: String| Err(SlotsError::Refused(why));
    if staged.slot != slots.slot.other() {
        return refuse(format!("it is for slot {}, which is running", staged.slot));
    }
    if !(1..=slots::MAX_TRIES).contains(&staged.tries) {
        return refuse(format!(
            "{} tries (1 to {})",
            staged.tries,
            slots::MAX_TRIES
        ));
    }
    // Only a plain file name inside the directory.
    let name = Path::new(&staged.file).file_name().unwrap_or_default();
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let uki = Uki::parse(&path.display().to_string(), &bytes)?;
    if uki.slot() != Some(staged.slot) {
        return refuse(format!(
            "its command line does not name slot {}",
            staged.slot
        ));
    }
    let new = &uki.os_release.version_id;
    if version_cmp(new, &slots.version) != Ordering::Greater {
        return refuse(format!(
            "version {new} is not newer than the running {}",
            slots.version
        ));
    }
    let esp = Esp::partition(&slots.esp, true)?;
    let name = esp.install(staged.slot, &bytes, staged.tries)?;
    // No `default`: from now on the boot manager's order picks the slot.
    esp.write(LOADER_CONF, slots::loader_conf().as_bytes())?;
    esp.close()?;
    info!(
        "upgrade: version {new} installed as {name} in slot {} with {} tries",
        staged.slot, staged.tries
    );
    Ok(())
}
