//! Turning what happens in rooms into webhook events (see `crate::webhooks`). Only called on
//! the control path (joins, leaves, publications), never per packet.

use super::worker::{RoomKey, Worker};
use crate::media::ids::ParticipantId;
use crate::webhooks::{Event, EventKind, EventParticipant, EventTrack};
use tern_signaling::protocol::{LeaveReason, TrackInfo};

impl Worker {
    fn room_name(&self, room: RoomKey) -> Option<String> {
        self.rooms.get(&room).map(|e| e.room.id().0.clone())
    }

    pub(super) fn room_event(&self, kind: EventKind, room: RoomKey) {
        if !self.webhooks.is_enabled() {
            return;
        }
        if let Some(name) = self.room_name(room) {
            self.webhooks.emit(Event::new(kind, &name));
        }
    }

    fn event_participant(&self, id: ParticipantId) -> Option<(RoomKey, EventParticipant)> {
        let p = self.participants.get(&id)?;
        Some((
            p.room,
            EventParticipant {
                id: id.to_string(),
                identity: p.identity.clone(),
                name: p.name.clone(),
            },
        ))
    }

    /// Participant events; for `ParticipantLeft` call before the participant is forgotten.
    pub(super) fn participant_event(
        &self,
        kind: EventKind,
        id: ParticipantId,
        reason: Option<LeaveReason>,
    ) {
        if !self.webhooks.is_enabled() {
            return;
        }
        let Some((room, participant)) = self.event_participant(id) else {
            return;
        };
        let Some(name) = self.room_name(room) else {
            return;
        };
        let mut event = Event::new(kind, &name);
        event.participant = Some(participant);
        event.reason = reason;
        self.webhooks.emit(event);
    }

    /// Track events; `track` was read while the publication still existed.
    pub(super) fn track_event(&self, kind: EventKind, owner: ParticipantId, track: &TrackInfo) {
        if !self.webhooks.is_enabled() {
            return;
        }
        let Some((room, participant)) = self.event_participant(owner) else {
            return;
        };
        let Some(name) = self.room_name(room) else {
            return;
        };
        let mut event = Event::new(kind, &name);
        event.participant = Some(participant);
        event.track = Some(EventTrack {
            id: track.id.clone(),
            kind: track.kind,
            source: track.source,
            codec: track.codec.clone().unwrap_or_default(),
        });
        self.webhooks.emit(event);
    }
}
