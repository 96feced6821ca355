//! Request authentication shared by every API of the daemon (Walrus, EC2): AWS Signature V4
//! in header and presigned forms, SigV2 presigned URLs, and the aws-chunked body decoder that
//! carries per-chunk signatures; a bounded memo of derived signing keys (`signing_keys`).
//! The signature code knows nothing of users or storage;
//! [`authenticate`] (in `request`) is the one entry point that looks the signer up.

pub mod canonical;
pub mod chunked;
mod request;
pub mod signing_keys;
pub mod sigv2;
pub mod sigv4;
pub mod time;

#[cfg(test)]
mod vectors;

pub use canonical::UriMode;
pub use request::{authenticate, authenticate_with, user};
pub use sigv4::{parse, verify, PayloadMode, Policy, RequestView, SignedRequest, Verified};

/// Why a request was not authenticated. `code` gives the AWS error code clients expect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request carries no signature")]
    Anonymous,
    #[error("malformed authorization: {0}")]
    Malformed(String),
    #[error("unsupported signing algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("the access key id does not exist")]
    UnknownAccessKey,
    #[error("the signature does not match")]
    SignatureDoesNotMatch,
    #[error("the difference between the request time and the server's time is too large")]
    RequestTimeTooSkewed,
    #[error("request has expired")]
    Expired,
    #[error("signed header {0} is not in the request")]
    MissingSignedHeader(String),
    #[error("x-amz-content-sha256 {0:?} is not a valid payload hash")]
    BadContentSha256(String),
    #[error("the provided x-amz-content-sha256 does not match what was computed")]
    ContentSha256Mismatch,
}

impl AuthError {
    /// The AWS error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Anonymous | AuthError::Expired => "AccessDenied",
            AuthError::Malformed(_) | AuthError::UnsupportedAlgorithm(_) => {
                "AuthorizationHeaderMalformed"
            }
            AuthError::UnknownAccessKey => "InvalidAccessKeyId",
            AuthError::SignatureDoesNotMatch | AuthError::MissingSignedHeader(_) => {
                "SignatureDoesNotMatch"
            }
            AuthError::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            AuthError::BadContentSha256(_) => "InvalidArgument",
            AuthError::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }

    /// The HTTP status AWS answers with.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Malformed(_)
            | AuthError::UnsupportedAlgorithm(_)
            | AuthError::BadContentSha256(_)
            | AuthError::ContentSha256Mismatch => 400,
            _ => 403,
        }
    }
}
