//! A guest's virtio-net transmit chains (header and frame, any shape): bytes in, no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallee_vmm::devices::virtio::fuzzing::net_tx(data);
});
