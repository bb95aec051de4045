//! Entry points for the fuzz targets (fuzz/) and for replaying their corpus as ordinary tests
//! (tests/fuzz_corpus.rs). Each takes arbitrary bytes and must never panic.

mod http;
mod media;
mod signaling;

pub use http::http_connection;
pub use media::{demux_and_leg, rtp_and_rtcp};
pub use signaling::{sdp_offer_and_answer, sdp_seeds, signaling_input};
