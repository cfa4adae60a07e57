//! DNS replies, raw and after a valid header and question: the wire parser must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    petrel::dns::fuzzing::dns_response(data);
});
