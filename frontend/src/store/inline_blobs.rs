//! Small objects' bytes kept in the state database instead of a file each (`inline_blobs`,
//! keyed by the blob id an object row names): a PUT of one is one row in a group commit,
//! where a file costs a create, two fsyncs and a rename, and replacing it an unlink (profiled
//! on 4 KiB PUTs, those were more than half of a request's CPU). The few readers that need a
//! file (a node fetching an object, an image or snapshot read by path) get one written on
//! demand ([`Store::blob_file`]); it goes with the blob.

use super::blobs::is_inline;
use super::{Store, StoreError};
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension};
use std::io;
use std::path::PathBuf;

/// Objects up to this size are kept in the state database (their PUT, their copy).
pub const INLINE_MAX: u64 = 16 << 10;

/// Stores blob `id`'s bytes.
pub(super) fn insert(conn: &Connection, id: &str, data: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO inline_blobs (id, data) VALUES (?1, ?2)")?
        .execute(rusqlite::params![id, data])
        .map(drop)
}

/// Drops blob `id`'s bytes if it is an inline blob (no row names it any more).
pub(super) fn delete(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    if is_inline(id) {
        conn.prepare_cached("DELETE FROM inline_blobs WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(())
}

impl Store {
    /// The whole of blob `id` (an object of at most `SMALL_BLOB_MAX` bytes, `size` long),
    /// from memory when it was read before.
    pub fn read_small(&self, id: &str, size: u64) -> io::Result<Bytes> {
        if !is_inline(id) {
            return self.blobs.read_small(id, size);
        }
        self.blobs.cached(id, || self.inline_data(id))
    }

    /// A file holding blob `id`: an inline blob's is written now if it has none yet.
    /// Blocking.
    pub fn blob_file(&self, id: &str) -> io::Result<PathBuf> {
        if !is_inline(id) {
            return Ok(self.blobs.path(id));
        }
        let path = self.blobs.path(id);
        if path.exists() {
            return Ok(path);
        }
        self.blobs.materialize(id, &self.inline_data(id)?)
    }

    fn inline_data(&self, id: &str) -> io::Result<Bytes> {
        let conn = self.reader();
        let data: Option<Vec<u8>> = conn
            .prepare_cached("SELECT data FROM inline_blobs WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(|e| io::Error::other(StoreError::from(e)))?;
        data.map(Bytes::from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no inline blob {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_store_with_bucket, ObjectRow};

    /// Puts `data` as object `key` the way a small PUT does; returns its row.
    fn put_small(store: &Store, key: &str, data: &[u8]) -> ObjectRow {
        let mut w = store.blobs().writer_in_memory(INLINE_MAX);
        w.write(data).unwrap();
        let blob = w.finish().unwrap();
        assert!(is_inline(&blob.id));
        let row = ObjectRow::new(key, &blob, blob.md5_hex.clone(), None, vec![]);
        store.put_object_with("b", &row, blob.inline).unwrap();
        row
    }

    fn inline_rows(store: &Store) -> i64 {
        store
            .reader()
            .query_row("SELECT count(*) FROM inline_blobs", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_small_object_lives_in_the_database_and_survives_a_restart() {
        let (dir, store) = test_store_with_bucket();
        let row = put_small(&store, "k", b"four");
        assert!(!store.blobs().path(&row.blob).exists());
        assert_eq!(&store.read_small(&row.blob, 4).unwrap()[..], b"four");
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.recover().unwrap();
        let found = store.object("b", "k").unwrap().unwrap();
        assert_eq!(&store.read_small(&found.blob, 4).unwrap()[..], b"four");
    }

    #[test]
    fn a_reader_that_needs_a_file_gets_one_and_it_goes_with_the_object() {
        let (_dir, store) = test_store_with_bucket();
        let row = put_small(&store, "k", b"bytes");
        let path = store.blob_file(&row.blob).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"bytes");
        // Recovery keeps it while the object names it.
        store.recover().unwrap();
        assert!(path.exists());
        assert!(store.delete_object("b", "k").unwrap());
        assert!(!path.exists());
        assert_eq!(inline_rows(&store), 0);
        assert!(store.read_small(&row.blob, 5).is_err());
    }

    #[test]
    fn replacing_a_small_object_drops_the_old_bytes_in_the_same_commit() {
        let (_dir, store) = test_store_with_bucket();
        let old = put_small(&store, "k", b"old");
        let new = put_small(&store, "k", b"new");
        assert_eq!(inline_rows(&store), 1);
        assert!(store.read_small(&old.blob, 3).is_err());
        assert_eq!(&store.read_small(&new.blob, 3).unwrap()[..], b"new");
        // A file object over it drops the inline one too.
        let mut w = store.blobs().writer().unwrap();
        w.write(b"file").unwrap();
        let blob = w.finish().unwrap();
        store
            .put_object(
                "b",
                &ObjectRow::new("k", &blob, blob.md5_hex.clone(), None, vec![]),
            )
            .unwrap();
        assert_eq!(inline_rows(&store), 0);
    }

    #[test]
    fn a_refused_put_keeps_no_bytes() {
        let (_dir, store) = test_store_with_bucket();
        let mut w = store.blobs().writer_in_memory(INLINE_MAX);
        w.write(b"lost").unwrap();
        let blob = w.finish().unwrap();
        let row = ObjectRow::new("k", &blob, blob.md5_hex.clone(), None, vec![]);
        let refused = store.put_object_with("no-such-bucket", &row, blob.inline);
        assert!(matches!(refused, Err(StoreError::NoSuchBucket(_))));
        assert_eq!(inline_rows(&store), 0);
    }
}
