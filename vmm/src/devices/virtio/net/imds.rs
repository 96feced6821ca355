//! The instance metadata service's HTTP side (EC2's IMDS, v1 and v2): one request's bytes in,
//! one response's bytes out, from the instance's [`InstanceMetadata`]. `GET` under `/latest/`
//! and every dated version EC2 lists at `/` ([`VERSIONS`]) answers `meta-data/...` (the document's [`MetadataDocument::lookup`]), `user-data` and
//! `dynamic/instance-identity/document`; `PUT /latest/api/token` with
//! `X-aws-ec2-metadata-token-ttl-seconds` (1-21600) hands out an IMDSv2 token, refused when it
//! carries `X-Forwarded-For` (as AWS does: a token must not travel through a proxy). A request
//! carrying `X-aws-ec2-metadata-token` must carry a live token (401 otherwise), and with the
//! option `http_tokens: required` every request must (IMDSv1 gets 401). [`Imds::update`]
//! replaces the content and options while tokens handed out stay valid. The TCP/IP under it,
//! and the options about it (the endpoint on or off, the hop limit), are [`super::metadata`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use mallee_proto::vmm::InstanceMetadata;
use mallee_proto::HttpTokens;

/// The largest request head taken; a longer one is answered 400 (AWS allows about 8 KiB too).
pub const MAX_HEAD: usize = 8 * 1024;
/// Tokens alive at once; the oldest go first beyond it.
const MAX_TOKENS: usize = 1024;
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// What a request's bytes are so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A whole request head, `len` bytes of the buffer.
    Done(Vec<u8>, usize),
}

/// The service's state: the content and the IMDSv2 tokens handed out.
pub struct Imds {
    content: InstanceMetadata,
    user_data: Option<Vec<u8>>,
    tokens: HashMap<String, Instant>,
}

fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nServer: EC2ws\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn text(body: &str) -> Vec<u8> {
    response(200, "OK", "text/plain", body.as_bytes())
}

fn error(status: u16, reason: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<html><head><title>{status} - {reason}</title></head><body><h1>{status} - {reason}</h1></body></html>\n"
    );
    response(status, reason, "text/html", body.as_bytes())
}

/// Splits off one request head (`...\r\n\r\n`) from `buf`; a head longer than [`MAX_HEAD`]
/// is returned whole so the caller answers it 400.
pub fn take_head(buf: &[u8]) -> Parsed {
    match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => Parsed::Done(buf[..at + 4].to_vec(), at + 4),
        None if buf.len() > MAX_HEAD => Parsed::Done(buf.to_vec(), buf.len()),
        None => Parsed::Partial,
    }
}

/// Fills `buf` from the kernel's random source without waiting for it to be seeded
/// (`GRND_INSECURE`, then `GRND_NONBLOCK` on kernels before 5.6): soon after a node boots under
/// TCG the pool took two minutes to be ready, and a VMM must not stall its guest's network on
/// that. What is not filled is mixed with the clock.
pub fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    for flags in [libc::GRND_INSECURE, libc::GRND_NONBLOCK] {
        while filled < buf.len() {
            let rest = &mut buf[filled..];
            // SAFETY: the pointer and length describe `rest`, which getrandom writes at most.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), flags) };
            if n <= 0 {
                break;
            }
            filled += n as usize;
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for (i, b) in buf[filled..].iter_mut().enumerate() {
        *b ^= (nanos >> ((i % 16) * 8)) as u8;
    }
}

/// `user-data` as served: decoded from its base64.
fn decode_user_data(content: &InstanceMetadata) -> Option<Vec<u8>> {
    content.user_data.as_ref().map(|u| {
        // The API checked it at launch; undecodable data is served as given.
        B64.decode(u).unwrap_or_else(|_| u.clone().into_bytes())
    })
}

impl Imds {
    pub fn new(content: InstanceMetadata) -> Imds {
        Imds {
            user_data: decode_user_data(&content),
            content,
            tokens: HashMap::new(),
        }
    }

    /// Serves `content` (and its options) from now on; tokens already handed out stay valid.
    pub fn update(&mut self, content: InstanceMetadata) {
        self.user_data = decode_user_data(&content);
        self.content = content;
    }

    /// The response to the request head `head`, received at `now`.
    pub fn answer(&mut self, head: &[u8], now: Instant) -> Vec<u8> {
        if head.len() > MAX_HEAD {
            return error(400, "Bad Request");
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let (Ok(httparse::Status::Complete(_)), Some(method), Some(target)) =
            (req.parse(head), req.method, req.path)
        else {
            return error(400, "Bad Request");
        };
        let header = |name: &str| {
            (req.headers.iter())
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
        };
        let path = target.split('?').next().unwrap_or("");
        if method == "PUT" {
            if path != "/latest/api/token" {
                return error(405, "Method Not Allowed");
            }
            if header("x-forwarded-for").is_some() {
                return error(403, "Forbidden");
            }
            let ttl = header(TTL_HEADER).and_then(|t| t.parse::<u64>().ok());
            let Some(ttl) = ttl.filter(|t| (1..=21_600).contains(t)) else {
                return error(400, "Bad Request");
            };
            return text(&self.issue(Duration::from_secs(ttl), now));
        }
        if method != "GET" && method != "HEAD" {
            return error(405, "Method Not Allowed");
        }
        let token = header(TOKEN_HEADER);
        let required = self.content.options.http_tokens == HttpTokens::Required;
        if token.is_some() || required {
            let live = (token.as_ref()).and_then(|t| self.tokens.get(t));
            if live.is_none_or(|until| *until <= now) {
                return error(401, "Unauthorized");
            }
        }
        let reply = self.get(path);
        if method == "HEAD" {
            let end = reply.windows(4).position(|w| w == b"\r\n\r\n");
            return reply[..end.map_or(reply.len(), |e| e + 4)].to_vec();
        }
        reply
    }

    fn issue(&mut self, ttl: Duration, now: Instant) -> String {
        self.tokens.retain(|_, until| *until > now);
        if self.tokens.len() >= MAX_TOKENS {
            if let Some(oldest) = (self.tokens.iter())
                .min_by_key(|(_, until)| **until)
                .map(|(t, _)| t.clone())
            {
                self.tokens.remove(&oldest);
            }
        }
        let mut raw = [0u8; 32];
        random_bytes(&mut raw);
        let token = B64.encode(raw);
        self.tokens.insert(token.clone(), now + ttl);
        token
    }

    fn get(&self, path: &str) -> Vec<u8> {
        if path == "/" {
            return text(&VERSIONS.join("\n"));
        }
        // Every version EC2 lists serves the same tree here (cloud-init asks for dated ones).
        let Some(rest) = VERSIONS.iter().find_map(|v| {
            let rest = path.strip_prefix('/')?.strip_prefix(v)?;
            (rest.is_empty() || rest.starts_with('/')).then_some(rest)
        }) else {
            return error(404, "Not Found");
        };
        let doc = &self.content.document;
        match rest {
            "" | "/" => text("dynamic\nmeta-data\nuser-data"),
            "/user-data" | "/user-data/" => match &self.user_data {
                Some(data) => response(200, "OK", "application/octet-stream", data),
                None => error(404, "Not Found"),
            },
            "/dynamic" | "/dynamic/" => text("instance-identity/"),
            "/dynamic/instance-identity" | "/dynamic/instance-identity/" => text("document"),
            "/dynamic/instance-identity/document" => {
                let identity = serde_json::json!({
                    "instanceId": doc.instance_id,
                    "imageId": doc.ami_id,
                    "instanceType": doc.instance_type,
                    "availabilityZone": doc.availability_zone,
                    "privateIp": doc.local_ipv4,
                    "architecture": "x86_64",
                    "kernelId": doc.kernel_id,
                    "ramdiskId": doc.ramdisk_id,
                    "version": "2017-09-30",
                });
                let body = serde_json::to_vec_pretty(&identity).unwrap_or_default();
                response(200, "OK", "text/plain", &body)
            }
            _ => match rest.strip_prefix("/meta-data").map(|p| doc.lookup(p)) {
                Some(Some(answer)) => text(&answer),
                _ => error(404, "Not Found"),
            },
        }
    }
}

/// The versions `GET /` lists, as EC2 lists them: each serves the same tree here.
pub const VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
    "latest",
];

#[cfg(test)]
#[path = "imds_tests.rs"]
mod tests;
