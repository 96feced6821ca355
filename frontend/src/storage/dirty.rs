//! The record of the chunks written to each volume since its last snapshot was copied
//! (`<volume id>.dirty.json` in the storage directory), which lets a later snapshot read only
//! those. The controller keeps it: it marks the record open before an export starts and, when
//! the export stops, adds the target's [`DirtyMap`](mallee_aoe::target::DirtyMap) and closes
//! it. A record left open (a controller that ended without stopping its exports) or that does
//! not parse is lost: only a full read is right then, as with QEMU's persistent dirty bitmaps
//! after an unclean stop. The keeper removes the record when it copies a snapshot, while no
//! export serves the volume. No record means nothing was written since.

use super::{io_err, StorageError};
use mallee_proto::handoff::{read_bounded, replace};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The largest record read (a 1 TiB volume written in every other chunk, as ranges).
const MAX_RECORD: u64 = 64 << 20;

/// The chunks of one volume written since its last snapshot was copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirtyRecord {
    /// An export serves the volume: what it writes is not in `ranges` yet.
    pub open: bool,
    /// Some writes were never recorded: the record cannot tell what changed.
    pub lost: bool,
    /// The bytes of one chunk.
    pub chunk_bytes: u64,
    /// The written chunks, as `[start, end)` index ranges, in order and apart.
    pub ranges: Vec<(u64, u64)>,
}

impl DirtyRecord {
    /// A record of nothing written, in chunks of `chunk_bytes`.
    pub fn new(chunk_bytes: u64) -> Self {
        DirtyRecord {
            chunk_bytes,
            ..Self::default()
        }
    }

    /// Whether the record names every chunk written: closed, nothing lost.
    pub fn complete(&self) -> bool {
        !self.open && !self.lost
    }

    /// The written chunks' indices, lowest first.
    pub fn chunks(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(start, end)| start..end)
    }

    /// Adds `chunks` (indices, lowest first) to the record.
    pub fn add(&mut self, chunks: &[u64]) {
        let mut all: Vec<(u64, u64)> = self.ranges.clone();
        all.extend(chunks.iter().map(|&c| (c, c + 1)));
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
    }
}

/// The record's file name, for a volume id made only of letters, digits and dashes (the
/// controller, as root, writes no other name).
fn file_name(volume_id: &str) -> Option<String> {
    let safe = !volume_id.is_empty()
        && (volume_id.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'-');
    safe.then(|| format!("{volume_id}.dirty.json"))
}

/// The record of `volume_id` in `dir`: `None` when there is none (nothing written since the
/// last copy); one that does not parse is lost.
pub fn read(dir: &Path, volume_id: &str) -> Result<Option<DirtyRecord>, StorageError> {
    let Some(name) = file_name(volume_id) else {
        return Ok(Some(lost()));
    };
    match read_bounded(&dir.join(name), MAX_RECORD) {
        Ok((bytes, _)) => Ok(Some(
            serde_json::from_slice(&bytes).unwrap_or_else(|_| lost()),
        )),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn lost() -> DirtyRecord {
    DirtyRecord {
        lost: true,
        ..DirtyRecord::default()
    }
}

/// Writes the record of `volume_id` into `dir` whole.
pub fn write(dir: &Path, volume_id: &str, record: &DirtyRecord) -> Result<(), StorageError> {
    let Some(name) = file_name(volume_id) else {
        return Err(StorageError::Io {
            path: dir.join(volume_id),
            source: std::io::Error::other("not a volume id"),
        });
    };
    let bytes = serde_json::to_vec(record).unwrap_or_default();
    Ok(replace(dir, &format!(".{name}.tmp"), &name, &bytes)?)
}

/// Removes the record of `volume_id` (the keeper, once a snapshot's copy is made).
pub fn clear(dir: &Path, volume_id: &str) -> Result<(), StorageError> {
    let Some(name) = file_name(volume_id) else {
        return Ok(());
    };
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_merge_into_ranges() {
        let mut r = DirtyRecord::new(512 * 1024);
        r.add(&[0, 1, 2, 7]);
        r.add(&[3, 9, 10]);
        r.add(&[]);
        assert_eq!(r.ranges, [(0, 4), (7, 8), (9, 11)]);
        assert_eq!(r.chunks().collect::<Vec<_>>(), [0, 1, 2, 3, 7, 9, 10]);
    }

    #[test]
    fn a_record_reads_back_a_garbled_one_is_lost_and_cleared_means_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), "vol-1").unwrap(), None);
        let mut r = DirtyRecord::new(4096);
        r.open = true;
        r.add(&[5]);
        write(dir.path(), "vol-1", &r).unwrap();
        assert_eq!(read(dir.path(), "vol-1").unwrap(), Some(r.clone()));
        assert!(!r.complete());
        std::fs::write(dir.path().join("vol-1.dirty.json"), b"{\"open\":").unwrap();
        assert!(read(dir.path(), "vol-1").unwrap().unwrap().lost);
        clear(dir.path(), "vol-1").unwrap();
        clear(dir.path(), "vol-1").unwrap();
        assert_eq!(read(dir.path(), "vol-1").unwrap(), None);
        // A name that is not a volume id is never written, and reads as lost.
        assert!(write(dir.path(), "../x", &r).is_err());
        assert!(read(dir.path(), "../x").unwrap().unwrap().lost);
    }
}
