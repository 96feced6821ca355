//! A small blocking HTTP/1.1 client for the node protocol: one request per connection
//! (`Connection: close`), JSON bodies, bodies framed by Content-Length (the frontend always
//! sends one; chunked replies are refused). Addresses are IPs: a static glibc binary has no
//! NSS, so there is no name lookup. Response heads are parsed by the plain [`parse_head`].
//!
//! A [`Client`] speaks plain HTTP ([`Client::new`]: the metadata service, or a frontend whose key
//! the command line does not pin) or HTTP over TLS to a server whose public key it pins
//! ([`Client::pinned`], see [`pin`]); past the handshake both are the same code over one
//! [`Stream`]. A pinned client never falls back to plain HTTP.

pub mod pin;

use mallee_proto as proto;
use mallee_proto::cmdline::PublicKeyPin;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Why a request to the frontend failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the frontend at {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error(
        "the frontend at {addr} presented key {got} but this node's command line pins \
         {expected}; the node refuses it (is another machine answering for the frontend, or \
         was the frontend's key replaced?)"
    )]
    KeyMismatch {
        addr: SocketAddr,
        expected: PublicKeyPin,
        got: PublicKeyPin,
    },
    #[error(
        "the frontend at {0} did not answer in TLS (is it serving plain HTTP?); this node pins \
         the frontend's key and does not talk to it unencrypted"
    )]
    NotTls(SocketAddr),
    #[error("TLS with the frontend at {0}: {1}")]
    Tls(SocketAddr, rustls::Error),
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

/// The frontend's address and this node's token; with the TLS configuration (shared by every
/// clone and connection) when the frontend's key is pinned.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub token: Option<String>,
    tls: Option<Arc<ClientConfig>>,
}

/// One connection: plain TCP, or TLS over it. Requests and replies read and write it the same
/// way either way.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, BufferedTcp>>),
}

/// TCP with a read buffer under TLS: rustls reads the socket 4 KiB at a time, so without it a
/// 16 KiB record costs several syscalls (image fetches over TLS ran at a third of plain HTTP).
struct BufferedTcp(BufReader<TcpStream>);

/// Bytes read from the socket at once under TLS.
const TLS_READ_BUFFER: usize = 256 << 10;

impl Read for BufferedTcp {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for BufferedTcp {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.get_mut().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.get_mut().flush()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// An open response whose body is still to be read.
pub struct Reply {
    pub head: Head,
    body: BufReader<Stream>,
}

const MAX_HEAD: usize = 16 << 10;
const MAX_JSON: u64 = 8 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    /// Plain HTTP to `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            token: None,
            tls: None,
        }
    }

    /// HTTP over TLS to `addr`, accepting only the server key whose SubjectPublicKeyInfo hashes
    /// to `pin` (see [`pin`]).
    pub fn pinned(addr: SocketAddr, pin: [u8; 32]) -> Result<Client, ClientError> {
        let config = pin::config(PublicKeyPin(pin)).map_err(|e| ClientError::Tls(addr, e))?;
        Ok(Client {
            addr,
            token: None,
            tls: Some(config),
        })
    }

    /// [`Client::pinned`] when there is a pin, else [`Client::new`].
    pub fn for_frontend(addr: SocketAddr, pin: Option<[u8; 32]>) -> Result<Client, ClientError> {
        match pin {
            Some(pin) => Client::pinned(addr, pin),
            None => Ok(Client::new(addr)),
        }
    }

    /// The same server and transport (the same TLS configuration), without a token.
    pub fn without_token(&self) -> Client {
        Client {
            token: None,
            ..self.clone()
        }
    }

    /// Connects, and when the key is pinned completes the TLS handshake (so a wrong key fails
    /// here, before a byte of the request is sent).
    fn connect(&self, timeout: Duration) -> Result<Stream, ClientError> {
        let tcp = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)
            .map_err(|e| ClientError::Connect(self.addr, e))?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        // The frontend is an IP: no SNI is sent, and the verifier ignores the name anyway.
        let name = ServerName::IpAddress(self.addr.ip().into());
        let conn = (ClientConnection::new(config.clone(), name))
            .map_err(|e| ClientError::Tls(self.addr, e))?;
        let tcp = BufferedTcp(BufReader::with_capacity(TLS_READ_BUFFER, tcp));
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            (tls.conn.complete_io(&mut tls.sock))
                .map_err(|e| pin::handshake_error(self.addr, e))?;
        }
        Ok(Stream::Tls(Box::new(tls)))
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
        let mut stream = self.connect(timeout)?;
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
        stream.write_all(req.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
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
#[path = "client_tests.rs"]
mod tests;
