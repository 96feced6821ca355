//! Signing in and out: the sign-in form with its double-submit token, checking a name and
//! password under the rate limit, starting a session (a new token in the cookie, its digest
//! in the store) and ending one. Each sign-in, refused sign-in and sign-out is recorded in
//! the audit log (`ConsoleSignIn`, `ConsoleSignOut`) with the client's address.

use super::reply::Reply;
use super::session::{self, csrf_matches, new_token};
use super::{failed, pages, password, Asked, Console, ConsoleError};
use crate::store::{AuditEntry, Outcome, Session};
use http::StatusCode;

impl Console {
    /// The sign-in form with a fresh form token, also set as a cookie.
    pub(super) fn sign_in_form(&self, status: StatusCode, message: Option<&str>) -> Reply {
        let token = new_token();
        Reply::page(status, pages::sign_in(&token, message))
            .with_cookie(self.cookies.set_sign_in(&token))
    }

    /// Checks a sign-in: the form token against its cookie, then the rate limit, then the
    /// password, then that the user is not disabled (said only to whoever gave the right
    /// password). Starts a session and sends the browser to its instances when all pass.
    pub(super) fn sign_in(&self, a: &Asked<'_>) -> Reply {
        let expected = session::cookie(a.headers, self.cookies.sign_in_name()).unwrap_or("");
        if !csrf_matches(expected, a.form.get("csrf")) {
            return self.sign_in_form(
                StatusCode::FORBIDDEN,
                Some("The sign-in form expired or did not come from this console; sign in again with this one."),
            );
        }
        let name = a.form.get("user").unwrap_or("").trim();
        let given = a.form.get("password").unwrap_or("");
        if let Err(wait) = self.limiter.check(a.source, name, a.now) {
            self.record(a, "-", "ConsoleSignIn", name, Some("Throttling"));
            let message = format!(
                "Too many failed sign-ins from your address or for this user name: wait {} seconds, then try again.",
                wait.secs
            );
            let mut reply = self.sign_in_form(StatusCode::TOO_MANY_REQUESTS, Some(&message));
            reply.retry_after = Some(wait.secs);
            return reply;
        }
        let stored = match self.store.password_hash(name) {
            Ok(h) => h,
            Err(e) => return failed(None, &ConsoleError::Store(e)),
        };
        if name.is_empty() || !password::verify(given, stored.as_deref()) {
            self.limiter.failed(a.source, name, a.now);
            self.record(a, "-", "ConsoleSignIn", name, Some("AuthFailure"));
            return self.sign_in_form(
                StatusCode::UNAUTHORIZED,
                Some("Wrong user name or password. Ask the cloud's admin to set your password if you have none."),
            );
        }
        // Only someone who knows the password learns that the account is disabled; anyone
        // else got the wrong-password answer above.
        match self.store.user_disabled(name) {
            Ok(false) => {}
            Ok(true) => {
                self.record(a, "-", "ConsoleSignIn", name, Some("UserDisabled"));
                return self.sign_in_form(
                    StatusCode::FORBIDDEN,
                    Some("Your account is disabled; ask the cloud's admin to enable it."),
                );
            }
            Err(e) => return failed(None, &ConsoleError::Store(e)),
        }
        let token = new_token();
        if let Err(e) = (self.store).create_session(
            &session::digest(&token),
            name,
            &new_token(),
            a.now,
            session::IDLE_MS,
        ) {
            return failed(None, &ConsoleError::Store(e));
        }
        self.record(a, name, "ConsoleSignIn", name, None);
        Reply::redirect("/_console/instances").with_cookie(self.cookies.set_session(&token))
    }

    /// Ends the session: its row goes, and the browser forgets the cookie.
    pub(super) fn sign_out(&self, a: &Asked<'_>, s: &Session) -> Result<Reply, ConsoleError> {
        if let Some(token) = session::cookie(a.headers, self.cookies.session_name()) {
            self.store.delete_session(&session::digest(token))?;
        }
        self.record(a, &s.user.name, "ConsoleSignOut", &s.user.name, None);
        Ok(Reply::redirect("/_console/signin").with_cookie(self.cookies.clear_session()))
    }

    /// An audit entry of `action` by `user` about `resource` (`error`: its failure code).
    fn record(&self, a: &Asked<'_>, user: &str, action: &str, resource: &str, error: Option<&str>) {
        let entry = AuditEntry {
            at_ms: a.now,
            user: user.to_string(),
            action: action.to_string(),
            // A name typed at the sign-in form, at most 128 characters of it.
            resources: [resource]
                .into_iter()
                .filter(|r| !r.is_empty())
                .map(|r| r.chars().take(128).collect())
                .collect(),
            source: a.source.to_string(),
            outcome: match error {
                None => Outcome::Ok,
                Some(code) => Outcome::Err {
                    code: code.to_string(),
                },
            },
            request_id: crate::ec2::request_id(),
        };
        crate::audit::record(&self.store, &entry);
    }
}
