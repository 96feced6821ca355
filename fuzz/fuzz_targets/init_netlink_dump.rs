//! The netlink dump walk and the link and address parsers the gateway and the node agent read
//! the kernel's state with: any buffer in, messages (each within the buffer), an end, or a
//! truncation error out, no panic; every body parses or is skipped.
#![no_main]

use mallee_init::net::link::{parse_address, parse_dump, parse_link};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (seq, buf) = match data.split_first_chunk::<4>() {
        Some((seq, buf)) => (u32::from_le_bytes(*seq), buf),
        None => return,
    };
    if let Ok(part) = parse_dump(buf, seq) {
        if let Some(code) = part.end {
            assert!(code <= 0, "a dump ends with 0 or a negative errno, got {code}");
        }
        for body in part.bodies {
            let _ = parse_link(body);
            let _ = parse_address(body);
        }
    }
    // The parsers alone, on the raw bytes.
    let _ = parse_link(buf);
    let _ = parse_address(buf);
});
