//! What `mallee-init` does as an instance's PID 1 (the test guest: role node, no frontend on
//! its command line) once its NIC has an address and a route to 169.254.169.254 (on-link from
//! the VMM's lease, or the default route of the site's): with one IMDSv2 token it asks the
//! metadata service for its
//! instance id, says it on the console (where GetConsoleOutput shows it), then fetches its user
//! data and starts the network probes it asks for, so end-to-end tests can watch reachability.
//! Under a VMM that serves no metadata (a peer VMM the network benchmark compares with), the
//! kernel command line's `mallee.user_data` stands in for the user data and the `ip=` hostname
//! (or the system's) for the instance id ([`UserDataSource::CommandLine`]). The lines:
//!
//! * `serve <port>`: a TCP listener on `0.0.0.0:<port>` that answers each connection with the
//!   instance id and a newline, then closes it;
//! * `connect <ipv4>:<port>`: a connection attempt every second, for ever, whose outcome is
//!   logged whenever it changes (`probe: <ip>:<port> answered <line>` or
//!   `... unreachable (<reason>)`);
//! * `disks`: check and write each EBS volume attached to it (see [`crate::guest_disks`]);
//! * `netbench <port>`: the network benchmark's server ([`mallee_proto::netbench`]) on
//!   `0.0.0.0:<port>`.
//!
//! Other user-data lines are ignored (so a shell script is harmless), as is anything after `#`;
//! a `serve`, `connect`, `disks` or `netbench` line that does not parse is logged as a warning
//! and skipped. The parsing ([`parse_user_data`]) and one probe attempt ([`probe_once`]) are
//! plain functions. This module runs no user-data scripts and configures nothing: it only
//! listens and connects.

use crate::agent::client::{Client, ClientError, Reply};
use crate::net::route;
use mallee_proto::netbench;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use tracing::{info, warn};

const SERVICE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long the one token lives; the id and user data are fetched within seconds of it.
const TOKEN_TTL_SECONDS: u32 = 60;

/// A probe's pace and patience.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A `serve` answer is written within this, or the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of an answer a probe reads and logs.
const MAX_ANSWER: u64 = 256;

/// Whether `/proc/net/route` text has any route to 169.254.169.254: on-link (what the VMM's
/// DHCP answer asks for when it serves metadata) or through a gateway, the default route
/// included (SYSTEM: the site's DHCP server knows nothing of the service, and the VMM takes the
/// guest's packets for it whichever router they are addressed to, as EC2's hypervisor does).
pub fn metadata_route(table: &str) -> bool {
    let service = u32::from(Ipv4Addr::new(169, 254, 169, 254));
    (route::routes(table).iter()).any(|r| service & u32::from(r.mask) == u32::from(r.destination))
}

/// Why a request to the metadata service failed; `what` names the request.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{what}: the metadata service answered {status}")]
    Status { what: &'static str, status: u16 },
    #[error("{what}: {source}")]
    Request {
        what: &'static str,
        source: ClientError,
    },
}

impl MetadataError {
    fn new(what: &'static str, e: ClientError) -> MetadataError {
        match e {
            // Not the client's message: the service's error bodies are multi-line HTML.
            ClientError::Status { status, .. } => MetadataError::Status { what, status },
            source => MetadataError::Request { what, source },
        }
    }
}

/// The metadata service, through one IMDSv2 token as a careful client asks.
pub struct Imds {
    client: Client,
    token: String,
}

impl Imds {
    /// Asks the service at `addr` for a token.
    pub fn open(addr: SocketAddr) -> Result<Imds, MetadataError> {
        let client = Client::new(addr);
        let ttl = [(
            "X-aws-ec2-metadata-token-ttl-seconds",
            TOKEN_TTL_SECONDS.to_string(),
        )];
        let reply = client.send("PUT", "/latest/api/token", &ttl, &[], TIMEOUT);
        let token = body(reply).map_err(|e| MetadataError::new("token", e))?;
        let token = String::from_utf8_lossy(&token).trim().to_string();
        Ok(Imds { client, token })
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let with = [("X-aws-ec2-metadata-token", self.token.clone())];
        body(self.client.send("GET", path, &with, &[], TIMEOUT))
    }

    /// The instance id.
    pub fn instance_id(&self) -> Result<String, MetadataError> {
        let id = (self.get("/latest/meta-data/instance-id"))
            .map_err(|e| MetadataError::new("instance-id", e))?;
        Ok(String::from_utf8_lossy(&id).trim().to_string())
    }

    /// The user data, or `None` when the instance has none (the service answers 404).
    pub fn user_data(&self) -> Result<Option<Vec<u8>>, MetadataError> {
        match self.get("/latest/user-data") {
            Ok(data) => Ok(Some(data)),
            Err(ClientError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(MetadataError::new("user-data", e)),
        }
    }
}

fn body(reply: Result<Reply, ClientError>) -> Result<Vec<u8>, ClientError> {
    reply?.read_all()
}

/// What one user-data line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `serve <port>`.
    Serve(u16),
    /// `connect <ipv4>:<port>`.
    Connect(SocketAddrV4),
    /// `disks`, or `disks churn` to also keep rewriting and re-reading a ring of each volume.
    Disks { churn: bool },
    /// `netbench <port>`.
    Netbench(u16),
}

/// What is wrong with a `serve`, `connect`, `disks` or `netbench` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected `{0}`")]
    Usage(&'static str),
    #[error("bad port {0:?} (expected 1-65535)")]
    Port(String),
    #[error("bad address {0:?} (expected an IPv4 unicast address)")]
    Address(String),
}

/// A user-data line that asked for a probe but did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user data line {number} {text:?}: {error}")]
pub struct BadLine {
    /// 1-based.
    pub number: usize,
    pub text: String,
    pub error: LineError,
}

/// The probes user data asks for, in order, and the `serve`/`connect` lines that did not parse.
/// Lines starting with another word, blank lines and anything after `#` are ignored.
pub fn parse_user_data(text: &str) -> (Vec<Probe>, Vec<BadLine>) {
    let mut probes = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(probe)) => probes.push(probe),
            Ok(None) => {}
            Err(error) => bad.push(BadLine {
                number: i + 1,
                text: line.trim().to_string(),
                error,
            }),
        }
    }
    (probes, bad)
}

fn parse_line(line: &str) -> Result<Option<Probe>, LineError> {
    let code = line.split('#').next().unwrap_or("");
    let words: Vec<&str> = code.split_whitespace().collect();
    match words.as_slice() {
        ["serve", port] => Ok(Some(Probe::Serve(parse_port(port)?))),
        ["serve", ..] => Err(LineError::Usage("serve <port>")),
        ["connect", target] => {
            let (ip, port) =
                (target.rsplit_once(':')).ok_or(LineError::Usage("connect <ipv4>:<port>"))?;
            let ip: Ipv4Addr = (ip.parse().ok())
                .filter(|ip: &Ipv4Addr| {
                    !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast()
                })
                .ok_or_else(|| LineError::Address(ip.to_string()))?;
            let port = parse_port(port)?;
            Ok(Some(Probe::Connect(SocketAddrV4::new(ip, port))))
        }
        ["connect", ..] => Err(LineError::Usage("connect <ipv4>:<port>")),
        ["disks"] => Ok(Some(Probe::Disks { churn: false })),
        ["disks", "churn"] => Ok(Some(Probe::Disks { churn: true })),
        ["disks", ..] => Err(LineError::Usage("disks [churn]")),
        ["netbench", port] => Ok(Some(Probe::Netbench(parse_port(port)?))),
        ["netbench", ..] => Err(LineError::Usage("netbench <port>")),
        _ => Ok(None),
    }
}

/// 1-65535 in plain digits (no sign, no spaces).
fn parse_port(text: &str) -> Result<u16, LineError> {
    (text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u16>().ok())
        .flatten()
        .filter(|p| *p != 0)
        .ok_or_else(|| LineError::Port(text.to_string()))
}

/// Listens on `addr` (port 0: any free one) and answers each connection with `id` and a
/// newline, then closes it, on a thread of its own. Returns the port listened on.
pub fn serve(addr: SocketAddrV4, id: &str) -> std::io::Result<u16> {
    let listener = TcpListener::bind(addr)?;
    let port = listener.local_addr()?.port();
    let answer = format!("{id}\n").into_bytes();
    thread::Builder::new()
        .name(format!("serve-{port}"))
        .spawn(move || answer_all(&listener, port, &answer))?;
    Ok(port)
}

fn answer_all(listener: &TcpListener, port: u16, answer: &[u8]) {
    for conn in listener.incoming() {
        match conn {
            Ok(mut stream) => {
                let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                let _ = stream.write_all(answer);
                let _ = stream.shutdown(Shutdown::Write);
            }
            Err(e) => {
                warn!("probe: tcp {port}: accept: {e}");
                thread::sleep(PROBE_INTERVAL);
            }
        }
    }
}

/// Serves the network benchmark ([`netbench::serve`]) on `addr` (port 0: any free one), on a
/// thread of its own. Returns the port listened on.
pub fn start_netbench(addr: SocketAddrV4) -> std::io::Result<u16> {
    let listener = TcpListener::bind(addr)?;
    let port = listener.local_addr()?.port();
    thread::Builder::new()
        .name(format!("netbench-{port}"))
        .spawn(move || netbench::serve(listener))?;
    Ok(port)
}

/// What one connection attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The first line the peer sent (control characters escaped, so it stays one line).
    Answered(String),
    /// Why there was no answer: `refused`, `timeout` (connecting), `read timeout` (connected,
    /// silent), `reset`, `closed` (connected, closed without a byte), `host unreachable`, ...
    Unreachable(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answered(line) => write!(f, "answered {line}"),
            Outcome::Unreachable(reason) => write!(f, "unreachable ({reason})"),
        }
    }
}

/// One attempt: connect (1 s), read one line (2 s).
pub fn probe_once(addr: SocketAddrV4) -> Outcome {
    let stream = match TcpStream::connect_timeout(&addr.into(), CONNECT_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) => return Outcome::Unreachable(reason(&e, "timeout")),
    };
    if let Err(e) = stream.set_read_timeout(Some(READ_TIMEOUT)) {
        return Outcome::Unreachable(reason(&e, "read timeout"));
    }
    let mut line = Vec::new();
    match BufReader::new(stream.take(MAX_ANSWER)).read_until(b'\n', &mut line) {
        Ok(0) => Outcome::Unreachable("closed".into()),
        Ok(_) => Outcome::Answered(one_line(&line)),
        Err(e) => Outcome::Unreachable(reason(&e, "read timeout")),
    }
}

/// A short word for a connect or read failure; `timed_out` is what a timeout is called.
fn reason(e: &std::io::Error, timed_out: &str) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused",
        // A read timeout is EAGAIN on Linux.
        K::TimedOut | K::WouldBlock => timed_out,
        K::ConnectionReset => "reset",
        K::ConnectionAborted => "aborted",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        K::PermissionDenied => "permission denied",
        _ => return one_line(e.to_string().as_bytes()),
    }
    .to_string()
}

/// `bytes` without its line ending, as one printable line.
pub fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\r', '\n']);
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Probes `addr` every second for ever, logging the first outcome and each change.
fn watch(addr: SocketAddrV4) {
    let mut last = None;
    loop {
        let started = Instant::now();
        let outcome = probe_once(addr);
        if last.as_ref() != Some(&outcome) {
            info!("probe: {addr} {outcome}");
            last = Some(outcome);
        }
        thread::sleep(PROBE_INTERVAL.saturating_sub(started.elapsed()));
    }
}

/// Starts the probes `user_data` asks for; `id` is what `serve` answers.
fn run_probes(user_data: &[u8], id: &str) {
    let (probes, bad) = parse_user_data(&String::from_utf8_lossy(user_data));
    for line in bad {
        warn!("probe: {line}");
    }
    for probe in probes {
        match probe {
            Probe::Serve(port) => match serve(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), id) {
                Ok(port) => info!("probe: serving tcp {port}"),
                Err(e) => warn!("probe: cannot serve tcp {port}: {e}"),
            },
            Probe::Connect(addr) => {
                let spawned = (thread::Builder::new().name(format!("connect-{addr}")))
                    .spawn(move || watch(addr));
                if let Err(e) = spawned {
                    warn!("probe: cannot start probing {addr}: {e}");
                }
            }
            Probe::Disks { churn } => {
                let me = id.to_string();
                let spawned = (thread::Builder::new().name("disks".into()))
                    .spawn(move || crate::guest_disks::watch(me, churn));
                if let Err(e) = spawned {
                    warn!("probe: cannot start the volume check: {e}");
                }
            }
            Probe::Netbench(port) => {
                match start_netbench(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) {
                    Ok(port) => info!("netbench: serving on port {port}"),
                    Err(e) => warn!("netbench: cannot serve on port {port}: {e}"),
                }
            }
        }
    }
}

/// Up to three attempts a second apart; each failure is a warning.
fn with_retries<T>(mut attempt: impl FnMut() -> Result<T, MetadataError>) -> Option<T> {
    for n in 1..=3 {
        match attempt() {
            Ok(value) => return Some(value),
            Err(e) => warn!("metadata: attempt {n}: {e}"),
        }
        thread::sleep(Duration::from_secs(1));
    }
    None
}

/// The instance id, then the user data's probes, through one token.
fn run() {
    let Some((imds, id)) = with_retries(|| {
        let imds = Imds::open(SERVICE)?;
        let id = imds.instance_id()?;
        Ok((imds, id))
    }) else {
        return;
    };
    info!("metadata: instance-id {id}");
    if let Some(Some(user_data)) = with_retries(|| imds.user_data()) {
        run_probes(&user_data, &id);
    }
}

/// Where the test guest learns its instance id and user data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserDataSource {
    /// The metadata service, when a route to it exists.
    MetadataService,
    /// The kernel command line (`mallee.user_data`), for a VMM that serves no metadata; `id`
    /// is what `serve` answers.
    CommandLine { id: String, user_data: Vec<u8> },
}

/// Starts the probes the user data asks for: from the command line at once, or from the
/// metadata service (when one is routed) on a thread of its own.
pub fn start(source: UserDataSource) {
    match source {
        UserDataSource::CommandLine { id, user_data } => {
            info!("guest: user data from the kernel command line (id {id})");
            run_probes(&user_data, &id);
        }
        UserDataSource::MetadataService => {
            let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
            if metadata_route(&table) {
                thread::spawn(run);
            }
        }
    }
}

#[cfg(test)]
#[path = "guest_tests.rs"]
mod tests;
