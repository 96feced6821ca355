//! Object and part data as files: written under a temporary name while MD5 and SHA-256 are
//! computed, fsynced, then renamed into place. A blob without a row in the database is garbage
//! (a crash between rename and commit) and is removed at start-up.

use md5::Md5;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The blob directory: `blobs/<2 hex>/<32 hex>` and `tmp/`.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
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

    /// Removes a blob no row refers to any more; a missing file is not an error.
    pub fn remove(&self, id: &str) {
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
}
