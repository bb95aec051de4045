//! SDP through the relay's publish-offer and subscribe-answer handling (first byte: which).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern::fuzzing::sdp_offer_and_answer(data);
});
