//! The media node: a sans-IO state machine (`relay.rs` and its `impl Node` blocks) holding the
//! legs and rooms, and the driver (`driver.rs`), which is all its IO.

mod admin;
pub mod arena;
pub mod command;
pub mod control;
mod data;
pub mod demux;
pub mod driver;
mod e2ee;
mod egress;
pub mod engine;
mod events;
pub mod feedback;
pub mod formats;
pub mod guard;
pub mod leg;
pub mod load;
pub mod output;
mod pacing;
pub mod pair;
mod participants;
pub mod placement;
mod publish;
mod quality;
pub mod recv_batch;
pub mod refusal;
pub mod relay;
mod repair;
pub mod resume;
pub mod role;
pub mod rtx_gate;
pub mod rtx_probe;
pub mod sdp;
pub mod send_batch;
#[cfg(feature = "harness")]
pub mod sim;
pub mod socket;
pub mod state;
mod subscribe;
pub mod tcp;
pub mod timers;
mod view;
