//! ListObjects (v1) and ListObjectsV2: prefix, delimiter (common prefixes), pagination by
//! marker / continuation token, and `encoding-type=url`. `list` is a plain function over the
//! store; the two handlers only differ in parameters and XML.

use super::xml::S3_NS;
use super::{Access, Query, S3Error, S3Request, Walrus};
use crate::auth::canonical::uri_encode;
use crate::auth::time::format_iso8601_millis;
use crate::http::xml::Xml;
use crate::http::{xml_response, RespBody};
use crate::store::{ObjectRow, Store, StoreError};
use base64::Engine;
use http::{Response, StatusCode};

type Result = std::result::Result<Response<RespBody>, S3Error>;

/// Sorts after any key continuing a common prefix.
const PAST_PREFIX: char = '\u{10FFFF}';
const BATCH: usize = 1000;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub prefix: String,
    pub delimiter: String,
    /// List keys strictly after this one.
    pub after: String,
    pub max_keys: usize,
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct ListResult {
    pub contents: Vec<ObjectRow>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Last key or common prefix returned (the next marker when truncated).
    pub last: Option<String>,
}

/// Lists `bucket` as S3 does.
pub fn list(
    store: &Store,
    bucket: &str,
    p: &ListParams,
) -> std::result::Result<ListResult, StoreError> {
    let mut out = ListResult::default();
    if p.max_keys == 0 {
        return Ok(out);
    }
    let (mut cursor, mut inclusive) = if p.after.as_str() < p.prefix.as_str() {
        (p.prefix.clone(), true)
    } else if !p.delimiter.is_empty()
        && p.after.starts_with(&p.prefix)
        && p.after.ends_with(&p.delimiter)
    {
        (format!("{}{PAST_PREFIX}", p.after), false)
    } else {
        (p.after.clone(), false)
    };
    'scan: loop {
        let batch = store.objects_from(bucket, &cursor, inclusive, BATCH)?;
        let exhausted = batch.len() < BATCH;
        for o in batch {
            if !o.key.starts_with(&p.prefix) {
                break 'scan;
            }
            let rest = &o.key[p.prefix.len()..];
            let cp = (!p.delimiter.is_empty())
                .then(|| rest.find(&p.delimiter))
                .flatten()
                .map(|i| o.key[..p.prefix.len() + i + p.delimiter.len()].to_string());
            if out.contents.len() + out.common_prefixes.len() == p.max_keys {
                out.truncated = true;
                break 'scan;
            }
            inclusive = false;
            match cp {
                Some(cp) => {
                    cursor = format!("{cp}{PAST_PREFIX}");
                    out.last = Some(cp.clone());
                    out.common_prefixes.push(cp);
                    continue 'scan;
                }
                None => {
                    cursor = o.key.clone();
                    out.last = Some(o.key.clone());
                    out.contents.push(o);
                }
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(out)
}

/// True when the query has only listing parameters (so it is not some other subresource).
pub fn is_list_query(q: &Query) -> bool {
    const KNOWN: &[&str] = &[
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "encoding-type",
        "list-type",
        "continuation-token",
        "start-after",
        "fetch-owner",
        "x-id",
    ];
    q.0.iter()
        .all(|(k, _)| KNOWN.contains(&k.as_str()) || k.starts_with("X-Amz-"))
}

fn max_keys(q: &Query) -> std::result::Result<usize, S3Error> {
    match q.get("max-keys") {
        None => Ok(1000),
        Some(v) => v
            .parse::<usize>()
            .map(|n| n.min(1000))
            .map_err(|_| S3Error::invalid_argument("max-keys must be a non-negative integer")),
    }
}

struct Encoder(bool);

impl Encoder {
    fn enc(&self, s: &str) -> String {
        if self.0 {
            uri_encode(s.as_bytes(), true)
        } else {
            s.to_string()
        }
    }
}

fn write_entries(x: &mut Xml, res: &ListResult, e: &Encoder) {
    for o in &res.contents {
        x.open("Contents");
        x.field("Key", e.enc(&o.key));
        x.field("LastModified", format_iso8601_millis(o.modified_ms));
        x.field("ETag", format!("\"{}\"", o.etag));
        x.field("Size", o.size.to_string());
        x.field("StorageClass", "STANDARD");
        x.close("Contents");
    }
    for cp in &res.common_prefixes {
        x.open("CommonPrefixes");
        x.field("Prefix", e.enc(cp));
        x.close("CommonPrefixes");
    }
}

fn params(q: &Query, after: String) -> std::result::Result<ListParams, S3Error> {
    Ok(ListParams {
        prefix: q.get("prefix").unwrap_or("").to_string(),
        delimiter: q.get("delimiter").unwrap_or("").to_string(),
        after,
        max_keys: max_keys(q)?,
    })
}

fn write_header(x: &mut Xml, bucket: &str, p: &ListParams, e: &Encoder) {
    x.open("ListBucketResult");
    x.field("Name", bucket);
    x.field("Prefix", e.enc(&p.prefix));
    if !p.delimiter.is_empty() {
        x.field("Delimiter", e.enc(&p.delimiter));
    }
    x.field("MaxKeys", p.max_keys.to_string());
    if e.0 {
        x.field("EncodingType", "url");
    }
}

pub fn list_v1(w: &Walrus, r: &S3Request, bucket: &str) -> Result {
    w.bucket_for(r, bucket, Access::Read)?;
    let q = &r.query;
    let marker = q.get("marker").unwrap_or("").to_string();
    let p = params(q, marker.clone())?;
    let res = list(&w.store, bucket, &p)?;
    let e = Encoder(q.get("encoding-type") == Some("url"));
    let mut x = Xml::namespaced(S3_NS);
    write_header(&mut x, bucket, &p, &e);
    x.field("Marker", e.enc(&marker));
    x.field("IsTruncated", if res.truncated { "true" } else { "false" });
    if let (true, Some(last)) = (res.truncated, &res.last) {
        x.field("NextMarker", e.enc(last));
    }
    write_entries(&mut x, &res, &e);
    x.close("ListBucketResult");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

pub fn list_v2(w: &Walrus, r: &S3Request, bucket: &str) -> Result {
    w.bucket_for(r, bucket, Access::Read)?;
    let q = &r.query;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let after = match q.get("continuation-token") {
        Some(t) => b64
            .decode(t)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| {
                S3Error::invalid_argument("The continuation token provided is incorrect")
            })?,
        None => q.get("start-after").unwrap_or("").to_string(),
    };
    let p = params(q, after)?;
    let res = list(&w.store, bucket, &p)?;
    let e = Encoder(q.get("encoding-type") == Some("url"));
    let mut x = Xml::namespaced(S3_NS);
    write_header(&mut x, bucket, &p, &e);
    x.field(
        "KeyCount",
        (res.contents.len() + res.common_prefixes.len()).to_string(),
    );
    x.field("IsTruncated", if res.truncated { "true" } else { "false" });
    if let Some(t) = q.get("continuation-token") {
        x.field("ContinuationToken", t);
    }
    if let Some(s) = q.get("start-after") {
        x.field("StartAfter", e.enc(s));
    }
    if let (true, Some(last)) = (res.truncated, &res.last) {
        x.field("NextContinuationToken", b64.encode(last));
    }
    write_entries(&mut x, &res, &e);
    x.close("ListBucketResult");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ObjectRow, Role};

    fn store_with(keys: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_user("u", Role::User).unwrap();
        store.create_bucket("b", "u").unwrap();
        for k in keys {
            let mut w = store.blobs().writer().unwrap();
            w.write(k.as_bytes()).unwrap();
            let blob = w.finish().unwrap();
            store
                .put_object(
                    "b",
                    &ObjectRow::new(k, &blob, blob.md5_hex.clone(), None, vec![]),
                )
                .unwrap();
        }
        (dir, store)
    }

    fn page(
        store: &Store,
        prefix: &str,
        delim: &str,
        after: &str,
        max: usize,
    ) -> (Vec<String>, Vec<String>, bool, Option<String>) {
        let p = ListParams {
            prefix: prefix.into(),
            delimiter: delim.into(),
            after: after.into(),
            max_keys: max,
        };
        let r = list(store, "b", &p).unwrap();
        (
            r.contents.into_iter().map(|o| o.key).collect(),
            r.common_prefixes,
            r.truncated,
            r.last,
        )
    }

    #[test]
    fn delimiter_rolls_keys_up_into_common_prefixes() {
        let (_d, s) = store_with(&["a/1", "a/2", "b", "c/x/1", "c/y", "d"]);
        let (keys, cps, trunc, _) = page(&s, "", "/", "", 1000);
        assert_eq!(keys, vec!["b", "d"]);
        assert_eq!(cps, vec!["a/", "c/"]);
        assert!(!trunc);
        let (keys, cps, _, _) = page(&s, "c/", "/", "", 1000);
        assert_eq!(keys, vec!["c/y"]);
        assert_eq!(cps, vec!["c/x/"]);
    }

    #[test]
    fn pages_resume_after_the_last_entry_without_repeats() {
        let (_d, s) = store_with(&["a/1", "a/2", "b", "c/x/1", "c/y", "d"]);
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let (keys, cps, trunc, last) = page(&s, "", "/", &after, 1);
            seen.extend(keys);
            seen.extend(cps);
            if !trunc {
                break;
            }
            after = last.unwrap();
        }
        assert_eq!(seen, vec!["a/", "b", "c/", "d"]);
        let (keys, _, trunc, _) = page(&s, "", "", "", 2);
        assert_eq!(
            (keys, trunc),
            (vec!["a/1".to_string(), "a/2".to_string()], true)
        );
        let (keys, _, _, _) = page(&s, "a/", "", "", 0);
        assert!(keys.is_empty());
    }
}
