//! The two files of the storage directory, each written whole under a temporary name and
//! renamed into place so no reader ever sees half of one: [`EXPORTS_FILE`] (the daemon's) and
//! [`APPLIED_FILE`] (the controller's). The controller runs as root in a directory the daemon
//! owns, so its side opens nothing through a symlink, reads only bounded regular files and
//! writes only a temporary file it created itself.

use super::{io_err, StorageError};
use mallee_proto::handoff::{read_bounded, replace};
use mallee_proto::storage::{Applied, Exports, APPLIED_FILE, EXPORTS_FILE};
use std::path::Path;

/// The largest exports file read (about 50,000 exports).
const MAX_FILE: u64 = 16 << 20;
const EXPORTS_TEMP: &str = ".exports.json.tmp";
const APPLIED_TEMP: &str = ".applied.json.controller-tmp";

/// Hands `exports` to the storage controller: writes it into `dir` (made if missing) whole.
pub fn write_exports(dir: &Path, exports: &Exports) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // Plain strings, numbers and paths: serializing cannot fail.
    let bytes = serde_json::to_vec_pretty(exports).unwrap_or_default();
    Ok(replace(dir, EXPORTS_TEMP, EXPORTS_FILE, &bytes)?)
}

/// What the controller serves, when it has answered yet.
pub fn read_applied(dir: &Path) -> Result<Option<Applied>, StorageError> {
    let path = dir.join(APPLIED_FILE);
    match read_bounded(&path, MAX_FILE) {
        Ok((bytes, _)) => Ok(Some(parse(&path, &bytes)?)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The exports file and the metadata of what was read (its owner, its version).
pub(crate) fn read_exports(dir: &Path) -> Result<(Exports, std::fs::Metadata), StorageError> {
    let path = dir.join(EXPORTS_FILE);
    let (bytes, meta) = read_bounded(&path, MAX_FILE)?;
    Ok((parse(&path, &bytes)?, meta))
}

/// Answers the daemon: [`APPLIED_FILE`] in `dir`, mode 0644 (root's, readable by the daemon).
pub(crate) fn write_applied(dir: &Path, applied: &Applied) -> Result<(), StorageError> {
    let text = serde_json::to_vec_pretty(applied).unwrap_or_default();
    Ok(replace(dir, APPLIED_TEMP, APPLIED_FILE, &text)?)
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|source| StorageError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mallee_proto::storage::{ExportState, VolumeExport};
    use mallee_proto::Mac;
    use std::os::unix::fs::MetadataExt;

    fn exports() -> Exports {
        Exports {
            generation: 4,
            interface: "eth1".into(),
            exports: vec![VolumeExport {
                volume_id: "vol-1".into(),
                path: "/data/vol-1".into(),
                shelf: 1,
                slot: 2,
                allowed: vec![Mac([2, 0, 0, 0, 0, 1])],
            }],
        }
    }

    #[test]
    fn written_exports_read_back_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        write_exports(&storage, &exports()).unwrap();
        let (read, meta) = read_exports(&storage).unwrap();
        assert_eq!(read, exports());
        assert!(meta.is_file());
        let names: Vec<_> = std::fs::read_dir(&storage)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [EXPORTS_FILE]);
    }

    #[test]
    fn applied_is_none_until_answered_then_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_applied(dir.path()).unwrap(), None);
        let applied = Applied {
            generation: 4,
            exports: vec![ExportState {
                volume_id: "vol-1".into(),
                shelf: 1,
                slot: 2,
                error: None,
            }],
            error: None,
        };
        write_applied(dir.path(), &applied).unwrap();
        assert_eq!(read_applied(dir.path()).unwrap(), Some(applied));
        let mode = std::fs::metadata(dir.path().join(APPLIED_FILE))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_symlinked_or_garbled_exports_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), b"{}").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join(EXPORTS_FILE)).unwrap();
        assert!(matches!(
            read_exports(dir.path()),
            Err(StorageError::Handoff(_))
        ));
        std::fs::remove_file(dir.path().join(EXPORTS_FILE)).unwrap();
        std::fs::write(dir.path().join(EXPORTS_FILE), b"{\"generation\":").unwrap();
        assert!(matches!(
            read_exports(dir.path()),
            Err(StorageError::Parse { .. })
        ));
    }
}
