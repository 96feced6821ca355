//! The network benchmark's TCP protocol, spoken by the test guest (`netbench <port>` in its
//! user data) and by the benchmark's host side alike: a server ([`serve`]) that sinks, echoes,
//! or on command measures towards another server, the two measurements as client functions
//! ([`sink_to`], [`rtt_to`]), and the one-line commands and answers ([`Command`], [`Sent`],
//! [`RttSummary`]) both sides format and parse.
//!
//! Each connection opens with one command line (at most [`MAX_LINE`] bytes with its `\n`):
//!
//! * `sink`: the server reads and discards everything until EOF, then answers
//!   `received <n>` (the payload bytes after the command line) and closes;
//! * `echo`: the server (TCP_NODELAY) writes back every byte it reads until EOF;
//! * `send <ipv4>:<port> <millis>`: the server runs [`sink_to`] towards that address for that
//!   long and answers `sent bytes=<n> micros=<t>`;
//! * `rtt <ipv4>:<port> <count>`: the server runs [`rtt_to`] and answers
//!   `rtt count=<n> p50_us=<a> p99_us=<b> mean_us=<c>`;
//!
//! and a command that fails or does not parse is answered `error <reason>`. Plain `std::net`,
//! one thread per connection: this module knows nothing of VMs, of how the benchmark compares
//! its numbers, or of logging (a connection's failure goes back to its peer as an answer).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

/// The longest command or answer line, its `\n` included.
pub const MAX_LINE: usize = 256;
/// The longest a `send` may run.
pub const MAX_MILLIS: u64 = 600_000;
/// The most round trips one `rtt` may make.
pub const MAX_COUNT: u32 = 1_000_000;
/// How long a client waits for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long either side waits for the peer to take or give a byte before giving up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// What [`sink_to`] writes at a time.
const SINK_BUFFER: usize = 128 * 1024;
/// What [`rtt_to`] sends and waits to get back, each round trip.
const PING_LEN: usize = 64;

/// Why a benchmark connection, command or answer failed.
#[derive(Debug, thiserror::Error)]
pub enum NetbenchError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddrV4,
        source: io::Error,
    },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: io::Error,
    },
    #[error("the connection closed before {0}")]
    Closed(&'static str),
    #[error("a line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("expected `{0}`")]
    Usage(&'static str),
    #[error("bad address {0:?} (expected <ipv4>:<port>)")]
    BadAddress(String),
    #[error("bad {what} {text:?} (expected 1-{max})")]
    BadNumber {
        what: &'static str,
        text: String,
        max: u64,
    },
    #[error("malformed answer {0:?}")]
    MalformedAnswer(String),
    /// The peer answered `error <reason>`.
    #[error("the peer answered error: {0}")]
    Peer(String),
    #[error("the sink received {received} of the {sent} bytes sent")]
    Lost { sent: u64, received: u64 },
    #[error("round trip {0} came back different")]
    EchoMismatch(u32),
}

fn io_error(step: &'static str) -> impl FnOnce(io::Error) -> NetbenchError {
    move |source| NetbenchError::Io { step, source }
}

/// One command line, as the server parses it and a client formats it ([`fmt::Display`], without
/// the `\n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Sink,
    Echo,
    Send { to: SocketAddrV4, millis: u64 },
    Rtt { to: SocketAddrV4, count: u32 },
}

impl Command {
    /// How long a client should wait for the answer to this command ([`ask`]'s timeout): 30 s
    /// more than a `send` runs for, or than an `rtt` takes at 1 ms a round trip.
    pub fn answer_timeout(&self) -> Duration {
        let runs_for = match self {
            Command::Send { millis, .. } => Duration::from_millis(*millis),
            Command::Rtt { count, .. } => Duration::from_millis(u64::from(*count)),
            Command::Sink | Command::Echo => Duration::ZERO,
        };
        runs_for + STALL_TIMEOUT
    }
}

impl FromStr for Command {
    type Err = NetbenchError;

    fn from_str(line: &str) -> Result<Command, NetbenchError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["sink"] => Ok(Command::Sink),
            ["echo"] => Ok(Command::Echo),
            ["send", to, millis] => Ok(Command::Send {
                to: parse_address(to)?,
                millis: parse_bounded("millis", millis, MAX_MILLIS)?,
            }),
            ["send", ..] => Err(NetbenchError::Usage("send <ipv4>:<port> <millis>")),
            ["rtt", to, count] => Ok(Command::Rtt {
                to: parse_address(to)?,
                count: parse_bounded("count", count, u64::from(MAX_COUNT))? as u32,
            }),
            ["rtt", ..] => Err(NetbenchError::Usage("rtt <ipv4>:<port> <count>")),
            _ => Err(NetbenchError::UnknownCommand(line.to_string())),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Sink => f.write_str("sink"),
            Command::Echo => f.write_str("echo"),
            Command::Send { to, millis } => write!(f, "send {to} {millis}"),
            Command::Rtt { to, count } => write!(f, "rtt {to} {count}"),
        }
    }
}

/// `<ipv4>:<port>`, port not 0.
fn parse_address(text: &str) -> Result<SocketAddrV4, NetbenchError> {
    (text.parse::<SocketAddrV4>().ok())
        .filter(|addr| addr.port() != 0)
        .ok_or_else(|| NetbenchError::BadAddress(text.to_string()))
}

/// 1..=`max` in plain digits.
fn parse_bounded(what: &'static str, text: &str, max: u64) -> Result<u64, NetbenchError> {
    (text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| NetbenchError::BadNumber {
            what,
            text: text.to_string(),
            max,
        })
}

/// `text` as one line that fits a [`MAX_LINE`] with its `\n`: control characters escaped, cut
/// at a character boundary.
fn one_line(text: &str) -> String {
    let mut line = String::new();
    for c in text.chars() {
        let escaped: String = match c.is_control() {
            true => c.escape_default().collect(),
            false => c.to_string(),
        };
        if line.len() + escaped.len() >= MAX_LINE {
            break;
        }
        line.push_str(&escaped);
    }
    line
}

/// What a `sink` measured: payload bytes the sink counted, from the first payload byte written
/// to the sink's `received` line. Its answer line is `sent bytes=<n> micros=<t>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Sent {
    /// Payload bits per second.
    pub fn bits_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds == 0.0 {
            return 0.0;
        }
        self.bytes as f64 * 8.0 / seconds
    }

    /// The [`Sent`] of an answer line; `error <reason>` is [`NetbenchError::Peer`].
    pub fn parse_answer(line: &str) -> Result<Sent, NetbenchError> {
        let [bytes, micros] = answer_fields(line, "sent", ["bytes", "micros"])?;
        Ok(Sent {
            bytes,
            elapsed: Duration::from_micros(micros),
        })
    }
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = micros(self.elapsed);
        write!(f, "sent bytes={} micros={micros}", self.bytes)
    }
}

/// What an `rtt` measured: every round trip's time, shortest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtt {
    samples: Vec<Duration>,
}

impl Rtt {
    pub fn from_samples(mut samples: Vec<Duration>) -> Rtt {
        samples.sort_unstable();
        Rtt { samples }
    }

    /// The round-trip times, shortest first.
    pub fn samples(&self) -> &[Duration] {
        &self.samples
    }

    /// The median round trip in µs (nearest rank); 0 without samples.
    pub fn p50(&self) -> u64 {
        self.percentile(50)
    }

    /// The 99th percentile round trip in µs (nearest rank); 0 without samples.
    pub fn p99(&self) -> u64 {
        self.percentile(99)
    }

    /// The mean round trip in µs; 0 without samples.
    pub fn mean(&self) -> u64 {
        if self.samples.is_empty() {
            return 0;
        }
        let total: Duration = self.samples.iter().sum();
        micros(total) / self.samples.len() as u64
    }

    fn percentile(&self, p: usize) -> u64 {
        let rank = (self.samples.len() * p).div_ceil(100).max(1);
        self.samples.get(rank - 1).map_or(0, |d| micros(*d))
    }

    /// The numbers an `rtt` answer line carries.
    pub fn summary(&self) -> RttSummary {
        RttSummary {
            count: self.samples.len() as u64,
            p50_us: self.p50(),
            p99_us: self.p99(),
            mean_us: self.mean(),
        }
    }

    /// The [`RttSummary`] of an answer line (the samples themselves stay with whoever measured
    /// them); `error <reason>` is [`NetbenchError::Peer`].
    pub fn parse_answer(line: &str) -> Result<RttSummary, NetbenchError> {
        let [count, p50_us, p99_us, mean_us] =
            answer_fields(line, "rtt", ["count", "p50_us", "p99_us", "mean_us"])?;
        Ok(RttSummary {
            count,
            p50_us,
            p99_us,
            mean_us,
        })
    }
}

/// An `rtt` answer: `rtt count=<n> p50_us=<a> p99_us=<b> mean_us=<c>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttSummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub mean_us: u64,
}

impl fmt::Display for RttSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RttSummary {
            count,
            p50_us,
            p99_us,
            mean_us,
        } = self;
        write!(
            f,
            "rtt count={count} p50_us={p50_us} p99_us={p99_us} mean_us={mean_us}"
        )
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The values of `<word> key=value...` with exactly `keys`, in order; `error <reason>` is
/// [`NetbenchError::Peer`].
fn answer_fields<const N: usize>(
    line: &str,
    word: &str,
    keys: [&str; N],
) -> Result<[u64; N], NetbenchError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if let Some(reason) = line.strip_prefix("error") {
        if reason.is_empty() || reason.starts_with(' ') {
            return Err(NetbenchError::Peer(reason.trim_start().to_string()));
        }
    }
    let malformed = || NetbenchError::MalformedAnswer(line.to_string());
    let mut words = line.split(' ');
    if words.next() != Some(word) {
        return Err(malformed());
    }
    let mut values = [0; N];
    for (value, key) in values.iter_mut().zip(keys) {
        let field = words.next().ok_or_else(malformed)?;
        let number = field.strip_prefix(key).and_then(|f| f.strip_prefix('='));
        *value = number.and_then(plain_u64).ok_or_else(malformed)?;
    }
    match words.next() {
        None => Ok(values),
        Some(_) => Err(malformed()),
    }
}

fn plain_u64(text: &str) -> Option<u64> {
    (text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Reads one line (up to `\n`, at most [`MAX_LINE`] bytes) a byte at a time, so nothing after
/// it is taken from the stream. `what` names the line for [`NetbenchError::Closed`].
fn read_line(stream: &mut TcpStream, what: &'static str) -> Result<String, NetbenchError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE {
        match stream.read(&mut byte) {
            Ok(0) => return Err(NetbenchError::Closed(what)),
            Ok(_) if byte[0] == b'\n' => {
                return Ok(String::from_utf8_lossy(&line).trim_end().to_string())
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(NetbenchError::Io { step: what, source }),
        }
    }
    Err(NetbenchError::LineTooLong)
}

fn connect(addr: SocketAddrV4) -> Result<TcpStream, NetbenchError> {
    let stream = TcpStream::connect_timeout(&addr.into(), CONNECT_TIMEOUT)
        .map_err(|source| NetbenchError::Connect { addr, source })?;
    stream
        .set_write_timeout(Some(STALL_TIMEOUT))
        .map_err(io_error("write timeout"))?;
    stream
        .set_read_timeout(Some(STALL_TIMEOUT))
        .map_err(io_error("read timeout"))?;
    Ok(stream)
}

/// Writes `line` and its `\n`.
fn write_line(stream: &mut TcpStream, line: &str) -> Result<(), NetbenchError> {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io_error("writing a line"))
}

/// Sends to a `sink` server at `addr` for `for_`: 128 KiB writes until that time has passed,
/// then EOF, then its `received` line, which must count every byte written.
pub fn sink_to(addr: SocketAddrV4, for_: Duration) -> Result<Sent, NetbenchError> {
    let mut stream = connect(addr)?;
    write_line(&mut stream, &Command::Sink.to_string())?;
    let buffer = vec![0x5a; SINK_BUFFER];
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < for_ {
        stream.write_all(&buffer).map_err(io_error("sending"))?;
        sent += SINK_BUFFER as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(io_error("shutdown"))?;
    let answer = read_line(&mut stream, "the received line")?;
    let elapsed = started.elapsed();
    let received = parse_received(&answer)?;
    if received != sent {
        return Err(NetbenchError::Lost { sent, received });
    }
    Ok(Sent {
        bytes: sent,
        elapsed,
    })
}

/// `received <n>`.
fn parse_received(line: &str) -> Result<u64, NetbenchError> {
    (line.strip_prefix("received "))
        .and_then(plain_u64)
        .ok_or_else(|| NetbenchError::MalformedAnswer(line.to_string()))
}

/// Makes `count` round trips of 64 bytes through an `echo` server at `addr` (TCP_NODELAY),
/// timing each.
pub fn rtt_to(addr: SocketAddrV4, count: u32) -> Result<Rtt, NetbenchError> {
    let mut stream = connect(addr)?;
    stream.set_nodelay(true).map_err(io_error("TCP_NODELAY"))?;
    write_line(&mut stream, &Command::Echo.to_string())?;
    let mut samples = Vec::with_capacity(count as usize);
    let mut back = [0u8; PING_LEN];
    for n in 0..count {
        let ping = [n as u8; PING_LEN];
        let started = Instant::now();
        stream
            .write_all(&ping)
            .map_err(io_error("sending a ping"))?;
        stream.read_exact(&mut back).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => NetbenchError::Closed("the echo"),
            _ => NetbenchError::Io {
                step: "reading the echo",
                source: e,
            },
        })?;
        samples.push(started.elapsed());
        if back != ping {
            return Err(NetbenchError::EchoMismatch(n));
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    Ok(Rtt::from_samples(samples))
}

/// Sends `command_line` (a `send` or `rtt` line, with or without its `\n`) to the server at
/// `addr` and returns its one answer line (without the `\n`), waiting at most `timeout` for it
/// ([`Command::answer_timeout`]). An `error` answer is returned as it is: [`Sent::parse_answer`]
/// and [`Rtt::parse_answer`] turn it into an error.
pub fn ask(
    addr: SocketAddrV4,
    command_line: &str,
    timeout: Duration,
) -> Result<String, NetbenchError> {
    let line = command_line.strip_suffix('\n').unwrap_or(command_line);
    if line.len() >= MAX_LINE || line.contains('\n') {
        return Err(NetbenchError::LineTooLong);
    }
    let mut stream = connect(addr)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(io_error("read timeout"))?;
    write_line(&mut stream, line)?;
    read_line(&mut stream, "the answer")
}

/// Serves the benchmark protocol on `listener` for ever, a thread per connection.
pub fn serve(listener: TcpListener) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let spawned = (thread::Builder::new().name("netbench".into()))
                    .spawn(move || handle_connection(stream));
                if spawned.is_err() {
                    thread::sleep(Duration::from_millis(100));
                }
            }
            // Out of descriptors, or a connection reset before it was taken: try again.
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Serves one connection: reads its command line and carries it out. A command that fails or
/// does not parse is answered `error <reason>` (when the peer still listens) and returned.
pub fn handle_connection(mut stream: TcpStream) -> Result<(), NetbenchError> {
    let _ = stream.set_write_timeout(Some(STALL_TIMEOUT));
    let _ = stream.set_read_timeout(Some(STALL_TIMEOUT));
    let outcome = read_line(&mut stream, "the command line")
        .and_then(|line| line.parse::<Command>())
        .and_then(|command| carry_out(&mut stream, command));
    if let Err(e) = &outcome {
        let _ = write_line(&mut stream, &one_line(&format!("error {e}")));
    }
    outcome
}

fn carry_out(stream: &mut TcpStream, command: Command) -> Result<(), NetbenchError> {
    match command {
        Command::Sink => {
            let received = io::copy(stream, &mut io::sink()).map_err(io_error("sinking"))?;
            write_line(stream, &format!("received {received}"))
        }
        Command::Echo => echo(stream),
        Command::Send { to, millis } => {
            let sent = sink_to(to, Duration::from_millis(millis))?;
            write_line(stream, &sent.to_string())
        }
        Command::Rtt { to, count } => {
            let rtt = rtt_to(to, count)?;
            write_line(stream, &rtt.summary().to_string())
        }
    }
}

fn echo(stream: &mut TcpStream) -> Result<(), NetbenchError> {
    stream.set_nodelay(true).map_err(io_error("TCP_NODELAY"))?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(NetbenchError::Io {
                    step: "echo read",
                    source,
                })
            }
        };
        (stream.write_all(&buffer[..n])).map_err(io_error("echo write"))?;
    }
}

#[cfg(test)]
#[path = "netbench_tests.rs"]
mod tests;
