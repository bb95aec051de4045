//! The shared media socket's input path: demux, first checks, a connected leg.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tern::fuzzing::demux_and_leg(data);
});
