//! Local disks, for both roles: which whole disks the machine has (read from a `/sys/block`
//! tree), what a disk holds (its first 128 KiB; for an ext file system also the label and UUID
//! in its superblock), formatting with `mke2fs` and mounting.
//!
//! The one rule this module keeps: a disk is formatted only when its first 128 KiB are all
//! zero. A disk holding an ext file system is mounted as it is; a disk holding anything else
//! (a partition table, another file system, data) is never written. It does not decide what a
//! disk is for: the frontend mounts its data disk with it, the node agent its cache disk.

use crate::{log, reaper};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tracing::info;

const MKE2FS: &str = "/sbin/mke2fs";
/// How many leading bytes must be zero for a disk to count as blank.
pub const BLANK_PROBE: usize = 128 * 1024;
/// The smallest disk the node agent takes on its own.
pub const MIN_AUTO_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk {path} did not appear within {secs} s")]
    Missing { path: String, secs: u64 },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "disk {path} holds something that is not an ext2/3/4 file system (a partition table, \
         another file system or data); it is never written"
    )]
    Foreign { path: String },
    #[error("mke2fs {path} failed: {reason}")]
    Format { path: String, reason: String },
    #[error("creating mount point {path}: {source}")]
    MountPoint {
        path: String,
        source: std::io::Error,
    },
    #[error("mounting {path} on {target}: {source}")]
    Mount {
        path: String,
        target: String,
        source: rustix::io::Errno,
    },
}

/// What the start of a disk says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskContent {
    Blank,
    Ext,
    Other,
}

impl DiskContent {
    pub fn describe(self) -> &'static str {
        match self {
            DiskContent::Blank => "blank",
            DiskContent::Ext => "ext file system",
            DiskContent::Other => "other data",
        }
    }
}

/// Classifies a disk by its first bytes: the ext superblock magic 0xEF53 at byte 1080, all
/// zeros, or anything else.
pub fn classify(head: &[u8]) -> DiskContent {
    if head.get(1080..1082) == Some(&[0x53, 0xEF][..]) {
        DiskContent::Ext
    } else if head.iter().all(|&b| b == 0) {
        DiskContent::Blank
    } else {
        DiskContent::Other
    }
}

/// Where the ext superblock starts on the disk.
const SUPERBLOCK: usize = 1024;
/// `s_uuid` and `s_volume_name` in the superblock (16 bytes each).
const UUID_AT: usize = SUPERBLOCK + 104;
const LABEL_AT: usize = SUPERBLOCK + 120;

/// An ext file system's name for itself, from its superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtIdentity {
    /// The volume label as printable text: bytes up to the first NUL, anything but printable
    /// ASCII (spaces and control characters included) escaped as `\xNN`, so a hostile image
    /// cannot forge console lines; empty when unlabelled.
    pub label: String,
    pub uuid: [u8; 16],
}

impl ExtIdentity {
    /// The UUID as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn uuid_text(&self) -> String {
        uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string()
    }
}

/// The label and UUID of the ext file system whose first bytes are `head`; `None` when `head`
/// is not an ext file system or is too short to hold them.
pub fn ext_identity(head: &[u8]) -> Option<ExtIdentity> {
    if classify(head) != DiskContent::Ext {
        return None;
    }
    let uuid: [u8; 16] = head.get(UUID_AT..UUID_AT + 16)?.try_into().ok()?;
    let raw = head.get(LABEL_AT..LABEL_AT + 16)?;
    let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
    let label = raw
        .iter()
        .map(|&b| match b {
            0x21..=0x7e => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect();
    Some(ExtIdentity { label, uuid })
}

/// What the inventory line says a disk holds: [`DiskContent::describe`], and for an ext file
/// system its label (`-` when none) and UUID.
pub fn describe_head(head: &[u8]) -> String {
    let content = classify(head).describe();
    match ext_identity(head) {
        Some(id) => {
            let label = if id.label.is_empty() { "-" } else { &id.label };
            format!("{content} label {label} uuid {}", id.uuid_text())
        }
        None => content.to_owned(),
    }
}

/// Reads the first [`BLANK_PROBE`] bytes of `device` and classifies them.
pub fn probe(device: &Path) -> Result<DiskContent, DiskError> {
    Ok(classify(&read_head(device)?))
}

/// The first [`BLANK_PROBE`] bytes of `device` (fewer when it is smaller).
pub fn read_head(device: &Path) -> Result<Vec<u8>, DiskError> {
    let read_err = |source| DiskError::Read {
        path: device.display().to_string(),
        source,
    };
    let mut head = vec![0u8; BLANK_PROBE];
    let mut disk = std::fs::File::open(device).map_err(read_err)?;
    let mut n = 0;
    while n < head.len() {
        match disk.read(&mut head[n..]).map_err(read_err)? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    Ok(head)
}

/// A whole disk as `/sys/block` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDisk {
    /// Kernel name (`vda`, `nvme0n1`); the device is `/dev/<name>`.
    pub name: String,
    pub bytes: u64,
    pub removable: bool,
    pub read_only: bool,
    pub partitioned: bool,
    /// The serial the device reports (virtio-blk: the VMM's `serial=`), when it has one.
    pub serial: Option<String>,
}

impl BlockDisk {
    pub fn device(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }
}

/// True for the names of disks a machine may store on: `vd*`, `sd*`, `xvd*`, `nvme<N>n<M>`
/// (not loop, ram, md, dm, sr or partitions).
pub fn is_disk_name(name: &str) -> bool {
    let letters = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase());
    if let Some(rest) = name.strip_prefix("nvme") {
        let mut parts = rest.splitn(2, 'n');
        let digits = |s: Option<&str>| {
            s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        };
        return digits(parts.next()) && digits(parts.next());
    }
    ["vd", "sd", "xvd"]
        .iter()
        .any(|p| name.strip_prefix(p).is_some_and(letters))
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The whole disks listed in a `/sys/block` tree, in name order (shorter names first, so
/// `sdb` comes before `sdaa`).
pub fn list_disks(sys_block: &Path) -> Vec<BlockDisk> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<BlockDisk> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| is_disk_name(name))
        .map(|name| {
            let dir = sys_block.join(&name);
            let flag = |f: &str| read_trimmed(&dir.join(f)).as_deref() == Some("1");
            let sectors: u64 =
                (read_trimmed(&dir.join("size")).and_then(|s| s.parse().ok())).unwrap_or(0);
            let partitioned = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    e.file_name().to_string_lossy().starts_with(name.as_str())
                        && e.path().join("partition").exists()
                });
            BlockDisk {
                bytes: sectors * 512,
                removable: flag("removable"),
                read_only: flag("ro"),
                partitioned,
                serial: read_trimmed(&dir.join("serial")),
                name,
            }
        })
        .collect();
    disks.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    disks
}

/// Why the node agent would not take `disk` on its own, or `None` when it would.
pub fn unsuitable(disk: &BlockDisk) -> Option<&'static str> {
    if disk.removable {
        Some("removable")
    } else if disk.read_only {
        Some("read-only")
    } else if disk.bytes < MIN_AUTO_BYTES {
        Some("smaller than 1 GiB")
    } else if disk.partitioned {
        Some("has partitions")
    } else {
        None
    }
}

/// The disk `mallee.disk=auto` picks from a `/sys/block` tree: the first whole disk that is
/// not removable, not read-only, at least 1 GiB and unpartitioned. Also returns the disks
/// passed over and why.
pub fn choose_auto(sys_block: &Path) -> (Option<BlockDisk>, Vec<(String, &'static str)>) {
    let mut skipped = Vec::new();
    for disk in list_disks(sys_block) {
        match unsuitable(&disk) {
            None => return (Some(disk), skipped),
            Some(why) => skipped.push((disk.name, why)),
        }
    }
    (None, skipped)
}

/// Logs one line per whole disk: size, serial and what it holds, with an ext file system's
/// label and UUID (the operator sees at boot what the machine has; an instance's guest shows
/// its disks the same way, so a test sees that its root image's bytes reached the guest).
pub fn log_inventory(sys_block: &Path) {
    for disk in list_disks(sys_block) {
        let content = read_head(&disk.device())
            .map(|head| describe_head(&head))
            .unwrap_or_else(|e| e.to_string());
        info!(
            "disk {}: {} bytes, serial {}, {content}",
            disk.name,
            disk.bytes,
            disk.serial.as_deref().unwrap_or("-")
        );
    }
}

/// How `mke2fs` is asked to format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// mke2fs's defaults (the journal is zeroed).
    Full,
    /// Inode tables and journal left unwritten (the kernel initialises the inode tables in
    /// the background): a sparse file stays sparse, formatting costs a few MB.
    Lazy,
}

/// The `mke2fs` arguments that make an ext4 file system labelled `label` on `target`.
pub fn mke2fs_args(target: &Path, label: &str, init: Init) -> Vec<String> {
    let mut args: Vec<String> = ["-q", "-F", "-t", "ext4", "-L", label]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if init == Init::Lazy {
        args.extend(["-E".into(), "lazy_itable_init=1,lazy_journal_init=1".into()]);
    }
    args.push(target.display().to_string());
    args
}

/// Runs `mke2fs` (its messages go to the console).
pub fn format_ext4(target: &Path, label: &str, init: Init) -> Result<(), DiskError> {
    let mut command = Command::new(MKE2FS);
    command
        .args(mke2fs_args(target, label, init))
        .stdin(Stdio::null())
        .stdout(log::console_stdio())
        .stderr(log::console_stdio());
    let status = match reaper::spawn_watched(&mut command) {
        Ok((_, exited)) => exited
            .recv()
            .map_err(|_| "lost track of mke2fs".to_string()),
        Err(e) => Err(e.to_string()),
    };
    match status {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!("exit status {code}")),
        Err(e) => Err(e),
    }
    .map_err(|reason| DiskError::Format {
        path: target.display().to_string(),
        reason,
    })
}

fn wait_for_path(path: &Path, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while !path.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Mounts `device` (ext4) on `target`, formatting it first (label `label`) when it is blank;
/// refuses a disk holding anything else. Returns what the disk held before.
pub fn mount_ext4(
    device: &Path,
    target: &Path,
    label: &str,
    init: Init,
) -> Result<DiskContent, DiskError> {
    let path = device.display().to_string();
    if !wait_for_path(device, Duration::from_secs(10)) {
        return Err(DiskError::Missing { path, secs: 10 });
    }
    let content = probe(device)?;
    match content {
        DiskContent::Ext => info!("disk {path}: ext file system found"),
        DiskContent::Other => return Err(DiskError::Foreign { path }),
        DiskContent::Blank => {
            info!("disk {path} is blank: formatting ext4 (label {label})");
            let started = Instant::now();
            format_ext4(device, label, init)?;
            info!(
                "disk {path} formatted in {} ms",
                started.elapsed().as_millis()
            );
        }
    }
    std::fs::create_dir_all(target).map_err(|source| DiskError::MountPoint {
        path: target.display().to_string(),
        source,
    })?;
    rustix::mount::mount(
        device,
        target,
        "ext4",
        rustix::mount::MountFlags::NOATIME,
        c"",
    )
    .map_err(|source| DiskError::Mount {
        path,
        target: target.display().to_string(),
        source,
    })?;
    Ok(content)
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
