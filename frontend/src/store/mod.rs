//! All persistent state: SQLite (WAL, versioned migrations) for users, buckets, objects,
//! multipart uploads, cloud records and the audit log, plus the blob files holding object
//! data (small ones kept in memory once read, small objects' in the database itself). Every
//! state change is a function here running in one transaction; blob files are made durable
//! before the row that names them is committed, and removed only after the row that named them
//! is gone.

mod audit;
mod blobs;
mod buckets;
mod cloud;
mod group_commit;
mod inline_blobs;
mod migrations;
mod multipart;
mod sessions;
mod small_blobs;
mod users;

pub use audit::{AuditEntry, AuditPage, AuditRow, Outcome, AUDIT_KEEP};
pub use blobs::{BlobDir, BlobWriter, FinishedBlob};
pub use buckets::{Bucket, BucketObject, ListPage, ObjectRow};
pub use cloud::CloudTx;
pub use inline_blobs::INLINE_MAX;
pub use multipart::{PartRow, Upload};
pub use sessions::Session;
pub use small_blobs::SMALL_BLOB_MAX;
pub use users::{account_id, iam_user_id, is_account_id, Role, User};

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, TryLockError};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("bucket {0} already exists")]
    BucketExists(String),
    #[error("bucket {0} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0} is not empty")]
    BucketNotEmpty(String),
    #[error("upload {0} does not exist")]
    NoSuchUpload(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error(
        "user {name} would have account id {account}, which user {other} has; choose another name"
    )]
    AccountIdTaken {
        name: String,
        account: String,
        other: String,
    },
    #[error("user {0} does not exist")]
    NoSuchUser(String),
    #[error("stored metadata is corrupt: {0}")]
    Corrupt(String),
    #[error("the change was not committed: {0}")]
    Commit(String),
}

/// The state store: a writing SQLite connection, a few reading ones (WAL: readers never wait
/// for a writer's fsync, nor for each other) and the blob directory.
pub struct Store {
    conn: Mutex<Connection>,
    /// Changes waiting to be committed together ([`Store::grouped`]).
    group: group_commit::Queue,
    read: [Mutex<Connection>; READERS],
    blobs: BlobDir,
    dir: PathBuf,
    /// Audit entries this process wrote (pruning goes by it).
    audit_writes: AtomicU64,
}

/// Lookups run together in one read transaction ([`Store::read`]): they see one state of the
/// store and pay for one transaction's locks, where each lookup on [`Store`] is a transaction
/// of its own (profiled on 4 KiB GETs, taking and releasing those locks was a tenth of the
/// CPU). Reads only.
pub struct Reads<'a> {
    conn: &'a Connection,
}

/// An open read transaction, ended when dropped (also by a panic), so that its connection
/// never stays on an old state of the store.
struct ReadTransaction<'a>(&'a Connection);

impl<'a> ReadTransaction<'a> {
    fn begin(conn: &'a Connection) -> Result<ReadTransaction<'a>, StoreError> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(ReadTransaction(conn))
    }
}

impl Drop for ReadTransaction<'_> {
    fn drop(&mut self) {
        let end = |sql| self.0.prepare_cached(sql).and_then(|mut s| s.execute([]));
        if let Err(e) = end("COMMIT").or_else(|_| end("ROLLBACK")) {
            tracing::error!(error = %e, "cannot end a read transaction");
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reading connections: one per core of the appliance's machine kind, so the runtime's workers
/// answering lookups at once do not queue for one connection (profiled on 4 KiB GETs, that
/// queue took about 3% of the CPU).
const READERS: usize = 2;

/// The state database's file name in the data directory.
pub const STATE_DB: &str = "state.sqlite3";

impl Store {
    /// Opens (creating if needed) the store in `dir` and migrates it. Safe while the daemon
    /// runs (the admin CLI uses it); only the daemon calls `recover`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let open = || -> Result<Connection, StoreError> {
            let conn = Connection::open(dir.join(STATE_DB))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            Ok(conn)
        };
        let mut conn = open()?;
        migrations::migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            group: group_commit::Queue::default(),
            read: [Mutex::new(open()?), Mutex::new(open()?)],
            blobs: BlobDir::open(dir)?,
            dir: dir.to_path_buf(),
            audit_writes: AtomicU64::new(0),
        })
    }

    /// Removes what a crash left behind: temporary files of unfinished uploads and blobs no
    /// row refers to. Only at daemon start, before serving.
    pub fn recover(&self) -> Result<(), StoreError> {
        self.blobs.clear_tmp()?;
        self.collect_garbage()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blob directory (to write new blobs and read stored ones).
    pub fn blobs(&self) -> &BlobDir {
        &self.blobs
    }

    /// The connection every change goes through.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection for reads: quick, never behind a commit's fsync.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for conn in &self.read {
            match conn.try_lock() {
                Ok(c) => return c,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.read[0].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f`'s lookups in one read transaction ([`Reads`]) on a reading connection, held
    /// until `f` returns: `f` reads through its `Reads` only.
    pub fn read<T, E>(&self, f: impl FnOnce(&Reads<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let conn = self.reader();
        let _transaction = ReadTransaction::begin(&conn)?;
        f(&Reads { conn: &conn })
    }

    fn collect_garbage(&self) -> Result<(), StoreError> {
        let referenced: std::collections::HashSet<String> = {
            let conn = self.conn();
            let mut stmt =
                conn.prepare("SELECT blob FROM objects UNION ALL SELECT blob FROM parts")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in self.blobs.all_ids()? {
            if !referenced.contains(&id) {
                tracing::info!(blob = %id, "removing unreferenced blob");
                self.blobs.remove(&id);
            }
        }
        Ok(())
    }

    fn remove_blobs(&self, ids: &[String]) {
        for id in ids {
            self.blobs.remove(id);
        }
    }
}

fn meta_to_json(meta: &[(String, String)]) -> String {
    serde_json::to_string(meta).unwrap_or_else(|_| "[]".to_string())
}

fn meta_from_json(text: &str) -> Result<Vec<(String, String)>, rusqlite::Error> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A store in a temporary directory with user `u` and its bucket `b`, for tests.
#[cfg(test)]
pub(crate) fn test_store_with_bucket() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.create_user("u", Role::User).unwrap();
    store.create_bucket("b", "u").unwrap();
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recover_removes_unfinished_and_unreferenced_blobs_but_keeps_committed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_user("u", Role::User).unwrap();
        store.create_bucket("b", "u").unwrap();
        let mut w = store.blobs().writer().unwrap();
        w.write(b"kept").unwrap();
        let kept = w.finish().unwrap();
        store
            .put_object(
                "b",
                &ObjectRow::new("k", &kept, kept.md5_hex.clone(), None, vec![]),
            )
            .unwrap();
        // A crash after the rename but before the commit, and one in the middle of a body.
        let mut w = store.blobs().writer().unwrap();
        w.write(b"orphan").unwrap();
        let orphan = w.finish().unwrap();
        let mut w = store.blobs().writer().unwrap();
        w.write(b"half").unwrap();
        std::mem::forget(w);
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        store.recover().unwrap();
        assert_eq!(store.blobs().all_ids().unwrap(), vec![kept.id.clone()]);
        assert!(!store.blobs().path(&orphan.id).exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        let o = store.object("b", "k").unwrap().unwrap();
        assert_eq!(std::fs::read(store.blobs().path(&o.blob)).unwrap(), b"kept");
    }

    #[test]
    fn reads_together_find_what_single_lookups_find() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user = store.create_user("u", Role::User).unwrap();
        store.create_bucket("b", "u").unwrap();
        let (found, bucket) = store
            .read(|r| {
                let found = r.user_by_access_key(&user.access_key)?;
                Ok::<_, StoreError>((found, r.bucket_object("b", "k")?))
            })
            .unwrap();
        assert_eq!(found, store.user_by_access_key(&user.access_key).unwrap());
        assert_eq!(found.unwrap().name, "u");
        assert_eq!(bucket, store.bucket_object("b", "k").unwrap());
    }

    #[test]
    fn a_read_ends_with_its_closure_so_later_reads_see_later_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let user = store.create_user("u", Role::User).unwrap();
        let key = user.access_key.clone();
        let failed: Result<(), StoreError> = store.read(|r| {
            r.user_by_access_key(&key)?;
            Err(StoreError::NoSuchUser("u".into()))
        });
        assert!(failed.is_err());
        // Disabling the user after those reads is seen at once: no read stayed open on the
        // state from before (for each reading connection).
        store.set_user_disabled("u", true).unwrap();
        for _ in 0..READERS + 1 {
            let found = store.read(|r| r.user_by_access_key(&key)).unwrap();
            assert_eq!(found, None);
            assert_eq!(store.user_by_access_key(&key).unwrap(), None);
        }
    }
}
