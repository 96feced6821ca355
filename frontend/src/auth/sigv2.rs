//! Legacy S3 query-string authentication (SigV2 presigned URLs): what `aws s3 presign` from
//! AWS CLI v1 produces unless told to use SigV4. Only the presigned form is accepted, and only
//! for S3; everything else must use SigV4.

use super::canonical::percent_decode_lossy;
use super::AuthError;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha1::Sha1;

/// S3 sub-resources that are part of the signed resource.
const SUBRESOURCES: &[&str] = &[
    "acl",
    "cors",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// What a SigV2 presigned URL claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedV2 {
    pub access_key: String,
    pub expires: i64,
    pub signature: String,
}

fn decoded_pairs(raw_query: &str) -> Vec<(String, String, &str)> {
    raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| percent_decode_lossy(s).into_owned();
            (dec(k), dec(v), p)
        })
        .collect()
}

/// `Ok(None)` when the query is not a SigV2 presigned URL.
pub fn parse(raw_query: &str) -> Result<Option<PresignedV2>, AuthError> {
    let get = |n: &str| {
        raw_query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .find(|(k, _)| percent_decode_lossy(k) == n)
            .map(|(_, v)| percent_decode_lossy(v).into_owned())
    };
    let Some(access_key) = get("AWSAccessKeyId") else {
        return Ok(None);
    };
    let expires = get("Expires")
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| AuthError::Malformed("SigV2 URL needs a numeric Expires".into()))?;
    let signature =
        get("Signature").ok_or_else(|| AuthError::Malformed("SigV2 URL lacks Signature".into()))?;
    Ok(Some(PresignedV2 {
        access_key,
        expires,
        signature,
    }))
}

/// The SigV2 string to sign for a request.
pub fn string_to_sign(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    expires: i64,
) -> String {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let mut amz: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-amz-"))
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).trim().to_string(),
            )
        })
        .collect();
    amz.sort();
    let mut sub: Vec<(String, String)> = decoded_pairs(raw_query)
        .into_iter()
        .filter(|(k, _, _)| SUBRESOURCES.contains(&k.as_str()))
        .map(|(k, v, raw)| {
            (
                k,
                if raw.contains('=') {
                    format!("={v}")
                } else {
                    String::new()
                },
            )
        })
        .collect();
    sub.sort();
    let mut s = format!(
        "{method}\n{}\n{}\n{expires}\n",
        h("content-md5"),
        h("content-type")
    );
    for (n, v) in amz {
        s.push_str(&format!("{n}:{v}\n"));
    }
    s.push_str(raw_path);
    for (i, (k, v)) in sub.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push_str(v);
    }
    s
}

/// Base64 HMAC-SHA1 of `sts`.
pub fn sign(secret: &str, sts: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(sts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks expiry, then the signature.
pub fn verify(claim: &PresignedV2, secret: &str, sts: &str, now: i64) -> Result<(), AuthError> {
    if now > claim.expires {
        return Err(AuthError::Expired);
    }
    let expected = sign(secret, sts);
    if expected.len() != claim.signature.len()
        || expected
            .bytes()
            .zip(claim.signature.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            != 0
    {
        return Err(AuthError::SignatureDoesNotMatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The S3 developer guide's query-string authentication example (SigV2).
    #[test]
    fn s3_guide_presigned_example() {
        let sts = string_to_sign(
            "GET",
            "/johnsmith/photos/puppy.jpg",
            "",
            &HeaderMap::new(),
            1175139620,
        );
        assert_eq!(sts, "GET\n\n\n1175139620\n/johnsmith/photos/puppy.jpg");
        assert_eq!(
            sign("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", &sts),
            "NpgCjnDzrM+WFzoENXmpNDUsSn8="
        );
    }

    #[test]
    fn expired_or_forged_urls_are_refused() {
        let q = "AWSAccessKeyId=AK&Expires=100&Signature=abc%3D";
        let claim = parse(q).unwrap().unwrap();
        assert_eq!(claim.signature, "abc=");
        assert_eq!(verify(&claim, "s", "x", 101), Err(AuthError::Expired));
        assert_eq!(
            verify(&claim, "s", "x", 99),
            Err(AuthError::SignatureDoesNotMatch)
        );
        assert_eq!(parse("a=b").unwrap(), None);
    }

    #[test]
    fn subresources_are_signed_and_other_parameters_are_not() {
        let sts = string_to_sign("GET", "/b/k", "uploadId=X&foo=1&acl", &HeaderMap::new(), 5);
        assert!(sts.ends_with("/b/k?acl&uploadId=X"), "{sts}");
    }
}
