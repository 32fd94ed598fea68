//! Fuzz target: see `ferry_core::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_core::fuzzing::config(data));
