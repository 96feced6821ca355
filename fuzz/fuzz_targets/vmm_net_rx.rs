//! Frames placed into a guest's virtio-net receive chains (any shape, mergeable or not): bytes
//! in, no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallee_vmm::devices::virtio::fuzzing::net_rx(data);
});
