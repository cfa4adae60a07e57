//! Bytes from an SMTP server: the client's reply framing must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    petrel::smtp::client::fuzzing::client_reply(data);
});
