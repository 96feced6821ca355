//! Fuzz target: the aws-chunked decoder, fed the input in two slices, every mode.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mallee_frontend::auth::chunked::{ChunkSigner, ChunkedDecoder};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    for (signed, trailer) in [(true, false), (true, true), (false, true)] {
        let signer = signed.then(|| ChunkSigner {
            signing_key: [7; 32],
            amz_date: "20240101T000000Z".into(),
            scope: "20240101/us-east-1/s3/aws4_request".into(),
            prev_signature: "0".repeat(64),
        });
        let mut d = ChunkedDecoder::new(signer, trailer);
        let mut out = Vec::new();
        if d.push(Bytes::copy_from_slice(&data[..split]), &mut out)
            .is_ok()
            && d.push(Bytes::copy_from_slice(&data[split..]), &mut out)
                .is_ok()
        {
            let _ = d.finish();
        }
    }
});
