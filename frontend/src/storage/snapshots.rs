//! EBS snapshots in Walrus: a volume's point-in-time copy cut into 512 KiB chunks, each stored
//! once as the object `chunks/<sha256>` of the snapshot bucket (all-zero chunks not at all), and
//! a manifest `manifests/<snapshot id>.json` naming the chunk at each index. A later snapshot of
//! the same volume stores only the chunks that changed (any chunk already stored is found by
//! its name). An incremental snapshot reads only the chunks written since its base snapshot:
//! [`begin_incremental`] writes its manifest at once with the base's other chunks and the
//! written ones `pending`, and [`take`] reads just those (while pending, the manifest keeps the
//! base's chunks from being freed with the base). Restoring writes the manifest's chunks into a sparse file, and
//! [`SnapshotReader`] reads a few bytes in place (an image's root); deleting a snapshot
//! removes its manifest and the chunks no other manifest names. Everything here is blocking
//! file and SQLite work; one snapshot operation runs at a time (the caller's lock), so a chunk
//! found present is not deleted under a snapshot that counts on it.

use crate::store::{ObjectRow, Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The bucket snapshots live in, owned by the admin user.
pub const BUCKET: &str = "mallee-snapshots";
/// The bytes of one chunk.
pub const CHUNK: usize = 512 * 1024;
/// The owner of [`BUCKET`].
const OWNER: &str = "admin";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("bucket {BUCKET} belongs to {0}, not the admin: rename it, snapshots need it")]
    BucketTaken(String),
    #[error("snapshot {0} has no manifest in {BUCKET}")]
    NoManifest(String),
    #[error("manifest of snapshot {id} does not parse: {source}")]
    BadManifest {
        id: String,
        source: serde_json::Error,
    },
    #[error("chunk {sha} of snapshot {id} is missing or damaged in {BUCKET}")]
    BadChunk { id: String, sha: String },
    #[error("snapshot {0} is not completed: its chunks are still being stored")]
    NotCompleted(String),
    #[error("snapshot {base} cannot be the base of {id}: {why}")]
    BadBase {
        id: String,
        base: String,
        why: &'static str,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// A snapshot's list of chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub snapshot_id: String,
    pub volume_id: String,
    pub size_bytes: u64,
    pub chunk_bytes: u64,
    /// `(index, sha256)` of every chunk that is not all zeros, by index.
    pub chunks: Vec<(u64, String)>,
    /// Chunks still to be read from the snapshot's copy (an incremental snapshot being taken);
    /// `None` once the snapshot is whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<u64>>,
}

/// What taking a snapshot stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    /// Chunks that are not all zeros.
    pub chunks: u64,
    /// Of those, the ones not stored before (by this or another snapshot).
    pub new_chunks: u64,
    /// Bytes written to Walrus: the new chunks and the manifest.
    pub stored_bytes: u64,
    /// Bytes read from the volume's copy.
    pub read_bytes: u64,
}

fn chunk_key(sha: &str) -> String {
    format!("chunks/{sha}")
}

fn manifest_key(id: &str) -> String {
    format!("manifests/{id}.json")
}

/// Makes the snapshot bucket unless it exists; refuses one a user made.
pub fn ensure_bucket(store: &Store) -> Result<(), SnapshotError> {
    match store.bucket(BUCKET)? {
        Some(b) if b.owner == OWNER => Ok(()),
        Some(b) => Err(SnapshotError::BucketTaken(b.owner)),
        None => match store.create_bucket(BUCKET, OWNER) {
            Ok(_) | Err(StoreError::BucketExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        },
    }
}

fn put(store: &Store, key: &str, data: &[u8]) -> Result<u64, SnapshotError> {
    let blobs = store.blobs();
    let at = blobs.path("");
    let mut w = blobs.writer().map_err(io("writing a blob in", &at))?;
    w.write(data).map_err(io("writing a blob in", &at))?;
    let blob = w.finish().map_err(io("writing a blob in", &at))?;
    let etag = format!("\"{}\"", blob.md5_hex);
    store.put_object(BUCKET, &ObjectRow::new(key, &blob, etag, None, Vec::new()))?;
    Ok(blob.size)
}

/// Starts incremental snapshot `snapshot_id` of `volume_id` (`size_bytes` long) on completed
/// snapshot `base` of the same size: its manifest names the base's chunks but those in
/// `written` (indices, lowest first), which are `pending` until [`take`] reads them.
pub fn begin_incremental(
    store: &Store,
    snapshot_id: &str,
    volume_id: &str,
    size_bytes: u64,
    base: &str,
    written: &[u64],
) -> Result<(), SnapshotError> {
    let b = manifest(store, base)?;
    let why = if b.pending.is_some() {
        Some("it is not completed")
    } else if b.size_bytes != size_bytes || b.chunk_bytes != CHUNK as u64 {
        Some("its size or chunk size differs")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(SnapshotError::BadBase {
            id: snapshot_id.to_string(),
            base: base.to_string(),
            why,
        });
    }
    let chunks = (b.chunks.into_iter())
        .filter(|(index, _)| written.binary_search(index).is_err())
        .collect();
    let m = Manifest {
        snapshot_id: snapshot_id.to_string(),
        volume_id: volume_id.to_string(),
        size_bytes,
        chunk_bytes: CHUNK as u64,
        chunks,
        pending: Some(written.to_vec()),
    };
    put(
        store,
        &manifest_key(snapshot_id),
        &serde_json::to_vec(&m).unwrap_or_default(),
    )?;
    Ok(())
}

/// Cuts the point-in-time copy `source` of `volume_id` into chunks stored in Walrus and writes
/// the manifest of `snapshot_id`; calls `progress` with the percentage done after each chunk.
/// When [`begin_incremental`] started the snapshot, only its pending chunks are read from
/// `source`; else every chunk that holds data.
pub fn take(
    store: &Store,
    source: &Path,
    snapshot_id: &str,
    volume_id: &str,
    mut progress: impl FnMut(u8),
) -> Result<Taken, SnapshotError> {
    ensure_bucket(store)?;
    let mut file = std::fs::File::open(source).map_err(io("opening", source))?;
    let size = file.metadata().map_err(io("reading", source))?.len();
    let count = size.div_ceil(CHUNK as u64);
    let started = match manifest(store, snapshot_id) {
        Ok(m) if m.pending.is_some() && m.size_bytes == size => Some(m),
        Ok(_) | Err(SnapshotError::NoManifest(_)) => None,
        Err(e) => return Err(e),
    };
    let (mut chunks, to_read): (Vec<(u64, String)>, Vec<u64>) = match started {
        Some(m) => (m.chunks, m.pending.unwrap_or_default()),
        None => {
            // Chunks wholly in holes are zeros: only those that hold data are read.
            let extents = data_extents(&file).map_err(io("reading", source))?;
            let with_data = |index: &u64| {
                let (start, end) = (index * CHUNK as u64, (index + 1) * CHUNK as u64);
                extents.iter().any(|(s, e)| *s < end && *e > start)
            };
            (Vec::new(), (0..count).filter(with_data).collect())
        }
    };
    let mut buf = vec![0u8; CHUNK];
    let mut taken = Taken {
        chunks: chunks.len() as u64,
        ..Taken::default()
    };
    let mut last_pct = 0;
    let total = to_read.len() as u64;
    for (done, index) in to_read.into_iter().filter(|i| *i < count).enumerate() {
        let len = (size - index * CHUNK as u64).min(CHUNK as u64) as usize;
        file.seek(SeekFrom::Start(index * CHUNK as u64))
            .map_err(io("reading", source))?;
        file.read_exact(&mut buf[..len])
            .map_err(io("reading", source))?;
        taken.read_bytes += len as u64;
        let data = &buf[..len];
        let pct = ((done as u64 + 1) * 99 / total.max(1)) as u8;
        if pct != last_pct {
            last_pct = pct;
            progress(pct);
        }
        if data.iter().all(|b| *b == 0) {
            continue;
        }
        let sha = hex::encode(Sha256::digest(data));
        taken.chunks += 1;
        if store.object(BUCKET, &chunk_key(&sha))?.is_none() {
            taken.stored_bytes += put(store, &chunk_key(&sha), data)?;
            taken.new_chunks += 1;
        }
        chunks.push((index, sha));
    }
    chunks.sort_unstable_by_key(|(index, _)| *index);
    let manifest = Manifest {
        snapshot_id: snapshot_id.to_string(),
        volume_id: volume_id.to_string(),
        size_bytes: size,
        chunk_bytes: CHUNK as u64,
        chunks,
        pending: None,
    };
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    taken.stored_bytes += put(store, &manifest_key(snapshot_id), &bytes)?;
    progress(100);
    Ok(taken)
}

/// The byte ranges of `file` that hold data (`SEEK_DATA`/`SEEK_HOLE`): everything outside
/// them reads as zeros. A file system that does not know holes reports the whole file.
pub fn data_extents(file: &std::fs::File) -> std::io::Result<Vec<(u64, u64)>> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let len = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < len {
        let Ok(data) = lseek(fd, at as i64, Whence::SeekData) else {
            break; // ENXIO: no data after `at`
        };
        let hole = lseek(fd, data, Whence::SeekHole).map_or(len, |h| h as u64);
        out.push((data as u64, hole.min(len)));
        at = hole;
    }
    Ok(out)
}

/// The manifest of completed snapshot `snapshot_id`.
fn completed(store: &Store, snapshot_id: &str) -> Result<Manifest, SnapshotError> {
    let m = manifest(store, snapshot_id)?;
    match m.pending {
        Some(_) => Err(SnapshotError::NotCompleted(snapshot_id.to_string())),
        None => Ok(m),
    }
}

/// The manifest of `snapshot_id`.
pub fn manifest(store: &Store, snapshot_id: &str) -> Result<Manifest, SnapshotError> {
    let row = (store.object(BUCKET, &manifest_key(snapshot_id))?)
        .ok_or_else(|| SnapshotError::NoManifest(snapshot_id.to_string()))?;
    let path = store.blobs().path(&row.blob);
    let bytes = (store.blob_file(&row.blob))
        .and_then(std::fs::read)
        .map_err(io("reading", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| SnapshotError::BadManifest {
        id: snapshot_id.to_string(),
        source,
    })
}

/// A completed snapshot read in place, a few bytes at a time (to name an image's root without
/// restoring it): each read goes through the manifest to the chunk files; a chunk the
/// manifest does not name is zeros; past the snapshot's size is the end of the image. Chunks
/// are not checked against their names here (the bytes are only ever a hint).
pub struct SnapshotReader<'a> {
    store: &'a Store,
    manifest: Manifest,
}

impl<'a> SnapshotReader<'a> {
    pub fn open(store: &'a Store, snapshot_id: &str) -> Result<Self, SnapshotError> {
        let mut manifest = completed(store, snapshot_id)?;
        manifest.chunks.sort_unstable_by_key(|(index, _)| *index);
        Ok(SnapshotReader { store, manifest })
    }

    /// Fills `buf` from chunk `index`, at `within` bytes into it.
    fn read_chunk(&self, index: u64, within: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let chunks = &self.manifest.chunks;
        let Ok(at) = chunks.binary_search_by_key(&index, |(i, _)| *i) else {
            buf.fill(0); // all zeros: never stored
            return Ok(());
        };
        let key = chunk_key(&chunks[at].1);
        let row = (self.store.object(BUCKET, &key))
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other(format!("{BUCKET}/{key} is missing")))?;
        let file = std::fs::File::open(self.store.blob_file(&row.blob)?)?;
        // The last chunk may be short: what it lacks up to the snapshot's size is zeros.
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], within + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        buf[done..].fill(0);
        Ok(())
    }
}

impl mallee_proto::root_device::ReadAt for SnapshotReader<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let m = &self.manifest;
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > m.size_bytes) || m.chunk_bytes == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let mut at = offset;
        for piece in buf.chunks_mut(m.chunk_bytes as usize) {
            // A piece no longer than a chunk spans at most two of them.
            let (index, within) = (at / m.chunk_bytes, at % m.chunk_bytes);
            let first = (piece.len() as u64).min(m.chunk_bytes - within) as usize;
            let (head, tail) = piece.split_at_mut(first);
            self.read_chunk(index, within, head)?;
            if !tail.is_empty() {
                self.read_chunk(index + 1, 0, tail)?;
            }
            at += piece.len() as u64;
        }
        Ok(())
    }
}

/// Writes snapshot `snapshot_id` into `dest`, a sparse file of `size_bytes` (at least the
/// snapshot's size); every chunk is checked against its name as it is read.
pub fn restore(
    store: &Store,
    snapshot_id: &str,
    dest: &Path,
    size_bytes: u64,
) -> Result<(), SnapshotError> {
    let m = completed(store, snapshot_id)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dest)
        .map_err(io("creating", dest))?;
    file.set_len(size_bytes.max(m.size_bytes))
        .map_err(io("sizing", dest))?;
    for (index, sha) in &m.chunks {
        let bad = || SnapshotError::BadChunk {
            id: snapshot_id.to_string(),
            sha: sha.clone(),
        };
        let row = store.object(BUCKET, &chunk_key(sha))?.ok_or_else(bad)?;
        let data = (store.blob_file(&row.blob))
            .and_then(std::fs::read)
            .map_err(|_| bad())?;
        if hex::encode(Sha256::digest(&data)) != *sha {
            return Err(bad());
        }
        file.write_all_at(&data, index * m.chunk_bytes)
            .map_err(io("writing", dest))?;
    }
    (&file).flush().map_err(io("writing", dest))?;
    file.sync_all().map_err(io("syncing", dest))
}

/// Removes the manifest of `snapshot_id` and every chunk no other manifest names; returns the
/// bytes freed. A snapshot with no manifest (it never completed) frees nothing.
pub fn delete(store: &Store, snapshot_id: &str) -> Result<u64, SnapshotError> {
    let gone = match manifest(store, snapshot_id) {
        Ok(m) => m,
        Err(SnapshotError::NoManifest(_)) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut kept = BTreeSet::new();
    for key in object_keys(store, "manifests/")? {
        let Some(id) = key
            .strip_prefix("manifests/")
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        if id != snapshot_id {
            kept.extend(manifest(store, id)?.chunks.into_iter().map(|(_, sha)| sha));
        }
    }
    let mut freed = 0;
    let mut seen = BTreeSet::new();
    for (_, sha) in gone.chunks {
        if kept.contains(&sha) || !seen.insert(sha.clone()) {
            continue;
        }
        if let Some(row) = store.object(BUCKET, &chunk_key(&sha))? {
            store.delete_object(BUCKET, &chunk_key(&sha))?;
            freed += row.size;
        }
    }
    store.delete_object(BUCKET, &manifest_key(snapshot_id))?;
    Ok(freed)
}

/// The keys in the snapshot bucket that start with `prefix`.
fn object_keys(store: &Store, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    let mut start = prefix.to_string();
    let mut inclusive = true;
    loop {
        let page = store.objects_from(BUCKET, &start, inclusive, 1000)?;
        let Some(last) = page.last() else { break };
        start = last.key.clone();
        inclusive = false;
        let more = page.len() == 1000;
        for o in page {
            if !o.key.starts_with(prefix) {
                return Ok(keys);
            }
            keys.push(o.key);
        }
        if !more {
            break;
        }
    }
    Ok(keys)
}

#[cfg(test)]
#[path = "snapshots_tests.rs"]
mod tests;
