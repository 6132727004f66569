//! libFuzzer target: `veil::devkit::fuzz::copy_text` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil::devkit::fuzz::copy_text(data));
