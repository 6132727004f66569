//! libFuzzer target: `veil::devkit::fuzz::envelope` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil::devkit::fuzz::envelope(data));
