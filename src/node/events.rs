//! Turning what happens in rooms into webhook events (see `crate::webhooks`). Only called on
//! the control path (joins, leaves, publications), never per packet.

use super::output::NodeEvent;
use super::relay::Node;
use super::state::RoomKey;
use crate::media::ids::ParticipantId;
use crate::webhooks::{Event, EventKind, EventParticipant, EventTrack};
use std::time::Instant;
use tern_signaling::protocol::{LeaveReason, TrackInfo};

impl Node {
    fn room_name(&self, room: RoomKey) -> Option<String> {
        self.rooms.get(&room).map(|e| e.room.id().0.clone())
    }

    pub(super) fn room_event(&mut self, kind: EventKind, room: RoomKey, now: Instant) {
        if !self.config.webhooks {
            return;
        }
        if let Some(name) = self.room_name(room) {
            let event = Event::new(kind, &name, self.wall(now));
            self.events.push_back(NodeEvent::Webhook(event));
        }
    }

    /// An event about one participant of a room, `None` when either is gone.
    fn participant_event_of(
        &self,
        kind: EventKind,
        id: ParticipantId,
        now: Instant,
    ) -> Option<Event> {
        let p = self.participants.get(&id)?;
        let mut event = Event::new(kind, &self.room_name(p.room)?, self.wall(now));
        event.participant = Some(EventParticipant {
            id: id.to_string(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            via: p.via.as_str(),
        });
        Some(event)
    }

    /// Participant events; for `ParticipantLeft` call before the participant is forgotten.
    pub(super) fn participant_event(
        &mut self,
        kind: EventKind,
        id: ParticipantId,
        reason: Option<LeaveReason>,
        now: Instant,
    ) {
        if !self.config.webhooks {
            return;
        }
        if let Some(mut event) = self.participant_event_of(kind, id, now) {
            event.reason = reason;
            self.events.push_back(NodeEvent::Webhook(event));
        }
    }

    /// Track events; `track` was read while the publication still existed.
    pub(super) fn track_event(
        &mut self,
        kind: EventKind,
        owner: ParticipantId,
        track: &TrackInfo,
        now: Instant,
    ) {
        if !self.config.webhooks {
            return;
        }
        if let Some(mut event) = self.participant_event_of(kind, owner, now) {
            event.track = Some(EventTrack {
                id: track.id.clone(),
                kind: track.kind,
                source: track.source,
                codec: track.codec.clone().unwrap_or_default(),
            });
            self.events.push_back(NodeEvent::Webhook(event));
        }
    }
}
