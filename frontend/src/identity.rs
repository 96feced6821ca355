//! Who the caller is: STS `GetCallerIdentity` and IAM `GetUser`, on the Query endpoint EC2
//! shares, for the requests whose SigV4 credential scope names the service `sts` or `iam` (what
//! botocore and the AWS CLI sign for those services; `server` routes them here). Each Mallee
//! user is an account of its own (`store::account_id`, the `ownerId` EC2 shows) holding one IAM
//! user of the same name; a user's IAM id comes from `store::iam_user_id`. Answers and errors
//! are in those services' XML (the AWS query protocol: `<ActionResult>` and
//! `ResponseMetadata`, `ErrorResponse`). No other STS or IAM action exists here: no roles,
//! policies, sessions or access key management (the `admin` command line makes users).

use crate::auth::{self, AuthError, Policy, UriMode};
use crate::ec2::params::Params;
use crate::http::xml::Xml;
use crate::http::{db, read_whole, RespBody};
use crate::store::{iam_user_id, Role, Store, StoreError, User};
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Largest request body accepted (these calls carry a handful of parameters).
const MAX_BODY: usize = 64 * 1024;

/// The service a request is for, from its signature's credential scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Sts,
    Iam,
}

impl Service {
    /// The service a request's SigV4 credential scope names (header or presigned form), when it
    /// is one answered here. Nothing is verified yet: that is [`Identity::handle`]'s first step.
    pub fn claimed(headers: &HeaderMap, raw_query: &str) -> Option<Service> {
        let claim = auth::parse(headers, raw_query).ok()??;
        match claim.scope.service.as_str() {
            "sts" => Some(Service::Sts),
            "iam" => Some(Service::Iam),
            _ => None,
        }
    }

    /// The signing name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Sts => "sts",
            Service::Iam => "iam",
        }
    }

    /// The XML namespace of its answers.
    pub fn namespace(self) -> &'static str {
        match self {
            Service::Sts => "https://sts.amazonaws.com/doc/2011-06-15/",
            Service::Iam => "https://iam.amazonaws.com/doc/2010-05-08/",
        }
    }

    /// Its API version (`Version`).
    pub fn version(self) -> &'static str {
        match self {
            Service::Sts => "2011-06-15",
            Service::Iam => "2010-05-08",
        }
    }
}

/// Why an STS or IAM request failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the request could not be read: {0}")]
    Unreadable(String),
    #[error("the request names no Action")]
    MissingAction,
    #[error("Could not find operation {action} for version {version}")]
    InvalidAction { action: String, version: String },
    #[error("The user with name {0} cannot be found.")]
    NoSuchEntity(String),
    #[error("User: {caller} is not authorized to perform: iam:GetUser on resource: user {user}")]
    AccessDenied { caller: String, user: String },
}

impl IdentityError {
    /// The error code the services use.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::Auth(e) => match e {
                AuthError::Anonymous => "MissingAuthenticationToken",
                AuthError::UnknownAccessKey => "InvalidClientTokenId",
                // Both services report a stale or expired signature this way.
                AuthError::SignatureDoesNotMatch
                | AuthError::MissingSignedHeader(_)
                | AuthError::RequestTimeTooSkewed
                | AuthError::Expired
                | AuthError::ContentSha256Mismatch => "SignatureDoesNotMatch",
                AuthError::Malformed(_)
                | AuthError::UnsupportedAlgorithm(_)
                | AuthError::BadContentSha256(_) => "IncompleteSignature",
            },
            IdentityError::Store(_) => "ServiceFailure",
            IdentityError::Unreadable(_) => "MalformedQueryString",
            IdentityError::MissingAction => "MissingAction",
            IdentityError::InvalidAction { .. } => "InvalidAction",
            IdentityError::NoSuchEntity(_) => "NoSuchEntity",
            IdentityError::AccessDenied { .. } => "AccessDenied",
        }
    }

    /// The HTTP status the services answer with.
    pub fn status(&self) -> u16 {
        match self {
            IdentityError::Auth(AuthError::Malformed(_))
            | IdentityError::Auth(AuthError::UnsupportedAlgorithm(_))
            | IdentityError::Auth(AuthError::BadContentSha256(_)) => 400,
            IdentityError::Auth(_) | IdentityError::AccessDenied { .. } => 403,
            IdentityError::Store(_) => 500,
            IdentityError::NoSuchEntity(_) => 404,
            _ => 400,
        }
    }

    /// The `ErrorResponse` document of `service`.
    pub fn to_xml(&self, service: Service, request_id: &str) -> String {
        let message = match self {
            // The details go to the log, not to the client.
            IdentityError::Store(e) => {
                tracing::error!(error = %e, "internal error");
                "An internal error has occurred; the failure is logged.".to_string()
            }
            e => e.to_string(),
        };
        let kind = if self.status() >= 500 {
            "Receiver"
        } else {
            "Sender"
        };
        let mut x = Xml::namespaced(service.namespace());
        x.open("ErrorResponse")
            .open("Error")
            .field("Type", kind)
            .field("Code", self.code())
            .field("Message", message)
            .close("Error")
            .field("RequestId", request_id);
        x.finish()
    }
}

/// The `arn:aws:iam::ACCOUNT:user/NAME` of `user`.
pub fn user_arn(user: &User) -> String {
    format!("arn:aws:iam::{}:user/{}", user.account_id(), user.name)
}

/// Answers `action` of `service` for `caller`: the plain function behind the handler.
pub fn answer(
    store: &Store,
    service: Service,
    params: &Params,
    caller: &User,
    request_id: &str,
) -> Result<String, IdentityError> {
    let action = params.get("Action").ok_or(IdentityError::MissingAction)?;
    let version = params.get("Version").unwrap_or(service.version());
    let mut x = Xml::namespaced(service.namespace());
    match (service, action) {
        _ if version != service.version() => {
            return Err(IdentityError::InvalidAction {
                action: action.to_string(),
                version: version.to_string(),
            })
        }
        (Service::Sts, "GetCallerIdentity") => {
            x.open("GetCallerIdentityResponse")
                .open("GetCallerIdentityResult")
                .field("Arn", user_arn(caller))
                .field("UserId", iam_user_id(&caller.name))
                .field("Account", caller.account_id())
                .close("GetCallerIdentityResult");
        }
        (Service::Iam, "GetUser") => {
            let user = user_named(store, caller, params.get("UserName"))?;
            x.open("GetUserResponse")
                .open("GetUserResult")
                .open("User")
                .field("Path", "/")
                .field("UserName", &user.name)
                .field("UserId", iam_user_id(&user.name))
                .field("Arn", user_arn(&user))
                .field("CreateDate", iso8601(user.created_ms))
                .close("User")
                .close("GetUserResult");
        }
        (_, other) => {
            return Err(IdentityError::InvalidAction {
                action: other.to_string(),
                version: version.to_string(),
            })
        }
    }
    x.open("ResponseMetadata")
        .field("RequestId", request_id)
        .close("ResponseMetadata");
    Ok(x.finish())
}

/// The user GetUser describes: the caller, or the one `name`d — which only the admin may ask
/// for (anyone else is refused whether or not it exists, so names do not leak).
fn user_named(store: &Store, caller: &User, name: Option<&str>) -> Result<User, IdentityError> {
    match name {
        None => Ok(caller.clone()),
        Some(n) if n == caller.name => Ok(caller.clone()),
        Some(n) if caller.role == Role::Admin => store
            .user_by_name(n)?
            .ok_or_else(|| IdentityError::NoSuchEntity(n.to_string())),
        Some(n) => Err(IdentityError::AccessDenied {
            caller: user_arn(caller),
            user: n.to_string(),
        }),
    }
}

/// IAM's timestamps: ISO 8601 to the second (`2013-10-02T17:01:44Z`).
fn iso8601(ms: i64) -> String {
    let millis = auth::time::format_iso8601_millis(ms);
    format!("{}Z", &millis[..19])
}

/// The STS and IAM rooms of the Query endpoint.
pub struct Identity {
    store: Arc<Store>,
    max_skew_secs: i64,
}

impl Identity {
    pub fn new(store: Arc<Store>, max_skew_secs: u64) -> Identity {
        Identity {
            store,
            max_skew_secs: max_skew_secs as i64,
        }
    }

    /// Answers one request for `service` (see [`Service::claimed`]).
    pub async fn handle(&self, service: Service, req: Request<Incoming>) -> Response<RespBody> {
        let rid = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .hyphenated()
            .to_string();
        let (parts, body) = req.into_parts();
        let result = match read_whole(body, MAX_BODY).await {
            Ok(body) => db(|| self.call(service, &parts, &body, &rid)),
            Err(why) => Err(IdentityError::Unreadable(why.to_string())),
        };
        let (status, text) = match result {
            Ok(xml) => (http::StatusCode::OK, xml),
            Err(e) => {
                let (name, code) = (service.name(), e.code());
                tracing::info!(service = name, code, error = %e, "request failed");
                (crate::http::status(e.status()), e.to_xml(service, &rid))
            }
        };
        let mut resp = crate::http::xml_response(status, text);
        if let Ok(v) = rid.parse() {
            resp.headers_mut().insert("x-amzn-requestid", v);
        }
        resp
    }

    fn call(
        &self,
        service: Service,
        parts: &http::request::Parts,
        body: &[u8],
        rid: &str,
    ) -> Result<String, IdentityError> {
        let body_sha = hex::encode(Sha256::digest(body));
        let policy = Policy {
            service: service.name(),
            region: None,
            uri_mode: UriMode::Normalized,
            now: crate::store::now_ms() / 1000,
            max_skew_secs: self.max_skew_secs,
            body_sha256: Some(&body_sha),
        };
        let (caller, _) = auth::authenticate::<IdentityError>(&self.store, parts, &policy)?;
        let params = if parts.method == http::Method::GET {
            Params::parse(parts.uri.query().unwrap_or(""))
        } else {
            let text = std::str::from_utf8(body)
                .map_err(|_| IdentityError::Unreadable("the body is not UTF-8".into()))?;
            Params::parse(text)
        };
        answer(&self.store, service, &params, &caller, rid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::account_id;

    fn store_with(names: &[(&str, Role)]) -> (tempfile::TempDir, Store, Vec<User>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let users = names
            .iter()
            .map(|(n, r)| store.create_user(n, *r).unwrap())
            .collect();
        (dir, store, users)
    }

    fn ask(store: &Store, service: Service, query: &str, caller: &User) -> String {
        answer(store, service, &Params::parse(query), caller, "req-1").unwrap()
    }

    #[test]
    fn get_caller_identity_names_the_callers_account_arn_and_user_id() {
        let (_d, store, users) = store_with(&[("alice", Role::User)]);
        let xml = ask(
            &store,
            Service::Sts,
            "Action=GetCallerIdentity&Version=2011-06-15",
            &users[0],
        );
        let account = account_id("alice");
        let want = format!(
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <GetCallerIdentityResult><Arn>arn:aws:iam::{account}:user/alice</Arn>\
             <UserId>{}</UserId><Account>{account}</Account></GetCallerIdentityResult>\
             <ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata>\
             </GetCallerIdentityResponse>",
            iam_user_id("alice")
        );
        assert!(xml.ends_with(&want), "{xml}");
    }

    #[test]
    fn get_user_describes_the_caller_with_path_and_creation_date() {
        let (_d, store, users) = store_with(&[("bob", Role::User)]);
        let xml = ask(&store, Service::Iam, "Action=GetUser", &users[0]);
        let created = iso8601(users[0].created_ms);
        for part in [
            "<GetUserResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><GetUserResult><User>",
            "<Path>/</Path><UserName>bob</UserName>",
            &format!("<Arn>arn:aws:iam::{}:user/bob</Arn>", account_id("bob")),
            &format!("<CreateDate>{created}</CreateDate></User></GetUserResult>"),
            "<ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata>",
        ] {
            assert!(xml.contains(part), "{part} not in {xml}");
        }
        assert!(created.ends_with('Z') && created.len() == 20, "{created}");
    }

    #[test]
    fn only_the_admin_may_get_another_user_and_unknown_names_are_no_such_entity() {
        let (_d, store, users) = store_with(&[("root", Role::Admin), ("carol", Role::User)]);
        let (admin, carol) = (&users[0], &users[1]);
        let xml = ask(&store, Service::Iam, "Action=GetUser&UserName=carol", admin);
        assert!(xml.contains("<UserName>carol</UserName>"), "{xml}");
        let own = ask(&store, Service::Iam, "Action=GetUser&UserName=carol", carol);
        assert!(own.contains("<UserName>carol</UserName>"), "{own}");
        let get = |caller: &User, name: &str| {
            let p = Params::parse(&format!("Action=GetUser&UserName={name}"));
            answer(&store, Service::Iam, &p, caller, "r").unwrap_err()
        };
        let e = get(carol, "root");
        assert_eq!((e.status(), e.code()), (403, "AccessDenied"));
        assert!(e.to_string().contains(&user_arn(carol)), "{e}");
        // Refused alike whether or not the user exists.
        assert_eq!(get(carol, "nobody").code(), "AccessDenied");
        let e = get(admin, "nobody");
        assert_eq!((e.status(), e.code()), (404, "NoSuchEntity"));
    }

    #[test]
    fn other_actions_versions_and_services_are_invalid_action() {
        let (_d, store, users) = store_with(&[("dave", Role::User)]);
        let err = |service, q: &str| {
            answer(&store, service, &Params::parse(q), &users[0], "r").unwrap_err()
        };
        for (service, q) in [
            (Service::Sts, "Action=AssumeRole"),
            (Service::Iam, "Action=GetCallerIdentity"),
            (Service::Sts, "Action=GetUser"),
            (Service::Sts, "Action=GetCallerIdentity&Version=2010-05-08"),
        ] {
            let e = err(service, q);
            assert_eq!((e.status(), e.code()), (400, "InvalidAction"), "{q}");
        }
        assert_eq!(
            err(Service::Iam, "Version=2010-05-08").code(),
            "MissingAction"
        );
    }

    #[test]
    fn errors_are_error_responses_in_the_services_namespace() {
        let e = IdentityError::Auth(AuthError::SignatureDoesNotMatch);
        let xml = e.to_xml(Service::Iam, "r-9");
        assert!(xml.ends_with(
            "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error>\
             <Type>Sender</Type><Code>SignatureDoesNotMatch</Code>\
             <Message>the signature does not match</Message></Error>\
             <RequestId>r-9</RequestId></ErrorResponse>"
        ));
        let unknown = IdentityError::Auth(AuthError::UnknownAccessKey);
        assert_eq!(
            (unknown.status(), unknown.code()),
            (403, "InvalidClientTokenId")
        );
        let store = IdentityError::Store(StoreError::NoSuchUser("x".into()));
        let xml = store.to_xml(Service::Sts, "r");
        assert!(
            xml.contains("<Type>Receiver</Type><Code>ServiceFailure</Code>"),
            "{xml}"
        );
        assert!(
            !xml.contains("NoSuchUser") && !xml.contains("does not exist"),
            "{xml}"
        );
    }

    #[test]
    fn the_claimed_service_comes_from_the_credential_scope() {
        let mut headers = HeaderMap::new();
        let auth = |service: &str| {
            format!(
                "AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/{service}/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=00"
            )
        };
        headers.insert("x-amz-date", "20240101T000000Z".parse().unwrap());
        for (service, want) in [
            ("sts", Some(Service::Sts)),
            ("iam", Some(Service::Iam)),
            ("ec2", None),
        ] {
            headers.insert("authorization", auth(service).parse().unwrap());
            assert_eq!(Service::claimed(&headers, ""), want, "{service}");
        }
        let presigned = "Action=GetCallerIdentity&X-Amz-Algorithm=AWS4-HMAC-SHA256\
                         &X-Amz-Credential=AK%2F20240101%2Fus-east-1%2Fsts%2Faws4_request\
                         &X-Amz-Date=20240101T000000Z&X-Amz-Expires=60\
                         &X-Amz-SignedHeaders=host&X-Amz-Signature=00";
        assert_eq!(
            Service::claimed(&HeaderMap::new(), presigned),
            Some(Service::Sts)
        );
        assert_eq!(Service::claimed(&HeaderMap::new(), "Action=GetUser"), None);
    }
}
