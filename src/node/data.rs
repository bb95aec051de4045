//! Data messages between the participants of a room (chat), over one reliable, ordered data
//! channel per participant, labelled `tern`, that the relay opens on the subscribe leg.
//!
//! A participant with the `publish_data` grant sends UTF-8 text on it; the relay delivers
//! `{"from": "<participant id>", "data": "<text>"}` to everybody else in the room. Messages are
//! bounded in size and rate per sender; a receiver whose channel is backed up loses messages
//! (counted) rather than growing the relay's memory.

use super::guard::RateLimit;
use super::leg::LegMedia;
use super::relay::{Node, flush_leg};
use crate::media::ids::ParticipantId;
use crate::metrics::DropReason;
use rtc::data_channel::RTCDataChannelMessage;
use serde::Serialize;
use std::time::Instant;
use tern_signaling::protocol::{ErrorCode, ServerMessage};

/// The label of the relay's data channel on every subscribe leg.
pub const DATA_CHANNEL_LABEL: &str = "tern";
/// Largest data message a participant may send, bytes.
pub const MAX_DATA_MESSAGE_BYTES: usize = 16 * 1024;
/// Bytes queued toward one receiver before further messages to it are dropped.
const MAX_BACKLOG_BYTES: usize = 1024 * 1024;

#[derive(Serialize)]
struct Delivered<'a> {
    from: String,
    data: &'a str,
}

/// Per-participant data state.
/// What one participant may send on its data channel: chat, not file transfer (20 messages a
/// second, bursts of 40).
pub(super) fn data_rate() -> RateLimit {
    RateLimit::new(20, 40)
}

impl Node {
    /// One message a participant sent on its data channel.
    pub(super) fn data_message(
        &mut self,
        from: ParticipantId,
        message: RTCDataChannelMessage,
        now: Instant,
    ) {
        let refuse = |worker: &mut Node, code: ErrorCode, text: &str| {
            worker.metrics.data_messages_refused.inc();
            worker.notify(from, ServerMessage::error(code, text));
        };
        let Some(p) = self.participants.get_mut(&from) else {
            return;
        };
        if !p.grants.publish_data {
            refuse(
                self,
                ErrorCode::NotAllowed,
                "your token does not grant publish_data",
            );
            return;
        }
        if !p.data_rate.allow(now) {
            refuse(
                self,
                ErrorCode::LimitExceeded,
                "data messages are limited to 20 per second",
            );
            return;
        }
        if !message.is_string || message.data.len() > MAX_DATA_MESSAGE_BYTES {
            refuse(
                self,
                ErrorCode::LimitExceeded,
                "data messages must be UTF-8 text of at most 16 KiB",
            );
            return;
        }
        let Ok(text) = std::str::from_utf8(&message.data) else {
            refuse(
                self,
                ErrorCode::MalformedMessage,
                "data message is not UTF-8",
            );
            return;
        };
        let room = p.room;
        self.metrics.data_messages_received.inc();
        let Ok(delivered) = serde_json::to_string(&Delivered {
            from: from.to_string(),
            data: text,
        }) else {
            return;
        };
        let receivers: Vec<_> = self
            .members_of(room)
            .filter(|o| o.id != from)
            .filter_map(|o| o.subscribe_leg)
            .collect();
        for key in receivers {
            let Some(leg) = self.legs.get_mut(&key) else {
                continue;
            };
            let LegMedia::Subscribe(state) = &leg.media else {
                continue;
            };
            let Some(id) = state.data_channel.filter(|_| state.data_open) else {
                continue;
            };
            let sent = leg.pc.data_channel(id).is_some_and(|mut channel| {
                channel.outstanding_bytes() < MAX_BACKLOG_BYTES
                    && channel.send_text(now, delivered.as_str()).is_ok()
            });
            if sent {
                self.metrics.data_messages_sent.inc();
                flush_leg(leg, &mut self.transmits);
            } else {
                self.metrics.count_drop(DropReason::DataBacklog);
            }
        }
    }
}
