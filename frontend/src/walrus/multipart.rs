//! Multipart uploads: create, upload part, complete (parts concatenated into one blob, ETag
//! `md5-of-md5s-N`), abort, list parts, list uploads.

use super::objects::{parse_copy_source, receive_blob};
use super::xml::{self, S3_NS};
use super::{Access, ReqBody, S3Error, S3Request, Walrus};
use crate::auth::time::format_iso8601_millis;
use crate::http::parse_range;
use crate::http::xml::Xml;
use crate::http::{db, empty_response, xml_response, RespBody};
use crate::store::{now_ms, FinishedBlob, ObjectRow, PartRow, Upload};
use http::{HeaderValue, Response, StatusCode};
use md5::{Digest, Md5};

type Result = std::result::Result<Response<RespBody>, S3Error>;

const MIN_PART: u64 = 5 << 20;
const MAX_PART_NUMBER: u32 = 10_000;

/// The upload `id` for `bucket`/`key`, if `r` may write there.
fn upload_for(
    w: &Walrus,
    r: &S3Request,
    bucket: &str,
    key: &str,
) -> std::result::Result<Upload, S3Error> {
    w.bucket_for(r, bucket, Access::Write)?;
    let id = r.query.get("uploadId").unwrap_or("");
    match db(|| w.store.upload(id))? {
        Some(u) if u.bucket == bucket && u.key == key => Ok(u),
        _ => Err(S3Error::no_such_upload(id)),
    }
}

pub fn create(w: &Walrus, r: &S3Request, bucket: &str, key: &str) -> Result {
    w.bucket_for(r, bucket, Access::Write)?;
    let ctype = r.header("content-type").map(str::to_string);
    let up = db(|| {
        w.store.create_upload(
            bucket,
            key,
            ctype,
            super::objects::user_metadata(&r.headers),
        )
    })?;
    let mut x = Xml::namespaced(S3_NS);
    x.open("InitiateMultipartUploadResult");
    x.field("Bucket", bucket);
    x.field("Key", key);
    x.field("UploadId", &up.upload_id);
    x.close("InitiateMultipartUploadResult");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

pub async fn upload_part(
    w: &Walrus,
    r: &S3Request,
    bucket: &str,
    key: &str,
    body: ReqBody,
) -> Result {
    let up = upload_for(w, r, bucket, key)?;
    let number: u32 = r
        .query
        .get("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        })?;
    let copying = r.headers.contains_key("x-amz-copy-source");
    let blob = if copying {
        copy_part_data(w, r).await?
    } else {
        receive_blob(w, r, body, 0).await?
    };
    let part = PartRow {
        part_number: number,
        blob: blob.id.clone(),
        size: blob.size,
        etag: blob.md5_hex.clone(),
        sha256: blob.sha256_hex.clone(),
        modified_ms: now_ms(),
    };
    db(|| w.store.put_part(&up.upload_id, &part))
        .inspect_err(|_| w.store.blobs().remove(&blob.id))?;
    if copying {
        let mut x = Xml::namespaced(S3_NS);
        x.open("CopyPartResult");
        x.field("LastModified", format_iso8601_millis(part.modified_ms));
        x.field("ETag", format!("\"{}\"", part.etag));
        x.close("CopyPartResult");
        return Ok(xml_response(StatusCode::OK, x.finish()));
    }
    let mut resp = empty_response(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", part.etag)) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    Ok(resp)
}

/// UploadPartCopy: the part's data is (a range of) an existing object.
async fn copy_part_data(w: &Walrus, r: &S3Request) -> std::result::Result<FinishedBlob, S3Error> {
    let (src_bucket, src_key) = parse_copy_source(r.header("x-amz-copy-source").unwrap_or(""))?;
    w.bucket_for(r, &src_bucket, Access::Read)?;
    let src = w
        .store
        .object(&src_bucket, &src_key)?
        .ok_or_else(|| S3Error::no_such_key(&src_key))?;
    let (start, len) = match r.header("x-amz-copy-source-range") {
        Some(h) => match parse_range(h, src.size)? {
            Some((s, e)) => (s, e - s + 1),
            None => {
                return Err(S3Error::invalid_argument(
                    "x-amz-copy-source-range must be bytes=first-last",
                ))
            }
        },
        None => (0, src.size),
    };
    let dir = w.store.blobs().clone();
    let id = src.blob.clone();
    // Parts are files (completion joins them): an inline source gets its file first.
    db(|| w.store.blob_file(&id))?;
    Ok(
        tokio::task::spawn_blocking(move || dir.copy_range(&id, start, len))
            .await
            .map_err(|e| S3Error::internal(e.to_string()))??,
    )
}

/// Checks the client's part list against the stored parts; returns the blobs in order and
/// the multipart ETag.
pub fn plan_completion(
    requested: &[(u32, String)],
    stored: &[PartRow],
) -> std::result::Result<(Vec<String>, String), S3Error> {
    let invalid_part = || {
        S3Error::new(
            400,
            "InvalidPart",
            "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
        )
    };
    let mut blobs = Vec::with_capacity(requested.len());
    let mut md5s = Md5::new();
    let mut prev = 0;
    for (i, (number, etag)) in requested.iter().enumerate() {
        if *number <= prev {
            return Err(S3Error::new(
                400,
                "InvalidPartOrder",
                "The list of parts was not in ascending order.",
            ));
        }
        prev = *number;
        let part = stored
            .iter()
            .find(|p| p.part_number == *number)
            .ok_or_else(invalid_part)?;
        if part.etag != *etag {
            return Err(invalid_part());
        }
        if i + 1 < requested.len() && part.size < MIN_PART {
            return Err(S3Error::new(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
            ));
        }
        md5s.update(hex::decode(&part.etag).map_err(|_| invalid_part())?);
        blobs.push(part.blob.clone());
    }
    Ok((
        blobs,
        format!("{}-{}", hex::encode(md5s.finalize()), requested.len()),
    ))
}

pub async fn complete(w: &Walrus, r: &S3Request, bucket: &str, key: &str, body: ReqBody) -> Result {
    let up = upload_for(w, r, bucket, key)?;
    let payload = super::payload::PayloadReader::new(body, &r.auth, None, true)
        .read_all(4 << 20)
        .await?;
    let requested = xml::parse_complete(&payload)?;
    let stored = db(|| w.store.list_parts(&up.upload_id))?;
    let (blobs, etag) = plan_completion(&requested, &stored)?;
    let dir = w.store.blobs().clone();
    let blob = tokio::task::spawn_blocking(move || dir.concat(&blobs))
        .await
        .map_err(|e| S3Error::internal(e.to_string()))??;
    let row = ObjectRow::new(
        key,
        &blob,
        etag,
        up.content_type.clone(),
        up.metadata.clone(),
    );
    db(|| w.store.complete_upload(&up, &row)).inspect_err(|_| w.store.blobs().remove(&blob.id))?;
    let mut x = Xml::namespaced(S3_NS);
    x.open("CompleteMultipartUploadResult");
    x.field("Location", format!("/{bucket}/{key}"));
    x.field("Bucket", bucket);
    x.field("Key", key);
    x.field("ETag", format!("\"{}\"", row.etag));
    x.close("CompleteMultipartUploadResult");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

pub fn abort(w: &Walrus, r: &S3Request, bucket: &str, key: &str) -> Result {
    let up = upload_for(w, r, bucket, key)?;
    db(|| w.store.abort_upload(&up.upload_id))?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

pub fn list_parts(w: &Walrus, r: &S3Request, bucket: &str, key: &str) -> Result {
    let up = upload_for(w, r, bucket, key)?;
    let marker: u32 = r
        .query
        .get("part-number-marker")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let max: usize = r
        .query
        .get("max-parts")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1000)
        .min(1000);
    let parts = db(|| w.store.list_parts(&up.upload_id))?;
    let after: Vec<&PartRow> = parts.iter().filter(|p| p.part_number > marker).collect();
    let page = &after[..after.len().min(max)];
    let mut x = Xml::namespaced(S3_NS);
    x.open("ListPartsResult");
    x.field("Bucket", bucket);
    x.field("Key", key);
    x.field("UploadId", &up.upload_id);
    x.field("PartNumberMarker", marker.to_string());
    if let Some(last) = page.last() {
        x.field("NextPartNumberMarker", last.part_number.to_string());
    }
    x.field("MaxParts", max.to_string());
    x.field(
        "IsTruncated",
        if after.len() > page.len() {
            "true"
        } else {
            "false"
        },
    );
    x.field("StorageClass", "STANDARD");
    for p in page {
        x.open("Part");
        x.field("PartNumber", p.part_number.to_string());
        x.field("LastModified", format_iso8601_millis(p.modified_ms));
        x.field("ETag", format!("\"{}\"", p.etag));
        x.field("Size", p.size.to_string());
        x.close("Part");
    }
    x.close("ListPartsResult");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

pub fn list_uploads(w: &Walrus, r: &S3Request, bucket: &str) -> Result {
    w.bucket_for(r, bucket, Access::Read)?;
    let prefix = r.query.get("prefix").unwrap_or("");
    let uploads = db(|| w.store.list_uploads(bucket))?;
    let mut x = Xml::namespaced(S3_NS);
    x.open("ListMultipartUploadsResult");
    x.field("Bucket", bucket);
    x.field("KeyMarker", "");
    x.field("UploadIdMarker", "");
    x.field("Prefix", prefix);
    x.field("MaxUploads", "1000");
    x.field("IsTruncated", "false");
    for u in uploads.iter().filter(|u| u.key.starts_with(prefix)) {
        x.open("Upload");
        x.field("Key", &u.key);
        x.field("UploadId", &u.upload_id);
        x.field("StorageClass", "STANDARD");
        x.field("Initiated", format_iso8601_millis(u.initiated_ms));
        x.close("Upload");
    }
    x.close("ListMultipartUploadsResult");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(n: u32, size: u64, etag: &str) -> PartRow {
        PartRow {
            part_number: n,
            blob: format!("b{n}"),
            size,
            etag: etag.into(),
            sha256: String::new(),
            modified_ms: 0,
        }
    }

    #[test]
    fn completion_etag_is_md5_of_part_md5s_with_count() {
        let a = "5d41402abc4b2a76b9719d911017c592";
        let b = "7d793037a0760186574b0282f2f435e7";
        let stored = vec![part(1, MIN_PART, a), part(2, 3, b)];
        let (blobs, etag) = plan_completion(&[(1, a.into()), (2, b.into())], &stored).unwrap();
        assert_eq!(blobs, vec!["b1", "b2"]);
        let mut m = Md5::new();
        m.update(hex::decode(a).unwrap());
        m.update(hex::decode(b).unwrap());
        assert_eq!(etag, format!("{}-2", hex::encode(m.finalize())));
    }

    #[test]
    fn completion_refuses_small_missing_or_unordered_parts() {
        let a = "5d41402abc4b2a76b9719d911017c592";
        let stored = vec![part(1, 10, a), part(2, 10, a)];
        let code = |req: &[(u32, String)]| plan_completion(req, &stored).unwrap_err().code;
        assert_eq!(code(&[(1, a.into()), (2, a.into())]), "EntityTooSmall");
        assert_eq!(code(&[(3, a.into())]), "InvalidPart");
        assert_eq!(code(&[(1, "00".into())]), "InvalidPart");
        let big = vec![part(1, MIN_PART, a), part(2, MIN_PART, a)];
        let err = plan_completion(&[(2, a.into()), (1, a.into())], &big).unwrap_err();
        assert_eq!(err.code, "InvalidPartOrder");
    }
}
