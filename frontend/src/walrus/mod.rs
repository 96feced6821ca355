//! Walrus: the S3-compatible object store, path-style. This module authenticates each request
//! (with `auth`; its signer, and for an object read its bucket and object, are found in one
//! read of the store), decides which operation it is and which bucket it may touch, and renders
//! errors; the operations themselves live in `buckets`, `objects`, `listing` and `multipart`,
//! over the `store`. Each change asked for (PUT, POST, DELETE on a bucket or object), signed or
//! not, goes into the audit log (`crate::audit`).

mod buckets;
mod checksum;
pub mod error;
mod listing;
mod multipart;
mod objects;
mod payload;
pub mod xml;

pub use error::S3Error;

use crate::audit;
use crate::auth::{self, Policy, UriMode, Verified};
use crate::cloud::access::{may_access, Access};
use crate::http::{db, empty_response, xml_response, RespBody};
use crate::store::{AuditEntry, Bucket, BucketObject, ObjectRow, Outcome, Reads, Store, User};
use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use rand::RngCore;
use std::sync::Arc;

/// The request body type handlers read.
pub type ReqBody = Incoming;

/// The S3 service.
pub struct Walrus {
    store: Arc<Store>,
    region: String,
    max_skew_secs: i64,
}

/// Query parameters, decoded.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Query {
        let dec = |s: &str| match s.contains('+') {
            true => auth::canonical::percent_decode_lossy(&s.replace('+', "%20")).into_owned(),
            false => auth::canonical::percent_decode_lossy(s).into_owned(),
        };
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (dec(k), dec(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// An authenticated S3 request, body aside.
pub struct S3Request {
    pub method: Method,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub query: Query,
    pub headers: HeaderMap,
    pub user: User,
    pub auth: Verified,
    /// For an object read (GET, HEAD), its bucket and object, found in the read of the store
    /// that found its signer (after the signature checked out): one read transaction a GET.
    pub found: Option<BucketObject>,
}

impl S3Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn now_secs() -> i64 {
    crate::store::now_ms() / 1000
}

impl Walrus {
    pub fn new(store: Arc<Store>, region: &str, max_skew_secs: u64) -> Walrus {
        Walrus {
            store,
            region: region.to_string(),
            max_skew_secs: max_skew_secs as i64,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Answers one HTTP request.
    pub async fn handle(&self, req: Request<ReqBody>) -> Response<RespBody> {
        let request_id = request_id();
        let is_head = req.method() == Method::HEAD;
        let (parts, body) = req.into_parts();
        let change = audited(&parts);
        let (user, result) = match self.authenticate(&parts) {
            Ok(r) => (r.user.name.clone(), self.dispatch(r, body).await),
            Err(e) => ("-".to_string(), Err(e)),
        };
        if let Some((action, resources)) = change {
            let entry = AuditEntry {
                at_ms: crate::store::now_ms(),
                user,
                action: action.to_string(),
                resources,
                source: crate::http::client_addr_in(&parts.extensions),
                outcome: match &result {
                    Ok(_) => Outcome::Ok,
                    Err(e) => Outcome::Err {
                        code: e.code.to_string(),
                    },
                },
                request_id: request_id.clone(),
            };
            db(|| audit::record(&self.store, &entry));
        }
        let mut resp = result.unwrap_or_else(|e| {
            tracing::debug!(code = e.code, message = %e.message, method = %parts.method, uri = %parts.uri, "request failed");
            error_response(&e, &request_id, is_head)
        });
        if let Ok(v) = request_id.parse() {
            resp.headers_mut().insert("x-amz-request-id", v);
        }
        resp
    }

    /// The request, its signer found and the signature checked, and for an object read what
    /// it names: all in one read of the store.
    fn authenticate(&self, parts: &http::request::Parts) -> Result<S3Request, S3Error> {
        let raw_query = parts.uri.query().unwrap_or("");
        let raw_path = parts.uri.path();
        self.store.read(|reads| {
            let (user, verified) = match auth::sigv2::parse(raw_query)? {
                Some(v2) if !parts.headers.contains_key(http::header::AUTHORIZATION) => {
                    self.authenticate_v2(reads, parts, &v2)?
                }
                _ => self.authenticate_v4(reads, parts)?,
            };
            let (bucket, key) = split_path(raw_path)?;
            let query = Query::parse(raw_query);
            let found = match (&bucket, &key) {
                (Some(b), Some(k)) if is_object_read(&parts.method, &query) => {
                    Some(reads.bucket_object(b, k)?)
                }
                _ => None,
            };
            Ok(S3Request {
                method: parts.method.clone(),
                bucket,
                key,
                query,
                headers: parts.headers.clone(),
                user,
                auth: verified,
                found,
            })
        })
    }

    fn authenticate_v4(
        &self,
        reads: &Reads<'_>,
        parts: &http::request::Parts,
    ) -> Result<(User, Verified), S3Error> {
        let policy = Policy {
            service: "s3",
            region: None,
            uri_mode: UriMode::S3,
            now: now_secs(),
            max_skew_secs: self.max_skew_secs,
            body_sha256: None,
        };
        auth::authenticate_with(|key| reads.user_by_access_key(key), parts, &policy)
    }

    /// SigV2 presigned URLs (what AWS CLI v1 `s3 presign` and boto3's `generate_presigned_url`
    /// produce by default): unsigned payload.
    fn authenticate_v2(
        &self,
        reads: &Reads<'_>,
        parts: &http::request::Parts,
        claim: &auth::sigv2::PresignedV2,
    ) -> Result<(User, Verified), S3Error> {
        let user = auth::user::<S3Error>(|key| reads.user_by_access_key(key), &claim.access_key)?;
        let raw_query = parts.uri.query().unwrap_or("");
        let sts = auth::sigv2::string_to_sign(
            parts.method.as_str(),
            parts.uri.path(),
            raw_query,
            &parts.headers,
            claim.expires,
        );
        auth::sigv2::verify(claim, &user.secret, &sts, now_secs())?;
        let verified = Verified {
            access_key: claim.access_key.clone(),
            payload: auth::PayloadMode::Unsigned,
            signing_key: [0; 32],
            amz_date: String::new(),
            scope: String::new(),
            seed_signature: String::new(),
        };
        Ok((user, verified))
    }

    /// The bucket `name` if `r`'s user may access it.
    fn bucket_for(&self, r: &S3Request, name: &str, access: Access) -> Result<Bucket, S3Error> {
        permitted(r, name, self.store.bucket(name)?, access)
    }

    /// The bucket `name` if `r`'s user may access it, and its object `key`: the checks and
    /// errors of [`Walrus::bucket_for`], then `NoSuchKey`. They are what the request's read of
    /// the store found (`S3Request::found`), else they are looked up now.
    fn object_for(
        &self,
        r: &S3Request,
        name: &str,
        key: &str,
        access: Access,
    ) -> Result<(Bucket, ObjectRow), S3Error> {
        let found = match &r.found {
            Some(found) => found.clone(),
            None => self.store.bucket_object(name, key)?,
        };
        let (bucket, object) = found.unzip();
        let bucket = permitted(r, name, bucket, access)?;
        let object = object.flatten().ok_or_else(|| S3Error::no_such_key(key))?;
        Ok((bucket, object))
    }

    async fn dispatch(&self, r: S3Request, body: ReqBody) -> Result<Response<RespBody>, S3Error> {
        let (bucket, key) = (r.bucket.clone(), r.key.clone());
        let q = &r.query;
        match (&r.method, bucket.as_deref(), key.as_deref()) {
            (&Method::GET, None, _) => buckets::list_buckets(self, &r),
            (&Method::PUT, Some(b), None) => buckets::create_bucket(self, &r, b, body).await,
            (&Method::DELETE, Some(b), None) => buckets::delete_bucket(self, &r, b),
            (&Method::HEAD, Some(b), None) => buckets::head_bucket(self, &r, b),
            (&Method::GET, Some(b), None) if q.has("location") => buckets::location(self, &r, b),
            (&Method::GET, Some(b), None) if q.has("uploads") => {
                multipart::list_uploads(self, &r, b)
            }
            (&Method::GET, Some(b), None) if q.get("list-type") == Some("2") => {
                listing::list_v2(self, &r, b)
            }
            (&Method::GET, Some(_), None) if !q.0.is_empty() && !listing::is_list_query(q) => {
                Err(S3Error::not_implemented("this bucket subresource"))
            }
            (&Method::GET, Some(b), None) => listing::list_v1(self, &r, b),
            (&Method::POST, Some(b), None) if q.has("delete") => {
                objects::delete_many(self, &r, b, body).await
            }
            (&Method::PUT, Some(b), Some(k)) if q.has("uploadId") => {
                multipart::upload_part(self, &r, b, k, body).await
            }
            (&Method::PUT, Some(b), Some(k)) if r.headers.contains_key("x-amz-copy-source") => {
                objects::copy(self, &r, b, k).await
            }
            (&Method::PUT, Some(b), Some(k)) => objects::put(self, &r, b, k, body).await,
            (&Method::GET, Some(b), Some(k)) if q.has("uploadId") => {
                multipart::list_parts(self, &r, b, k)
            }
            (&Method::GET, Some(b), Some(k)) => objects::get(self, &r, b, k, false),
            (&Method::HEAD, Some(b), Some(k)) => objects::get(self, &r, b, k, true),
            (&Method::DELETE, Some(b), Some(k)) if q.has("uploadId") => {
                multipart::abort(self, &r, b, k)
            }
            (&Method::DELETE, Some(b), Some(k)) => objects::delete(self, &r, b, k),
            (&Method::POST, Some(b), Some(k)) if q.has("uploads") => {
                multipart::create(self, &r, b, k)
            }
            (&Method::POST, Some(b), Some(k)) if q.has("uploadId") => {
                multipart::complete(self, &r, b, k, body).await
            }
            _ => Err(S3Error::new(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            )),
        }
    }
}

/// `bucket`, the one named `name` if there is one, if `r`'s user may access it: `NoSuchBucket`,
/// then `AccessDenied`.
fn permitted(
    r: &S3Request,
    name: &str,
    bucket: Option<Bucket>,
    access: Access,
) -> Result<Bucket, S3Error> {
    let bucket = bucket.ok_or_else(|| S3Error::no_such_bucket(name))?;
    if !may_access(&r.user, &bucket.owner, access) {
        return Err(S3Error::access_denied().with_resource(name));
    }
    Ok(bucket)
}

/// Whether a request on an object is a read of it (GET, HEAD), which `dispatch` hands to
/// `objects::get`; its bucket and object are looked up with its signer.
fn is_object_read(method: &Method, query: &Query) -> bool {
    *method == Method::HEAD || (*method == Method::GET && !query.has("uploadId"))
}

/// The change a request asks for and what it names, for the audit log (`None` for reads).
/// Read from the request head alone, so a request refused for its signature is named too.
fn audited(parts: &http::request::Parts) -> Option<(&'static str, Vec<String>)> {
    let (bucket, key) = split_path(parts.uri.path()).ok()?;
    let copy = (parts.headers.get("x-amz-copy-source")).and_then(|v| v.to_str().ok());
    let query = parts.uri.query().unwrap_or("");
    let action = audit::s3_action(
        &parts.method,
        bucket.as_deref(),
        key.as_deref(),
        query,
        copy.is_some(),
    )?;
    let copy = copy.filter(|_| action == "CopyObject");
    let resources = audit::s3_resources(bucket.as_deref()?, key.as_deref(), copy);
    Some((action, resources))
}

/// Splits a raw path-style path into bucket and key (both decoded).
fn split_path(raw: &str) -> Result<(Option<String>, Option<String>), S3Error> {
    let decode = |s: &str| {
        String::from_utf8(auth::canonical::percent_decode(s))
            .map_err(|_| S3Error::new(400, "InvalidURI", "Couldn't parse the specified URI."))
    };
    let trimmed = raw.strip_prefix('/').unwrap_or(raw);
    let (b, k) = match trimmed.split_once('/') {
        Some((b, k)) => (b, Some(k)),
        None => (trimmed, None),
    };
    let bucket = if b.is_empty() { None } else { Some(decode(b)?) };
    let key = match k {
        Some(k) if !k.is_empty() => Some(decode(k)?),
        _ => None,
    };
    Ok((bucket, key))
}

/// The answer to a request refused for the client's load: `SlowDown`, 503 (its body only for
/// other methods than HEAD).
pub fn throttled(is_head: bool) -> Response<RespBody> {
    let e = S3Error::new(503, "SlowDown", "Please reduce your request rate.");
    error_response(&e, &request_id(), is_head)
}

/// A fresh S3 request id (16 hex digits).
fn request_id() -> String {
    let mut raw = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode_upper(raw)
}

fn error_response(e: &S3Error, request_id: &str, is_head: bool) -> Response<RespBody> {
    if is_head {
        return empty_response(e.status);
    }
    xml_response(e.status, e.to_xml(request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_splits_into_decoded_bucket_and_key() {
        assert_eq!(split_path("/").unwrap(), (None, None));
        assert_eq!(split_path("/b").unwrap(), (Some("b".into()), None));
        assert_eq!(split_path("/b/").unwrap(), (Some("b".into()), None));
        assert_eq!(
            split_path("/b/a%20b/c%2Bd").unwrap(),
            (Some("b".into()), Some("a b/c+d".into()))
        );
        assert!(split_path("/b/%ff").is_err());
    }
}
