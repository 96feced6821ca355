//! Object operations: put (streamed to a blob, digests checked), get and head (ranges,
//! conditionals), delete, multi-delete and copy.

use super::checksum::PayloadChecksum;
use super::payload::{content_sha256_mismatch, PayloadReader};
use super::xml::{self, S3_NS};
use super::{Access, ReqBody, S3Error, S3Request, Walrus};
use crate::auth::time::format_iso8601_millis;
use crate::http::xml::Xml;
use crate::http::{db, empty_response, file_body, parse_range, xml_response, RespBody};
use crate::store::{FinishedBlob, ObjectRow, INLINE_MAX, SMALL_BLOB_MAX};
use base64::Engine;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use std::time::{Duration, UNIX_EPOCH};

type Result = std::result::Result<Response<RespBody>, S3Error>;

const MAX_KEY_LEN: usize = 1024;

/// `x-amz-meta-*` headers, names lower-cased.
pub fn user_metadata(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-amz-meta-"))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Checks a `Content-MD5` header against the payload's MD5 (hex).
pub fn check_content_md5(r: &S3Request, md5_hex: &str) -> std::result::Result<(), S3Error> {
    let Some(claim) = r.header("content-md5") else {
        return Ok(());
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(claim.trim())
        .ok()
        .filter(|b| b.len() == 16)
        .ok_or_else(|| {
            S3Error::new(
                400,
                "InvalidDigest",
                "The Content-MD5 you specified was invalid.",
            )
        })?;
    if hex::encode(raw) != md5_hex {
        return Err(S3Error::new(
            400,
            "BadDigest",
            "The Content-MD5 you specified did not match what we received.",
        ));
    }
    Ok(())
}

/// Streams the request payload into a new durable blob, checking the signed SHA-256, any
/// flexible checksum and Content-MD5 before it is made durable. A payload declared at most
/// `inline_up_to` bytes long is kept in memory, its blob `inline`, for the state database.
pub async fn receive_blob(
    w: &Walrus,
    r: &S3Request,
    body: ReqBody,
    inline_up_to: u64,
) -> std::result::Result<FinishedBlob, S3Error> {
    let decoded_len: Option<u64> = r
        .header("x-amz-decoded-content-length")
        .and_then(|v| v.parse().ok());
    let declared_len = decoded_len.or_else(|| r.header("content-length")?.parse().ok());
    let mut reader = PayloadReader::new(body, &r.auth, decoded_len, false);
    let mut writer = match declared_len {
        Some(n) if n <= inline_up_to => w.store.blobs().writer_in_memory(inline_up_to),
        _ => db(|| w.store.blobs().writer())?,
    };
    let mut checksum = PayloadChecksum::from_headers(&r.headers);
    while let Some(chunk) = reader.next_chunk().await? {
        if let Some(c) = &mut checksum {
            c.update(&chunk);
        }
        tokio::task::block_in_place(|| writer.write(&chunk))?;
    }
    let (md5, sha) = writer.digests();
    if reader.claimed_sha256().is_some_and(|c| c != sha) {
        return Err(content_sha256_mismatch());
    }
    if let Some(c) = checksum {
        c.verify(reader.trailers())?;
    }
    check_content_md5(r, &md5)?;
    Ok(tokio::task::block_in_place(|| writer.finish())?)
}

fn check_key(key: &str) -> std::result::Result<(), S3Error> {
    if key.len() > MAX_KEY_LEN {
        return Err(S3Error::new(400, "KeyTooLongError", "Your key is too long"));
    }
    Ok(())
}

/// Stores `row` in `bucket`, with its blob's bytes when they are `inline`; on failure the new
/// blob is removed again.
pub fn commit_object(
    w: &Walrus,
    bucket: &str,
    row: &ObjectRow,
    inline: Option<bytes::Bytes>,
) -> std::result::Result<(), S3Error> {
    db(|| w.store.put_object_with(bucket, row, inline))
        .inspect_err(|_| w.store.blobs().remove(&row.blob))?;
    Ok(())
}

fn etag_response(etag: &str) -> Response<RespBody> {
    let mut resp = empty_response(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    resp
}

pub async fn put(w: &Walrus, r: &S3Request, bucket: &str, key: &str, body: ReqBody) -> Result {
    w.bucket_for(r, bucket, Access::Write)?;
    check_key(key)?;
    let blob = receive_blob(w, r, body, INLINE_MAX).await?;
    let ctype = r.header("content-type").map(str::to_string);
    let row = ObjectRow::new(
        key,
        &blob,
        blob.md5_hex.clone(),
        ctype,
        user_metadata(&r.headers),
    );
    commit_object(w, bucket, &row, blob.inline)?;
    Ok(etag_response(&row.etag))
}

fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == etag)
}

/// Evaluates If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since: `Ok(Some)`
/// is a 304 to send, `Err` a 412.
fn check_conditions(
    headers: &HeaderMap,
    o: &ObjectRow,
) -> std::result::Result<Option<StatusCode>, S3Error> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let modified = o.modified_ms / 1000;
    let date = |n: &str| {
        h(n).and_then(|v| httpdate::parse_http_date(v).ok())
            .map(|t| {
                t.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            })
    };
    let failed = || {
        S3Error::new(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        )
    };
    if let Some(m) = h("if-match") {
        if !etag_matches(m, &o.etag) {
            return Err(failed());
        }
    } else if date("if-unmodified-since").is_some_and(|t| modified > t) {
        return Err(failed());
    }
    if let Some(m) = h("if-none-match") {
        if etag_matches(m, &o.etag) {
            return Ok(Some(StatusCode::NOT_MODIFIED));
        }
    } else if date("if-modified-since").is_some_and(|t| modified <= t) {
        return Ok(Some(StatusCode::NOT_MODIFIED));
    }
    Ok(None)
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn object_headers(headers: &mut HeaderMap, o: &ObjectRow) {
    set(headers, "etag", &format!("\"{}\"", o.etag));
    let modified = UNIX_EPOCH + Duration::from_millis(o.modified_ms.max(0) as u64);
    set(headers, "last-modified", &httpdate::fmt_http_date(modified));
    set(headers, "accept-ranges", "bytes");
    for (k, v) in &o.metadata {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(n, v);
        }
    }
}

/// Bytes `start..start + len` of `o`'s data: a small object's from the blob cache, others
/// streamed from the blob file.
fn object_body(w: &Walrus, o: &ObjectRow, start: u64, len: u64) -> std::io::Result<RespBody> {
    if o.size > SMALL_BLOB_MAX {
        return file_body(w.store.blobs(), &o.blob, start, len);
    }
    let data = w.store.read_small(&o.blob, o.size)?;
    // Within `o.size` (parse_range), so within the blob's bytes: both at most SMALL_BLOB_MAX.
    let end = start + len;
    if end > data.len() as u64 {
        return Err(std::io::Error::other("range outside the blob"));
    }
    Ok(crate::http::body::full(
        data.slice(start as usize..end as usize),
    ))
}

/// GET or HEAD of an object (its bucket and object as the request found them,
/// `S3Request::found`).
pub fn get(w: &Walrus, r: &S3Request, bucket: &str, key: &str, head: bool) -> Result {
    let (_, o) = w.object_for(r, bucket, key, Access::Read)?;
    if let Some(status) = check_conditions(&r.headers, &o)? {
        let mut resp = empty_response(status);
        object_headers(resp.headers_mut(), &o);
        return Ok(resp);
    }
    let range = match r.header("range") {
        Some(h) => parse_range(h, o.size)?,
        None => None,
    };
    let (start, len, status) = match range {
        Some((s, e)) => (s, e - s + 1, StatusCode::PARTIAL_CONTENT),
        None => (0, o.size, StatusCode::OK),
    };
    let body = if head {
        crate::http::body::empty()
    } else {
        object_body(w, &o, start, len)?
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let hs = resp.headers_mut();
    object_headers(hs, &o);
    hs.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    set(
        hs,
        "content-type",
        o.content_type.as_deref().unwrap_or("binary/octet-stream"),
    );
    if let Some((s, e)) = range {
        set(hs, "content-range", &format!("bytes {s}-{e}/{}", o.size));
    }
    for (param, header) in [
        ("response-content-type", "content-type"),
        ("response-content-disposition", "content-disposition"),
        ("response-content-encoding", "content-encoding"),
        ("response-content-language", "content-language"),
        ("response-cache-control", "cache-control"),
        ("response-expires", "expires"),
    ] {
        if let Some(v) = r.query.get(param) {
            set(hs, header, v);
        }
    }
    Ok(resp)
}

pub fn delete(w: &Walrus, r: &S3Request, bucket: &str, key: &str) -> Result {
    w.bucket_for(r, bucket, Access::Write)?;
    db(|| w.store.delete_object(bucket, key))?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

pub async fn delete_many(w: &Walrus, r: &S3Request, bucket: &str, body: ReqBody) -> Result {
    w.bucket_for(r, bucket, Access::Write)?;
    let payload = PayloadReader::new(body, &r.auth, None, true)
        .read_all(2 << 20)
        .await?;
    check_content_md5(r, &hex::encode(<md5::Md5 as md5::Digest>::digest(&payload)))?;
    let (keys, quiet) = xml::parse_delete(&payload)?;
    let mut x = Xml::namespaced(S3_NS);
    x.open("DeleteResult");
    for key in keys {
        db(|| w.store.delete_object(bucket, &key))?;
        if !quiet {
            x.open("Deleted");
            x.field("Key", &key);
            x.close("Deleted");
        }
    }
    x.close("DeleteResult");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

/// Parses `x-amz-copy-source` (`[/]bucket/key[?versionId=..]`, URL-encoded).
pub fn parse_copy_source(v: &str) -> std::result::Result<(String, String), S3Error> {
    let v = v.split_once('?').map_or(v, |(p, _)| p);
    let decoded = String::from_utf8(crate::auth::canonical::percent_decode(
        v.trim_start_matches('/'),
    ))
    .map_err(|_| S3Error::invalid_argument("bad x-amz-copy-source"))?;
    match decoded.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_string(), k.to_string())),
        _ => Err(S3Error::invalid_argument(
            "x-amz-copy-source must be bucket/key",
        )),
    }
}

pub async fn copy(w: &Walrus, r: &S3Request, bucket: &str, key: &str) -> Result {
    check_key(key)?;
    let (src_bucket, src_key) = parse_copy_source(r.header("x-amz-copy-source").unwrap_or(""))?;
    w.bucket_for(r, &src_bucket, Access::Read)?;
    w.bucket_for(r, bucket, Access::Write)?;
    let src = db(|| w.store.object(&src_bucket, &src_key))?
        .ok_or_else(|| S3Error::no_such_key(&src_key))?;
    let blob = if src.size <= INLINE_MAX {
        let mut copy = w.store.blobs().writer_in_memory(INLINE_MAX);
        copy.write(&w.store.read_small(&src.blob, src.size)?)?;
        copy.finish()?
    } else {
        let blobs = w.store.blobs().clone();
        let src_blob = src.blob.clone();
        tokio::task::spawn_blocking(move || blobs.concat(&[src_blob]))
            .await
            .map_err(|e| S3Error::internal(e.to_string()))??
    };
    let (ctype, meta) = if r.header("x-amz-metadata-directive") == Some("REPLACE") {
        (
            r.header("content-type").map(str::to_string),
            user_metadata(&r.headers),
        )
    } else {
        (src.content_type.clone(), src.metadata.clone())
    };
    let row = ObjectRow::new(key, &blob, src.etag.clone(), ctype, meta);
    commit_object(w, bucket, &row, blob.inline)?;
    let mut x = Xml::namespaced(S3_NS);
    x.open("CopyObjectResult");
    x.field("LastModified", format_iso8601_millis(row.modified_ms));
    x.field("ETag", format!("\"{}\"", row.etag));
    x.close("CopyObjectResult");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_decoded_and_version_dropped() {
        assert_eq!(
            parse_copy_source("/b/a%20c?versionId=1").unwrap(),
            ("b".into(), "a c".into())
        );
        assert_eq!(
            parse_copy_source("b/k/x").unwrap(),
            ("b".into(), "k/x".into())
        );
        assert!(parse_copy_source("b").is_err());
    }
}
