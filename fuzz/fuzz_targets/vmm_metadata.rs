//! What a guest sends the metadata service (HTTP heads, frames into its TCP/IP): no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallee_vmm::devices::virtio::fuzzing::metadata_service(data);
});
