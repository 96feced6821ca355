//! Buckets and the objects in them.

use super::{meta_from_json, meta_to_json, now_ms, FinishedBlob, Store, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// A bucket and its owner's user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub owner: String,
    pub created_ms: i64,
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    pub key: String,
    pub blob: String,
    pub size: u64,
    pub etag: String,
    pub md5: String,
    pub sha256: String,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub modified_ms: i64,
}

/// A run of objects in key order.
pub type ListPage = Vec<ObjectRow>;

const OBJECT_COLUMNS: &str =
    "key, blob, size, etag, md5, sha256, content_type, metadata, modified_ms";

fn row_to_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectRow> {
    Ok(ObjectRow {
        key: r.get(0)?,
        blob: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        etag: r.get(3)?,
        md5: r.get(4)?,
        sha256: r.get(5)?,
        content_type: r.get(6)?,
        metadata: meta_from_json(&r.get::<_, String>(7)?)?,
        modified_ms: r.get(8)?,
    })
}

impl ObjectRow {
    /// A new object row for a finished blob.
    pub fn new(
        key: &str,
        blob: &FinishedBlob,
        etag: String,
        content_type: Option<String>,
        metadata: Vec<(String, String)>,
    ) -> ObjectRow {
        ObjectRow {
            key: key.to_string(),
            blob: blob.id.clone(),
            size: blob.size,
            etag,
            md5: blob.md5_hex.clone(),
            sha256: blob.sha256_hex.clone(),
            content_type,
            metadata,
            modified_ms: now_ms(),
        }
    }
}

impl Store {
    /// Creates a bucket owned by `owner`.
    pub fn create_bucket(&self, name: &str, owner: &str) -> Result<Bucket, StoreError> {
        let created_ms = now_ms();
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO buckets (name, owner, created_ms) VALUES (?1, ?2, ?3)",
            params![name, owner, created_ms],
        )?;
        if n == 0 {
            return Err(StoreError::BucketExists(name.to_string()));
        }
        Ok(Bucket {
            name: name.to_string(),
            owner: owner.to_string(),
            created_ms,
        })
    }

    /// The bucket called `name`.
    pub fn bucket(&self, name: &str) -> Result<Option<Bucket>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT name, owner, created_ms FROM buckets WHERE name = ?1")?;
        let b = stmt
            .query_row([name], |r| {
                Ok(Bucket {
                    name: r.get(0)?,
                    owner: r.get(1)?,
                    created_ms: r.get(2)?,
                })
            })
            .optional()?;
        Ok(b)
    }

    /// Buckets owned by `owner`, or all buckets when `None`.
    pub fn list_buckets(&self, owner: Option<&str>) -> Result<Vec<Bucket>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT name, owner, created_ms FROM buckets WHERE ?1 IS NULL OR owner = ?1 ORDER BY name")?;
        let rows = stmt.query_map([owner], |r| {
            Ok(Bucket {
                name: r.get(0)?,
                owner: r.get(1)?,
                created_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an empty bucket (no objects, no uploads in progress).
    pub fn delete_bucket(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let busy: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM objects WHERE bucket = ?1) OR EXISTS(SELECT 1 FROM uploads WHERE bucket = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if busy {
            return Err(StoreError::BucketNotEmpty(name.to_string()));
        }
        if tx.execute("DELETE FROM buckets WHERE name = ?1", [name])? == 0 {
            return Err(StoreError::NoSuchBucket(name.to_string()));
        }
        tx.commit()?;
        Ok(())
    }

    /// Records `object` in `bucket`, replacing any object of the same key (whose blob is then
    /// removed).
    pub fn put_object(&self, bucket: &str, object: &ObjectRow) -> Result<(), StoreError> {
        let old = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old = insert_object(&tx, bucket, object)?;
            tx.commit()?;
            old
        };
        self.remove_blobs(&old);
        Ok(())
    }

    /// The object `key` in `bucket`.
    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRow>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2"
        ))?;
        let o = stmt.query_row([bucket, key], row_to_object).optional()?;
        Ok(o)
    }

    /// Deletes an object; `false` if there was none.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        let blob: Option<String> = self
            .conn()
            .query_row(
                "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING blob",
                [bucket, key],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(b) = &blob {
            self.blobs.remove(b);
        }
        Ok(blob.is_some())
    }

    /// Up to `limit` objects whose key is after `start` (or equal to it when `inclusive`).
    pub fn objects_from(
        &self,
        bucket: &str,
        start: &str,
        inclusive: bool,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let op = if inclusive { ">=" } else { ">" };
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key {op} ?2 ORDER BY key LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![bucket, start, limit as i64], row_to_object)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Inserts or replaces an object inside a transaction; returns the replaced blob, if any.
pub(super) fn insert_object(
    tx: &rusqlite::Transaction<'_>,
    bucket: &str,
    o: &ObjectRow,
) -> Result<Vec<String>, StoreError> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM buckets WHERE name = ?1)",
        [bucket],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(StoreError::NoSuchBucket(bucket.to_string()));
    }
    let old: Option<String> = tx
        .query_row(
            "SELECT blob FROM objects WHERE bucket = ?1 AND key = ?2",
            [bucket, &o.key],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute(
        &format!("INSERT OR REPLACE INTO objects (bucket, {OBJECT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            bucket,
            o.key,
            o.blob,
            o.size as i64,
            o.etag,
            o.md5,
            o.sha256,
            o.content_type,
            meta_to_json(&o.metadata),
            o.modified_ms
        ],
    )?;
    Ok(old.into_iter().filter(|b| *b != o.blob).collect())
}
