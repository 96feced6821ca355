//! Flexible checksums (`x-amz-checksum-*`): computed over the payload while it streams and
//! checked against the value the client sent, in a header or in an aws-chunked trailer (the
//! only integrity check `STREAMING-UNSIGNED-PAYLOAD-TRAILER` bodies have). CRC32, SHA-1 and
//! SHA-256 are checked; other algorithms (CRC32C, CRC64NVME) are accepted unchecked.

use super::error::S3Error;
use base64::Engine;
use http::HeaderMap;
use sha1::Sha1;
use sha2::{Digest, Sha256};

enum State {
    Crc32(crc32fast::Hasher),
    Sha1(Sha1),
    Sha256(Sha256),
}

/// One checksum being computed over a payload.
pub struct PayloadChecksum {
    header: &'static str,
    label: &'static str,
    state: State,
    /// From a header; `None` when the value comes in the trailer.
    expected: Option<String>,
}

const ALGORITHMS: &[(&str, &str)] = &[
    ("x-amz-checksum-crc32", "CRC32"),
    ("x-amz-checksum-sha1", "SHA1"),
    ("x-amz-checksum-sha256", "SHA256"),
];

impl PayloadChecksum {
    /// The checksum the request announces, if it is one we check.
    pub fn from_headers(headers: &HeaderMap) -> Option<PayloadChecksum> {
        let trailer = headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        ALGORITHMS.iter().find_map(|&(header, label)| {
            let expected = headers
                .get(header)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string());
            if expected.is_none() && trailer.as_deref() != Some(header) {
                return None;
            }
            let state = match label {
                "CRC32" => State::Crc32(crc32fast::Hasher::new()),
                "SHA1" => State::Sha1(Sha1::new()),
                _ => State::Sha256(Sha256::new()),
            };
            Some(PayloadChecksum {
                header,
                label,
                state,
                expected,
            })
        })
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Crc32(h) => h.update(data),
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
        }
    }

    /// Base64 of the digest, as S3 spells checksums.
    fn value(self) -> String {
        let raw = match self.state {
            State::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            State::Sha1(h) => h.finalize().to_vec(),
            State::Sha256(h) => h.finalize().to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    /// Compares with the header value or, failing that, the trailer of the same name.
    pub fn verify(self, trailers: &[(String, String)]) -> Result<(), S3Error> {
        let expected = self.expected.clone().or_else(|| {
            trailers
                .iter()
                .find(|(n, _)| n == self.header)
                .map(|(_, v)| v.clone())
        });
        let Some(expected) = expected else {
            return Err(S3Error::new(
                400,
                "InvalidRequest",
                format!("the announced trailer {} is missing", self.header),
            ));
        };
        let label = self.label;
        if self.value() != expected {
            return Err(S3Error::new(
                400,
                "BadDigest",
                format!("The {label} you specified did not match the calculated checksum."),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn crc32_in_a_header_is_checked() {
        // CRC32("hello world") = 0x0d4a1185.
        let mut c =
            PayloadChecksum::from_headers(&headers(&[("x-amz-checksum-crc32", "DUoRhQ==")]))
                .unwrap();
        c.update(b"hello world");
        c.verify(&[]).unwrap();
        let mut c =
            PayloadChecksum::from_headers(&headers(&[("x-amz-checksum-crc32", "DUoRhQ==")]))
                .unwrap();
        c.update(b"hello World");
        assert_eq!(c.verify(&[]).unwrap_err().code, "BadDigest");
    }

    #[test]
    fn trailer_checksums_come_from_the_trailer_and_must_be_there() {
        let h = headers(&[("x-amz-trailer", "x-amz-checksum-sha256")]);
        let mut c = PayloadChecksum::from_headers(&h).unwrap();
        c.update(b"hello");
        let good = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
        c.verify(&[("x-amz-checksum-sha256".into(), good.into())])
            .unwrap();
        let c = PayloadChecksum::from_headers(&h).unwrap();
        assert_eq!(c.verify(&[]).unwrap_err().code, "InvalidRequest");
        assert!(
            PayloadChecksum::from_headers(&headers(&[("x-amz-checksum-crc64nvme", "x")])).is_none()
        );
    }
}
