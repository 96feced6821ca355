//! Buckets and the objects in them.

use super::{
    inline_blobs, meta_from_json, meta_to_json, now_ms, FinishedBlob, Reads, Store, StoreError,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

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

/// A bucket and its object of some key: `None` when there is no such bucket, no object when
/// the bucket has none of that key.
pub type BucketObject = Option<(Bucket, Option<ObjectRow>)>;

/// A run of objects in key order.
pub type ListPage = Vec<ObjectRow>;

const OBJECT_COLUMNS: &str =
    "key, blob, size, etag, md5, sha256, content_type, metadata, modified_ms";

fn row_to_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectRow> {
    object_at(r, 0)
}

/// The object whose [`OBJECT_COLUMNS`] start at column `first` of `r`.
fn object_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<ObjectRow> {
    Ok(ObjectRow {
        key: r.get(first)?,
        blob: r.get(first + 1)?,
        size: r.get::<_, i64>(first + 2)? as u64,
        etag: r.get(first + 3)?,
        md5: r.get(first + 4)?,
        sha256: r.get(first + 5)?,
        content_type: r.get(first + 6)?,
        metadata: meta_from_json(&r.get::<_, String>(first + 7)?)?,
        modified_ms: r.get(first + 8)?,
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
    /// removed). Committed with the changes other requests make at the same moment
    /// ([`Store::grouped`]).
    pub fn put_object(&self, bucket: &str, object: &ObjectRow) -> Result<(), StoreError> {
        self.put_object_with(bucket, object, None)
    }

    /// [`Store::put_object`] with the object's bytes when its blob is inline
    /// ([`FinishedBlob::inline`]): they are stored in the same transaction.
    pub fn put_object_with(
        &self,
        bucket: &str,
        object: &ObjectRow,
        inline: Option<bytes::Bytes>,
    ) -> Result<(), StoreError> {
        let (bucket, object) = (bucket.to_string(), object.clone());
        let old = self.grouped(move |conn| {
            if let Some(data) = &inline {
                inline_blobs::insert(conn, &object.blob, data)?;
            }
            insert_object(conn, &bucket, &object)
        })?;
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

    /// The bucket `name` and its object `key` (see [`BucketObject`]), read in one statement:
    /// a GET's two lookups at the cost of one.
    pub fn bucket_object(&self, name: &str, key: &str) -> Result<BucketObject, StoreError> {
        bucket_object(&self.reader(), name, key)
    }

    /// Deletes an object; `false` if there was none.
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        let blob = self.grouped(move |conn| {
            let blob: Option<String> = conn
                .prepare_cached(
                    "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING blob",
                )?
                .query_row([&bucket, &key], |r| r.get(0))
                .optional()?;
            if let Some(b) = &blob {
                inline_blobs::delete(conn, b)?;
            }
            Ok(blob)
        })?;
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
    tx: &Connection,
    bucket: &str,
    o: &ObjectRow,
) -> Result<Vec<String>, StoreError> {
    let exists: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM buckets WHERE name = ?1)")?
        .query_row([bucket], |r| r.get(0))?;
    if !exists {
        return Err(StoreError::NoSuchBucket(bucket.to_string()));
    }
    let old: Option<String> = tx
        .prepare_cached("SELECT blob FROM objects WHERE bucket = ?1 AND key = ?2")?
        .query_row([bucket, &o.key], |r| r.get(0))
        .optional()?;
    tx.prepare_cached(
        &format!("INSERT OR REPLACE INTO objects (bucket, {OBJECT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
    )?.execute(
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
    let old: Vec<String> = old.into_iter().filter(|b| *b != o.blob).collect();
    for b in &old {
        inline_blobs::delete(tx, b)?;
    }
    Ok(old)
}

impl Reads<'_> {
    /// [`Store::bucket_object`], in this read.
    pub fn bucket_object(&self, name: &str, key: &str) -> Result<BucketObject, StoreError> {
        bucket_object(self.conn, name, key)
    }
}

fn bucket_object(conn: &Connection, name: &str, key: &str) -> Result<BucketObject, StoreError> {
    // No column of `buckets` shares a name with one of OBJECT_COLUMNS.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT b.name, b.owner, b.created_ms, o.key IS NOT NULL, {OBJECT_COLUMNS} \
         FROM buckets b LEFT JOIN objects o ON o.bucket = b.name AND o.key = ?2 \
         WHERE b.name = ?1"
    ))?;
    let found = stmt
        .query_row([name, key], |r| {
            let bucket = Bucket {
                name: r.get(0)?,
                owner: r.get(1)?,
                created_ms: r.get(2)?,
            };
            let object = match r.get::<_, bool>(3)? {
                true => Some(object_at(r, 4)?),
                false => None,
            };
            Ok((bucket, object))
        })
        .optional()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store_with_bucket;

    #[test]
    fn bucket_object_reads_what_bucket_and_object_read() {
        let (_dir, store) = test_store_with_bucket();
        store.create_bucket("empty", "u").unwrap();
        let mut w = store.blobs().writer().unwrap();
        w.write(b"data").unwrap();
        let blob = w.finish().unwrap();
        let meta = vec![("x-amz-meta-a".to_string(), "1".to_string())];
        let row = ObjectRow::new("k", &blob, "e".into(), Some("text/plain".into()), meta);
        store.put_object("b", &row).unwrap();

        let (bucket, object) = store.bucket_object("b", "k").unwrap().unwrap();
        assert_eq!(Some(bucket), store.bucket("b").unwrap());
        assert_eq!(object, store.object("b", "k").unwrap());
        assert_eq!(object.unwrap(), row);
        let (bucket, object) = store.bucket_object("empty", "k").unwrap().unwrap();
        assert_eq!((bucket.name.as_str(), object), ("empty", None));
        assert_eq!(store.bucket_object("b", "other").unwrap().unwrap().1, None);
        assert_eq!(store.bucket_object("none", "k").unwrap(), None);
    }
}
