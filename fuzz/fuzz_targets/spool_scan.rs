//! Arbitrary bytes as a spool segment: recovery must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spool_format::fuzzing::spool_scan(data);
});
