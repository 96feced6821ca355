//! TFTP (RFC 1350) packets and the sending side of one read transfer, with the option extension
//! (RFC 2347) for block size (RFC 2348), transfer size and timeout (RFC 2349).
//!
//! [`Packet`] parses and emits datagrams; [`ReadTransfer`] is the state machine of one RRQ: it
//! says which datagram to send next given the ACKs and timeouts it is fed. Reading the file and
//! the sockets belong to [`super::tftp_server`]. Writes (WRQ) are refused: the service is read-only.

use std::io::{Read, Seek, SeekFrom};

pub const DEFAULT_BLKSIZE: usize = 512;
/// Largest block that fits an Ethernet frame without IP fragmentation (1500 − 20 − 8 − 4).
pub const MAX_BLKSIZE: usize = 1468;
pub const DEFAULT_TIMEOUT_SECS: u8 = 2;
/// Retransmissions of one datagram before the transfer is abandoned.
pub const MAX_RETRIES: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TftpPacketError {
    #[error("TFTP packet too short ({0} bytes)")]
    Short(usize),
    #[error("unknown TFTP opcode {0}")]
    Opcode(u16),
    #[error("TFTP string field not NUL-terminated or not UTF-8")]
    BadString,
    #[error("TFTP option `{0}` has no value")]
    OptionWithoutValue(String),
}

/// TFTP error codes (RFC 1350 §5, RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    OptionsRefused = 8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Rrq {
        filename: String,
        mode: String,
        options: Vec<(String, String)>,
    },
    Wrq {
        filename: String,
        mode: String,
    },
    Data {
        block: u16,
        data: Vec<u8>,
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: String,
    },
    Oack {
        options: Vec<(String, String)>,
    },
}

impl Packet {
    pub fn parse(bytes: &[u8]) -> Result<Self, TftpPacketError> {
        if bytes.len() < 4 {
            return Err(TftpPacketError::Short(bytes.len()));
        }
        let opcode = u16::from_be_bytes([bytes[0], bytes[1]]);
        let body = &bytes[2..];
        let word = u16::from_be_bytes([body[0], body[1]]);
        match opcode {
            1 | 2 => {
                let mut fields = strings(body)?.into_iter();
                let filename = fields.next().ok_or(TftpPacketError::BadString)?;
                let mode = fields.next().ok_or(TftpPacketError::BadString)?;
                if opcode == 2 {
                    return Ok(Packet::Wrq { filename, mode });
                }
                Ok(Packet::Rrq {
                    filename,
                    mode,
                    options: pairs(fields)?,
                })
            }
            3 => Ok(Packet::Data {
                block: word,
                data: body[2..].to_vec(),
            }),
            4 => Ok(Packet::Ack { block: word }),
            5 => Ok(Packet::Error {
                code: word,
                message: strings(&body[2..])?.into_iter().next().unwrap_or_default(),
            }),
            6 => Ok(Packet::Oack {
                options: pairs(strings(body)?.into_iter())?,
            }),
            other => Err(TftpPacketError::Opcode(other)),
        }
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let put_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Rrq {
                filename,
                mode,
                options,
            } => {
                out.extend_from_slice(&1u16.to_be_bytes());
                put_str(&mut out, filename);
                put_str(&mut out, mode);
                for (k, v) in options {
                    put_str(&mut out, k);
                    put_str(&mut out, v);
                }
            }
            Packet::Wrq { filename, mode } => {
                out.extend_from_slice(&2u16.to_be_bytes());
                put_str(&mut out, filename);
                put_str(&mut out, mode);
            }
            Packet::Data { block, data } => {
                out.extend_from_slice(&3u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&5u16.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                put_str(&mut out, message);
            }
            Packet::Oack { options } => {
                out.extend_from_slice(&6u16.to_be_bytes());
                for (k, v) in options {
                    put_str(&mut out, k);
                    put_str(&mut out, v);
                }
            }
        }
        out
    }

    pub fn error(code: ErrorCode, message: &str) -> Self {
        Packet::Error {
            code: code as u16,
            message: message.to_string(),
        }
    }
}

/// NUL-terminated strings filling `bytes` exactly.
fn strings(bytes: &[u8]) -> Result<Vec<String>, TftpPacketError> {
    let Some(body) = bytes.strip_suffix(&[0]) else {
        return Err(TftpPacketError::BadString);
    };
    body.split(|&b| b == 0)
        .map(|s| String::from_utf8(s.to_vec()).map_err(|_| TftpPacketError::BadString))
        .collect()
}

fn pairs(
    mut fields: impl Iterator<Item = String>,
) -> Result<Vec<(String, String)>, TftpPacketError> {
    let mut out = Vec::new();
    while let Some(k) = fields.next() {
        let v = fields
            .next()
            .ok_or_else(|| TftpPacketError::OptionWithoutValue(k.clone()))?;
        out.push((k, v));
    }
    Ok(out)
}

/// The options both sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: usize,
    pub timeout_secs: u8,
}

/// Reads the requested options (names are case-insensitive), answers the ones we support.
/// Returns what applies and the OACK options (empty: no OACK, send DATA 1 directly).
pub fn negotiate(
    requested: &[(String, String)],
    file_size: u64,
) -> (Negotiated, Vec<(String, String)>) {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        timeout_secs: DEFAULT_TIMEOUT_SECS,
    };
    let mut acked = Vec::new();
    for (name, value) in requested {
        let name = name.to_ascii_lowercase();
        match (name.as_str(), value.parse::<u64>()) {
            ("blksize", Ok(v)) if v >= 8 => {
                n.blksize = (v as usize).min(MAX_BLKSIZE);
                acked.push((name, n.blksize.to_string()));
            }
            ("timeout", Ok(v @ 1..=255)) => {
                n.timeout_secs = v as u8;
                acked.push((name, v.to_string()));
            }
            ("tsize", Ok(_)) => acked.push((name, file_size.to_string())),
            _ => {} // unknown or invalid: ignored, as RFC 2347 asks
        }
    }
    (n, acked)
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this datagram (and start the timer).
    Send(Vec<u8>),
    /// Nothing to do (a duplicate or stray ACK); keep waiting.
    Wait,
    /// The client acknowledged the last block.
    Done,
    /// Give up (retries exhausted or the client sent an error).
    Abort(String),
}

/// One read transfer in progress.
pub struct ReadTransfer<R> {
    file: R,
    opts: Negotiated,
    /// The datagram last sent, for retransmission.
    last: Vec<u8>,
    /// Index of the block last sent (0 = the OACK), counting past 65535.
    block: u64,
    /// Whether the last block sent was short (the final one).
    finished: bool,
    retries: u32,
}

impl<R: Read + Seek> ReadTransfer<R> {
    /// Starts the transfer; returns it and the first datagram (OACK or DATA 1).
    pub fn start(mut file: R, requested: &[(String, String)]) -> std::io::Result<(Self, Vec<u8>)> {
        let size = file.seek(SeekFrom::End(0))?;
        let (opts, oack) = negotiate(requested, size);
        let mut t = Self {
            file,
            opts,
            last: Vec::new(),
            block: 0,
            finished: false,
            retries: 0,
        };
        let first = if oack.is_empty() {
            t.next_block()?
        } else {
            t.last = Packet::Oack { options: oack }.emit();
            t.last.clone()
        };
        Ok((t, first))
    }

    pub fn options(&self) -> Negotiated {
        self.opts
    }

    /// Feeds one datagram from the client.
    pub fn on_packet(&mut self, bytes: &[u8]) -> std::io::Result<Step> {
        match Packet::parse(bytes) {
            Ok(Packet::Ack { block }) if block == self.block as u16 => {
                if self.finished {
                    return Ok(Step::Done);
                }
                self.retries = 0;
                Ok(Step::Send(self.next_block()?))
            }
            Ok(Packet::Ack { .. }) => Ok(Step::Wait),
            Ok(Packet::Error { code, message }) => {
                Ok(Step::Abort(format!("client error {code}: {message}")))
            }
            Ok(_) | Err(_) => Ok(Step::Wait),
        }
    }

    /// The timer ran out: resend the last datagram, or give up.
    pub fn on_timeout(&mut self) -> Step {
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            Step::Abort(format!(
                "no ACK for block {} after {MAX_RETRIES} retransmissions",
                self.block
            ))
        } else {
            Step::Send(self.last.clone())
        }
    }

    fn next_block(&mut self) -> std::io::Result<Vec<u8>> {
        let size = self.opts.blksize;
        self.file.seek(SeekFrom::Start(self.block * size as u64))?;
        let mut data = Vec::with_capacity(size);
        (&mut self.file).take(size as u64).read_to_end(&mut data)?;
        self.block += 1;
        self.finished = data.len() < size;
        self.last = Packet::Data {
            block: self.block as u16,
            data,
        }
        .emit();
        Ok(self.last.clone())
    }
}

#[cfg(test)]
#[path = "tftp_tests.rs"]
mod tests;
