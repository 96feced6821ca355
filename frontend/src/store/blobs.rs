//! Object and part data as files: written under a temporary name while MD5 and SHA-256 are
//! computed, fsynced, then renamed into place. A blob without a row in the database is garbage
//! (a crash between rename and commit) and is removed at start-up. A small object's blob may
//! instead stay in memory until the state database takes it (`inline_blobs`): its id starts
//! with `i`, where a file blob's is hex.

use super::small_blobs::{self, SmallBlobs, SMALL_BLOB_MAX};
use bytes::Bytes;
use md5::Md5;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The blob directory: `blobs/<2 hex>/<32 hex>` and `tmp/`; small blobs' bytes are kept in
/// memory once read (`small_blobs`).
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
    small: Arc<SmallBlobs>,
}

/// A blob written, with its digests: a durable file, or (`inline`) bytes for the state
/// database to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedBlob {
    pub id: String,
    pub size: u64,
    pub md5_hex: String,
    pub sha256_hex: String,
    pub inline: Option<Bytes>,
}

/// A blob being written. Dropping it unfinished removes the temporary file.
pub struct BlobWriter {
    dir: BlobDir,
    id: String,
    sink: Option<Sink>,
    md5: Md5,
    sha256: Sha256,
    size: u64,
}

/// Where a blob's bytes go while it is written.
enum Sink {
    File {
        tmp: PathBuf,
        file: File,
    },
    /// Up to `limit` bytes kept in memory; more spill to a file.
    Memory {
        data: Vec<u8>,
        limit: u64,
    },
}

/// Whether blob `id` is kept in the state database (`inline_blobs`) rather than in a file.
pub fn is_inline(id: &str) -> bool {
    id.starts_with('i')
}

fn random_hex_id() -> String {
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

impl BlobDir {
    /// Creates the directories.
    pub fn open(root: &Path) -> io::Result<BlobDir> {
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("tmp"))?;
        Ok(BlobDir {
            root: root.to_path_buf(),
            small: Arc::new(SmallBlobs::new(small_blobs::CAPACITY_BYTES)),
        })
    }

    /// Removes every temporary file (half-written uploads from before a crash).
    pub fn clear_tmp(&self) -> io::Result<()> {
        for f in fs::read_dir(self.root.join("tmp"))? {
            fs::remove_file(f?.path())?;
        }
        Ok(())
    }

    /// Where blob `id` lives.
    pub fn path(&self, id: &str) -> PathBuf {
        self.root
            .join("blobs")
            .join(&id[..2.min(id.len())])
            .join(id)
    }

    /// Starts a new blob file.
    pub fn writer(&self) -> io::Result<BlobWriter> {
        self.file_writer(random_hex_id())
    }

    /// Starts a new blob kept in memory while it is at most `limit` bytes (finished, it is
    /// `inline`, for the state database), and spilled to a file like [`BlobDir::writer`]'s
    /// once it grows past that.
    pub fn writer_in_memory(&self, limit: u64) -> BlobWriter {
        BlobWriter {
            dir: self.clone(),
            id: format!("i{}", random_hex_id()),
            sink: Some(Sink::Memory {
                data: Vec::new(),
                limit,
            }),
            md5: Md5::new(),
            sha256: Sha256::new(),
            size: 0,
        }
    }

    fn file_writer(&self, id: String) -> io::Result<BlobWriter> {
        let tmp = self.root.join("tmp").join(&id);
        let file = File::create(&tmp)?;
        Ok(BlobWriter {
            dir: self.clone(),
            id,
            sink: Some(Sink::File { tmp, file }),
            md5: Md5::new(),
            sha256: Sha256::new(),
            size: 0,
        })
    }

    /// The whole of blob file `id`, `size` bytes long (at most [`SMALL_BLOB_MAX`]), from
    /// memory when it was read before.
    pub fn read_small(&self, id: &str, size: u64) -> io::Result<Bytes> {
        self.cached(id, || {
            if size > SMALL_BLOB_MAX {
                return Err(io::Error::other(format!(
                    "blob {id} is {size} bytes, over the {SMALL_BLOB_MAX} of a small one"
                )));
            }
            self.read_at(id, 0, size)
        })
    }

    /// Small blob `id`'s bytes from memory, else from `load` (then kept).
    pub fn cached(&self, id: &str, load: impl FnOnce() -> io::Result<Bytes>) -> io::Result<Bytes> {
        if let Some(data) = self.small.get(id) {
            return Ok(data);
        }
        let data = load()?;
        self.small.insert(id, data.clone());
        Ok(data)
    }

    /// Writes `data` as the durable file of blob `id`: an inline blob given a file for the
    /// readers that need one (`Store::blob_file`, which checks for one first). Blocking.
    pub fn materialize(&self, id: &str, data: &[u8]) -> io::Result<PathBuf> {
        let mut w = self.file_writer(format!("{id}.{}", random_hex_id()))?;
        w.id = id.to_string();
        w.write(data)?;
        w.finish()?;
        Ok(self.path(id))
    }

    /// `len` bytes of blob `id` from `offset`, read at once on the calling thread: for small
    /// reads only (a small object's GET, a short range of a large one), right where the request
    /// is answered. A page-cache read of a few pages is as quick as the store's reads (which run
    /// there too); handing the worker to another thread for it (`block_in_place`) cost more
    /// than the read: profiled on 4 KiB GETs, that hand-off and the blocking pool's wake-ups
    /// took about 40% of the CPU.
    pub fn read_at(&self, id: &str, offset: u64, len: u64) -> io::Result<Bytes> {
        let mut buf = vec![0u8; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&File::open(self.path(id))?, &mut buf, offset)?;
        Ok(Bytes::from(buf))
    }

    /// Removes a blob no row refers to any more; a missing file is not an error.
    pub fn remove(&self, id: &str) {
        self.small.remove(id);
        if let Err(e) = fs::remove_file(self.path(id)) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(blob = id, error = %e, "cannot remove blob");
            }
        }
    }

    /// A new blob holding the given blobs one after another (CopyObject, multipart
    /// completion). Blocking; run it off the async threads.
    pub fn concat(&self, ids: &[String]) -> io::Result<FinishedBlob> {
        let mut w = self.writer()?;
        let mut buf = vec![0u8; 1 << 20];
        for id in ids {
            let mut f = File::open(self.path(id))?;
            loop {
                let n = io::Read::read(&mut f, &mut buf)?;
                if n == 0 {
                    break;
                }
                w.write(&buf[..n])?;
            }
        }
        w.finish()
    }

    /// A new blob holding `len` bytes of blob `id` from `start` (UploadPartCopy). Blocking.
    pub fn copy_range(&self, id: &str, start: u64, len: u64) -> io::Result<FinishedBlob> {
        let mut f = File::open(self.path(id))?;
        io::Seek::seek(&mut f, io::SeekFrom::Start(start))?;
        let mut src = io::Read::take(f, len);
        let mut w = self.writer()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = io::Read::read(&mut src, &mut buf)?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        if w.size() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "blob shorter than recorded",
            ));
        }
        w.finish()
    }

    /// Every blob id on disk (for garbage collection).
    pub fn all_ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for sub in fs::read_dir(self.root.join("blobs"))? {
            let sub = sub?;
            if sub.file_type()?.is_dir() {
                for f in fs::read_dir(sub.path())? {
                    ids.push(f?.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Ok(ids)
    }
}

impl BlobWriter {
    /// Appends bytes, hashing them.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.md5.update(data);
        self.sha256.update(data);
        self.size += data.len() as u64;
        match self.sink.as_mut().expect("writer used after finish") {
            Sink::File { file, .. } => file.write_all(data),
            Sink::Memory { data: kept, limit } if self.size <= *limit => {
                kept.extend_from_slice(data);
                Ok(())
            }
            Sink::Memory { data: kept, .. } => {
                // Longer than it said it would be: a file, with a file blob's id.
                let kept = std::mem::take(kept);
                let mut spilled = self.dir.file_writer(random_hex_id())?;
                let file = match spilled.sink.take() {
                    Some(Sink::File { tmp, mut file }) => {
                        file.write_all(&kept)?;
                        file.write_all(data)?;
                        Sink::File { tmp, file }
                    }
                    _ => unreachable!("file_writer writes to a file"),
                };
                self.id = std::mem::take(&mut spilled.id);
                self.sink = Some(file);
                Ok(())
            }
        }
    }

    /// MD5 and SHA-256 (hex) of what was written so far.
    pub fn digests(&self) -> (String, String) {
        (
            hex::encode(self.md5.clone().finalize()),
            hex::encode(self.sha256.clone().finalize()),
        )
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes a blob file durable under its final name; an in-memory blob is handed over as
    /// its bytes (`inline`), for the state database to make durable.
    pub fn finish(mut self) -> io::Result<FinishedBlob> {
        let inline = match self.sink.take().expect("finish called once") {
            Sink::File { tmp, file } => {
                let finished = (|| {
                    file.sync_all()?;
                    drop(file);
                    let dest = self.dir.path(&self.id);
                    let parent = dest.parent().expect("blob path has a parent");
                    fs::create_dir_all(parent)?;
                    fs::rename(&tmp, &dest)?;
                    File::open(parent)?.sync_all()
                })();
                if finished.is_err() {
                    let _ = fs::remove_file(&tmp);
                }
                finished?;
                None
            }
            Sink::Memory { data, .. } => Some(Bytes::from(data)),
        };
        Ok(FinishedBlob {
            id: std::mem::take(&mut self.id),
            size: self.size,
            md5_hex: hex::encode(std::mem::take(&mut self.md5).finalize()),
            sha256_hex: hex::encode(std::mem::take(&mut self.sha256).finalize()),
            inline,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(Sink::File { tmp, .. }) = &self.sink {
            let _ = fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_blob_has_digests_and_abandoned_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(dir.path()).unwrap();
        let mut w = blobs.writer().unwrap();
        w.write(b"hello").unwrap();
        let b = w.finish().unwrap();
        assert_eq!(b.md5_hex, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(
            b.sha256_hex,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(fs::read(blobs.path(&b.id)).unwrap(), b"hello");
        let mut w = blobs.writer().unwrap();
        w.write(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(blobs.all_ids().unwrap(), vec![b.id]);
    }

    #[test]
    fn a_small_blob_is_read_once_then_served_from_memory_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(dir.path()).unwrap();
        let mut w = blobs.writer().unwrap();
        w.write(b"small").unwrap();
        let b = w.finish().unwrap();
        assert_eq!(&blobs.read_small(&b.id, 5).unwrap()[..], b"small");
        // Held: a copy of the directory (as the store hands out) reads it without the file.
        fs::rename(blobs.path(&b.id), dir.path().join("aside")).unwrap();
        assert_eq!(&blobs.clone().read_small(&b.id, 5).unwrap()[..], b"small");
        fs::rename(dir.path().join("aside"), blobs.path(&b.id)).unwrap();
        blobs.remove(&b.id);
        let e = blobs.read_small(&b.id, 5).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_small_blob_shorter_than_recorded_or_too_large_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(dir.path()).unwrap();
        let mut w = blobs.writer().unwrap();
        w.write(b"abc").unwrap();
        let b = w.finish().unwrap();
        let e = blobs.read_small(&b.id, 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(blobs.read_small(&b.id, SMALL_BLOB_MAX + 1).is_err());
        assert_eq!(&blobs.read_small(&b.id, 3).unwrap()[..], b"abc");
    }

    #[test]
    fn a_blob_in_memory_stays_inline_up_to_its_limit_and_spills_to_a_file_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(dir.path()).unwrap();
        let mut w = blobs.writer_in_memory(6);
        w.write(b"abc").unwrap();
        w.write(b"def").unwrap();
        let b = w.finish().unwrap();
        assert!(is_inline(&b.id));
        assert_eq!(b.inline.as_deref(), Some(&b"abcdef"[..]));
        assert!(blobs.all_ids().unwrap().is_empty());

        let mut w = blobs.writer_in_memory(4);
        w.write(b"abc").unwrap();
        w.write(b"def").unwrap();
        let b = w.finish().unwrap();
        assert!(!is_inline(&b.id) && b.inline.is_none());
        assert_eq!(b.md5_hex, hex::encode(Md5::digest(b"abcdef")));
        assert_eq!(fs::read(blobs.path(&b.id)).unwrap(), b"abcdef");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_range_read_is_those_bytes_and_past_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(dir.path()).unwrap();
        let mut w = blobs.writer().unwrap();
        w.write(b"abcdef").unwrap();
        let b = w.finish().unwrap();
        assert_eq!(&blobs.read_at(&b.id, 2, 3).unwrap()[..], b"cde");
        let e = blobs.read_at(&b.id, 4, 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
