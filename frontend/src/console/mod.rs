//! The web console: HTML pages under `/_console/` on the API listener for a user signed in
//! with a name and password — their instances (launch, reboot, stop/start, terminate, console
//! output), key pairs (create with a one-time private key download, delete) and their
//! credentials for the AWS CLI. Every change goes through the EC2 room's own call path
//! ([`Ec2::call_as`]): the same checks, core operations, owner scoping and audit entry as a
//! signed Query request; reads are scoped to the signed-in user as the EC2 Describe calls
//! scope them.
//!
//! This module routes a request and gates it: the stylesheet and sign-in are open; every
//! other page needs a live session (`store::sessions`), and every POST the session's CSRF
//! token. Passwords are `password`, tokens and cookies `session`, the sign-in rate limit
//! `limiter`, the HTML `pages`. The user's images, security groups, volumes and snapshots,
//! elastic IPs and access key rotation are `cloud` (handlers) and `cloud_pages`. The admin pages (`admin`, `admin_pages`) live under
//! `/_console/admin/` and answer only users whose role is admin; anyone else gets a 403 page
//! and their POSTs change nothing. The console uses no JavaScript.

mod admin;
mod admin_pages;
mod cloud;
mod cloud_pages;
mod launch;
mod limiter;
mod pages;
pub mod password;
mod reply;
mod resources;
mod session;
mod sign_in;

pub use limiter::SignInLimiter;
pub use reply::Reply;
pub use session::Cookies;

use crate::ec2::params::Params;
use crate::ec2::{Ec2, Ec2Error};
use crate::http::{db, read_whole, RespBody};
use crate::store::{Role, Session, Store, StoreError};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use pages::Nav;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the console lives on the listener.
pub const PREFIX: &str = "/_console";

/// The largest form accepted.
const MAX_FORM: usize = 64 * 1024;

/// Whether `path` is the console's.
pub fn is_console_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/_console/")
}

/// Why a console request failed; each becomes a page saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("The console could not read or write its records ({0}); try again, and tell the cloud's admin if it persists.")]
    Store(#[from] StoreError),
    /// An EC2 call refused or failed: its message says why.
    #[error("{}", .0.message)]
    Ec2(Ec2Error),
    #[error("There is no page {0} in the console; use the links at the top.")]
    NotFound(String),
    #[error("This form is out of date or did not come from this console; reload the page and try again.")]
    Csrf,
    #[error("Your session has ended; sign in again.")]
    SignedOut,
    #[error("This page is for the cloud's admins; ask one of them if you need what it shows.")]
    AdminOnly,
}

impl From<Ec2Error> for ConsoleError {
    fn from(e: Ec2Error) -> ConsoleError {
        ConsoleError::Ec2(e)
    }
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ConsoleError::Ec2(e) => crate::http::status(e.status),
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Csrf | ConsoleError::SignedOut | ConsoleError::AdminOnly => {
                StatusCode::FORBIDDEN
            }
        }
    }
}

/// One request as the console reads it.
pub struct Asked<'a> {
    pub method: &'a Method,
    /// The path after [`PREFIX`].
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The form of a POST, or the query string of a GET.
    pub form: Params,
    /// The client's address.
    pub source: &'a str,
    pub now: i64,
}

/// The web console.
pub struct Console {
    store: Arc<Store>,
    limiter: SignInLimiter,
    cookies: Cookies,
    region: String,
    /// The CA bundle clients verify the listener with, when it serves TLS.
    ca_bundle: Option<PathBuf>,
}

impl Console {
    /// The console over `store`, for a listener serving TLS with `ca_bundle` (`None`: plain
    /// HTTP) in `region`.
    pub fn new(store: Arc<Store>, ca_bundle: Option<PathBuf>, region: &str) -> Console {
        Console {
            store,
            limiter: SignInLimiter::default(),
            cookies: Cookies {
                secure: ca_bundle.is_some(),
            },
            region: region.to_string(),
            ca_bundle,
        }
    }

    /// Answers one HTTP request under [`PREFIX`], running EC2 calls through `ec2`.
    pub async fn handle(&self, ec2: &Ec2, req: Request<Incoming>) -> Response<RespBody> {
        let source = crate::http::client_addr(&req);
        let (parts, body) = req.into_parts();
        let body = match read_whole(body, MAX_FORM).await {
            Ok(b) => b,
            Err(why) => {
                let page = pages::error(None, "Request refused", &why);
                return Reply::page(StatusCode::PAYLOAD_TOO_LARGE, page).into_response();
            }
        };
        let path = parts.uri.path();
        let asked = Asked {
            method: &parts.method,
            path: path.strip_prefix(PREFIX).unwrap_or(path),
            headers: &parts.headers,
            form: match parts.method {
                Method::GET => Params::parse(parts.uri.query().unwrap_or("")),
                _ => Params::parse(&String::from_utf8_lossy(&body)),
            },
            source: &source,
            now: crate::store::now_ms(),
        };
        db(|| self.answer(ec2, &asked)).into_response()
    }

    /// Answers `a`: the open pages, else the session's pages once it is live and, for a POST,
    /// its CSRF token matches. A POST refused here changes nothing.
    pub fn answer(&self, ec2: &Ec2, a: &Asked<'_>) -> Reply {
        match (a.method, a.path) {
            (&Method::GET, "/style.css") => return Reply::css(pages::STYLE),
            (&Method::GET, "/signin") => return self.sign_in_form(StatusCode::OK, None),
            (&Method::POST, "/signin") => return self.sign_in(a),
            _ => {}
        }
        let session = match self.session(a) {
            Ok(s) => s,
            Err(e) => return failed(None, &ConsoleError::Store(e)),
        };
        let Some(session) = session else {
            return match a.method {
                &Method::GET | &Method::HEAD => Reply::redirect("/_console/signin"),
                _ => failed(None, &ConsoleError::SignedOut),
            };
        };
        let nav = || Nav::of(&session);
        if a.method == Method::POST && !session::csrf_matches(&session.csrf, a.form.get("csrf")) {
            return failed(Some(nav()), &ConsoleError::Csrf);
        }
        self.signed_in(ec2, a, &session)
            .unwrap_or_else(|e| failed(Some(nav()), &e))
    }

    /// The session the request's cookie names, if it is live.
    fn session(&self, a: &Asked<'_>) -> Result<Option<Session>, StoreError> {
        match session::cookie(a.headers, self.cookies.session_name()) {
            Some(token) if !token.is_empty() => {
                self.store
                    .session(&session::digest(token), a.now, session::IDLE_MS)
            }
            _ => Ok(None),
        }
    }

    /// The pages behind sign-in.
    fn signed_in(&self, ec2: &Ec2, a: &Asked<'_>, s: &Session) -> Result<Reply, ConsoleError> {
        let parts: Vec<&str> = a.path.trim_matches('/').split('/').collect();
        match (a.method, parts.as_slice()) {
            (&Method::GET, [""]) => Ok(Reply::redirect("/_console/instances")),
            (&Method::POST, ["signout"]) => self.sign_out(a, s),
            (&Method::GET, ["instances"]) => self.instances(ec2, s, None),
            (&Method::POST, ["instances"]) => self.launch(ec2, a, s),
            (&Method::POST, ["instances", id, verb]) => self.instance_action(ec2, a, s, id, verb),
            (&Method::GET, ["instances", id, "console"]) => self.console_output(ec2, s, id),
            (&Method::GET, ["keypairs"]) => self.key_pairs(ec2, s, StatusCode::OK, None),
            (&Method::POST, ["keypairs"]) => self.create_key_pair(ec2, a, s),
            (&Method::POST, ["keypairs", "delete"]) => self.delete_key_pair(ec2, a, s),
            (&Method::GET, ["credentials"]) => Ok(self.credentials(a, s)),
            (&Method::GET, ["images"]) => self.show(ec2, s, cloud::Page::Images, None),
            (&Method::GET, ["groups"]) => self.show(ec2, s, cloud::Page::Groups, None),
            (&Method::GET, ["volumes"]) => self.show(ec2, s, cloud::Page::Volumes, None),
            (&Method::GET, ["addresses"]) => self.show(ec2, s, cloud::Page::Addresses, None),
            (&Method::POST, [first, ..])
                if ["images", "groups", "volumes", "snapshots", "addresses"].contains(first) =>
            {
                self.cloud_post(ec2, a, s, &parts)
            }
            (&Method::GET, ["credentials", "rotate"]) => Ok(self.rotate_form(s)),
            (&Method::POST, ["credentials", "rotate"]) => self.rotate_key(a, s),
            (&Method::GET, ["credentials", file]) => self.credentials_file(a, s, file),
            (_, ["admin", ..]) if s.user.role != Role::Admin => Err(ConsoleError::AdminOnly),
            (&Method::GET, ["admin", "nodes"]) => self.nodes(s, StatusCode::OK, None),
            (&Method::POST, ["admin", "nodes", id, verb]) => self.admit(ec2, a, s, id, verb),
            (&Method::GET, ["admin", "users"]) => self.users(s, StatusCode::OK, None),
            (&Method::POST, ["admin", "users"]) => self.create_user(a, s),
            (&Method::POST, ["admin", "users", "password"]) => self.reset_password(a, s),
            (&Method::POST, ["admin", "users", verb @ ("disable" | "enable")]) => {
                self.set_disabled(a, s, *verb == "disable")
            }
            (&Method::GET, ["admin", "networks"]) => self.networks(ec2, s),
            (&Method::GET, ["admin", "audit"]) => self.audit(a, s),
            _ => Err(ConsoleError::NotFound(format!("{PREFIX}{}", a.path))),
        }
    }
}

/// The error page for `e`.
fn failed(nav: Option<Nav<'_>>, e: &ConsoleError) -> Reply {
    if let ConsoleError::Store(err) = e {
        tracing::warn!(error = %err, "console: store failed");
    }
    Reply::page(
        e.status(),
        pages::error(nav, "Something went wrong", &e.to_string()),
    )
}

/// The answer to a client over its connection limit.
pub fn throttled() -> Response<RespBody> {
    let page = pages::error(
        None,
        "Too many connections",
        "Your address has too many connections open to this cloud; close some and try again.",
    );
    Reply::page(StatusCode::SERVICE_UNAVAILABLE, page).into_response()
}

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod tests;
