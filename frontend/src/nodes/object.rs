//! `GET /_node/object/{bucket}/{key}`: a node reads the Walrus object behind an image it was
//! told to run, with its own bearer token (no S3 keys on nodes). Only objects named by an
//! [`ImageRef`] of an instance placed on that node are served; `Range: bytes=N-` lets a node
//! resume a broken download. The body streams from the blob file with a Content-Length.

use crate::cloud::nodes::{self as record, NodeError};
use crate::http::{db, file_body, parse_range, RespBody};
use crate::store::Store;
use http::{HeaderValue, Response, StatusCode};
use mallee_proto::{ImageRef, InstanceSpec};

pub const PATH_OBJECT: &str = "/_node/object/";

/// Splits `bucket/key` (percent-encoded in the URL) into its parts.
pub fn split_path(rest: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(crate::auth::canonical::percent_decode(rest)).ok()?;
    let (bucket, key) = decoded.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()))
}

/// Whether one of the node's instances uses `bucket/key` as its image, kernel or ramdisk.
pub fn placed(specs: &[InstanceSpec], bucket: &str, key: &str) -> bool {
    let is = |r: &ImageRef| r.bucket == bucket && r.key == key;
    specs.iter().any(|s| {
        is(&s.image) || s.kernel.as_ref().is_some_and(is) || s.ramdisk.as_ref().is_some_and(is)
    })
}

/// Serves the object (or the asked range of it) to node `node`.
pub fn serve(
    store: &Store,
    node: &str,
    rest: &str,
    range: Option<&str>,
) -> Result<Response<RespBody>, NodeError> {
    let (bucket, key) =
        split_path(rest).ok_or_else(|| NodeError::Mismatch(format!("bad object path {rest:?}")))?;
    let specs = db(|| record::desired(store, node))?;
    if !placed(&specs, &bucket, &key) {
        return Err(NodeError::Forbidden(format!(
            "no instance on node {node} uses {bucket}/{key}"
        )));
    }
    let o = db(|| store.object(&bucket, &key))?
        .ok_or_else(|| NodeError::NotFound(format!("no object {bucket}/{key}")))?;
    let span = match range {
        Some(h) => parse_range(h, o.size).map_err(|_| NodeError::Range(h.to_string()))?,
        None => None,
    };
    let (start, len, status) = match span {
        Some((s, e)) => (s, e - s + 1, StatusCode::PARTIAL_CONTENT),
        None => (0, o.size, StatusCode::OK),
    };
    let body = db(|| store.blob_file(&o.blob))
        .and_then(|_| file_body(store.blobs(), &o.blob, start, len))
        .map_err(|e| NodeError::NotFound(format!("object {bucket}/{key} unreadable: {e}")))?;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let hs = resp.headers_mut();
    let mut set = |name: http::header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hs.insert(name, v);
        }
    };
    set(http::header::CONTENT_LENGTH, len.to_string());
    set(
        http::header::CONTENT_TYPE,
        "application/octet-stream".into(),
    );
    set(http::header::ACCEPT_RANGES, "bytes".into());
    if let Some((s, e)) = span {
        set(
            http::header::CONTENT_RANGE,
            format!("bytes {s}-{e}/{}", o.size),
        );
    }
    set(
        http::header::HeaderName::from_static("x-mallee-sha256"),
        o.sha256.clone(),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_split_and_decode() {
        assert_eq!(
            split_path("images/a%20b/c.img"),
            Some(("images".into(), "a b/c.img".into()))
        );
        assert_eq!(split_path("images/"), None);
        assert_eq!(split_path("images"), None);
        assert_eq!(split_path("%ff%fe/x"), None);
    }

    #[test]
    fn only_objects_of_instances_on_the_node_are_placed() {
        let r = |key: &str| ImageRef {
            image_id: "emi-1".into(),
            bucket: "images".into(),
            key: key.into(),
            size: 1,
            sha256: "00".into(),
        };
        let spec = InstanceSpec {
            instance_id: "i-1".into(),
            goal: mallee_proto::Goal::Running,
            reboot_count: 0,
            instance_type: "m1.small".into(),
            vcpus: 1,
            memory_mib: 256,
            image: r("root.img"),
            kernel: Some(r("vmlinuz")),
            ramdisk: None,
            user_data: None,
            mac: "d0:0d:00:00:00:01".parse().unwrap(),
            metadata: Default::default(),
            metadata_options: Default::default(),
            ephemeral_gib: 0,
            network: None,
            volumes: Vec::new(),
            root_volume: None,
            root_device: None,
        };
        let specs = [spec];
        assert!(placed(&specs, "images", "root.img"));
        assert!(placed(&specs, "images", "vmlinuz"));
        assert!(!placed(&specs, "images", "secret.txt"));
        assert!(!placed(&specs, "other", "root.img"));
        assert!(!placed(&[], "images", "root.img"));
    }
}
