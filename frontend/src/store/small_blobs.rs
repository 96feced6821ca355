//! The bytes of small blobs kept in memory once read, so a small object's GET costs no file
//! open, read and close (profiled on 4 KiB GETs, those took about a tenth of the CPU). A blob
//! never changes once finished and its id is never given to another, so an entry is right for
//! as long as the blob exists; `BlobDir::remove` drops it. Bounded by bytes: when full it
//! starts over. It does not decide who may read a blob: callers look the object up (and check
//! access) first, as for a read from the file.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// Blobs up to this size are kept.
pub const SMALL_BLOB_MAX: u64 = 64 << 10;

/// Bytes the process-wide cache holds at most.
pub const CAPACITY_BYTES: usize = 16 << 20;

/// Small blobs' bytes by blob id.
#[derive(Debug)]
pub struct SmallBlobs {
    inner: Mutex<Held>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Held {
    blobs: HashMap<String, Bytes>,
    bytes: usize,
}

impl SmallBlobs {
    /// An empty cache holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> SmallBlobs {
        SmallBlobs {
            inner: Mutex::new(Held::default()),
            capacity,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes of blob `id`, if held.
    pub fn get(&self, id: &str) -> Option<Bytes> {
        self.held().blobs.get(id).cloned()
    }

    /// Keeps `data` as blob `id`'s bytes (nothing larger than [`SMALL_BLOB_MAX`] or the whole
    /// capacity).
    pub fn insert(&self, id: &str, data: Bytes) {
        if data.len() as u64 > SMALL_BLOB_MAX || data.len() > self.capacity {
            return;
        }
        let mut held = self.held();
        if held.bytes + data.len() > self.capacity {
            held.blobs.clear();
            held.bytes = 0;
        }
        held.bytes += data.len();
        if let Some(old) = held.blobs.insert(id.to_string(), data) {
            held.bytes -= old.len();
        }
    }

    /// Drops blob `id` (being removed).
    pub fn remove(&self, id: &str) {
        let mut held = self.held();
        if let Some(old) = held.blobs.remove(id) {
            held.bytes -= old.len();
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.held().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_blobs_are_returned_until_removed() {
        let cache = SmallBlobs::new(1 << 20);
        cache.insert("a", Bytes::from_static(b"alpha"));
        assert_eq!(cache.get("a").as_deref(), Some(&b"alpha"[..]));
        assert_eq!(cache.get("b"), None);
        cache.remove("a");
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn it_never_holds_more_than_its_capacity_nor_large_blobs() {
        let cache = SmallBlobs::new(10);
        for i in 0..20 {
            cache.insert(&i.to_string(), Bytes::from(vec![0u8; 4]));
            assert!(cache.bytes() <= 10, "{} bytes", cache.bytes());
        }
        assert_eq!(cache.get("19").map(|b| b.len()), Some(4));
        cache.insert("big", Bytes::from(vec![0u8; 11]));
        assert_eq!(cache.get("big"), None);
        let large = SmallBlobs::new(1 << 30);
        large.insert("large", Bytes::from(vec![0u8; SMALL_BLOB_MAX as usize + 1]));
        assert_eq!(large.get("large"), None);
    }

    #[test]
    fn inserting_an_id_again_counts_its_bytes_once() {
        let cache = SmallBlobs::new(100);
        cache.insert("a", Bytes::from_static(b"12345"));
        cache.insert("a", Bytes::from_static(b"12345"));
        assert_eq!(cache.bytes(), 5);
    }
}
