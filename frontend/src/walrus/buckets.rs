//! Bucket operations: list, create, delete, head, location.

use super::payload::PayloadReader;
use super::xml::S3_NS;
use super::{Access, ReqBody, S3Error, S3Request, Walrus};
use crate::auth::time::format_iso8601_millis;
use crate::http::xml::Xml;
use crate::http::{db, empty_response, xml_response, RespBody};
use crate::store::StoreError;
use http::{Response, StatusCode};

type Result = std::result::Result<Response<RespBody>, S3Error>;

/// Whether `name` is a valid (DNS-compatible) bucket name.
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

pub fn list_buckets(w: &Walrus, r: &S3Request) -> Result {
    let owner = (r.user.role != crate::store::Role::Admin).then_some(r.user.name.as_str());
    let buckets = db(|| w.store.list_buckets(owner))?;
    let mut x = Xml::namespaced(S3_NS);
    x.open("ListAllMyBucketsResult");
    x.open("Owner");
    x.field("ID", &r.user.name);
    x.field("DisplayName", &r.user.name);
    x.close("Owner");
    x.open("Buckets");
    for b in buckets {
        x.open("Bucket");
        x.field("Name", &b.name);
        x.field("CreationDate", format_iso8601_millis(b.created_ms));
        x.close("Bucket");
    }
    x.close("Buckets");
    x.close("ListAllMyBucketsResult");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

pub async fn create_bucket(w: &Walrus, r: &S3Request, name: &str, body: ReqBody) -> Result {
    if !valid_bucket_name(name) {
        return Err(S3Error::new(
            400,
            "InvalidBucketName",
            "The specified bucket is not valid.",
        )
        .with_resource(name));
    }
    // The body (a CreateBucketConfiguration naming a region) is read so its signature is
    // checked; there is one region.
    PayloadReader::new(body, &r.auth, None, true)
        .read_all(64 * 1024)
        .await?;
    match db(|| w.store.create_bucket(name, &r.user.name)) {
        Ok(_) => {}
        Err(StoreError::BucketExists(_)) => {
            let existing = db(|| w.store.bucket(name))?;
            if existing.is_some_and(|b| b.owner == r.user.name) {
                return Err(S3Error::new(
                    409,
                    "BucketAlreadyOwnedByYou",
                    "Your previous request to create the named bucket succeeded and you already own it.",
                )
                .with_resource(name));
            }
            return Err(StoreError::BucketExists(name.to_string()).into());
        }
        Err(e) => return Err(e.into()),
    }
    let mut resp = empty_response(StatusCode::OK);
    if let Ok(v) = format!("/{name}").parse() {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(resp)
}

pub fn delete_bucket(w: &Walrus, r: &S3Request, name: &str) -> Result {
    w.bucket_for(r, name, Access::Write)?;
    db(|| w.store.delete_bucket(name))?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

pub fn head_bucket(w: &Walrus, r: &S3Request, name: &str) -> Result {
    w.bucket_for(r, name, Access::Read)?;
    let mut resp = empty_response(StatusCode::OK);
    if let Ok(v) = w.region.parse() {
        resp.headers_mut().insert("x-amz-bucket-region", v);
    }
    Ok(resp)
}

pub fn location(w: &Walrus, r: &S3Request, name: &str) -> Result {
    w.bucket_for(r, name, Access::Read)?;
    let mut x = Xml::namespaced(S3_NS);
    let region = if w.region == "us-east-1" {
        ""
    } else {
        w.region.as_str()
    };
    x.open("LocationConstraint")
        .text(region)
        .close("LocationConstraint");
    Ok(xml_response(StatusCode::OK, x.finish()))
}

#[cfg(test)]
mod tests {
    use super::valid_bucket_name;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "my-bucket.1", "a1b"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }
}
