//! EC2 API errors: the code and HTTP status a client expects, and their XML rendering.

use crate::auth::AuthError;
use crate::cloud::networks::{Exhausted, NetworkError};
use crate::store::StoreError;

/// Why an EC2 request failed, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Ec2Error {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Ec2Error {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Ec2Error {
        Ec2Error {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A 400 with `code`.
    pub fn client(code: &str, message: impl Into<String>) -> Ec2Error {
        Ec2Error::new(400, code, message)
    }

    pub fn missing(name: &str) -> Ec2Error {
        Ec2Error::client(
            "MissingParameter",
            format!("The request must contain the parameter {name}"),
        )
    }

    pub fn invalid(name: &str, value: &str, why: &str) -> Ec2Error {
        Ec2Error::client(
            "InvalidParameterValue",
            format!("Value ({value}) for parameter {name} is invalid. {why}"),
        )
    }

    pub fn combination(message: impl Into<String>) -> Ec2Error {
        Ec2Error::client("InvalidParameterCombination", message)
    }

    /// `<What>.NotFound`, e.g. `InvalidInstanceID.NotFound`.
    pub fn not_found(what: &str, id: &str) -> Ec2Error {
        Ec2Error::client(
            &format!("{what}.NotFound"),
            format!("The ID '{id}' does not exist"),
        )
    }

    /// `<What>.Malformed`, e.g. `InvalidInstanceID.Malformed`.
    pub fn malformed(what: &str, id: &str) -> Ec2Error {
        Ec2Error::client(
            &format!("{what}.Malformed"),
            format!("Invalid id: \"{id}\""),
        )
    }

    pub fn internal(e: impl std::fmt::Display) -> Ec2Error {
        tracing::error!(error = %e, "internal error");
        Ec2Error::new(
            500,
            "InternalError",
            "An internal error has occurred; the failure is logged.",
        )
    }

    /// The error document.
    pub fn to_xml(&self, request_id: &str) -> String {
        use crate::http::xml::escape;
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
            escape(&self.code),
            escape(&self.message),
            escape(request_id)
        )
    }
}

impl From<StoreError> for Ec2Error {
    fn from(e: StoreError) -> Ec2Error {
        Ec2Error::internal(e)
    }
}

impl From<NetworkError> for Ec2Error {
    fn from(e: NetworkError) -> Ec2Error {
        match e {
            NetworkError::Store(e) => Ec2Error::internal(e),
            // The group's own network is full: EC2's code for a subnet without free addresses.
            NetworkError::Exhausted(e @ Exhausted::Addresses { .. }) => {
                Ec2Error::client("InsufficientFreeAddressesInSubnet", e.to_string())
            }
            // No tag or slice for a new network: the cloud's capacity, as for vCPUs.
            NetworkError::Exhausted(e) => {
                Ec2Error::new(500, "InsufficientInstanceCapacity", e.to_string())
            }
        }
    }
}

impl From<AuthError> for Ec2Error {
    fn from(e: AuthError) -> Ec2Error {
        let code = match &e {
            AuthError::UnknownAccessKey => "AuthFailure",
            AuthError::Anonymous => "MissingAuthenticationToken",
            AuthError::SignatureDoesNotMatch | AuthError::MissingSignedHeader(_) => {
                "SignatureDoesNotMatch"
            }
            AuthError::RequestTimeTooSkewed => "RequestExpired",
            AuthError::Expired => "RequestExpired",
            _ => "IncompleteSignature",
        };
        let status = if code == "IncompleteSignature" {
            400
        } else {
            401
        };
        let status = if code == "SignatureDoesNotMatch" {
            403
        } else {
            status
        };
        Ec2Error::new(status, code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_xml_is_the_ec2_error_document_with_escaping() {
        let e = Ec2Error::invalid("InstanceType", "<x>", "Unknown type.");
        let xml = e.to_xml("R1");
        assert!(xml.contains("<Response><Errors><Error><Code>InvalidParameterValue</Code>"));
        assert!(xml.contains("&lt;x&gt;"));
        assert!(xml.ends_with("<RequestID>R1</RequestID></Response>"));
        assert_eq!(
            Ec2Error::from(AuthError::UnknownAccessKey).code,
            "AuthFailure"
        );
    }
}
