//! Spool records with valid checksums built from the input: envelope and status decoding must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    spool_format::fuzzing::spool_records(data);
});
