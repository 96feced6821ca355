//! The aws-chunked body decoder: a state machine fed arbitrary slices of the wire body that
//! yields the decoded payload and checks every chunk signature (signed modes) and the trailer
//! signature (signed-with-trailer). Memory is bounded by one header line, never by chunk size.

use super::sigv4::hmac_sha256;
use bytes::Bytes;
use sha2::{Digest, Sha256};

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const MAX_LINE: usize = 1024;
const MAX_TRAILER_BYTES: usize = 8192;

/// Why an aws-chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("malformed chunk header {0:?}")]
    BadHeader(String),
    #[error("chunk header or trailer line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("chunk signature does not match")]
    BadChunkSignature,
    #[error("trailer signature missing or does not match")]
    BadTrailerSignature,
    #[error("malformed trailer line {0:?}")]
    BadTrailer(String),
    #[error("body ended before the final chunk")]
    Truncated,
    #[error("data after the final chunk")]
    TrailingData,
}

/// Keys for checking chunk signatures: from the verified request's seed signature.
#[derive(Debug, Clone)]
pub struct ChunkSigner {
    pub signing_key: [u8; 32],
    pub amz_date: String,
    pub scope: String,
    pub prev_signature: String,
}

impl ChunkSigner {
    fn next(&mut self, kind: &str, hash_line: &str) -> String {
        let sts = format!(
            "AWS4-HMAC-SHA256-{kind}\n{}\n{}\n{}\n{hash_line}",
            self.amz_date, self.scope, self.prev_signature
        );
        hex::encode(hmac_sha256(&self.signing_key, sts.as_bytes()))
    }

    /// The signature of the next data chunk, given its SHA-256; advances the chain.
    pub fn sign_chunk(&mut self, chunk_sha256: &str) -> String {
        let sig = self.next("PAYLOAD", &format!("{EMPTY_SHA256}\n{chunk_sha256}"));
        self.prev_signature = sig.clone();
        sig
    }

    /// The trailer signature over the canonical trailer text.
    pub fn sign_trailer(&mut self, canonical_trailers: &str) -> String {
        let sig = self.next(
            "TRAILER",
            &hex::encode(Sha256::digest(canonical_trailers.as_bytes())),
        );
        self.prev_signature = sig.clone();
        sig
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Data,
    DataCr,
    DataLf,
    FinalCrlf,
    Trailer,
    Done,
}

/// Decodes one aws-chunked body.
#[derive(Debug)]
pub struct ChunkedDecoder {
    signer: Option<ChunkSigner>,
    expect_trailer: bool,
    state: State,
    line: Vec<u8>,
    remaining: u64,
    last_chunk: bool,
    chunk_sig: String,
    chunk_hash: Sha256,
    trailers: Vec<(String, String)>,
    trailer_bytes: usize,
    trailer_sig: Option<String>,
    decoded: u64,
}

impl ChunkedDecoder {
    /// `signer` is `Some` for signed chunks; `expect_trailer` for the `-TRAILER` modes.
    pub fn new(signer: Option<ChunkSigner>, expect_trailer: bool) -> ChunkedDecoder {
        ChunkedDecoder {
            signer,
            expect_trailer,
            state: State::Header,
            line: Vec::new(),
            remaining: 0,
            last_chunk: false,
            chunk_sig: String::new(),
            chunk_hash: Sha256::new(),
            trailers: Vec::new(),
            trailer_bytes: 0,
            trailer_sig: None,
            decoded: 0,
        }
    }

    /// Feeds the next slice of the wire body; decoded payload slices are pushed to `out`.
    pub fn push(&mut self, input: Bytes, out: &mut Vec<Bytes>) -> Result<(), ChunkError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Header | State::Trailer => {
                    let Some(line) = self.take_line(&input, &mut pos)? else {
                        return Ok(());
                    };
                    if self.state == State::Header {
                        self.on_header(&line)?;
                    } else {
                        self.on_trailer(&line)?;
                    }
                }
                State::Data => {
                    let n = (self.remaining.min((input.len() - pos) as u64)) as usize;
                    let piece = input.slice(pos..pos + n);
                    if self.signer.is_some() {
                        self.chunk_hash.update(&piece);
                    }
                    out.push(piece);
                    self.decoded += n as u64;
                    self.remaining -= n as u64;
                    pos += n;
                    if self.remaining == 0 {
                        self.end_chunk()?;
                    }
                }
                State::DataCr | State::DataLf | State::FinalCrlf => {
                    let want = if self.state == State::DataLf {
                        b'\n'
                    } else {
                        b'\r'
                    };
                    if input[pos] != want {
                        return Err(ChunkError::MissingCrlf);
                    }
                    pos += 1;
                    self.state = match self.state {
                        State::DataCr => State::DataLf,
                        State::FinalCrlf => State::DataLf,
                        _ if self.last_chunk => State::Done,
                        _ => State::Header,
                    };
                }
                State::Done => return Err(ChunkError::TrailingData),
            }
        }
        Ok(())
    }

    /// Declares the end of the wire body; returns the trailers (`name`, `value`).
    pub fn finish(self) -> Result<Vec<(String, String)>, ChunkError> {
        if self.state != State::Done {
            return Err(ChunkError::Truncated);
        }
        Ok(self.trailers)
    }

    /// Payload bytes decoded so far.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// Accumulates bytes up to CRLF; `None` if the line is not complete yet.
    fn take_line(&mut self, input: &[u8], pos: &mut usize) -> Result<Option<String>, ChunkError> {
        let rest = &input[*pos..];
        let (piece, found) = match memchr_lf(rest) {
            Some(i) => (&rest[..=i], true),
            None => (rest, false),
        };
        if self.line.len() + piece.len() > MAX_LINE + 2 {
            return Err(ChunkError::LineTooLong);
        }
        self.line.extend_from_slice(piece);
        *pos += piece.len();
        if !found {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.line);
        line.pop();
        if line.pop() != Some(b'\r') {
            return Err(ChunkError::MissingCrlf);
        }
        String::from_utf8(line)
            .map(Some)
            .map_err(|e| ChunkError::BadHeader(String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn on_header(&mut self, line: &str) -> Result<(), ChunkError> {
        let bad = || ChunkError::BadHeader(line.to_string());
        let (size, ext) = match line.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (line, None),
        };
        if size.is_empty() || size.len() > 16 {
            return Err(bad());
        }
        let size = u64::from_str_radix(size, 16).map_err(|_| bad())?;
        match (&self.signer, ext) {
            (Some(_), Some(e)) => {
                let sig = e.strip_prefix("chunk-signature=").ok_or_else(bad)?;
                if sig.len() != 64 {
                    return Err(bad());
                }
                self.chunk_sig = sig.to_string();
            }
            (None, None) => {}
            _ => return Err(bad()),
        }
        self.remaining = size;
        self.last_chunk = size == 0;
        self.chunk_hash = Sha256::new();
        if size == 0 {
            self.end_chunk()
        } else {
            self.state = State::Data;
            Ok(())
        }
    }

    fn end_chunk(&mut self) -> Result<(), ChunkError> {
        if let Some(signer) = &mut self.signer {
            let hash = hex::encode(std::mem::take(&mut self.chunk_hash).finalize());
            let expected = signer.sign_chunk(&hash);
            if expected != self.chunk_sig {
                return Err(ChunkError::BadChunkSignature);
            }
        }
        self.state = match (self.last_chunk, self.expect_trailer) {
            (true, true) => State::Trailer,
            (true, false) => State::FinalCrlf,
            (false, _) => State::DataCr,
        };
        Ok(())
    }

    fn on_trailer(&mut self, line: &str) -> Result<(), ChunkError> {
        self.trailer_bytes += line.len();
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError::LineTooLong);
        }
        if !line.is_empty() {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| ChunkError::BadTrailer(line.to_string()))?;
            let name = name.trim().to_ascii_lowercase();
            if name == "x-amz-trailer-signature" {
                self.trailer_sig = Some(value.trim().to_string());
            } else {
                self.trailers.push((name, value.trim().to_string()));
            }
            return Ok(());
        }
        if let Some(signer) = &mut self.signer {
            let canonical: String = self
                .trailers
                .iter()
                .map(|(n, v)| format!("{n}:{v}\n"))
                .collect();
            let expected = signer.sign_trailer(&canonical);
            if self.trailer_sig.as_deref() != Some(expected.as_str()) {
                return Err(ChunkError::BadTrailerSignature);
            }
        }
        self.state = State::Done;
        Ok(())
    }
}

fn memchr_lf(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}
