//! Arbitrary bytes into an SMTP server session, split into random reads.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    petrel::smtp::fuzzing::smtp_server(data);
});
