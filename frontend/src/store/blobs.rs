//! Object and part data as files: written under a temporary name while MD5 and SHA-256 are
//! computed, fsynced, then renamed into place. A blob without a row in the database is garbage
//! (a crash between rename and commit) and is removed at start-up.

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

/// A blob written and durable, with its digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedBlob {
    pub id: String,
    pub size: u64,
    pub md5_hex: String,
    pub sha256_hex: String,
}

/// A blob being written. Dropping it unfinished removes the temporary file.
pub struct BlobWriter {
    dir: BlobDir,
    id: String,
    tmp: PathBuf,
    file: Option<File>,
    md5: Md5,
    sha256: Sha256,
    size: u64,
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

    /// Starts a new blob.
    pub fn writer(&self) -> io::Result<BlobWriter> {
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        let id = hex::encode(raw);
        let tmp = self.root.join("tmp").join(&id);
        let file = File::create(&tmp)?;
        Ok(BlobWriter {
            dir: self.clone(),
            id,
            tmp,
            file: Some(file),
            md5: Md5::new(),
            sha256: Sha256::new(),
            size: 0,
        })
    }

    /// The whole of blob `id`, `size` bytes long (at most [`SMALL_BLOB_MAX`]), from memory
    /// when it was read before.
    pub fn read_small(&self, id: &str, size: u64) -> io::Result<Bytes> {
        if let Some(data) = self.small.get(id) {
            return Ok(data);
        }
        if size > SMALL_BLOB_MAX {
            return Err(io::Error::other(format!(
                "blob {id} is {size} bytes, over the {SMALL_BLOB_MAX} of a small one"
            )));
        }
        let data = self.read_at(id, 0, size)?;
        self.small.insert(id, data.clone());
        Ok(data)
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
        self.file
            .as_mut()
            .expect("writer used after finish")
            .write_all(data)
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

    /// Makes the blob durable under its final name.
    pub fn finish(mut self) -> io::Result<FinishedBlob> {
        let file = self.file.take().expect("finish called once");
        file.sync_all()?;
        drop(file);
        let dest = self.dir.path(&self.id);
        let parent = dest.parent().expect("blob path has a parent");
        fs::create_dir_all(parent)?;
        fs::rename(&self.tmp, &dest)?;
        File::open(parent)?.sync_all()?;
        Ok(FinishedBlob {
            id: std::mem::take(&mut self.id),
            size: self.size,
            md5_hex: hex::encode(std::mem::take(&mut self.md5).finalize()),
            sha256_hex: hex::encode(std::mem::take(&mut self.sha256).finalize()),
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
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
