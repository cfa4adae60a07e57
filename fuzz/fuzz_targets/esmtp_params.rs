//! xtext and MAIL/RCPT parameters: the parsers must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    petrel::smtp::fuzzing::esmtp_params(data);
});
