//! Tern's signaling service: the wire protocol, join tokens, and the WebSocket sessions that pump
//! messages between clients and the relay. It knows nothing of RTP; the relay plugs in through
//! [`control::RoomControl`].

pub mod admin;
pub mod auth;
pub mod client_addr;
pub mod control;
pub mod http;
pub mod http_errors;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod protocol;
pub mod serve;
pub mod session;
pub mod tls;
pub mod whip;
