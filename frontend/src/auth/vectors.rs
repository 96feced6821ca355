//! Published vectors: AWS's SigV4 test suite (service `service`) and the S3 API reference's
//! header, presigned and chunked-upload examples. A pass means we agree with AWS, not only
//! with ourselves.

use super::canonical::{canonical_request, string_to_sign, CanonicalInput, UriMode};
use super::chunked::{ChunkError, ChunkSigner, ChunkedDecoder};
use super::sigv4::{hmac_sha256, signing_key};
use super::*;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// Signs as a client would and returns the hex signature.
fn sign(
    secret: &str,
    scope: &str,
    method: &str,
    target: &str,
    h: &HeaderMap,
    payload: &str,
    mode: UriMode,
) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut signed: Vec<String> = h.keys().map(|k| k.as_str().to_string()).collect();
    signed.sort();
    signed.dedup();
    let amz_date = h["x-amz-date"].to_str().unwrap();
    let cr = canonical_request(&CanonicalInput {
        method,
        raw_path: path,
        raw_query: query,
        headers: h,
        signed_headers: &signed,
        payload_hash: payload,
        uri_mode: mode,
        skip_query: None,
    })
    .unwrap();
    let parts: Vec<&str> = scope.split('/').collect();
    let key = signing_key(secret, parts[0], parts[1], parts[2]);
    hex::encode(hmac_sha256(
        &key,
        string_to_sign(amz_date, scope, &cr).as_bytes(),
    ))
}

#[test]
fn sigv4_test_suite_vanilla_cases() {
    let scope = "20150830/us-east-1/service/aws4_request";
    let h = headers(&[
        ("host", "example.amazonaws.com"),
        ("x-amz-date", "20150830T123600Z"),
    ]);
    for (method, target, want) in [
        (
            "GET",
            "/",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "GET",
            "/?Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "POST",
            "/",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
    ] {
        assert_eq!(
            sign(
                SUITE_SECRET,
                scope,
                method,
                target,
                &h,
                EMPTY,
                UriMode::Normalized
            ),
            want,
            "{method} {target}"
        );
    }
}

#[test]
fn s3_reference_header_examples() {
    let scope = "20130524/us-east-1/s3/aws4_request";
    let base = [
        ("host", "examplebucket.s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, &str)> = base.to_vec();
        v.extend_from_slice(extra);
        headers(&v)
    };
    let h = with(&[("range", "bytes=0-9"), ("x-amz-content-sha256", EMPTY)]);
    assert_eq!(
        sign(S3_SECRET, scope, "GET", "/test.txt", &h, EMPTY, UriMode::S3),
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
    let put_hash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
    let h = with(&[
        ("date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", put_hash),
    ]);
    assert_eq!(
        sign(
            S3_SECRET,
            scope,
            "PUT",
            "/test%24file.text",
            &h,
            put_hash,
            UriMode::S3
        ),
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    );
    let h = with(&[("x-amz-content-sha256", EMPTY)]);
    assert_eq!(
        sign(
            S3_SECRET,
            scope,
            "GET",
            "/?lifecycle",
            &h,
            EMPTY,
            UriMode::S3
        ),
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    );
    assert_eq!(
        sign(
            S3_SECRET,
            scope,
            "GET",
            "/?max-keys=2&prefix=J",
            &h,
            EMPTY,
            UriMode::S3
        ),
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    );
}

fn s3_policy(now: i64) -> Policy<'static> {
    Policy {
        service: "s3",
        region: Some("us-east-1"),
        uri_mode: UriMode::S3,
        now,
        max_skew_secs: 900,
        body_sha256: None,
    }
}

const PRESIGNED_QUERY: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

#[test]
fn s3_reference_presigned_example_verifies_until_it_expires() {
    let h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
    let view = RequestView {
        method: "GET",
        raw_path: "/test.txt",
        raw_query: PRESIGNED_QUERY,
        headers: &h,
    };
    let req = parse(&h, PRESIGNED_QUERY).unwrap().unwrap();
    assert_eq!(req.presigned_expires, Some(86400));
    let t0 = req.time;
    let v = verify(&req, S3_SECRET, &view, &s3_policy(t0 + 100)).unwrap();
    assert_eq!(v.payload, PayloadMode::Unsigned);
    assert_eq!(
        verify(&req, S3_SECRET, &view, &s3_policy(t0 + 86401)).unwrap_err(),
        AuthError::Expired
    );
    assert_eq!(
        verify(&req, "wrong", &view, &s3_policy(t0)).unwrap_err(),
        AuthError::SignatureDoesNotMatch
    );
    let tampered = PRESIGNED_QUERY.replace("86400", "86401");
    let req = parse(&h, &tampered).unwrap().unwrap();
    let view = RequestView {
        raw_query: &tampered,
        ..view
    };
    assert_eq!(
        verify(&req, S3_SECRET, &view, &s3_policy(t0)).unwrap_err(),
        AuthError::SignatureDoesNotMatch
    );
}

fn chunked_example_request() -> (HeaderMap, String) {
    let mut h = headers(&[
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", "66824"),
    ]);
    let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    h.insert("authorization", HeaderValue::from_static(auth));
    let mut body = String::new();
    for (size, sig) in [
        (
            65536,
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        ),
        (
            1024,
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        ),
        (
            0,
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        ),
    ] {
        body.push_str(&format!(
            "{size:x};chunk-signature={sig}\r\n{}\r\n",
            "a".repeat(size)
        ));
    }
    (h, body)
}

fn example_signer() -> ChunkSigner {
    let (h, _) = chunked_example_request();
    let view = RequestView {
        method: "PUT",
        raw_path: "/examplebucket/chunkObject.txt",
        raw_query: "",
        headers: &h,
    };
    let req = parse(&h, "").unwrap().unwrap();
    let v = verify(&req, S3_SECRET, &view, &s3_policy(req.time)).unwrap();
    assert_eq!(v.payload, PayloadMode::StreamingSigned);
    ChunkSigner {
        signing_key: v.signing_key,
        amz_date: v.amz_date,
        scope: v.scope,
        prev_signature: v.seed_signature,
    }
}

fn decode_in_pieces(
    mut d: ChunkedDecoder,
    body: &[u8],
    piece: usize,
) -> Result<Vec<u8>, ChunkError> {
    let mut out = Vec::new();
    for p in body.chunks(piece) {
        d.push(Bytes::copy_from_slice(p), &mut out)?;
    }
    d.finish()?;
    Ok(out.concat())
}

#[test]
fn s3_reference_chunked_upload_decodes_in_any_slicing() {
    let (_, body) = chunked_example_request();
    assert_eq!(body.len(), 66824);
    for piece in [1, 7, 4096, 70000] {
        let out = decode_in_pieces(
            ChunkedDecoder::new(Some(example_signer()), false),
            body.as_bytes(),
            piece,
        )
        .unwrap();
        assert_eq!(out, vec![b'a'; 66560]);
    }
}

#[test]
fn tampered_chunk_or_truncated_body_is_refused() {
    let (_, body) = chunked_example_request();
    let mut bad = body.clone().into_bytes();
    bad[66000] = b'b';
    let err = decode_in_pieces(
        ChunkedDecoder::new(Some(example_signer()), false),
        &bad,
        4096,
    )
    .unwrap_err();
    assert_eq!(err, ChunkError::BadChunkSignature);
    let err = decode_in_pieces(
        ChunkedDecoder::new(Some(example_signer()), false),
        &body.as_bytes()[..60000],
        4096,
    );
    assert_eq!(err.unwrap_err(), ChunkError::Truncated);
}

#[test]
fn unsigned_chunks_with_trailer_decode_and_report_the_checksum() {
    let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
    let mut d = ChunkedDecoder::new(None, true);
    let mut out = Vec::new();
    d.push(Bytes::from_static(body), &mut out).unwrap();
    assert_eq!(out.concat(), b"hello world");
    assert_eq!(
        d.finish().unwrap(),
        vec![("x-amz-checksum-crc32".to_string(), "DUoRhQ==".to_string())]
    );
}

#[test]
fn signed_chunks_with_trailer_check_the_trailer_signature() {
    let mut client = example_signer();
    let c1 = client.sign_chunk(&super::canonical::sha256_hex(b"hello"));
    let c0 = client.sign_chunk(EMPTY);
    let ts = client.sign_trailer("x-amz-checksum-crc32:NhCmhg==\n");
    let body = format!(
        "5;chunk-signature={c1}\r\nhello\r\n0;chunk-signature={c0}\r\nx-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:{ts}\r\n\r\n"
    );
    let out = decode_in_pieces(
        ChunkedDecoder::new(Some(example_signer()), true),
        body.as_bytes(),
        3,
    )
    .unwrap();
    assert_eq!(out, b"hello");
    let forged = body.replace("NhCmhg==", "AAAAAA==");
    let err = decode_in_pieces(
        ChunkedDecoder::new(Some(example_signer()), true),
        forged.as_bytes(),
        3,
    );
    assert_eq!(err.unwrap_err(), ChunkError::BadTrailerSignature);
}

#[test]
fn header_form_checks_clock_and_key() {
    let (h, _) = chunked_example_request();
    let view = RequestView {
        method: "PUT",
        raw_path: "/examplebucket/chunkObject.txt",
        raw_query: "",
        headers: &h,
    };
    let req = parse(&h, "").unwrap().unwrap();
    assert_eq!(req.access_key, "AKIAIOSFODNN7EXAMPLE");
    let err = verify(&req, S3_SECRET, &view, &s3_policy(req.time + 901)).unwrap_err();
    assert_eq!(err.code(), "RequestTimeTooSkewed");
    let err = verify(&req, "nope", &view, &s3_policy(req.time)).unwrap_err();
    assert_eq!(err.code(), "SignatureDoesNotMatch");
    assert!(parse(&HeaderMap::new(), "").unwrap().is_none());
}
