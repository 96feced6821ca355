//! Multipart uploads: the upload record, its parts (each a blob), completion into one object
//! and abort.

use super::buckets::insert_object;
use super::{meta_from_json, meta_to_json, now_ms, ObjectRow, Store, StoreError};
use rand::RngCore;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
    pub initiated_ms: i64,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRow {
    pub part_number: u32,
    pub blob: String,
    pub size: u64,
    pub etag: String,
    pub sha256: String,
    pub modified_ms: i64,
}

fn row_to_upload(r: &rusqlite::Row<'_>) -> rusqlite::Result<Upload> {
    Ok(Upload {
        upload_id: r.get(0)?,
        bucket: r.get(1)?,
        key: r.get(2)?,
        content_type: r.get(3)?,
        metadata: meta_from_json(&r.get::<_, String>(4)?)?,
        initiated_ms: r.get(5)?,
    })
}

const UPLOAD_COLUMNS: &str = "upload_id, bucket, key, content_type, metadata, initiated_ms";

impl Store {
    /// Starts an upload of `key` into `bucket`.
    pub fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        content_type: Option<String>,
        metadata: Vec<(String, String)>,
    ) -> Result<Upload, StoreError> {
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        let up = Upload {
            upload_id: hex::encode(raw),
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type,
            metadata,
            initiated_ms: now_ms(),
        };
        let conn = self.conn();
        conn.execute(
            &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                up.upload_id,
                up.bucket,
                up.key,
                up.content_type,
                meta_to_json(&up.metadata),
                up.initiated_ms
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::NoSuchBucket(bucket.to_string())
            }
            e => e.into(),
        })?;
        Ok(up)
    }

    /// The upload `upload_id`.
    pub fn upload(&self, upload_id: &str) -> Result<Option<Upload>, StoreError> {
        let u = self
            .conn()
            .query_row(
                &format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?1"),
                [upload_id],
                row_to_upload,
            )
            .optional()?;
        Ok(u)
    }

    /// Uploads in progress in `bucket`, by key then start time.
    pub fn list_uploads(&self, bucket: &str) -> Result<Vec<Upload>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE bucket = ?1 ORDER BY key, initiated_ms"
        ))?;
        let rows = stmt.query_map([bucket], row_to_upload)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a part, replacing an earlier part of the same number.
    pub fn put_part(&self, upload_id: &str, part: &PartRow) -> Result<(), StoreError> {
        let old = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM uploads WHERE upload_id = ?1)",
                [upload_id],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StoreError::NoSuchUpload(upload_id.to_string()));
            }
            let old: Option<String> = tx
                .query_row(
                    "SELECT blob FROM parts WHERE upload_id = ?1 AND part_number = ?2",
                    params![upload_id, part.part_number],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT OR REPLACE INTO parts (upload_id, part_number, blob, size, etag, sha256, modified_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![upload_id, part.part_number, part.blob, part.size as i64, part.etag, part.sha256, part.modified_ms],
            )?;
            tx.commit()?;
            old
        };
        self.remove_blobs(&old.into_iter().collect::<Vec<_>>());
        Ok(())
    }

    /// The parts of an upload, by number.
    pub fn list_parts(&self, upload_id: &str) -> Result<Vec<PartRow>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT part_number, blob, size, etag, sha256, modified_ms FROM parts WHERE upload_id = ?1 ORDER BY part_number",
        )?;
        let rows = stmt.query_map([upload_id], |r| {
            Ok(PartRow {
                part_number: r.get(0)?,
                blob: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                etag: r.get(3)?,
                sha256: r.get(4)?,
                modified_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Completes an upload: the object row goes in, the upload and all its parts go away.
    pub fn complete_upload(&self, upload: &Upload, object: &ObjectRow) -> Result<(), StoreError> {
        let garbage = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut garbage = remove_upload(&tx, &upload.upload_id)?;
            garbage.extend(insert_object(&tx, &upload.bucket, object)?);
            tx.commit()?;
            garbage
        };
        self.remove_blobs(&garbage);
        Ok(())
    }

    /// Aborts an upload, removing its parts.
    pub fn abort_upload(&self, upload_id: &str) -> Result<(), StoreError> {
        let garbage = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let garbage = remove_upload(&tx, upload_id)?;
            tx.commit()?;
            garbage
        };
        self.remove_blobs(&garbage);
        Ok(())
    }
}

fn remove_upload(
    tx: &rusqlite::Transaction<'_>,
    upload_id: &str,
) -> Result<Vec<String>, StoreError> {
    let blobs: Vec<String> = {
        let mut stmt = tx.prepare("DELETE FROM parts WHERE upload_id = ?1 RETURNING blob")?;
        let rows = stmt.query_map([upload_id], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    if tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])? == 0 {
        return Err(StoreError::NoSuchUpload(upload_id.to_string()));
    }
    Ok(blobs)
}
