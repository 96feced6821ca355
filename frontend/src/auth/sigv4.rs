//! SigV4 request verification, header and presigned-query forms. `parse` reads what the client
//! claims (key, scope, signed headers, signature); `verify` checks the clock and recomputes the
//! signature with the caller's secret (its derived key memoized, `signing_keys`). Looking the
//! secret up is the caller's business.

use super::canonical::{
    canonical_request, query_param, query_params, string_to_sign, CanonicalInput, UriMode,
};
pub use super::signing_keys::{hmac_sha256, signing_key};
use super::signing_keys::{SigningKeys, CAPACITY};
use super::time::parse_amz_date;
use super::AuthError;
use http::HeaderMap;
use std::borrow::Cow;
use std::sync::LazyLock;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
const MAX_PRESIGN_EXPIRY: i64 = 7 * 24 * 3600;

/// How the request body is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadMode {
    /// The body's SHA-256 (lower-case hex) is signed; the body must hash to it.
    Sha256(String),
    /// The body is not signed.
    Unsigned,
    /// aws-chunked with a signature per chunk.
    StreamingSigned,
    /// aws-chunked with signed chunks and a signed trailer.
    StreamingSignedTrailer,
    /// aws-chunked, unsigned chunks, trailer (checksum) unsigned.
    StreamingUnsignedTrailer,
}

impl PayloadMode {
    fn from_claim(claim: &str) -> Result<PayloadMode, AuthError> {
        Ok(match claim {
            UNSIGNED_PAYLOAD => PayloadMode::Unsigned,
            STREAMING_SIGNED => PayloadMode::StreamingSigned,
            STREAMING_SIGNED_TRAILER => PayloadMode::StreamingSignedTrailer,
            STREAMING_UNSIGNED_TRAILER => PayloadMode::StreamingUnsignedTrailer,
            h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                PayloadMode::Sha256(h.to_ascii_lowercase())
            }
            other => return Err(AuthError::BadContentSha256(other.to_string())),
        })
    }

    /// True for the aws-chunked modes.
    pub fn is_chunked(&self) -> bool {
        matches!(
            self,
            PayloadMode::StreamingSigned
                | PayloadMode::StreamingSignedTrailer
                | PayloadMode::StreamingUnsignedTrailer
        )
    }
}

/// The credential scope `date/region/service/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub date: String,
    pub region: String,
    pub service: String,
}

impl Scope {
    fn parse(s: &str) -> Option<(String, Scope)> {
        let mut it = s.split('/');
        let (key, date, region, service, term) =
            (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || term != "aws4_request" || key.is_empty() {
            return None;
        }
        let scope = Scope {
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
        };
        Some((key.to_string(), scope))
    }

    pub fn render(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// What a signed request claims, before anything is checked.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub access_key: String,
    pub amz_date: String,
    pub time: i64,
    pub scope: Scope,
    pub signed_headers: Vec<String>,
    pub signature: String,
    /// `Some(seconds)` for the presigned form.
    pub presigned_expires: Option<i64>,
    /// The payload claim (`x-amz-content-sha256`, or UNSIGNED-PAYLOAD for presigned URLs);
    /// `None` when the client sent none (non-S3 services: the caller hashes the body).
    pub payload_claim: Option<String>,
}

/// Parses the `Authorization` header or presigned query; `Ok(None)` for an anonymous request.
pub fn parse(headers: &HeaderMap, raw_query: &str) -> Result<Option<SignedRequest>, AuthError> {
    if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
        let auth = auth
            .to_str()
            .map_err(|_| AuthError::Malformed("non-ASCII Authorization".into()))?;
        return parse_header(auth, headers).map(Some);
    }
    let params = query_params(raw_query);
    if query_param(&params, "X-Amz-Algorithm").is_some() {
        return parse_presigned(&params, headers).map(Some);
    }
    Ok(None)
}

fn parse_header(auth: &str, headers: &HeaderMap) -> Result<SignedRequest, AuthError> {
    let rest = auth.strip_prefix(ALGORITHM).ok_or_else(|| {
        AuthError::UnsupportedAlgorithm(auth.split(' ').next().unwrap_or("").to_string())
    })?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            cred = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            sig = Some(v);
        }
    }
    let missing = |what: &str| AuthError::Malformed(format!("Authorization header lacks {what}"));
    let (access_key, scope) = Scope::parse(cred.ok_or_else(|| missing("Credential"))?)
        .ok_or_else(|| missing("a valid Credential"))?;
    let amz_date =
        header_str(headers, "x-amz-date").ok_or_else(|| missing("an X-Amz-Date header"))?;
    let time = parse_amz_date(&amz_date)
        .ok_or_else(|| AuthError::Malformed(format!("bad X-Amz-Date {amz_date}")))?;
    Ok(SignedRequest {
        access_key,
        amz_date,
        time,
        scope,
        signed_headers: split_signed(signed.ok_or_else(|| missing("SignedHeaders"))?),
        signature: sig.ok_or_else(|| missing("Signature"))?.to_string(),
        presigned_expires: None,
        payload_claim: header_str(headers, "x-amz-content-sha256"),
    })
}

fn parse_presigned(
    params: &[(Cow<'_, str>, Cow<'_, str>)],
    headers: &HeaderMap,
) -> Result<SignedRequest, AuthError> {
    let get = |name: &str| {
        query_param(params, name)
            .ok_or_else(|| AuthError::Malformed(format!("presigned URL lacks {name}")))
    };
    let alg = get("X-Amz-Algorithm")?;
    if alg != ALGORITHM {
        return Err(AuthError::UnsupportedAlgorithm(alg.to_string()));
    }
    let (access_key, scope) = Scope::parse(get("X-Amz-Credential")?)
        .ok_or_else(|| AuthError::Malformed("bad X-Amz-Credential".into()))?;
    let amz_date = get("X-Amz-Date")?.to_string();
    let time = parse_amz_date(&amz_date)
        .ok_or_else(|| AuthError::Malformed(format!("bad X-Amz-Date {amz_date}")))?;
    let expires: i64 = get("X-Amz-Expires")?
        .parse()
        .ok()
        .filter(|e| (0..=MAX_PRESIGN_EXPIRY).contains(e))
        .ok_or_else(|| AuthError::Malformed("X-Amz-Expires must be 0..604800".into()))?;
    let claim = query_param(params, "X-Amz-Content-Sha256")
        .map(str::to_string)
        .or_else(|| header_str(headers, "x-amz-content-sha256"))
        .unwrap_or_else(|| UNSIGNED_PAYLOAD.to_string());
    Ok(SignedRequest {
        access_key,
        amz_date,
        time,
        scope,
        signed_headers: split_signed(get("X-Amz-SignedHeaders")?),
        signature: get("X-Amz-Signature")?.to_string(),
        presigned_expires: Some(expires),
        payload_claim: Some(claim),
    })
}

fn split_signed(s: &str) -> Vec<String> {
    s.split(';')
        .filter(|h| !h.is_empty())
        .map(|h| h.to_ascii_lowercase())
        .collect()
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// The request as received, for recomputing its signature.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
}

/// Server-side expectations.
pub struct Policy<'a> {
    pub service: &'a str,
    /// The region the scope must name; `None` accepts any (a single-region private cloud).
    pub region: Option<&'a str>,
    pub uri_mode: UriMode,
    pub now: i64,
    pub max_skew_secs: i64,
    /// SHA-256 of the body when the caller already has it (small bodies of non-S3 services).
    pub body_sha256: Option<&'a str>,
}

/// A request whose signature checked out; enough to go on verifying aws-chunked bodies.
#[derive(Debug, Clone)]
pub struct Verified {
    pub access_key: String,
    pub payload: PayloadMode,
    pub signing_key: [u8; 32],
    pub amz_date: String,
    pub scope: String,
    pub seed_signature: String,
}

/// The derived keys `verify` signs with, kept across requests (a memo of [`signing_key`]).
static SIGNING_KEYS: LazyLock<SigningKeys> = LazyLock::new(|| SigningKeys::new(CAPACITY));

/// Checks the clock, then the signature.
pub fn verify(
    req: &SignedRequest,
    secret: &str,
    view: &RequestView<'_>,
    policy: &Policy<'_>,
) -> Result<Verified, AuthError> {
    let region_ok = policy.region.is_none_or(|r| r == req.scope.region);
    if req.scope.service != policy.service || !region_ok {
        return Err(AuthError::Malformed(format!(
            "credential scope {} does not match region {} service {}",
            req.scope.render(),
            policy.region.unwrap_or("*"),
            policy.service
        )));
    }
    if !req.amz_date.starts_with(&req.scope.date) {
        return Err(AuthError::Malformed(
            "credential date does not match X-Amz-Date".into(),
        ));
    }
    match req.presigned_expires {
        None if (policy.now - req.time).abs() > policy.max_skew_secs => {
            return Err(AuthError::RequestTimeTooSkewed)
        }
        Some(_) if req.time - policy.now > policy.max_skew_secs => {
            return Err(AuthError::RequestTimeTooSkewed)
        }
        Some(exp) if policy.now > req.time + exp => return Err(AuthError::Expired),
        _ => {}
    }
    if !req.signed_headers.iter().any(|h| h == "host") {
        return Err(AuthError::Malformed("host must be a signed header".into()));
    }
    let claim = match (&req.payload_claim, policy.body_sha256) {
        (Some(c), _) => c.clone(),
        (None, Some(h)) => h.to_string(),
        (None, None) => return Err(AuthError::BadContentSha256("missing".into())),
    };
    let payload = PayloadMode::from_claim(&claim)?;
    if let (PayloadMode::Sha256(claimed), Some(actual)) = (&payload, policy.body_sha256) {
        if claimed != actual {
            return Err(AuthError::ContentSha256Mismatch);
        }
    }
    let input = CanonicalInput {
        method: view.method,
        raw_path: view.raw_path,
        raw_query: view.raw_query,
        headers: view.headers,
        signed_headers: &req.signed_headers,
        payload_hash: &claim,
        uri_mode: policy.uri_mode,
        skip_query: req.presigned_expires.map(|_| "X-Amz-Signature"),
    };
    let canonical = canonical_request(&input).map_err(AuthError::MissingSignedHeader)?;
    let scope = req.scope.render();
    let sts = string_to_sign(&req.amz_date, &scope, &canonical);
    let key = SIGNING_KEYS.get(
        &req.access_key,
        secret,
        &req.scope.date,
        &req.scope.region,
        &req.scope.service,
    );
    let expected = hex::encode(hmac_sha256(&key, sts.as_bytes()));
    if !constant_time_eq(expected.as_bytes(), req.signature.as_bytes()) {
        tracing::debug!(%canonical, "signature mismatch");
        return Err(AuthError::SignatureDoesNotMatch);
    }
    Ok(Verified {
        access_key: req.access_key.clone(),
        payload,
        signing_key: key,
        amz_date: req.amz_date.clone(),
        scope,
        seed_signature: expected,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
