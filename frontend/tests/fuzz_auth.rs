//! Bounded randomized fuzzing of the SigV4 canonicalizer, the request parser and the
//! aws-chunked decoder (the cargo-fuzz targets in `fuzz/` run the same bodies unbounded).
//! Deterministic seeds, so a failure reproduces.

use bytes::Bytes;
use mallee_frontend::auth::canonical::{canonical_query, canonical_uri, UriMode};
use mallee_frontend::auth::chunked::{ChunkSigner, ChunkedDecoder};
use mallee_frontend::auth::{self, Policy, RequestView};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, alphabet: &[u8], max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
}

const URLISH: &[u8] = b"abcXYZ019-_.~/%+=&?;: \xc3\xbc2F7e";

#[test]
fn canonical_forms_are_idempotent_and_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let s = String::from_utf8_lossy(&rng.bytes(URLISH, 40)).into_owned();
        let q = canonical_query(&s, None);
        assert_eq!(canonical_query(&q, None), q, "query {s:?}");
        let u = canonical_uri(&s, UriMode::S3);
        assert_eq!(canonical_uri(&u, UriMode::S3), u, "uri {s:?}");
        let _ = canonical_uri(&s, UriMode::Normalized);
    }
}

#[test]
fn random_authorization_headers_and_queries_are_refused_cleanly() {
    let mut rng = Rng(42);
    let pieces: &[&str] = &[
        "AWS4-HMAC-SHA256 ",
        "Credential=",
        "AK/20240101/us-east-1/s3/aws4_request",
        ",",
        " SignedHeaders=",
        "host;x-amz-date",
        "Signature=",
        "00ff",
        "/",
        ";",
        "=",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "&",
        "X-Amz-Expires=",
        "99999999999",
        "X-Amz-Date=20240101T000000Z",
        "X-Amz-Credential=a%2Fb",
    ];
    for _ in 0..20_000 {
        let mut auth_value = String::new();
        let mut query = String::new();
        for _ in 0..rng.below(10) {
            auth_value.push_str(pieces[rng.below(pieces.len())]);
            query.push_str(pieces[rng.below(pieces.len())]);
        }
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&auth_value) {
            if rng.below(2) == 0 {
                headers.insert("authorization", v);
            }
        }
        headers.insert(
            "x-amz-date",
            http::HeaderValue::from_static("20240101T000000Z"),
        );
        headers.insert("host", http::HeaderValue::from_static("h"));
        if let Ok(Some(claim)) = auth::parse(&headers, &query) {
            let view = RequestView {
                method: "GET",
                raw_path: "/b/k",
                raw_query: &query,
                headers: &headers,
            };
            let policy = Policy {
                service: "s3",
                region: None,
                uri_mode: UriMode::S3,
                now: 1_704_067_200,
                max_skew_secs: 900,
                body_sha256: None,
            };
            assert!(auth::verify(&claim, "secret", &view, &policy).is_err());
        }
    }
}

fn signer() -> ChunkSigner {
    ChunkSigner {
        signing_key: [7; 32],
        amz_date: "20240101T000000Z".into(),
        scope: "20240101/us-east-1/s3/aws4_request".into(),
        prev_signature: "0".repeat(64),
    }
}

fn signed_body(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let mut s = signer();
    let mut payload = Vec::new();
    let mut body = Vec::new();
    for _ in 0..rng.below(4) {
        let chunk = rng.bytes(b"abc\r\n;0", 300);
        if chunk.is_empty() {
            continue;
        }
        let sig = s.sign_chunk(&mallee_frontend::auth::canonical::sha256_hex(&chunk));
        body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
        payload.extend_from_slice(&chunk);
    }
    let sig = s.sign_chunk(&mallee_frontend::auth::canonical::sha256_hex(b""));
    body.extend_from_slice(format!("0;chunk-signature={sig}\r\n\r\n").as_bytes());
    (payload, body)
}

fn decode(mut d: ChunkedDecoder, body: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let n = 1 + rng.below(body.len() - pos);
        d.push(Bytes::copy_from_slice(&body[pos..pos + n]), &mut out)
            .ok()?;
        pos += n;
    }
    d.finish().ok()?;
    Some(out.concat())
}

#[test]
fn chunked_decoder_survives_garbage_and_catches_every_mutation() {
    let mut rng = Rng(7);
    for _ in 0..5_000 {
        let garbage = rng.bytes(b"0123456789abcdef;=\r\nchunk-signature x-amz-:", 200);
        let _ = decode(
            ChunkedDecoder::new(Some(signer()), rng.below(2) == 0),
            &garbage,
            &mut rng,
        );
        let _ = decode(
            ChunkedDecoder::new(None, rng.below(2) == 0),
            &garbage,
            &mut rng,
        );
    }
    for _ in 0..3_000 {
        let (payload, body) = signed_body(&mut rng);
        assert_eq!(
            decode(ChunkedDecoder::new(Some(signer()), false), &body, &mut rng),
            Some(payload.clone())
        );
        let mut bad = body.clone();
        let i = rng.below(bad.len());
        let old = bad[i];
        bad[i] = old ^ (1 + rng.below(255) as u8);
        let got = decode(ChunkedDecoder::new(Some(signer()), false), &bad, &mut rng);
        // Hex digits of the size or signature may change case and still mean the same
        // thing; any change that decodes must decode to the same payload.
        if let Some(out) = got {
            assert!(
                old.eq_ignore_ascii_case(&bad[i]) && out == payload,
                "mutation at {i} accepted"
            );
        }
    }
}
