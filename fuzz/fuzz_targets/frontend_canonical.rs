//! Fuzz target: SigV4 canonicalization is total and idempotent on arbitrary input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mallee_frontend::auth::canonical::{canonical_query, canonical_uri, UriMode};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let q = canonical_query(&s, None);
    assert_eq!(canonical_query(&q, None), q);
    let u = canonical_uri(&s, UriMode::S3);
    assert_eq!(canonical_uri(&u, UriMode::S3), u);
    let _ = canonical_uri(&s, UriMode::Normalized);
});
