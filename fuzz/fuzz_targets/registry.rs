//! libFuzzer target: `veil::devkit::fuzz::registry` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil::devkit::fuzz::registry(data));
