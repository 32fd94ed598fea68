//! Fuzz target: see `ferry_core::fuzzing::rules`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_core::fuzzing::rules(data));
