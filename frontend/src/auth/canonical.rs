//! The SigV4 canonical request: URI and query encoding, header canonicalization and the
//! string to sign. Pure functions over strings; no keys, no clocks.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

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
    uri_encode_into(&mut out, bytes.iter().copied(), keep_slash);
    out
}

/// [`uri_encode`], appending to `out`.
fn uri_encode_into(out: &mut String, bytes: impl Iterator<Item = u8>, keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

/// SigV4's unreserved characters, never percent-encoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Decodes `%XX` escapes (no `+` to space: SigV4 clients never rely on it).
pub fn percent_decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// [`percent_decode`] as text, invalid UTF-8 replaced; borrows `s` when it has no escapes.
pub fn percent_decode_lossy(s: &str) -> Cow<'_, str> {
    match s.contains('%') {
        true => percent_encoding::percent_decode_str(s).decode_utf8_lossy(),
        false => Cow::Borrowed(s),
    }
}

/// A query's `name=value` pairs in order, names and values decoded
/// ([`percent_decode_lossy`]); pairs without `=` are no parameter here and left out.
pub fn query_params(raw_query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    raw_query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode_lossy(k), percent_decode_lossy(v)))
        .collect()
}

/// The value of the first of `params` (see [`query_params`]) called `name`.
pub fn query_param<'a>(params: &'a [(Cow<'_, str>, Cow<'_, str>)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| &**v)
}

/// The canonical URI of a raw request path.
pub fn canonical_uri(raw_path: &str, mode: UriMode) -> String {
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    match mode {
        UriMode::S3 => {
            let mut out = String::with_capacity(path.len());
            uri_encode_into(&mut out, percent_encoding::percent_decode_str(path), true);
            out
        }
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
    // Every name and value encoded into one buffer; the pairs sort by their ranges in it.
    let mut encoded = String::with_capacity(raw_query.len() + 8);
    let mut encode = |s: &str| {
        let start = encoded.len();
        match s.bytes().all(is_unreserved) {
            // Decoding and encoding again would give it back unchanged.
            true => encoded.push_str(s),
            false => uri_encode_into(&mut encoded, percent_encoding::percent_decode_str(s), false),
        }
        start..encoded.len()
    };
    let pairs: Vec<_> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(k), encode(v))
        })
        .collect();
    let mut pairs: Vec<(&str, &str)> = pairs
        .into_iter()
        .map(|(k, v)| (&encoded[k], &encoded[v]))
        .filter(|(k, _)| Some(*k) != skip)
        .collect();
    pairs.sort_unstable();
    let mut out = String::with_capacity(encoded.len() + 2 * pairs.len());
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
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
    let mut out = String::with_capacity(256 + input.raw_path.len() + input.raw_query.len());
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

    #[test]
    fn uri_encode_escapes_all_but_unreserved_bytes_in_upper_case_hex() {
        assert_eq!(uri_encode(b"a-z_0.9~", false), "a-z_0.9~");
        assert_eq!(uri_encode(b"a/b c+\xff", false), "a%2Fb%20c%2B%FF");
        assert_eq!(uri_encode(b"a/b", true), "a/b");
    }

    #[test]
    fn query_params_decode_names_and_values_and_the_first_one_counts() {
        let q = query_params("X-Amz-Credential=AK%2F2013&bare&X%2DAmz%2DDate=1&a=1&a=2");
        assert_eq!(query_param(&q, "X-Amz-Credential"), Some("AK/2013"));
        assert_eq!(query_param(&q, "X-Amz-Date"), Some("1"));
        assert_eq!(query_param(&q, "a"), Some("1"));
        assert_eq!(query_param(&q, "bare"), None);
        assert_eq!(query_param(&query_params(""), "a"), None);
        assert!(matches!(
            query_params("a=plain")[0].1,
            Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn percent_decoding_replaces_invalid_utf8_and_borrows_plain_text() {
        assert_eq!(percent_decode_lossy("a%20b%2f"), "a b/");
        assert_eq!(percent_decode_lossy("%ff"), "\u{fffd}");
        assert_eq!(percent_decode_lossy("100%"), "100%");
        assert!(matches!(percent_decode_lossy("a+b"), Cow::Borrowed("a+b")));
    }
}
