//! The API file systems PID 1 mounts at boot and unmounts at shutdown.
//!
//! Owns the mount table of an initramfs appliance: proc, sysfs, devtmpfs on `/dev`, devpts on
//! `/dev/pts`, and tmpfs on `/run` and `/tmp`. It does not mount disks; the root (the initramfs
//! itself) cannot be unmounted and is left alone.

use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("creating mount point {target}: {source}")]
    MountPoint {
        target: &'static str,
        source: std::io::Error,
    },
    #[error("mounting {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        source: rustix::io::Errno,
    },
}

struct ApiMount {
    fstype: &'static str,
    target: &'static str,
    flags: MountFlags,
    data: &'static std::ffi::CStr,
}

const NOSUID_NODEV_NOEXEC: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC);

/// In mount order; shutdown unmounts in reverse.
const API_MOUNTS: &[ApiMount] = &[
    ApiMount {
        fstype: "proc",
        target: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
    },
    ApiMount {
        fstype: "sysfs",
        target: "/sys",
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
    },
    ApiMount {
        fstype: "devtmpfs",
        target: "/dev",
        flags: MountFlags::NOSUID,
        data: c"mode=0755",
    },
    ApiMount {
        fstype: "devpts",
        target: "/dev/pts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: c"mode=0620,ptmxmode=0666,gid=5",
    },
    ApiMount {
        fstype: "tmpfs",
        target: "/run",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=0755",
    },
    ApiMount {
        fstype: "tmpfs",
        target: "/tmp",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=1777",
    },
];

fn mount_one(m: &ApiMount) -> Result<(), MountError> {
    std::fs::create_dir_all(m.target).map_err(|source| MountError::MountPoint {
        target: m.target,
        source,
    })?;
    match mount(m.fstype, m.target, m.fstype, m.flags, m.data) {
        // Already mounted (e.g. the kernel mounted devtmpfs itself): fine.
        Ok(()) | Err(rustix::io::Errno::BUSY) => Ok(()),
        Err(source) => Err(MountError::Mount {
            fstype: m.fstype,
            target: m.target,
            source,
        }),
    }
}

/// Mounts every API file system, going on past failures; returns the failures.
pub fn mount_all() -> Vec<MountError> {
    API_MOUNTS
        .iter()
        .filter_map(|m| mount_one(m).err())
        .collect()
}

/// Lazily unmounts the API file systems in reverse order; errors are ignored because this runs
/// on the way to reboot(2), where nothing more can be done about them.
pub fn unmount_all() {
    for m in API_MOUNTS.iter().rev() {
        let _ = unmount(m.target, UnmountFlags::DETACH);
    }
}
