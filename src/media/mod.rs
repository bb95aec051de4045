//! The pure forwarding core: no tokio, no sockets, no clock (time is always an argument).
//! Everything here is deterministic and unit-tested; `node` is the only IO around it.

pub mod allocator;
pub mod bandwidth;
pub mod bwe;
pub mod codec;
pub mod extmap;
pub mod follow;
pub mod forwarder;
pub mod ids;
pub mod keyframe;
pub mod layers;
pub mod meter;
pub mod pacer;
pub mod quality;
pub mod rewrite;
pub mod room;
pub mod speaker;
