//! All persistent state: SQLite (WAL, versioned migrations) for users, buckets, objects,
//! multipart uploads, cloud records and the audit log, plus the blob files holding object
//! data. Every state change is a function here running in one transaction; blob files are made
//! durable before the row that names them is committed, and removed only after the row that
//! named them is gone.

mod audit;
mod blobs;
mod buckets;
mod cloud;
mod migrations;
mod multipart;
mod sessions;
mod users;

pub use audit::{AuditEntry, AuditPage, AuditRow, Outcome, AUDIT_KEEP};
pub use blobs::{BlobDir, BlobWriter, FinishedBlob};
pub use buckets::{Bucket, ListPage, ObjectRow};
pub use cloud::CloudTx;
pub use multipart::{PartRow, Upload};
pub use sessions::Session;
pub use users::{account_id, iam_user_id, is_account_id, Role, User};

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

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
}

/// The state store: a writing and a reading SQLite connection (WAL: readers never wait for
/// a writer's fsync) and the blob directory.
pub struct Store {
    conn: Mutex<Connection>,
    read: Mutex<Connection>,
    blobs: BlobDir,
    dir: PathBuf,
    /// Audit entries this process wrote (pruning goes by it).
    audit_writes: AtomicU64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

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
            read: Mutex::new(open()?),
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
        self.read.lock().unwrap_or_else(|p| p.into_inner())
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
}
