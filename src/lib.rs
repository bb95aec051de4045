//! Tern: a secure video-call media relay (SFU).
//!
//! `media` is the pure forwarding core, `node` the async shell around webrtc-rs's sans-IO `rtc`,
//! `app` wires them to the signaling service, `config` and `metrics` serve operators.

pub mod app;
pub mod config;
#[cfg(feature = "harness")]
pub mod fuzzing;
pub mod ice_servers;
pub mod loadtest;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod node;
pub mod process_metrics;
pub mod settings;
pub mod webhooks;
