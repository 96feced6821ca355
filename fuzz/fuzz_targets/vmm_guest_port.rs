//! A frame a guest sends through its port (anti-spoofing, DHCP answers): bytes in, no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallee_vmm::devices::virtio::fuzzing::guest_port(data);
});
