//! Any bytes, through every pure parser: strict JSON, phones, emails, rendering, provider
//! callbacks and provider answers. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| herald::fuzzing::parsers(data));
