//! A disk image's first bytes (partition tables, superblocks) as a hostile upload holds them:
//! whatever they say, naming its root never panics and reads nothing beyond the bytes given.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some(root)) = mallee_proto::root_device::locate(data) {
        // Whatever was found goes on a kernel command line: its text must parse back.
        let text = root.to_string();
        assert_eq!(text.parse::<mallee_proto::RootDevice>().ok(), Some(root), "{text}");
    }
});
