//! Replays the fuzz corpus (fuzz/corpus/<target>/) through the same entry points the fuzz
//! targets use, so CI checks every input a fuzzer kept, without nightly features.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        inputs += 1;
    }
    assert!(inputs > 0, "the {target} corpus is empty");
}

#[test]
fn demux_and_leg_corpus() {
    replay("demux_leg", tern::fuzzing::demux_and_leg);
}

#[test]
fn rtp_and_rtcp_corpus() {
    replay("rtp_rtcp", tern::fuzzing::rtp_and_rtcp);
}

#[test]
fn signaling_corpus() {
    replay("signaling", tern::fuzzing::signaling_input);
}

#[test]
fn sdp_corpus() {
    replay("sdp", tern::fuzzing::sdp_offer_and_answer);
}

#[test]
fn sdp_seeds_made_by_a_real_stack() {
    for seed in tern::fuzzing::sdp_seeds() {
        tern::fuzzing::sdp_offer_and_answer(&seed);
    }
}

#[test]
fn http_corpus() {
    replay("http", tern::fuzzing::http_connection);
}
