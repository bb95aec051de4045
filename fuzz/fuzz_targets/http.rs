//! The HTTP port: request heads and WebSocket frames from arbitrary bytes (see
//! `tern::fuzzing::http_connection` for how the first byte shapes an input).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern::fuzzing::http_connection(data);
});
