//! The SigV4 canonical request: URI and query encoding, header canonicalization and the
//! string to sign. Pure functions over strings; no keys, no clocks.

use http::HeaderMap;
use sha2::{Digest, Sha256};

/// How the path is canonicalized: S3 signs the path as sent (encoded once); every other
/// service normalizes it and encodes it twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMode {
    S3,
    Normalized,
}

/// Percent-encodes `bytes` as SigV4 requires: unreserved characters kept, everything else `%XX`;
/// `/` is kept when `keep_slash`.
pub fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (no `+` to space: SigV4 clients never rely on it).
pub fn percent_decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// The canonical URI of a raw request path.
pub fn canonical_uri(raw_path: &str, mode: UriMode) -> String {
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    match mode {
        UriMode::S3 => uri_encode(&percent_decode(path), true),
        UriMode::Normalized => {
            let mut segs: Vec<&str> = Vec::new();
            for seg in path.split('/') {
                match seg {
                    "" | "." => {}
                    ".." => {
                        segs.pop();
                    }
                    s => segs.push(s),
                }
            }
            let mut out = String::new();
            for s in &segs {
                out.push('/');
                let once = uri_encode(&percent_decode(s), false);
                out.push_str(&uri_encode(once.as_bytes(), false));
            }
            if out.is_empty() || (path.ends_with('/') && !segs.is_empty()) {
                out.push('/');
            }
            out
        }
    }
}

/// The canonical query string: each name and value decoded then re-encoded, sorted, with
/// `skip` (the presigned signature itself) left out.
pub fn canonical_query(raw_query: &str, skip: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .collect();
    pairs.sort();
    let parts: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join("&")
}

/// One header's canonical value: all its values trimmed, inner runs of spaces collapsed,
/// joined with commas. `None` when the request lacks it.
pub fn canonical_header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let joined: Vec<String> = values
        .map(|v| {
            let s = String::from_utf8_lossy(v.as_bytes());
            s.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    Some(joined.join(","))
}

/// Everything the canonical request is built from.
pub struct CanonicalInput<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    /// Lower-case names, in the order the client listed them (sorted by SigV4 rules).
    pub signed_headers: &'a [String],
    pub payload_hash: &'a str,
    pub uri_mode: UriMode,
    /// Query parameter left out (`X-Amz-Signature` for presigned URLs).
    pub skip_query: Option<&'a str>,
}

/// Builds the canonical request; `None` names a signed header the request does not carry.
pub fn canonical_request(input: &CanonicalInput<'_>) -> Result<String, String> {
    let mut out = String::new();
    out.push_str(input.method);
    out.push('\n');
    out.push_str(&canonical_uri(input.raw_path, input.uri_mode));
    out.push('\n');
    out.push_str(&canonical_query(input.raw_query, input.skip_query));
    out.push('\n');
    for name in input.signed_headers {
        let value = canonical_header_value(input.headers, name).ok_or_else(|| name.clone())?;
        out.push_str(name);
        out.push(':');
        out.push_str(&value);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&input.signed_headers.join(";"));
    out.push('\n');
    out.push_str(input.payload_hash);
    Ok(out)
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The string to sign for a request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_path_is_encoded_once_and_keeps_slashes() {
        assert_eq!(
            canonical_uri("/b/test%24file.text", UriMode::S3),
            "/b/test%24file.text"
        );
        assert_eq!(
            canonical_uri("/b/a%20b/c~d+e", UriMode::S3),
            "/b/a%20b/c~d%2Be"
        );
        assert_eq!(canonical_uri("", UriMode::S3), "/");
    }

    #[test]
    fn other_services_normalize_and_double_encode() {
        assert_eq!(canonical_uri("/a/./b/../c", UriMode::Normalized), "/a/c");
        assert_eq!(canonical_uri("/a b", UriMode::Normalized), "/a%2520b");
        assert_eq!(canonical_uri("//", UriMode::Normalized), "/");
    }

    #[test]
    fn query_is_sorted_reencoded_and_skips_the_signature() {
        assert_eq!(
            canonical_query("b=2&a=1&lifecycle", None),
            "a=1&b=2&lifecycle="
        );
        assert_eq!(
            canonical_query("k=a b&X-Amz-Signature=ff", Some("X-Amz-Signature")),
            "k=a%20b"
        );
        assert_eq!(canonical_query("p=%2f%7e", None), "p=%2F~");
    }
}
