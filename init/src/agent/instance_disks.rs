//! An instance's disk files, in its directory: `root.img`, a sparse copy of the cached root
//! image, and `ephemeral0.img`, the empty ext4 disk of the size the instance type names (the
//! guest's second disk). Both are sparse: a launch must find free only what it writes when
//! making them ([`creation_bytes`]); what the guest writes later comes out of the same file
//! system (a tmpfs or the node's disk, see [`super::storage`]), never the node's root.

use crate::disk::{self, DiskError};
use std::io::{Read, Seek, SeekFrom, Write};
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

/// Bytes making an instance's disks writes: the root image's size (its copy is sparse, so at
/// most that) and, for an ephemeral disk of `ephemeral_gib`, what a lazy mke2fs writes: about
/// 1/512 of the size (group descriptors, bitmaps, the root directory) plus 4 MiB, rounded up
/// generously (a 5 GiB one took 2.7 MiB with e2fsprogs 1.47).
pub fn creation_bytes(root_bytes: u64, ephemeral_gib: u64) -> u64 {
    let ephemeral = match ephemeral_gib {
        0 => 0,
        g => (g << 30) / 512 + (4 << 20),
    };
    root_bytes + ephemeral
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

/// Copies `src` to `dst`, leaving holes where `src` has all-zero blocks.
pub fn sparse_copy(src: &Path, dst: &Path) -> std::io::Result<u64> {
    let mut input = std::fs::File::open(src)?;
    let mut out = std::fs::File::create(dst)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut len = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(n as i64))?;
        } else {
            out.write_all(&buf[..n])?;
        }
        len += n as u64;
    }
    out.set_len(len)?;
    Ok(len)
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
    fn sparse_copy_keeps_content_and_leaves_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("a"), dir.path().join("b"));
        let mut data = vec![0u8; 4 << 20];
        data[100] = 1;
        data[(4 << 20) - 1] = 2;
        std::fs::write(&src, &data).unwrap();
        assert_eq!(sparse_copy(&src, &dst).unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&dst).unwrap().blocks();
        assert!(
            blocks * 512 < 1 << 20,
            "copy is not sparse: {blocks} blocks"
        );
    }

    #[test]
    fn a_launch_that_does_not_fit_names_the_room() {
        let need = creation_bytes(16 << 20, 5);
        assert!(need > 16 << 20 && need < 64 << 20, "{need}");
        assert_eq!(creation_bytes(16 << 20, 0), 16 << 20);
        check_room(Path::new("/i"), need, need).unwrap();
        let err = check_room(Path::new("/i"), need, 10 << 20).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("not enough room") && text.contains("10 MiB free"),
            "{text}"
        );
    }
}
