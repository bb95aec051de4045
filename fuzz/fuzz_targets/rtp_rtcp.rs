//! The packet path after decryption: RTP/RTCP parsing, keyframes, forwarding, rewriting.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern::fuzzing::rtp_and_rtcp(data);
});
