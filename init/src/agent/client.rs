//! A small blocking HTTP/1.1 client for the node protocol: one request per connection
//! (`Connection: close`), JSON bodies, bodies framed by Content-Length (the frontend always
//! sends one; chunked replies are refused). Addresses are IPs: a static glibc binary has no
//! NSS, so there is no name lookup. Response heads are parsed by the plain [`parse_head`].

use mallee_proto as proto;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Why a request to the frontend failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the frontend at {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("talking to the frontend: {0}")]
    Io(#[from] std::io::Error),
    #[error("frontend answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("malformed reply from the frontend: {0}")]
    Malformed(String),
    #[error(transparent)]
    Proto(#[from] proto::ProtoError),
}

impl ClientError {
    /// The token was refused: enroll again.
    pub fn unauthorized(&self) -> bool {
        matches!(self, ClientError::Status { status: 401, .. })
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: Option<u64>,
    pub chunked: bool,
}

/// True when `text` is exactly `n` (at least one) ASCII digits.
fn is_digits(text: &str, n: usize) -> bool {
    n > 0 && text.len() == n && text.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `HTTP/1.1 200 OK\r\nName: value\r\n...` (without the blank line).
pub fn parse_head(text: &str) -> Result<Head, ClientError> {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut words = status_line.split(' ');
    let status = match (words.next(), words.next()) {
        // RFC 9112: status-code = 3DIGIT, and 1xx is the lowest class.
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && is_digits(code, 3) => {
            code.parse::<u16>().ok().filter(|c| *c >= 100)
        }
        _ => None,
    }
    .ok_or_else(|| ClientError::Malformed(format!("status line {status_line:?}")))?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ClientError::Malformed(format!("header line {line:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            // 1*DIGIT: no sign, no spaces inside, no list of lengths.
            let length = is_digits(value, value.len()).then(|| value.parse().ok());
            head.content_length = Some(
                length
                    .flatten()
                    .ok_or_else(|| ClientError::Malformed(format!("content-length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Ok(head)
}

/// The frontend's address and this node's token.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

/// An open response whose body is still to be read.
pub struct Reply {
    pub head: Head,
    body: BufReader<TcpStream>,
}

const MAX_HEAD: usize = 16 << 10;
const MAX_JSON: u64 = 8 << 20;

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, token: None }
    }

    /// Sends one request; returns the reply with its body unread. Non-2xx is an error carrying
    /// the frontend's message.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| ClientError::Connect(self.addr, e))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let _ = stream.set_nodelay(true);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in extra {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let mut w = &stream;
        w.write_all(req.as_bytes())?;
        w.write_all(body)?;
        let mut reader = BufReader::new(stream);
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(ClientError::Malformed(
                    "connection closed in the head".into(),
                ));
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            text.push_str(&line);
            if text.len() > MAX_HEAD {
                return Err(ClientError::Malformed("head too long".into()));
            }
        }
        let head = parse_head(text.trim_end())?;
        if head.chunked {
            return Err(ClientError::Malformed(
                "chunked replies are not supported".into(),
            ));
        }
        let mut reply = Reply { head, body: reader };
        if !(200..300).contains(&reply.head.status) {
            let bytes = reply.read_all().unwrap_or_default();
            let message = proto::decode::<proto::ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Status {
                status: reply.head.status,
                message,
            });
        }
        Ok(reply)
    }

    /// A JSON request and JSON reply.
    pub fn call<T: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        msg: Option<&T>,
        timeout: Duration,
    ) -> Result<R, ClientError> {
        let body = msg.map(proto::encode).unwrap_or_default();
        let bytes = self.send(method, path, &[], &body, timeout)?.read_all()?;
        Ok(proto::decode(&bytes)?)
    }
}

impl Reply {
    /// The whole body (JSON replies only; bounded).
    pub fn read_all(&mut self) -> Result<Vec<u8>, ClientError> {
        let limit = self.head.content_length.unwrap_or(MAX_JSON).min(MAX_JSON);
        let mut out = Vec::new();
        (&mut self.body).take(limit).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Copies the body into `out`; returns the bytes copied. Fails when the body ends before
    /// its Content-Length (the caller resumes from what arrived).
    pub fn copy_to(&mut self, out: &mut dyn Write) -> Result<u64, ClientError> {
        let want = self
            .head
            .content_length
            .ok_or_else(|| ClientError::Malformed("object reply without a length".into()))?;
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0u64;
        while got < want {
            let n = self.body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let n = n.min((want - got) as usize);
            out.write_all(&buf[..n])?;
            got += n as u64;
        }
        if got < want {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("body ended after {got} of {want} bytes"),
            )));
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_and_bad_heads_are_errors() {
        let h = parse_head("HTTP/1.1 206 Partial Content\r\ncontent-length: 10\r\nX: y").unwrap();
        assert_eq!(
            (h.status, h.content_length, h.chunked),
            (206, Some(10), false)
        );
        let h = parse_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").unwrap();
        assert!(h.chunked);
        assert!(parse_head("SSH-2.0-OpenSSH").is_err());
        assert!(parse_head("HTTP/1.1 200 OK\r\nno colon").is_err());
        assert!(parse_head("HTTP/1.1 200 OK\r\nContent-Length: -1").is_err());
        for bad in [
            "HTTP/1.1 +200 OK",
            "HTTP/1.1 0 OK",
            "HTTP/1.1 099 OK",
            "HTTP/1.1 2000 OK",
        ] {
            assert!(parse_head(bad).is_err(), "{bad}");
        }
        for bad in ["+5", "", "5, 5", "1 0"] {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}");
            assert!(parse_head(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_real_socket_round_trip_reads_status_and_error_body() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for (status, body) in [(200, "{\"token\":\"t1\"}"), (403, "{\"error\":\"nope\"}")] {
                let (mut s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
                write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let c = Client::new(addr);
        let t = Duration::from_secs(5);
        let r: proto::EnrollResponse = c.call::<(), _>("POST", "/x", None, t).unwrap();
        assert_eq!(r.token, "t1");
        let e = c.call::<(), proto::EnrollResponse>("POST", "/x", None, t);
        match e {
            Err(ClientError::Status { status, message }) => {
                assert_eq!((status, message.as_str()), (403, "nope"))
            }
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
    }
}
