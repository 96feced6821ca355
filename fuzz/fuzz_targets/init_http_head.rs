//! The node agent's parser of the frontend's HTTP response head: any text in, a head or an
//! error out, no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(head) = mallee_init::agent::client::parse_head(&text) {
        assert!((100..=999).contains(&head.status), "{}", head.status);
    }
});
