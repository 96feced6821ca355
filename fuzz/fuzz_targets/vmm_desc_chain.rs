//! The descriptor-chain walk (direct, indirect, looping, out of memory): bytes in, no panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mallee_vmm::devices::virtio::fuzzing::desc_chain(data);
});
