//! The netlink reply walk that finds the kernel's answer to one request: any buffer in, an
//! answer, "not here" or a truncation error out, no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (seq, buf) = match data.split_first_chunk::<4>() {
        Some((seq, buf)) => (u32::from_le_bytes(*seq), buf),
        None => return,
    };
    if let Ok(Some(code)) = mallee_init::net::link::find_ack(buf, seq) {
        assert!(code <= 0, "an ack is 0 or a negative errno, got {code}");
    }
});
