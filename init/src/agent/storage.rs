//! Where the node keeps its image cache and instance disks.
//!
//! With a local disk (`mallee.disk=auto` found one, or `mallee.disk=/dev/X`; chosen, formatted
//! when blank and mounted through [`crate::disk`]) the state directory `/var/lib/mallee` is
//! that disk: the image cache (`images/`) may use [`CACHE_SHARE_PERCENT`] of the file system and
//! its entries survive a reboot (re-verified on first use); the rest is for instance disks
//! (`instances/`, emptied at start: a rebooted node lost its instances). Without one (diskless,
//! `mallee.disk=none`, or a disk holding someone else's data, which is never written) both
//! live in RAM, each in its own tmpfs: the cache gets [`RAM_CACHE_PERCENT`] of memory and
//! instance disks [`RAM_INSTANCES_PERCENT`], so a launch that does not fit fails instead of
//! filling the initramfs root. Instance disks are sparse (thin): what a launch must find free
//! is what it writes at creation, see [`room_for_instances`].

use super::images::{Cache, ImageError};
use crate::cmdline::NodeDisk;
use crate::disk::{self, DiskError};
use mallee_proto::Storage;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// Share of a local disk's file system the image cache may use.
pub const CACHE_SHARE_PERCENT: u64 = 50;
/// Share of memory a diskless node's image cache may use.
pub const RAM_CACHE_PERCENT: u64 = 50;
/// Share of memory a diskless node's instance disks may use.
pub const RAM_INSTANCES_PERCENT: u64 = 25;
/// The file system label the node gives its disk.
pub const NODE_LABEL: &str = "mallee-node";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Cache(#[from] ImageError),
    #[error("{path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the cache and the instance directories are.
pub struct NodeStorage {
    pub cache: Cache,
    pub instances: PathBuf,
    /// Size of the local disk (0 when diskless), for the node's registration.
    pub disk_gib: u64,
    /// True when instance disks share the cache's file system (a local disk): the part of the
    /// cache budget not yet used is not free for instances.
    pub shared_with_cache: bool,
}

/// Bytes instance disks may still take: `avail` (free in their file system) less, when the
/// cache shares it, the part of the cache's budget it has not used yet.
pub fn room_for_instances(avail: u64, cache: Option<(u64, u64)>) -> u64 {
    let (budget, used) = cache.unwrap_or((0, 0));
    avail.saturating_sub(budget.saturating_sub(used))
}

/// Free bytes for an unprivileged writer in the file system holding `path`.
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

fn total_bytes(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_blocks.saturating_mul(s.f_frsize))
}

/// The disk `choice` names, if any (logging why `auto` passed over the disks it did).
fn pick(choice: &NodeDisk) -> Option<PathBuf> {
    match choice {
        NodeDisk::None => None,
        NodeDisk::Device(p) => Some(p.clone()),
        NodeDisk::Auto => {
            let (chosen, skipped) = disk::choose_auto(Path::new("/sys/block"));
            for (name, why) in skipped {
                info!("agent: disk {name} not used for the cache: {why}");
            }
            chosen.map(|d| d.device())
        }
    }
}

/// Size of block device `device` from sysfs, in bytes.
fn device_bytes(device: &Path) -> Option<u64> {
    let name = device.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/class/block/{name}/size")).ok()?;
    text.trim().parse::<u64>().ok().map(|s| s * 512)
}

fn fresh_dir(path: &Path) -> Result<(), StorageError> {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path).map_err(|source| StorageError::Dir {
        path: path.to_path_buf(),
        source,
    })
}

fn mount_tmpfs(dir: &Path, bytes: u64) -> Result<(), StorageError> {
    let err = |source| StorageError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let data = std::ffi::CString::new(format!("size={bytes},mode=0700")).unwrap_or_default();
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        Some(data.as_c_str()),
    )
    .map_err(|e| err(e.into()))
}

/// Mounts the node's disk on `state_dir` and opens the cache there.
fn on_disk(device: &Path, state_dir: &Path) -> Result<NodeStorage, String> {
    let content =
        disk::mount_ext4(device, state_dir, NODE_LABEL, disk::Init::Lazy).map_err(|e| match e {
            DiskError::Foreign { .. } => format!(
                "{e}. To give it to Mallee, wipe it yourself (that is the operator's call); \
                 `mallee.disk=none` silences this"
            ),
            e => e.to_string(),
        })?;
    let total = total_bytes(state_dir).map_err(|e| e.to_string())?;
    let budget = total / 100 * CACHE_SHARE_PERCENT;
    let cache =
        Cache::open(&state_dir.join("images"), budget, Storage::Disk).map_err(|e| e.to_string())?;
    let instances = state_dir.join("instances");
    fresh_dir(&instances).map_err(|e| e.to_string())?;
    let kept = cache.list().len();
    info!(
        "agent: image cache on {} (ext4, budget {} MiB, {kept} cached images kept{})",
        device.display(),
        budget >> 20,
        if content == disk::DiskContent::Blank {
            ", new file system"
        } else {
            ""
        }
    );
    info!(
        "agent: instance disks on {} ({} MiB free)",
        device.display(),
        room_for_instances(
            available_bytes(&instances).unwrap_or(0),
            Some((budget, cache.summary().used_bytes))
        ) >> 20
    );
    Ok(NodeStorage {
        cache,
        instances,
        disk_gib: device_bytes(device).unwrap_or(total) >> 30,
        shared_with_cache: true,
    })
}

/// Cache and instance directories in tmpfs, sized from `mem_mib`.
fn in_ram(state_dir: &Path, mem_mib: u64) -> Result<NodeStorage, StorageError> {
    let images = state_dir.join("images");
    let budget = (mem_mib << 20) / 100 * RAM_CACHE_PERCENT;
    if let Err(e) = mount_tmpfs(&images, budget) {
        warn!("agent: cannot mount the cache tmpfs ({e}); using the root file system");
    }
    let instances = state_dir.join("instances");
    let room = (mem_mib << 20) / 100 * RAM_INSTANCES_PERCENT;
    if let Err(e) = mount_tmpfs(&instances, room) {
        warn!("agent: cannot mount the instance tmpfs ({e}); using the root file system");
    }
    let cache = Cache::open(&images, budget, Storage::Ram)?;
    info!(
        "agent: image cache in RAM (tmpfs), budget {} MiB",
        budget >> 20
    );
    info!(
        "agent: instance disks in RAM (tmpfs), budget {} MiB",
        room >> 20
    );
    Ok(NodeStorage {
        cache,
        instances,
        disk_gib: 0,
        shared_with_cache: false,
    })
}

/// Sets up the cache and instance directories under `state_dir` as `choice` says.
pub fn open(
    choice: &NodeDisk,
    state_dir: &Path,
    mem_mib: u64,
) -> Result<NodeStorage, StorageError> {
    if let Some(device) = pick(choice) {
        match on_disk(&device, state_dir) {
            Ok(s) => return Ok(s),
            Err(e) => warn!(
                "agent: not using {}: {e}; keeping the image cache in RAM",
                device.display()
            ),
        }
    }
    in_ram(state_dir, mem_mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_may_not_take_the_caches_unused_budget() {
        assert_eq!(room_for_instances(1000, None), 1000);
        assert_eq!(room_for_instances(1000, Some((600, 100))), 500);
        assert_eq!(room_for_instances(1000, Some((600, 600))), 1000);
        assert_eq!(room_for_instances(100, Some((600, 0))), 0);
    }

    #[test]
    fn free_space_is_read_from_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_bytes(dir.path()).unwrap();
        assert!(free > 0 && free <= total_bytes(dir.path()).unwrap());
    }
}
