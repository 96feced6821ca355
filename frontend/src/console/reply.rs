//! What a console handler answers before it is an HTTP response: an HTML page, a redirect
//! after a form (303, so a reload does not post again) or a file download, with the cookies
//! it sets. Every answer carries the same protective headers: no caching (pages hold keys
//! and secrets), no framing, no scripts or outside resources (`Content-Security-Policy`).

use crate::http::RespBody;
use http::{header, HeaderValue, Response, StatusCode};
use maud::Markup;

/// Only our own stylesheet and forms; nothing else loads or runs.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A console answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// `Location` of a redirect.
    pub location: Option<String>,
    /// `Content-Disposition` file name of a download.
    pub attachment: Option<String>,
    /// `Set-Cookie` values.
    pub cookies: Vec<String>,
    /// `Retry-After` seconds of a refused sign-in.
    pub retry_after: Option<i64>,
}

impl Reply {
    fn new(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
            location: None,
            attachment: None,
            cookies: Vec::new(),
            retry_after: None,
        }
    }

    /// An HTML page.
    pub fn page(status: StatusCode, markup: Markup) -> Reply {
        Reply::new(
            status,
            "text/html; charset=utf-8",
            markup.into_string().into_bytes(),
        )
    }

    /// The stylesheet.
    pub fn css(text: &'static str) -> Reply {
        Reply::new(StatusCode::OK, "text/css; charset=utf-8", text.into())
    }

    /// "See other": the browser GETs `to` next.
    pub fn redirect(to: &str) -> Reply {
        let mut r = Reply::new(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            Vec::new(),
        );
        r.location = Some(to.to_string());
        r
    }

    /// A file the browser saves as `file_name` (made safe for the header).
    pub fn download(file_name: &str, content_type: &'static str, body: Vec<u8>) -> Reply {
        let mut r = Reply::new(StatusCode::OK, content_type, body);
        r.attachment = Some(safe_file_name(file_name));
        r
    }

    /// Sets a cookie too.
    pub fn with_cookie(mut self, set_cookie: String) -> Reply {
        self.cookies.push(set_cookie);
        self
    }

    pub fn into_response(self) -> Response<RespBody> {
        let mut resp = Response::new(crate::http::body::full(self.body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        let mut put = |name: header::HeaderName, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        };
        if let Some(to) = self.location {
            put(header::LOCATION, to);
        }
        if let Some(name) = self.attachment {
            put(
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            );
        }
        if let Some(secs) = self.retry_after {
            put(header::RETRY_AFTER, secs.to_string());
        }
        for c in self.cookies {
            put(header::SET_COOKIE, c);
        }
        resp
    }
}

/// `name` with every character but letters, digits, `.`, `-` and `_` replaced by `_`, so it
/// is a plain quoted header value and a harmless file name.
pub fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_quoted_safely() {
        assert_eq!(safe_file_name("my-key.pem"), "my-key.pem");
        assert_eq!(safe_file_name("a\"b; c/<d>.pem"), "a_b__c__d_.pem");
        let resp =
            Reply::download("x\"y.pem", "application/x-pem-file", b"k".to_vec()).into_response();
        assert_eq!(
            resp.headers()[header::CONTENT_DISPOSITION],
            "attachment; filename=\"x_y.pem\""
        );
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    }
}
