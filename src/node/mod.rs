//! The async/IO shell: the only code that touches tokio, sockets and webrtc-rs.

pub mod control;
pub mod demux;
pub mod engine;
pub mod leg;
mod negotiation;
pub mod pair;
mod participants;
pub mod sdp;
pub mod worker;
