//! Files handed between the appliance's unprivileged daemon and a root process that acts on
//! them (init applying the gateway, the storage controller serving volume exports), in a
//! directory the daemon owns: reading one without following a symlink, blocking on a FIFO or
//! reading without bound; telling one version of a file from the next; and writing a file whole
//! through a fresh temporary file (never one the directory's owner prepared) renamed into place.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A handed-over file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
}

impl HandoffError {
    /// Whether it says the file is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, HandoffError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HandoffError + '_ {
    move |source| HandoffError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `O_NOFOLLOW | O_NONBLOCK`: no symlink at the last component, no waiting on a FIFO.
pub const NO_FOLLOW: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// What identifies one version of a file: a rename brings a new inode, a rewrite in place a
/// new modification time or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    size: u64,
}

impl Version {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            size: meta.size(),
        }
    }
}

/// The bytes of `path` and its metadata, if it is a regular file of at most `limit` bytes,
/// opened with [`NO_FOLLOW`].
pub fn read_bounded(path: &Path, limit: u64) -> Result<(Vec<u8>, std::fs::Metadata), HandoffError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(NO_FOLLOW)
        .open(path)
        .map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(HandoffError::NotAFile {
            path: path.to_owned(),
        });
    }
    if meta.size() > limit {
        return Err(HandoffError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    let mut bytes = Vec::new();
    (file.take(limit))
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    Ok((bytes, meta))
}

/// Writes `bytes` as `dir/name`, mode 0644: into a fresh `dir/temp` (an old one is removed, the
/// new one created exclusively), made durable, then renamed into place.
pub fn replace(dir: &Path, temp: &str, name: &str, bytes: &[u8]) -> Result<(), HandoffError> {
    let temp = dir.join(temp);
    match std::fs::remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&temp)(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp)
        .map_err(io_err(&temp))?;
    file.write_all(bytes).map_err(io_err(&temp))?;
    // The process umask may have narrowed the mode; the other side must be able to read it.
    (file.set_permissions(std::fs::Permissions::from_mode(0o644)))
        .and_then(|()| file.sync_data())
        .map_err(io_err(&temp))?;
    let dest = dir.join(name);
    std::fs::rename(&temp, &dest).map_err(io_err(&dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_whole_and_symlinks_fifos_and_big_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        replace(dir.path(), ".t", "f.json", b"{}").unwrap();
        let (bytes, meta) = read_bounded(&dir.path().join("f.json"), 16).unwrap();
        assert_eq!(bytes, b"{}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert!(!dir.path().join(".t").exists());
        std::os::unix::fs::symlink("f.json", dir.path().join("link")).unwrap();
        assert!(matches!(
            read_bounded(&dir.path().join("link"), 16),
            Err(HandoffError::Io { .. })
        ));
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(
            read_bounded(&fifo, 16),
            Err(HandoffError::NotAFile { .. })
        ));
        assert!(matches!(
            read_bounded(&dir.path().join("f.json"), 1),
            Err(HandoffError::TooLarge { limit: 1, .. })
        ));
        assert!(read_bounded(&dir.path().join("none"), 1)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn a_prepared_temporary_file_is_replaced_not_written_through_and_versions_differ() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(".t")).unwrap();
        replace(dir.path(), ".t", "f", b"one").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let v1 = Version::of(&std::fs::metadata(dir.path().join("f")).unwrap());
        replace(dir.path(), ".t", "f", b"two").unwrap();
        let v2 = Version::of(&std::fs::metadata(dir.path().join("f")).unwrap());
        assert_ne!(v1, v2);
    }
}
