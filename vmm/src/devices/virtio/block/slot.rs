//! Volume slots: virtio-blk devices made at boot with nothing in them, into which the API puts
//! an EBS volume (or an image file) while the guest runs, and from which it takes it out again.
//!
//! An empty slot is one sector of zeros with an empty serial that refuses writes. Attaching opens
//! the volume, swaps it in (after the request in flight, if any), sets the serial to the volume
//! id and tells the guest its capacity changed; detaching swaps the empty disk back in, flushes
//! the volume and tells the guest again. A slot outlives the VM it is in: a guest rebooted under
//! `on_reboot: restart` finds the volume still attached. Opening sources and the API's framing
//! are not here ([`super::open`], [`crate::api`]).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mallee_proto::vmm::VolumeSlotStatus;

use super::backend::BlockBackend;
use super::media::{self, Media};
use super::request::SECTOR_SIZE;
use crate::bus::lock;
use crate::devices::virtio::config_change::ConfigChange;

/// Why a volume slot refused an attach or a detach.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// No slot of that number.
    #[error("volume slot {slot} does not exist (the VM has {count} volume slots)")]
    NoSuchSlot {
        /// The slot asked for.
        slot: u8,
        /// How many slots the VM has.
        count: usize,
    },
    /// Attaching to a slot that holds a volume.
    #[error("volume slot {slot} already holds volume {volume_id}")]
    Occupied {
        /// The slot.
        slot: u8,
        /// The volume in it.
        volume_id: String,
    },
    /// Detaching from an empty slot.
    #[error("volume slot {slot} is empty")]
    Empty {
        /// The slot.
        slot: u8,
    },
    /// An attach without a volume id.
    #[error("volume slot {slot}: the volume id is empty")]
    NoVolumeId {
        /// The slot.
        slot: u8,
    },
    /// The volume could not be opened; the slot stays empty.
    #[error("volume slot {slot}: cannot open {disk} for {volume_id} (gave up after {:.1} s): {err}", elapsed.as_secs_f64())]
    Open {
        /// The slot.
        slot: u8,
        /// The volume.
        volume_id: String,
        /// The source, as `aoe:IFACE:SHELF.SLOT` or a path.
        disk: String,
        /// How long opening took before it failed (an AoE target that never answers).
        elapsed: Duration,
        /// Why.
        err: io::Error,
    },
    /// The volume was detached, but its final flush failed.
    #[error("volume slot {slot}: {volume_id} is detached, but flushing it failed, so its last writes may be lost: {err}")]
    Flush {
        /// The slot (empty now).
        slot: u8,
        /// The volume.
        volume_id: String,
        /// Why.
        err: io::Error,
    },
}

/// The volume in a slot.
struct Attached {
    volume_id: String,
    size_bytes: u64,
}

/// One volume slot.
pub struct VolumeSlot {
    number: u8,
    media: Arc<Media>,
    volume: Mutex<Option<Attached>>,
    /// Held through a whole attach or detach (opening an AoE target takes seconds), so two
    /// requests for one slot never interleave; status replies do not wait for it.
    busy: Mutex<()>,
    change: Mutex<Option<ConfigChange>>,
}

impl VolumeSlot {
    /// Empty slot `number`.
    pub fn new(number: u8) -> VolumeSlot {
        VolumeSlot {
            number,
            media: Arc::new(Media::new(media::empty())),
            volume: Mutex::new(None),
            busy: Mutex::new(()),
            change: Mutex::new(None),
        }
    }

    /// The disk its device serves.
    pub fn media(&self) -> Arc<Media> {
        self.media.clone()
    }

    /// Where to signal configuration changes from now on (the device of the VM now running).
    pub fn set_config_change(&self, change: ConfigChange) {
        *lock(&self.change) = Some(change);
    }

    /// What the slot holds.
    pub fn status(&self) -> VolumeSlotStatus {
        let volume = lock(&self.volume);
        VolumeSlotStatus {
            slot: self.number,
            volume_id: volume.as_ref().map(|v| v.volume_id.clone()),
            size_bytes: volume.as_ref().map_or(0, |v| v.size_bytes),
        }
    }

    /// Puts the volume `volume_id`, opened by `open` (`disk` names it in errors), into the empty
    /// slot and tells the guest. The serial is the id truncated to 20 bytes. A read-only volume
    /// fails the guest's writes. On any error the slot is as it was.
    pub fn attach(
        &self,
        volume_id: &str,
        read_only: bool,
        disk: &str,
        open: impl FnOnce() -> io::Result<Box<dyn BlockBackend>>,
    ) -> Result<VolumeSlotStatus, SlotError> {
        let slot = self.number;
        if volume_id.is_empty() {
            return Err(SlotError::NoVolumeId { slot });
        }
        let _busy = lock(&self.busy);
        if let Some(v) = lock(&self.volume).as_ref() {
            return Err(SlotError::Occupied {
                slot,
                volume_id: v.volume_id.clone(),
            });
        }
        let started = Instant::now();
        let backend = open().map_err(|err| SlotError::Open {
            slot,
            volume_id: volume_id.to_string(),
            disk: disk.to_string(),
            elapsed: started.elapsed(),
            err,
        })?;
        let size_bytes = backend.size() / SECTOR_SIZE * SECTOR_SIZE;
        // No discard: the device's features are fixed at boot, before any volume is known.
        let new = media::disk(backend, read_only, Some(volume_id), false);
        // The empty disk has nothing to flush or close.
        drop(self.media.swap(new));
        *lock(&self.volume) = Some(Attached {
            volume_id: volume_id.to_string(),
            size_bytes,
        });
        self.notify();
        tracing::info!(
            "volume slot {slot}: attached {volume_id} from {disk} ({size_bytes} bytes{})",
            if read_only { ", read-only" } else { "" }
        );
        Ok(self.status())
    }

    /// Takes the volume out once the guest's request in flight has finished, flushes it and
    /// tells the guest; later requests fail. The slot is empty afterwards even when the flush
    /// fails (a volume whose target is gone must still come out), and the error says so.
    pub fn detach(&self) -> Result<VolumeSlotStatus, SlotError> {
        let slot = self.number;
        let _busy = lock(&self.busy);
        let Some(volume_id) = lock(&self.volume).as_ref().map(|v| v.volume_id.clone()) else {
            return Err(SlotError::Empty { slot });
        };
        let old = self.media.swap(media::empty());
        *lock(&self.volume) = None;
        self.notify();
        let flushed = old.backend.flush();
        drop(old);
        match flushed {
            Ok(()) => {
                tracing::info!("volume slot {slot}: detached {volume_id}");
                Ok(self.status())
            }
            Err(err) => Err(SlotError::Flush {
                slot,
                volume_id,
                err,
            }),
        }
    }

    fn notify(&self) {
        if let Some(change) = lock(&self.change).as_ref() {
            change.notify();
        }
    }
}

/// A VM's volume slots, in slot order (shared by the API and each VM built from the config).
#[derive(Clone, Default)]
pub struct VolumeSlots(Vec<Arc<VolumeSlot>>);

impl VolumeSlots {
    /// `count` empty slots, numbered from 0.
    pub fn new(count: u8) -> VolumeSlots {
        VolumeSlots((0..count).map(|n| Arc::new(VolumeSlot::new(n))).collect())
    }

    /// Slot `slot`.
    pub fn get(&self, slot: u8) -> Result<&Arc<VolumeSlot>, SlotError> {
        self.0.get(usize::from(slot)).ok_or(SlotError::NoSuchSlot {
            slot,
            count: self.0.len(),
        })
    }

    /// Every slot, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VolumeSlot>> {
        self.0.iter()
    }

    /// What each slot holds.
    pub fn status(&self) -> Vec<VolumeSlotStatus> {
        self.0.iter().map(|s| s.status()).collect()
    }
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
