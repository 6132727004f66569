//! libFuzzer target: `veil::devkit::fuzz::config` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil::devkit::fuzz::config(data));
