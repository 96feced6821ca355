//! Block storage behind an export: a regular file, a sparse file or a block device, read with
//! pread and written with pwrite. A write returns only once it is on stable storage: writers
//! share fdatasync calls through a group commit, so many writers in flight cost one sync.
//! A backend may keep a [`DirtyMap`] of the chunks written.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use super::dirty::DirtyMap;
use crate::ata::SECTOR_SIZE;

/// Opening the backing store failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is neither a regular file nor a block device")]
    NotABlockStore { path: PathBuf },
    #[error("{path} is {size} bytes, smaller than one sector")]
    TooSmall { path: PathBuf, size: u64 },
}

#[derive(Debug, Default)]
struct SyncState {
    /// Writes completed (pwrite returned), numbered from 1.
    written: u64,
    /// Every write numbered up to this one is durable.
    synced: u64,
    /// Writes up to this one were covered by a failed fdatasync.
    failed_upto: u64,
    syncing: bool,
}

/// A block store exported at one shelf/slot.
#[derive(Debug)]
pub struct Backend {
    file: File,
    path: PathBuf,
    sectors: u64,
    sync: Mutex<SyncState>,
    synced: Condvar,
    dirty: Option<DirtyMap>,
}

impl Backend {
    /// Opens `path` read-write; its size (rounded down to sectors) is the export's capacity.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let open_err = |source| BackendError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let size = if meta.file_type().is_block_device() {
            file.seek(SeekFrom::End(0)).map_err(open_err)?
        } else if meta.is_file() {
            meta.len()
        } else {
            return Err(BackendError::NotABlockStore {
                path: path.to_owned(),
            });
        };
        let sectors = size / SECTOR_SIZE as u64;
        if sectors == 0 {
            return Err(BackendError::TooSmall {
                path: path.to_owned(),
                size,
            });
        }
        Ok(Backend {
            file,
            path: path.to_owned(),
            sectors,
            sync: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
            dirty: None,
        })
    }

    /// Keeps a map of the `chunk_bytes` chunks written from now on.
    pub fn with_dirty_map(mut self, chunk_bytes: u64) -> Self {
        let size = self.sectors * SECTOR_SIZE as u64;
        self.dirty = Some(DirtyMap::new(size, chunk_bytes));
        self
    }

    /// The chunks written since [`Backend::with_dirty_map`], when it keeps a map.
    pub fn dirty(&self) -> Option<&DirtyMap> {
        self.dirty.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Reads only if the data is already in the page cache (`preadv2` with `RWF_NOWAIT`);
    /// `Ok(false)` means the read would block and should be done by a pool thread.
    pub fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: iov describes `buf`, which is valid and writable for its whole length, and
        // the descriptor belongs to `self.file` for the duration of the call.
        let n = unsafe {
            libc::preadv2(
                self.file.as_raw_fd(),
                &iov,
                1,
                offset as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) => Ok(false),
                _ => Err(err),
            };
        }
        Ok(n as usize == buf.len())
    }

    /// Writes `data` at `offset` and returns once it is durable.
    pub fn write_durable(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if let Some(map) = &self.dirty {
            map.mark(offset, data.len() as u64); // before the store changes, even if it fails
        }
        self.file.write_all_at(data, offset)?;
        self.commit()
    }

    /// Makes every completed write durable (FLUSH CACHE).
    pub fn flush(&self) -> io::Result<()> {
        self.commit()
    }

    /// Group commit: wait until an fdatasync that started after our write has finished,
    /// running it ourselves if no other caller is.
    fn commit(&self) -> io::Result<()> {
        let mut st = self.sync.lock().unwrap_or_else(|p| p.into_inner());
        st.written += 1;
        let mine = st.written;
        loop {
            // Failure first: after a failed fdatasync the kernel may have dropped our dirty
            // pages, and a later successful sync would not bring them back.
            if st.failed_upto >= mine {
                return Err(io::Error::other("fdatasync of the backing store failed"));
            }
            if st.synced >= mine {
                return Ok(());
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.syncing = true;
            let upto = st.written;
            drop(st);
            let result = self.file.sync_data();
            st = self.sync.lock().unwrap_or_else(|p| p.into_inner());
            st.syncing = false;
            match &result {
                Ok(()) => st.synced = upto,
                Err(_) => st.failed_upto = upto,
            }
            self.synced.notify_all();
            result?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn temp_file(name: &str, len: u64) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mallee-aoe-backend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let f = File::create(&path).unwrap();
        f.set_len(len).unwrap();
        path
    }

    #[test]
    fn sparse_file_capacity_is_its_length_in_sectors() {
        let path = temp_file("sparse", 10 * 1024 * 1024 + 100);
        let b = Backend::open(&path).unwrap();
        assert_eq!(b.sectors(), 20480);
    }

    #[test]
    fn file_smaller_than_a_sector_is_refused() {
        let path = temp_file("tiny", 100);
        assert!(matches!(
            Backend::open(&path),
            Err(BackendError::TooSmall { .. })
        ));
    }

    #[test]
    fn directory_is_refused() {
        let dir = std::env::temp_dir();
        assert!(matches!(
            Backend::open(&dir),
            Err(BackendError::Open { .. } | BackendError::NotABlockStore { .. })
        ));
    }

    #[test]
    fn writes_mark_the_dirty_map_reads_do_not() {
        let path = temp_file("dirty", 4 << 20);
        let b = Backend::open(&path).unwrap();
        assert!(b.dirty().is_none());
        b.write_durable(&[1; 512], 0).unwrap(); // before the map: not marked
        let b = b.with_dirty_map(1 << 20);
        b.write_durable(&[2; 1024], (2 << 20) - 512).unwrap();
        let mut buf = [0; 512];
        b.read_at(&mut buf, 3 << 20).unwrap();
        assert_eq!(b.dirty().unwrap().chunks(), [1, 2]);
    }

    #[test]
    fn concurrent_durable_writes_all_land() {
        let path = temp_file("group", 1 << 20);
        let b = Arc::new(Backend::open(&path).unwrap());
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    for j in 0..16u64 {
                        let off = (u64::from(i) * 16 + j) * 512;
                        b.write_durable(&[i + 1; 512], off).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let data = std::fs::read(&path).unwrap();
        for i in 0..8usize {
            assert!(data[i * 16 * 512..(i + 1) * 16 * 512]
                .iter()
                .all(|&x| x == i as u8 + 1));
        }
    }
}
