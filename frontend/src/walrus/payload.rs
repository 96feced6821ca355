//! The verified payload of an S3 request, read chunk by chunk: aws-chunked decoded, the
//! SHA-256 claim checked at the end. It never holds more than a few chunks in memory, refuses
//! a payload over S3's 5 GiB for one PUT (`EntityTooLarge`) and a body idle for longer than
//! [`body_idle`] (`RequestTimeout`).

use super::error::S3Error;
use crate::auth::chunked::{ChunkSigner, ChunkedDecoder};
use crate::auth::{PayloadMode, Verified};
use crate::http::body::body_idle;
use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

/// The most one PUT (an object, or a part) may carry, as in S3.
pub const MAX_PUT: u64 = 5 << 30;

fn entity_too_large() -> S3Error {
    S3Error::new(
        400,
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed object size.",
    )
}

/// The verified payload of a request, read chunk by chunk.
pub struct PayloadReader<B> {
    body: B,
    decoder: Option<ChunkedDecoder>,
    claimed_sha256: Option<String>,
    hasher: Option<Sha256>,
    pending: VecDeque<Bytes>,
    decoded_len_header: Option<u64>,
    trailers: Vec<(String, String)>,
    total: u64,
    done: bool,
}

impl<B> PayloadReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// `hash_here`: check the SHA-256 claim in this reader (false when the caller hashes
    /// the payload anyway and checks `claimed_sha256` itself).
    pub fn new(
        body: B,
        auth: &Verified,
        decoded_len_header: Option<u64>,
        hash_here: bool,
    ) -> PayloadReader<B> {
        let signer = || ChunkSigner {
            signing_key: auth.signing_key,
            amz_date: auth.amz_date.clone(),
            scope: auth.scope.clone(),
            prev_signature: auth.seed_signature.clone(),
        };
        let decoder = match auth.payload {
            PayloadMode::StreamingSigned => Some(ChunkedDecoder::new(Some(signer()), false)),
            PayloadMode::StreamingSignedTrailer => Some(ChunkedDecoder::new(Some(signer()), true)),
            PayloadMode::StreamingUnsignedTrailer => Some(ChunkedDecoder::new(None, true)),
            _ => None,
        };
        let claimed_sha256 = match &auth.payload {
            PayloadMode::Sha256(h) => Some(h.clone()),
            _ => None,
        };
        PayloadReader {
            body,
            decoder,
            hasher: claimed_sha256
                .as_ref()
                .filter(|_| hash_here)
                .map(|_| Sha256::new()),
            claimed_sha256,
            pending: VecDeque::new(),
            decoded_len_header,
            trailers: Vec::new(),
            total: 0,
            done: false,
        }
    }

    /// The signed SHA-256 of the payload, if the client signed one.
    pub fn claimed_sha256(&self) -> Option<&str> {
        self.claimed_sha256.as_deref()
    }

    /// The next slice of payload; `None` at the end, after every check passed.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, S3Error> {
        if self.total == 0 {
            // Before the first byte: a claim over the limit is refused unread.
            let claimed = (self.decoded_len_header).unwrap_or(self.body.size_hint().lower());
            if claimed > MAX_PUT {
                return Err(entity_too_large());
            }
        }
        loop {
            if let Some(b) = self.pending.pop_front() {
                self.total += b.len() as u64;
                if self.total > MAX_PUT {
                    return Err(entity_too_large());
                }
                if let Some(h) = &mut self.hasher {
                    h.update(&b);
                }
                return Ok(Some(b));
            }
            if self.done {
                return Ok(None);
            }
            let Ok(frame) = tokio::time::timeout(body_idle(), self.body.frame()).await else {
                return Err(S3Error::new(
                    400,
                    "RequestTimeout",
                    "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
                ));
            };
            match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match &mut self.decoder {
                        Some(d) => {
                            let mut out = Vec::new();
                            d.push(data, &mut out)?;
                            self.pending.extend(out);
                        }
                        None => self.pending.push_back(data),
                    }
                }
                Some(Err(e)) => {
                    return Err(S3Error::new(
                        400,
                        "IncompleteBody",
                        format!("reading the request body: {e}"),
                    ));
                }
                None => {
                    self.done = true;
                    self.finish_checks()?;
                }
            }
        }
    }

    fn finish_checks(&mut self) -> Result<(), S3Error> {
        if let Some(d) = self.decoder.take() {
            let decoded = d.decoded_len();
            self.trailers = d.finish()?;
            if self.decoded_len_header.is_some_and(|n| n != decoded) {
                return Err(S3Error::new(
                    400,
                    "IncompleteBody",
                    "x-amz-decoded-content-length does not match the body",
                ));
            }
        }
        if let (Some(h), Some(claim)) = (self.hasher.take(), &self.claimed_sha256) {
            if hex::encode(h.finalize()) != *claim {
                return Err(content_sha256_mismatch());
            }
        }
        Ok(())
    }

    /// The aws-chunked trailers (checksums), once the payload has been read to its end.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    /// The whole payload, refused past `limit` bytes.
    pub async fn read_all(mut self, limit: usize) -> Result<Bytes, S3Error> {
        let mut out = Vec::new();
        while let Some(b) = self.next_chunk().await? {
            if out.len() + b.len() > limit {
                return Err(S3Error::new(
                    400,
                    "MaxMessageLengthExceeded",
                    "Your request was too big.",
                ));
            }
            out.extend_from_slice(&b);
        }
        Ok(out.into())
    }
}

/// The error for a body that does not hash to its signed SHA-256.
pub fn content_sha256_mismatch() -> S3Error {
    S3Error::new(
        400,
        "XAmzContentSHA256Mismatch",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    )
}
