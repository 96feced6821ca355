//! Fuzz target: the S3 request bodies a client sends as XML (CompleteMultipartUpload,
//! DeleteObjects) parse or fail with MalformedXML, never panic, and keep their limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mallee_frontend::walrus::xml::{parse_complete, parse_delete};

fuzz_target!(|data: &[u8]| {
    if let Ok(parts) = parse_complete(data) {
        assert!(!parts.is_empty(), "a completion names at least one part");
    }
    if let Ok((keys, _quiet)) = parse_delete(data) {
        assert!(keys.len() <= 1000, "DeleteObjects takes at most 1000 keys");
    }
});
