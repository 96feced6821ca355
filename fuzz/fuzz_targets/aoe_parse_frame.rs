//! Any bytes into the AoE frame parser: no panic, and parse → emit → parse is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mallee_aoe::fuzz_parse(data);
});
