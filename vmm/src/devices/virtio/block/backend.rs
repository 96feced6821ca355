//! Where a virtio-blk disk's bytes live: the [`BlockBackend`] trait and the raw-file backend.
//!
//! The device checks request bounds and the read-only flag before calling a backend, so a backend
//! only sees in-range byte offsets. The AoE initiator implements this trait for EBS volumes.
//! Backends take `&self`: the device's I/O threads run several requests at once against one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::bus::lock;

/// Storage behind a virtio-blk device, addressed in bytes.
pub trait BlockBackend: Send + Sync + 'static {
    /// The size in bytes (the guest sees `size / 512` sectors).
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes completed writes durable.
    fn flush(&self) -> io::Result<()>;
    /// Whether there is anything behind it: `false` for an empty volume slot, whose every
    /// request the device fails before reaching the backend.
    fn present(&self) -> bool {
        true
    }
    /// Whether [`BlockBackend::discard`] does anything (VIRTIO_BLK_F_DISCARD is offered only then).
    fn supports_discard(&self) -> bool {
        false
    }
    /// Lets the storage forget `[offset, offset + len)`; reads of it afterwards return zeroes.
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    /// Sets `[offset, offset + len)` to zeroes.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; 64 << 10];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.write_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// A raw disk image file (or block device) opened read-write or read-only.
pub struct RawFile {
    file: File,
    size: u64,
}

impl RawFile {
    /// Opens `path`; `read_only` opens without write permission.
    pub fn open(path: &Path, read_only: bool) -> io::Result<RawFile> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let size = file_size(&file)?;
        Ok(RawFile { file, size })
    }

    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> io::Result<()> {
        let (off, len) = (
            i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        );
        // SAFETY: fallocate only reads its integer arguments; the fd is owned by `self.file`.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

fn file_size(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    // Seeking to the end works for regular files and block devices alike.
    let mut f = file;
    let size = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(size)
}

impl BlockBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn supports_discard(&self) -> bool {
        true
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.fallocate(libc::FALLOC_FL_ZERO_RANGE, offset, len) {
            Ok(()) => Ok(()),
            // Not every filesystem can zero ranges; writing zeroes always works.
            Err(_) => {
                let zeroes = vec![0u8; 64 << 10];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(zeroes.len() as u64) as usize;
                    self.write_at(&zeroes[..n], offset + done)?;
                    done += n as u64;
                }
                Ok(())
            }
        }
    }
}

/// An in-memory backend for tests and fuzzing.
#[derive(Debug, Default)]
pub struct MemBackend {
    data: Mutex<Vec<u8>>,
    flushes: AtomicU32,
}

impl MemBackend {
    /// A disk holding `data`.
    pub fn new(data: Vec<u8>) -> MemBackend {
        MemBackend {
            data: Mutex::new(data),
            flushes: AtomicU32::new(0),
        }
    }

    /// A copy of the disk contents.
    pub fn data(&self) -> Vec<u8> {
        lock(&self.data).clone()
    }

    /// Number of flushes seen.
    pub fn flushes(&self) -> u32 {
        self.flushes.load(Ordering::SeqCst)
    }
}

impl BlockBackend for MemBackend {
    fn size(&self) -> u64 {
        lock(&self.data).len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = lock(&self.data);
        let src = range(&data, offset, buf.len())?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = lock(&self.data);
        range(&data, offset, buf.len())?;
        let o = offset as usize;
        data[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn range(data: &[u8], offset: u64, len: usize) -> io::Result<&[u8]> {
    usize::try_from(offset)
        .ok()
        .and_then(|o| data.get(o..o.checked_add(len)?))
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
}

impl BlockBackend for Box<dyn BlockBackend> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn present(&self) -> bool {
        (**self).present()
    }
    fn supports_discard(&self) -> bool {
        (**self).supports_discard()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).write_zeroes(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_file_reads_writes_and_punches_holes() {
        let dir = std::env::temp_dir().join(format!("mallee-vmm-raw-{}", std::process::id()));
        std::fs::write(&dir, vec![0xaau8; 8192]).unwrap();
        let f = RawFile::open(&dir, false).unwrap();
        assert_eq!(f.size(), 8192);
        f.write_at(b"hello", 4096).unwrap();
        let mut buf = [0u8; 5];
        f.read_at(&mut buf, 4096).unwrap();
        assert_eq!(&buf, b"hello");
        f.write_zeroes(0, 4096).unwrap();
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [0; 5]);
        f.flush().unwrap();
        assert!(f.read_at(&mut buf, 8190).is_err(), "read past the end");
        let ro = RawFile::open(&dir, true).unwrap();
        assert!(
            ro.write_at(b"x", 0).is_err(),
            "read-only open refuses writes"
        );
        std::fs::remove_file(&dir).unwrap();
    }
}
