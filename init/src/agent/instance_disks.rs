//! An instance's disk files, in its directory: `root.img`, the copy-on-write top the VMM lays
//! over the cached root image (`DiskSource::Overlay`: it starts as one hole of the image's size,
//! so making it costs the same for any image, and the cached image is never written), and
//! `ephemeral0.img`, the empty ext4 disk of the size the instance type names (the guest's second
//! disk). Both are sparse: a launch must find free only what it writes when making them
//! ([`creation_bytes`]); what the guest writes later comes out of the same file system (a tmpfs
//! or the node's disk, see [`super::storage`]), never the node's root.

use crate::disk::{self, DiskError};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::info;

/// File name of the root disk in the instance directory.
pub const ROOT: &str = "root.img";
/// File name of the ephemeral disk in the instance directory.
pub const EPHEMERAL: &str = "ephemeral0.img";
/// The ephemeral disk's label and virtio serial.
pub const EPHEMERAL_LABEL: &str = "ephemeral0";

/// Why an instance disk could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InstanceDiskError {
    #[error(
        "not enough room for the instance disks in {dir}: making them needs {needed_mib} MiB, \
         {free_mib} MiB free"
    )]
    NoRoom {
        dir: PathBuf,
        needed_mib: u64,
        free_mib: u64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("formatting the ephemeral disk: {0}")]
    Format(#[from] DiskError),
}

/// Bytes making an instance's disks writes: nothing for the root's top (a hole), and, for an
/// ephemeral disk of `ephemeral_gib`, what a lazy mke2fs writes: about 1/512 of the size (group
/// descriptors, bitmaps, the root directory) plus 4 MiB, rounded up generously (a 5 GiB one
/// took 2.7 MiB with e2fsprogs 1.47).
pub fn creation_bytes(ephemeral_gib: u64) -> u64 {
    match ephemeral_gib {
        0 => 0,
        g => (g << 30) / 512 + (4 << 20),
    }
}

/// Checks that `needed` bytes fit in `free` (bytes the instances may still take in `dir`).
pub fn check_room(dir: &Path, needed: u64, free: u64) -> Result<(), InstanceDiskError> {
    if needed > free {
        return Err(InstanceDiskError::NoRoom {
            dir: dir.to_path_buf(),
            needed_mib: needed.div_ceil(1 << 20),
            free_mib: free >> 20,
        });
    }
    Ok(())
}

/// Makes `dir/root.img`, an empty copy-on-write top over the cached image at `base`: a hole of
/// the image's size (replacing a top left from an earlier run of the instance). Returns its
/// path.
pub fn make_root(base: &Path, dir: &Path) -> Result<PathBuf, InstanceDiskError> {
    let path = dir.join(ROOT);
    let io = |source| InstanceDiskError::Io {
        path: path.clone(),
        source,
    };
    let started = Instant::now();
    let size = std::fs::metadata(base)
        .map_err(|source| InstanceDiskError::Io {
            path: base.to_path_buf(),
            source,
        })?
        .len();
    let top = std::fs::File::create(&path).map_err(io)?;
    top.set_len(size).map_err(io)?;
    top.sync_all().map_err(io)?;
    info!(
        "agent: {} made over {} ({} MiB) in {} us",
        path.display(),
        base.display(),
        size >> 20,
        started.elapsed().as_micros()
    );
    Ok(path)
}

/// Makes `dir/ephemeral0.img`: a sparse file of `gib` GiB holding an empty ext4 file system
/// labelled `ephemeral0`. Returns its path.
pub fn make_ephemeral(dir: &Path, gib: u64) -> Result<PathBuf, InstanceDiskError> {
    let path = dir.join(EPHEMERAL);
    let io = |source| InstanceDiskError::Io {
        path: path.clone(),
        source,
    };
    let started = Instant::now();
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(gib << 30))
        .map_err(io)?;
    disk::format_ext4(&path, EPHEMERAL_LABEL, disk::Init::Lazy)?;
    info!(
        "agent: {} {gib} GiB formatted in {} ms",
        path.display(),
        started.elapsed().as_millis()
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_top_is_one_hole_of_its_image_s_size_whatever_the_size() {
        // 32 MiB and 2 GiB images (sparse here: the top does not read them): making the top
        // writes no data block for either, so it costs the same.
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in [("small", 32u64 << 20), ("large", 2 << 30)] {
            let base = dir.path().join(name);
            std::fs::File::create(&base).unwrap().set_len(size).unwrap();
            let inst = dir.path().join(format!("i-{name}"));
            std::fs::create_dir(&inst).unwrap();
            std::fs::write(inst.join(ROOT), b"an earlier run's top").unwrap();
            let top = make_root(&base, &inst).unwrap();
            assert_eq!(top, inst.join(ROOT));
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&top).unwrap();
            assert_eq!(meta.len(), size, "{name}");
            assert_eq!(meta.blocks(), 0, "{name}: the top holds data");
        }
        let err = make_root(&dir.path().join("none"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn a_launch_that_does_not_fit_names_the_room() {
        let need = creation_bytes(5);
        assert!(need > 4 << 20 && need < 32 << 20, "{need}");
        assert_eq!(creation_bytes(0), 0, "the root's top is a hole");
        check_room(Path::new("/i"), need, need).unwrap();
        let err = check_room(Path::new("/i"), need, 10 << 20).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("not enough room") && text.contains("10 MiB free"),
            "{text}"
        );
    }
}
