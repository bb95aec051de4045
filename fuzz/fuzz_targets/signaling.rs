//! Untrusted signaling text: client messages, join tokens, Origin headers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern::fuzzing::signaling_input(data);
});
