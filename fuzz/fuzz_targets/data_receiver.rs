//! The DATA receiver fed in random pieces must match it fed at once.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    petrel::smtp::fuzzing::data_receiver(data);
});
