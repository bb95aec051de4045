//! The relay's part in end-to-end encrypted calls: it passes the participants' key exchange
//! messages on without reading them, and admits only encrypting participants to rooms that
//! require it (`participants.rs`). The media of such participants is forwarded like any other:
//! the codec bytes forwarding needs stay in the clear (docs/E2EE.md).
//!
//! A message goes to one participant (`to`) or to every other participant of the room that
//! joined with `e2ee`. Only such participants may send them, at a bounded size and rate (inside
//! the session's own message rate): on a leave each sender sends its new key to every remaining
//! participant, one message each, so a client paces those in a large room.

use super::guard::RateLimit;
use super::refusal::{Refusal, refuse};
use super::relay::Node;
use crate::media::ids::ParticipantId;
use std::time::Instant;
use tern_signaling::limits::Limit;
use tern_signaling::protocol::{ErrorCode, MAX_E2EE_DATA_BYTES, ServerMessage};

/// Key exchange messages one participant may send a second (and in a burst).
pub const E2EE_MESSAGES_PER_S: u32 = 40;
const E2EE_BURST: u32 = 50;

pub(super) fn e2ee_rate() -> RateLimit {
    RateLimit::new(E2EE_MESSAGES_PER_S, E2EE_BURST)
}

/// Messages to everyone (announcements: one at the start, one after a resume) a participant may
/// send a second, and in a burst: the relay copies each to every encrypting participant, so
/// their rate is what bounds the fan-out one participant can cause.
pub const E2EE_BROADCASTS_PER_S: u32 = 2;
const E2EE_BROADCAST_BURST: u32 = 5;

pub(super) fn e2ee_broadcast_rate() -> RateLimit {
    RateLimit::new(E2EE_BROADCASTS_PER_S, E2EE_BROADCAST_BURST)
}

impl Node {
    /// An `e2ee` message from `from`, for `to` or for every other encrypting participant.
    pub(super) fn e2ee_message(
        &mut self,
        from: ParticipantId,
        to: Option<&str>,
        data: String,
        now: Instant,
    ) -> Result<(), Refusal> {
        let Some(sender) = self.participants.get_mut(&from) else {
            return Ok(());
        };
        if !sender.e2ee {
            return Err(refuse(
                ErrorCode::NotAllowed,
                "only participants that joined with e2ee=1 take part in the key exchange",
            ));
        }
        if data.len() > MAX_E2EE_DATA_BYTES {
            return Err(refuse(
                ErrorCode::LimitExceeded,
                format!("e2ee data is at most {MAX_E2EE_DATA_BYTES} bytes"),
            ));
        }
        let broadcast_refused = to.is_none() && !sender.e2ee_broadcast_rate.allow(now);
        if broadcast_refused || !sender.e2ee_rate.allow(now) {
            self.metrics.limits.breached(Limit::E2eeRate);
            return Err(refuse(
                ErrorCode::RateLimited,
                format!(
                    "too many e2ee messages; at most {E2EE_MESSAGES_PER_S} a second (bursts of \
                     {E2EE_BURST}), {E2EE_BROADCASTS_PER_S} of them to everyone (bursts of \
                     {E2EE_BROADCAST_BURST})"
                ),
            ));
        }
        let room = sender.room;
        let message = ServerMessage::E2ee {
            from: from.to_string(),
            data,
        };
        match to {
            Some(to) => {
                let target = ParticipantId::parse(to)
                    .filter(|id| *id != from)
                    .filter(|id| {
                        self.participants
                            .get(id)
                            .is_some_and(|p| p.room == room && p.e2ee)
                    })
                    .ok_or_else(|| {
                        refuse(
                            ErrorCode::UnknownParticipant,
                            format!(
                                "{to:.40} is not a participant of your room that joined with e2ee"
                            ),
                        )
                    })?;
                self.notify(target, message);
            }
            None => {
                let targets: Vec<ParticipantId> = self
                    .members_of(room)
                    .filter(|p| p.id != from && p.e2ee)
                    .map(|p| p.id)
                    .collect();
                for target in targets {
                    self.notify(target, message.clone());
                }
            }
        }
        Ok(())
    }
}
