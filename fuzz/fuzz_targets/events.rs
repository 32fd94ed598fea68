//! Fuzz target: see `ferry_core::fuzzing::events`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_core::fuzzing::events(data));
