//! Session and CSRF tokens and the cookies that carry them: a session token is 32 random
//! bytes, base64url, given to the browser once in an HTTP-only, same-site cookie; the store
//! keeps only its SHA-256 ([`digest`]). Each session has its own CSRF token, put in a hidden
//! field of every form and compared in constant time on every POST; before sign-in, the
//! sign-in form's token is also set as a short-lived cookie and the two must match (a
//! double-submit). Over TLS the cookies are `__Host-` cookies with `Secure`; a frontend
//! serving plain HTTP (a test or lab setting) drops both. It does not look sessions up
//! (`store::sessions`) or decide what a page shows.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a session lives unused.
pub const IDLE_MS: i64 = 8 * 60 * 60 * 1000;
/// How long the sign-in form's token cookie lives.
const SIGN_IN_SECS: u32 = 30 * 60;

/// A fresh random token: 32 bytes, base64url without padding (43 characters).
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    B64URL.encode(raw)
}

/// What the store keeps of a session token: its SHA-256, hex.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a form's CSRF token is the expected one, in time independent of where they
/// differ. An empty expected token matches nothing.
pub fn csrf_matches(expected: &str, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The console's cookies as the listener serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookies {
    /// Over TLS: `__Host-` names and `Secure`.
    pub secure: bool,
}

impl Cookies {
    /// The session cookie's name.
    pub fn session_name(self) -> &'static str {
        match self.secure {
            true => "__Host-mallee-session",
            false => "mallee-session",
        }
    }

    /// The sign-in form token cookie's name.
    pub fn sign_in_name(self) -> &'static str {
        match self.secure {
            true => "__Host-mallee-signin",
            false => "mallee-signin",
        }
    }

    fn attributes(self) -> &'static str {
        match self.secure {
            true => "Path=/; Secure; HttpOnly; SameSite=Strict",
            false => "Path=/; HttpOnly; SameSite=Strict",
        }
    }

    /// `Set-Cookie` starting a session (a browser-session cookie: the server ends it).
    pub fn set_session(self, token: &str) -> String {
        format!("{}={token}; {}", self.session_name(), self.attributes())
    }

    /// `Set-Cookie` ending the session cookie.
    pub fn clear_session(self) -> String {
        format!("{}=; Max-Age=0; {}", self.session_name(), self.attributes())
    }

    /// `Set-Cookie` carrying the sign-in form's token.
    pub fn set_sign_in(self, token: &str) -> String {
        format!(
            "{}={token}; Max-Age={SIGN_IN_SECS}; {}",
            self.sign_in_name(),
            self.attributes()
        )
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), a);
    }

    #[test]
    fn csrf_tokens_match_only_exactly() {
        let t = new_token();
        assert!(csrf_matches(&t, Some(&t)));
        assert!(!csrf_matches(&t, Some(&t[..42])));
        assert!(!csrf_matches(&t, Some(&format!("{t}x"))));
        assert!(!csrf_matches(&t, Some("")));
        assert!(!csrf_matches(&t, None));
        assert!(!csrf_matches("", Some("")));
    }

    #[test]
    fn tls_cookies_are_host_only_secure_http_only_and_strict() {
        let c = Cookies { secure: true };
        assert_eq!(
            c.set_session("T"),
            "__Host-mallee-session=T; Path=/; Secure; HttpOnly; SameSite=Strict"
        );
        assert!(c.clear_session().contains("Max-Age=0"));
        let plain = Cookies { secure: false };
        assert_eq!(
            plain.set_session("T"),
            "mallee-session=T; Path=/; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn cookies_are_found_among_others_and_headers() {
        let mut h = http::HeaderMap::new();
        h.append("cookie", "a=1; __Host-mallee-session=abc".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        assert_eq!(cookie(&h, "__Host-mallee-session"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "mallee-session"), None);
    }
}
