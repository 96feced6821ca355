//! virtio-blk request parsing and execution on guest-chosen descriptors: bytes in, no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallee_vmm::devices::virtio::fuzzing::blk_request(data);
});
