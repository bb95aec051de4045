//! The async/IO shell: the only code that touches tokio, sockets and webrtc-rs.

mod admin;
pub mod control;
mod data;
pub mod demux;
pub mod engine;
mod events;
pub mod formats;
pub mod guard;
pub mod leg;
pub mod pair;
mod participants;
mod publish;
pub mod resume;
pub mod sdp;
pub mod socket;
mod subscribe;
pub mod tcp;
pub mod relay;
