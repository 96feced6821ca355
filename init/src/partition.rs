//! GPT partitions of the appliance's own disk: finding one by its label (`PARTLABEL=NAME` on
//! the command line, as the flashable image names its data partition), and growing the last
//! partition to the end of a disk bigger than the image that was flashed onto it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("no partition labelled {label} appeared in {secs} s")]
    NotFound { label: String, secs: u64 },
    #[error("{disk}: {source}")]
    Io {
        disk: String,
        source: std::io::Error,
    },
    #[error("{disk}: partition table: {source}")]
    Gpt { disk: String, source: gptman::Error },
    #[error("{disk}: partition {number} is not the last one; it cannot grow")]
    NotLast { disk: String, number: u32 },
}

/// A partition and the disk it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// `/dev/vda2`.
    pub device: PathBuf,
    /// `/dev/vda`.
    pub disk: PathBuf,
    /// Its number in the table (`PARTN`), 1-based.
    pub number: u32,
}

/// The `KEY=value` of a sysfs `uevent` file.
fn uevent_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The partition whose GPT name is `label`, from the block devices under `sys_class_block`
/// (normally `/sys/class/block`); device paths are under `/dev`.
pub fn find_by_label(sys_class_block: &Path, label: &str) -> Option<Partition> {
    let mut found: Vec<Partition> = std::fs::read_dir(sys_class_block)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let uevent = std::fs::read_to_string(entry.path().join("uevent")).ok()?;
            if uevent_field(&uevent, "DEVTYPE")? != "partition"
                || uevent_field(&uevent, "PARTNAME")? != label
            {
                return None;
            }
            let name = uevent_field(&uevent, "DEVNAME")?;
            // /sys/class/block/vda2 links to .../block/vda/vda2: the parent is the disk.
            let real = std::fs::canonicalize(entry.path()).ok()?;
            let disk = real.parent()?.file_name()?.to_str()?.to_string();
            Some(Partition {
                device: Path::new("/dev").join(name),
                disk: Path::new("/dev").join(disk),
                number: uevent_field(&uevent, "PARTN")?.parse().ok()?,
            })
        })
        .collect();
    // Two disks flashed with the same image: take the first by name, predictably.
    found.sort_by(|a, b| a.device.cmp(&b.device));
    found.into_iter().next()
}

/// Waits for the partition labelled `label` (disks appear while their drivers probe).
pub fn wait_for_label(label: &str, patience: Duration) -> Result<Partition, PartitionError> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(p) = find_by_label(Path::new("/sys/class/block"), label) {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            return Err(PartitionError::NotFound {
                label: label.to_string(),
                secs: patience.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A partition's size before and after growing, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    pub before: u64,
    pub after: u64,
}

/// Alignment of the grown partition's end (1 MiB in 512-byte sectors).
const ALIGN_SECTORS: u64 = 2048;

/// Grows partition `number` of the GPT on `disk` (a block device or an image file) to the end
/// of the disk: moves the backup table to the disk's real end, extends the partition to the
/// last usable sector (1 MiB aligned) and rewrites both tables and the protective MBR. Only the
/// last partition can grow. `None` when there is no room to gain.
pub fn grow_to_disk_end(disk: &Path, number: u32) -> Result<Option<Growth>, PartitionError> {
    let name = disk.display().to_string();
    let io = |source| PartitionError::Io {
        disk: name.clone(),
        source,
    };
    let gpt_err = |source| PartitionError::Gpt {
        disk: name.clone(),
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .map_err(io)?;
    let mut gpt = gptman::GPT::find_from(&mut f).map_err(gpt_err)?;
    let sector = gpt.sector_size;
    let last_end = (gpt.iter().filter(|(_, p)| p.is_used()))
        .map(|(_, p)| p.ending_lba)
        .max()
        .unwrap_or(0);
    let used = gpt.iter().any(|(i, p)| i == number && p.is_used());
    if !used || gpt[number].ending_lba != last_end {
        return Err(PartitionError::NotLast {
            disk: name.clone(),
            number,
        });
    }
    gpt.header.update_from(&mut f, sector).map_err(gpt_err)?;
    let end = (gpt.header.last_usable_lba + 1) / ALIGN_SECTORS * ALIGN_SECTORS - 1;
    let p = &gpt[number];
    let before = (p.ending_lba + 1 - p.starting_lba) * sector;
    if end <= p.ending_lba {
        return Ok(None);
    }
    gpt[number].ending_lba = end;
    let after = (end + 1 - gpt[number].starting_lba) * sector;
    gpt.write_into(&mut f).map_err(gpt_err)?;
    gptman::GPT::write_protective_mbr_into(&mut f, sector).map_err(gpt_err)?;
    f.sync_all().map_err(io)?;
    if f.metadata().map_err(io)?.file_type().is_block_device() {
        reread_partitions(&f).map_err(io)?;
    }
    Ok(Some(Growth { before, after }))
}

/// Tells the kernel to read the disk's partition table again (`BLKRRPART`); it refuses while
/// any partition of the disk is open.
fn reread_partitions(disk: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `_IO(0x12, 95)` from <linux/fs.h>.
    const BLKRRPART: libc::c_ulong = 0x125f;
    // SAFETY: BLKRRPART takes no argument; the fd is an open block device owned by `disk`.
    let r = unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART as _, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
