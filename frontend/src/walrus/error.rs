//! S3 errors as clients expect them: a code, an HTTP status and an XML body carrying the
//! request id. Store and auth failures map onto codes here, in one place.

use crate::auth::chunked::ChunkError;
use crate::auth::AuthError;
use crate::http::xml::Xml;
use crate::http::Unsatisfiable;
use crate::store::StoreError;
use http::StatusCode;

/// One S3 error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct S3Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub resource: Option<String>,
}

impl S3Error {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> S3Error {
        S3Error {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            resource: None,
        }
    }

    pub fn with_resource(mut self, resource: impl Into<String>) -> S3Error {
        self.resource = Some(resource.into());
        self
    }

    pub fn no_such_bucket(bucket: &str) -> S3Error {
        S3Error::new(404, "NoSuchBucket", "The specified bucket does not exist")
            .with_resource(bucket)
    }

    pub fn no_such_key(key: &str) -> S3Error {
        S3Error::new(404, "NoSuchKey", "The specified key does not exist.").with_resource(key)
    }

    pub fn no_such_upload(id: &str) -> S3Error {
        S3Error::new(404, "NoSuchUpload", "The specified upload does not exist.").with_resource(id)
    }

    pub fn access_denied() -> S3Error {
        S3Error::new(403, "AccessDenied", "Access Denied")
    }

    pub fn invalid_argument(message: impl Into<String>) -> S3Error {
        S3Error::new(400, "InvalidArgument", message)
    }

    pub fn malformed_xml(message: impl Into<String>) -> S3Error {
        S3Error::new(400, "MalformedXML", message)
    }

    pub fn internal(message: impl Into<String>) -> S3Error {
        S3Error::new(500, "InternalError", message)
    }

    pub fn not_implemented(what: &str) -> S3Error {
        S3Error::new(501, "NotImplemented", format!("{what} is not implemented"))
    }

    /// The XML body.
    pub fn to_xml(&self, request_id: &str) -> String {
        let mut w = Xml::new();
        w.open("Error");
        w.field("Code", self.code);
        w.field("Message", &self.message);
        if let Some(r) = &self.resource {
            w.field("Resource", r);
        }
        w.field("RequestId", request_id);
        w.close("Error");
        w.finish()
    }
}

impl From<AuthError> for S3Error {
    fn from(e: AuthError) -> S3Error {
        let message = match &e {
            AuthError::SignatureDoesNotMatch => {
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.".to_string()
            }
            AuthError::UnknownAccessKey => "The AWS Access Key Id you provided does not exist in our records.".to_string(),
            AuthError::Expired => "Request has expired".to_string(),
            other => other.to_string(),
        };
        S3Error::new(e.status(), e.code(), message)
    }
}

impl From<ChunkError> for S3Error {
    fn from(e: ChunkError) -> S3Error {
        match e {
            ChunkError::BadChunkSignature | ChunkError::BadTrailerSignature => {
                S3Error::new(403, "SignatureDoesNotMatch", e.to_string())
            }
            ChunkError::Truncated => S3Error::new(400, "IncompleteBody", e.to_string()),
            _ => S3Error::new(400, "InvalidRequest", format!("bad aws-chunked body: {e}")),
        }
    }
}

impl From<StoreError> for S3Error {
    fn from(e: StoreError) -> S3Error {
        match &e {
            StoreError::NoSuchBucket(b) => S3Error::no_such_bucket(b),
            StoreError::NoSuchUpload(u) => S3Error::no_such_upload(u),
            StoreError::BucketNotEmpty(b) => S3Error::new(
                409,
                "BucketNotEmpty",
                "The bucket you tried to delete is not empty",
            )
            .with_resource(b.clone()),
            StoreError::BucketExists(b) => S3Error::new(
                409,
                "BucketAlreadyExists",
                "The requested bucket name is not available.",
            )
            .with_resource(b.clone()),
            _ => {
                tracing::error!(error = %e, "store failure");
                S3Error::internal("We encountered an internal error. Please try again.")
            }
        }
    }
}

impl From<Unsatisfiable> for S3Error {
    fn from(_: Unsatisfiable) -> S3Error {
        S3Error::new(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
        )
    }
}

impl From<std::io::Error> for S3Error {
    fn from(e: std::io::Error) -> S3Error {
        tracing::error!(error = %e, "I/O failure");
        S3Error::internal("We encountered an internal error. Please try again.")
    }
}
