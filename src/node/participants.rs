//! Participants and their signaling sessions, as the worker keeps them.
//!
//! Sessions follow DESIGN.md "Sessions": a dropped connection leaves the participant in the room
//! as `reconnecting` for the grace period; a new connection presenting the resume token takes it
//! back with the same participant id; a join with an identity already in the room replaces the
//! old participant, whose session is told why.

use super::command::{CommandReply, NodeCommand};
use super::output::NodeEvent;
use super::refusal::{Refusal, refuse};
use super::relay::Node;
use super::state::{Participant, RoomEntry, RoomKey};
use crate::media::codec::MediaKind;
use crate::media::ids::{ParticipantId, RoomId, TrackId};
use crate::media::room::{MemberInfo, MemberState, RoomError, TrackSource, Wish};
use crate::metrics::NodeStats;
use crate::webhooks::EventKind;
use std::time::Instant;
use tern_signaling::admin::RoomPolicy;
use tern_signaling::control::{
    Disconnect, JoinRefusal, JoinRequest, JoinVia, SessionEvent, SessionKey,
};
use tern_signaling::limits::{Limit, TokenBucket};
use tern_signaling::protocol::{
    ClientMessage, ErrorCode, LeaveReason, PROTOCOL_VERSION, ParticipantInfo, ParticipantState,
    ServerMessage, TrackInfo, TrackKind,
};
use tracing::{debug, info, warn};

/// The largest size a subscriber may name for a video it shows (16K is 15,360 pixels wide).
const MAX_WISHED_PIXELS: u32 = 16_384;

pub fn track_kind(kind: MediaKind) -> TrackKind {
    match kind {
        MediaKind::Audio => TrackKind::Audio,
        MediaKind::Video => TrackKind::Video,
    }
}

pub fn wire_source(source: TrackSource) -> tern_signaling::protocol::TrackSource {
    use tern_signaling::protocol::TrackSource as Wire;
    match source {
        TrackSource::Camera => Wire::Camera,
        TrackSource::Microphone => Wire::Microphone,
        TrackSource::Screen => Wire::Screen,
    }
}

pub fn room_source(source: tern_signaling::protocol::TrackSource) -> TrackSource {
    use tern_signaling::protocol::TrackSource as Wire;
    match source {
        Wire::Camera => TrackSource::Camera,
        Wire::Microphone => TrackSource::Microphone,
        Wire::Screen => TrackSource::Screen,
    }
}

impl Node {
    pub(super) fn run_command(&mut self, command: NodeCommand, now: Instant) -> CommandReply {
        match command {
            NodeCommand::Join(request) => CommandReply::Joined(self.join(request, now)),
            NodeCommand::Message { session, message } => {
                self.message(session, message, now);
                CommandReply::Done
            }
            NodeCommand::View {
                session,
                offer,
                follow,
            } => CommandReply::Viewed(
                self.view(session, offer, follow, now)
                    .map_err(|refusal| refusal.into_wire()),
            ),
            NodeCommand::Disconnected { session, how } => {
                self.disconnected(session, how, now);
                CommandReply::Done
            }
            NodeCommand::SessionLost(session) => {
                if let Some(id) = self.current(session) {
                    if self.over_http(id) {
                        warn!(participant = %id, "WHIP/WHEP session could not take its events; it ends");
                        self.remove_participant(id, LeaveReason::SlowConsumer, now);
                    } else {
                        warn!(participant = %id, "signaling session could not take its events; waiting for resume");
                        self.session_lost(id, now);
                    }
                }
                CommandReply::Done
            }
            NodeCommand::Admin(request) => CommandReply::Admin(self.admin(request, now)),
            NodeCommand::Stats => CommandReply::Stats(self.stats()),
            #[cfg(feature = "fault-injection")]
            NodeCommand::LegReports => CommandReply::LegReports(self.leg_reports(now)),
        }
    }

    #[cfg(feature = "fault-injection")]
    fn leg_reports(&mut self, now: Instant) -> Vec<super::command::LegReport> {
        use rtc::statistics::StatsSelector;
        self.legs
            .values_mut()
            .map(|leg| {
                let stats = leg.pc.get_stats(now, StatsSelector::None);
                let transport = stats.transport();
                super::command::LegReport {
                    participant: leg.participant.to_string(),
                    role: leg.role.as_str(),
                    ice_role: transport
                        .map(|t| t.ice_role.to_string())
                        .unwrap_or_default(),
                    selected_pair_changes: transport
                        .map(|t| t.selected_candidate_pair_changes)
                        .unwrap_or_default(),
                    srtp_cipher: transport.map(|t| t.srtp_cipher.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }

    pub(super) fn stats(&self) -> NodeStats {
        let mut stats = NodeStats {
            rooms: self.rooms.len() as u64,
            participants: self.participants.len() as u64,
            legs: self.legs.len() as u64,
            ..NodeStats::default()
        };
        for entry in self.rooms.values() {
            stats.rooms_at_budget += u64::from(entry.room.bandwidth().held_at_budget());
            for publication in entry.room.publications() {
                let subs = publication.subscriptions().len() as u64;
                match publication.kind() {
                    MediaKind::Audio => {
                        stats.audio_publications += 1;
                        stats.audio_subscriptions += subs;
                    }
                    MediaKind::Video => {
                        stats.video_publications += 1;
                        stats.video_subscriptions += subs;
                        stats.paused_subscriptions += publication
                            .subscriptions()
                            .iter()
                            .filter(|s| s.held_back())
                            .count() as u64;
                    }
                }
            }
        }
        stats
    }

    fn join(&mut self, request: JoinRequest, now: Instant) -> Result<SessionKey, JoinRefusal> {
        let room_name = RoomId(request.room.clone());
        if let Some(token) = &request.resume_token {
            return self.resume(token, &room_name, &request, now);
        }
        // An end-to-end encrypted room is refused before anything is made or replaced
        // for the join (a plain join with an encrypting participant's identity must not kick it).
        let e2ee_required = match self.room_keys.get(&room_name) {
            Some(key) => self.rooms.get(key).is_some_and(|e| e.policy.e2ee_required),
            None => self.config.room_defaults.e2ee_required,
        };
        if e2ee_required && !request.e2ee {
            return Err(JoinRefusal::E2eeRequired);
        }
        // A second join with the same identity replaces the first.
        let existing = self
            .room_keys
            .get(&room_name)
            .and_then(|room| {
                self.members_of(*room)
                    .find(|p| p.identity == request.identity)
            })
            .map(|p| p.id);
        if let Some(old) = existing {
            info!(identity = %request.identity, room = %room_name, "identity joined again; replacing");
            self.remove_participant(old, LeaveReason::Replaced, now);
        }
        let room_id = match self.room_keys.get(&room_name) {
            Some(key) => *key,
            None => {
                let policy = self.config.room_defaults.clone();
                self.create_room(room_name.clone(), policy, now).map_err(
                    |refused| match refused {
                        RoomRefused::NodeFull => JoinRefusal::TooManyRooms,
                        // Signaling routes the join again, to the worker holding the room.
                        RoomRefused::ElsewhereNow => JoinRefusal::Unavailable,
                    },
                )?
            }
        };
        let entry = self
            .rooms
            .get_mut(&room_id)
            .expect("room entry just ensured");
        if entry.room.member_count() >= entry.policy.max_participants as usize {
            self.metrics.limits.breached(Limit::RoomParticipants);
            return Err(JoinRefusal::RoomFull);
        }
        let id = loop {
            let candidate = ParticipantId(self.place.participant_id(rand::random::<u64>() >> 1));
            if !self.participants.contains_key(&candidate) {
                break candidate;
            }
        };
        entry
            .room
            .join(
                id,
                MemberInfo {
                    identity: request.identity.clone(),
                    name: request.name.clone(),
                    can_publish: request.grants.publish,
                    can_subscribe: request.grants.subscribe,
                },
            )
            .map_err(|_| JoinRefusal::Unavailable)?;
        entry.empty_since = None;
        entry.had_participants = true;
        let resume_token = self.resume_tokens.issue(id, None);
        let key = self.new_session_key(id);
        let joined_at = self.wall(now);
        self.participants.insert(
            id,
            Participant {
                id,
                room: room_id,
                identity: request.identity.clone(),
                name: request.name.clone(),
                grants: request.grants,
                session: Some(key),
                resume_token,
                publish_leg: None,
                subscribe_leg: None,
                renegotiate_at: None,
                last_offer_at: None,
                offers: TokenBucket::new(
                    self.config.max_offers_per_s,
                    self.config.max_offers_per_s.saturating_mul(3),
                    now,
                ),
                unreceivable: Default::default(),
                restart_subscribe_ice: false,
                data_rate: super::data::data_rate(),
                e2ee: request.e2ee,
                via: request.via,
                view: None,
                e2ee_rate: super::e2ee::e2ee_rate(),
                e2ee_broadcast_rate: super::e2ee::e2ee_broadcast_rate(),
                joined_at,
                quality: Default::default(),
                uplink_counts: (0, 0),
                quality_told: false,
                quality_due: now + super::quality::QUALITY_INTERVAL,
                awaiting_media: Some(now),
            },
        );
        self.arm_quality(now);
        info!(participant = %id, identity = %request.identity, room = %room_name, "joined");
        self.participant_event(EventKind::ParticipantJoined, id, None, now);
        // The subscribe leg (with the data channel) is set up right away: data and the first
        // media then need no further round trip. Without the subscribe grant there is none (and
        // so no data channel either: data rides the subscribe leg).
        // A WHEP viewer's leg waits for its own offer.
        if request.grants.subscribe && request.via != JoinVia::Whep {
            self.schedule_renegotiation(id, now);
        }
        self.send_joined(id, false, now);
        let info = self.participant_info(id);
        if let Some(info) = info {
            self.broadcast(
                room_id,
                Some(id),
                ServerMessage::ParticipantJoined { participant: info },
            );
        }
        self.process_room_outputs(room_id, now);
        Ok(key)
    }

    fn resume(
        &mut self,
        token: &str,
        room_name: &RoomId,
        request: &JoinRequest,
        now: Instant,
    ) -> Result<SessionKey, JoinRefusal> {
        let id = self
            .resume_tokens
            .participant(token)
            .ok_or(JoinRefusal::ResumeFailed)?;
        let participant = self
            .participants
            .get(&id)
            .ok_or(JoinRefusal::ResumeFailed)?;
        // The token proves identity and room; the resume token only picks the session.
        let room_id = participant.room;
        if self.room_keys.get(room_name) != Some(&room_id)
            || participant.identity != request.identity
        {
            return Err(JoinRefusal::ResumeFailed);
        }
        let key = self.new_session_key(id);
        // The presented token is spent: the `joined` of this connection carries the next one.
        let resume_token = self.resume_tokens.issue(id, Some(token));
        let participant = self.participants.get_mut(&id).expect("checked above");
        participant.resume_token = resume_token;
        participant.quality_told = false;
        let old = participant.session.replace(key);
        if let Some(old) = old {
            self.end_session(old, LeaveReason::Replaced);
        }
        let was_reconnecting = self
            .rooms
            .get(&room_id)
            .and_then(|e| e.room.member(id))
            .is_some_and(|m| matches!(m.state, MemberState::Reconnecting { .. }));
        if let Some(entry) = self.rooms.get_mut(&room_id) {
            entry.room.set_active(id);
        }
        info!(participant = %id, "session resumed");
        self.send_joined(id, true, now);
        if was_reconnecting {
            self.broadcast(
                room_id,
                Some(id),
                ServerMessage::ParticipantResumed {
                    participant_id: id.to_string(),
                },
            );
        }
        // The client may have resumed from another network: the relay restarts ICE on the
        // subscribe leg (the client restarts its publish leg itself). An offer still in flight
        // is sent again first; the restart follows its answer.
        let has_subscribe_leg = self
            .participants
            .get(&id)
            .is_some_and(|p| p.subscribe_leg.is_some());
        if has_subscribe_leg {
            if let Some(p) = self.participants.get_mut(&id) {
                p.restart_subscribe_ice = true;
            }
            if !self.resend_pending_subscribe_offer(id) {
                self.renegotiate_subscriber(id, now);
            }
        }
        self.process_room_outputs(room_id, now);
        Ok(key)
    }

    fn new_session_key(&mut self, id: ParticipantId) -> SessionKey {
        let connection = self.next_connection;
        self.next_connection += 1;
        SessionKey {
            participant: id.0,
            connection,
        }
    }

    /// The participant this session currently speaks for, if it is still the live one.
    pub(super) fn current(&self, session: SessionKey) -> Option<ParticipantId> {
        let id = ParticipantId(session.participant);
        let p = self.participants.get(&id)?;
        (p.session? == session).then_some(id)
    }

    fn message(&mut self, session: SessionKey, message: ClientMessage, now: Instant) {
        let Some(id) = self.current(session) else {
            return; // a replaced or closed connection: ignore
        };
        let kind = message.kind();
        let result = match message {
            ClientMessage::PublishOffer { sdp, tracks } => {
                let allowed = self
                    .participants
                    .get_mut(&id)
                    .is_some_and(|p| p.offers.take(now));
                if allowed {
                    self.publish_offer(id, sdp, tracks, now)
                } else {
                    self.metrics.limits.breached(Limit::OfferRate);
                    Err(refuse(
                        ErrorCode::RateLimited,
                        format!(
                            "at most {} publish offers a second; send it again later",
                            self.config.max_offers_per_s
                        ),
                    ))
                }
            }
            ClientMessage::SubscribeAnswer { sdp } => self.subscribe_answer(id, sdp, now),
            ClientMessage::Trickle { leg, candidate } => self.trickle(id, leg, candidate),
            ClientMessage::SetMuted { track_id, muted } => self.set_muted(id, &track_id, muted),
            ClientMessage::Leave {} => {
                self.remove_participant(id, LeaveReason::Left, now);
                Ok(())
            }
            ClientMessage::Ping { timestamp } => {
                self.notify(id, ServerMessage::Pong { timestamp });
                Ok(())
            }
            ClientMessage::UpdateSubscription {
                track_id,
                paused,
                max_width,
                max_height,
            } => self.update_subscription(id, &track_id, paused, max_width, max_height, now),
            ClientMessage::E2ee { to, data } => self.e2ee_message(id, to.as_deref(), data, now),
        };
        if let Err(refusal) = result {
            let (code, text) = refusal.into_wire();
            self.notify(id, ServerMessage::error_for(code, kind, text));
        }
    }

    /// A subscriber's wish for one video track it receives (`update_subscription`).
    fn update_subscription(
        &mut self,
        id: ParticipantId,
        track_id: &str,
        paused: bool,
        max_width: Option<u32>,
        max_height: Option<u32>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let unknown = || {
            refuse(
                ErrorCode::UnknownTrack,
                format!("{track_id:.40} is not a video track you receive"),
            )
        };
        let track = TrackId::parse(track_id).ok_or_else(unknown)?;
        let room_id = self
            .participants
            .get(&id)
            .map(|p| p.room)
            .ok_or_else(unknown)?;
        // A size of 0 would ask for nothing; the limit keeps the arithmetic far from overflow.
        let bad_size = |v: Option<u32>| v.is_some_and(|v| v == 0 || v > MAX_WISHED_PIXELS);
        if bad_size(max_width) || bad_size(max_height) {
            return Err(refuse(
                ErrorCode::MalformedMessage,
                format!("max_width and max_height are 1 to {MAX_WISHED_PIXELS} pixels"),
            ));
        }
        let max_size = match (max_width, max_height) {
            (None, None) => None,
            (w, h) => Some((w.unwrap_or(u32::MAX), h.unwrap_or(u32::MAX))),
        };
        let wish = Wish { paused, max_size };
        let entry = self.rooms.get_mut(&room_id).ok_or_else(unknown)?;
        entry
            .room
            .set_wish(track, id, wish, now)
            .map_err(|_| unknown())?;
        self.process_room_outputs(room_id, now);
        Ok(())
    }

    fn set_muted(&mut self, id: ParticipantId, track_id: &str, muted: bool) -> Result<(), Refusal> {
        let unknown = || {
            refuse(
                ErrorCode::UnknownTrack,
                format!("{track_id:.40} is not one of your tracks"),
            )
        };
        let track = TrackId::parse(track_id).ok_or_else(unknown)?;
        let room_id = self
            .participants
            .get(&id)
            .map(|p| p.room)
            .ok_or_else(unknown)?;
        // Not announced yet (its leg is still connecting): the mute goes with the announcement.
        let publish_leg = self.participants.get(&id).and_then(|p| p.publish_leg);
        if let Some(pending) = publish_leg
            .and_then(|k| self.legs.get_mut(&k))
            .and_then(|l| l.publish())
            .and_then(|s| s.mids.iter_mut().find(|m| m.track == track && !m.announced))
        {
            pending.muted_before_announced = muted;
            return Ok(());
        }
        let entry = self.rooms.get_mut(&room_id).ok_or_else(unknown)?;
        let owner = entry.room.publication(track).map(|p| p.info.owner);
        if owner != Some(id) {
            return Err(unknown());
        }
        entry.room.set_muted(track, muted).map_err(|e| match e {
            RoomError::NotAllowed => refuse(
                ErrorCode::NotAllowed,
                "an operator muted this track; only an operator can unmute it",
            ),
            _ => unknown(),
        })?;
        // Muting a track an operator muted already is allowed, and it stays theirs.
        let admin_muted = entry.room.publication(track).is_some_and(|p| p.admin_muted);
        self.broadcast(
            room_id,
            None,
            ServerMessage::TrackMuted {
                track_id: track.to_string(),
                participant_id: id.to_string(),
                muted,
                admin_muted,
            },
        );
        Ok(())
    }

    pub(super) fn disconnected(&mut self, session: SessionKey, how: Disconnect, now: Instant) {
        let Some(id) = self.current(session) else {
            return;
        };
        // A WHIP or WHEP session cannot resume: its end is the participant's.
        if self.over_http(id) {
            info!(participant = %id, ?how, "WHIP/WHEP session ended");
            self.remove_participant(id, LeaveReason::Left, now);
            return;
        }
        info!(participant = %id, ?how, "signaling dropped; waiting for resume");
        self.session_lost(id, now);
    }

    /// Whether `id` came over WHIP or WHEP (no WebSocket, no resume).
    fn over_http(&self, id: ParticipantId) -> bool {
        self.participants
            .get(&id)
            .is_some_and(|p| p.via != JoinVia::WebSocket)
    }

    /// The participant's signaling connection is gone: it stays in the room, reconnecting, until
    /// it resumes or the grace period ends.
    pub(super) fn session_lost(&mut self, id: ParticipantId, now: Instant) {
        let grace = self.config.resume_grace;
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.session = None;
        let room_id = p.room;
        if let Some(entry) = self.rooms.get_mut(&room_id) {
            entry.room.set_reconnecting(id, now + grace);
        }
        self.arm_room_timer(room_id, now);
        self.broadcast(
            room_id,
            Some(id),
            ServerMessage::ParticipantReconnecting {
                participant_id: id.to_string(),
            },
        );
    }

    /// Removes a participant for good: its tracks, legs and session; everybody else is told.
    pub(super) fn remove_participant(
        &mut self,
        id: ParticipantId,
        reason: LeaveReason,
        now: Instant,
    ) {
        if self.config.webhooks {
            let room = self.participants.get(&id).map(|p| p.room);
            let tracks: Vec<TrackInfo> = room
                .and_then(|r| self.rooms.get(&r).map(|e| (r, e)))
                .map(|(r, e)| {
                    e.room
                        .publications_of(id)
                        .filter_map(|p| self.track_info(r, p.id))
                        .collect()
                })
                .unwrap_or_default();
            for track in &tracks {
                self.track_event(EventKind::TrackUnpublished, id, track, now);
            }
            self.participant_event(EventKind::ParticipantLeft, id, Some(reason), now);
        }
        let Some(participant) = self.participants.remove(&id) else {
            return;
        };
        info!(participant = %id, identity = %participant.identity, ?reason, "left");
        self.resume_tokens.revoke(&participant.resume_token);
        for leg in [participant.publish_leg, participant.subscribe_leg]
            .into_iter()
            .flatten()
        {
            self.close_leg(leg);
        }
        if let Some(session) = participant.session {
            self.end_session(session, reason);
        }
        let room_id = participant.room;
        let unpublished = match self.rooms.get_mut(&room_id) {
            Some(entry) => {
                let tracks = entry.room.leave(id).unwrap_or_default();
                if entry.room.is_empty() {
                    entry.empty_since = Some(now);
                }
                tracks
            }
            None => Vec::new(),
        };
        for track in unpublished {
            self.broadcast(
                room_id,
                None,
                ServerMessage::TrackUnpublished {
                    track_id: track.to_string(),
                    participant_id: id.to_string(),
                },
            );
        }
        self.broadcast(
            room_id,
            None,
            ServerMessage::ParticipantLeft {
                participant_id: id.to_string(),
                reason,
            },
        );
        self.process_room_outputs(room_id, now);
    }

    /// A new, empty room, unless the worker holds its maximum number of rooms or the room was
    /// placed on another worker meanwhile (see `placement`).
    pub(super) fn create_room(
        &mut self,
        name: RoomId,
        policy: RoomPolicy,
        now: Instant,
    ) -> Result<RoomKey, RoomRefused> {
        if self.rooms.len() >= self.config.max_rooms {
            self.metrics.limits.breached(Limit::NodeRooms);
            warn!(room = %name, "room refused: the node holds its maximum number of rooms");
            return Err(RoomRefused::NodeFull);
        }
        if !self.place.placement.claim(&name.0, self.place.index) {
            debug!(room = %name, "room is on another worker now; the join is routed again");
            return Err(RoomRefused::ElsewhereNow);
        }
        let key = RoomKey(self.next_room);
        self.next_room += 1;
        self.room_keys.insert(name.clone(), key);
        info!(room = %name, "room created");
        let wall = self.wall(now);
        let entry = RoomEntry::new(
            name,
            policy,
            self.config.keyframe_interval,
            self.config.bandwidth_estimation,
            now,
            wall,
        );
        self.rooms.insert(key, entry);
        self.room_event(EventKind::RoomStarted, key, now);
        self.arm_room_timer(key, now);
        Ok(key)
    }

    /// Forgets a room (its participants must be gone already).
    pub(super) fn close_room(&mut self, key: RoomKey, now: Instant) {
        self.room_event(EventKind::RoomFinished, key, now);
        if let Some(entry) = self.rooms.remove(&key) {
            info!(room = %entry.room.id(), "room closed");
            self.room_keys.remove(entry.room.id());
            self.place
                .placement
                .release(&entry.room.id().0, self.place.index);
        }
    }

    /// Sends one event to one participant's session, if it has one. (The driver closes a
    /// session that cannot keep up and reports it lost: state events are never dropped, the
    /// client resumes and gets the full state again.)
    pub(super) fn notify(&mut self, id: ParticipantId, message: ServerMessage) {
        let Some(session) = self.participants.get(&id).and_then(|p| p.session) else {
            return;
        };
        self.events.push_back(NodeEvent::Session {
            session,
            event: SessionEvent::Message(message),
        });
    }

    /// Tells a session why it ends (`closed`), and lets it go.
    fn end_session(&mut self, session: SessionKey, reason: LeaveReason) {
        self.events.push_back(NodeEvent::Session {
            session,
            event: SessionEvent::Close(reason),
        });
        self.events.push_back(NodeEvent::SessionEnded(session));
    }

    /// The participants of a room, from the room's own member table: the one index of
    /// membership (a participant's `room` points back).
    pub(super) fn members_of(&self, room: RoomKey) -> impl Iterator<Item = &Participant> + '_ {
        self.rooms
            .get(&room)
            .into_iter()
            .flat_map(|entry| entry.room.members())
            .filter_map(|member| self.participants.get(&member.id))
    }

    /// Sends one event to every participant of a room (but `except`).
    pub(super) fn broadcast(
        &mut self,
        room: RoomKey,
        except: Option<ParticipantId>,
        message: ServerMessage,
    ) {
        let targets: Vec<ParticipantId> = self
            .members_of(room)
            .filter(|p| Some(p.id) != except)
            .map(|p| p.id)
            .collect();
        for id in targets {
            self.notify(id, message.clone());
        }
    }

    pub(super) fn track_info(&self, room: RoomKey, track: TrackId) -> Option<TrackInfo> {
        let publication = self.rooms.get(&room)?.room.publication(track)?;
        Some(TrackInfo {
            id: track.to_string(),
            participant_id: publication.info.owner.to_string(),
            kind: track_kind(publication.kind()),
            source: wire_source(publication.info.source),
            muted: publication.muted(),
            admin_muted: publication.admin_muted,
            codec: Some(publication.info.codec.mime_type().to_owned()),
            mid: None,
            stream_id: None,
        })
    }

    pub(super) fn participant_info(&self, id: ParticipantId) -> Option<ParticipantInfo> {
        let p = self.participants.get(&id)?;
        let entry = self.rooms.get(&p.room)?;
        let member = entry.room.member(id)?;
        let mut tracks: Vec<TrackInfo> = entry
            .room
            .publications_of(id)
            .filter_map(|publication| self.track_info(p.room, publication.id))
            .collect();
        tracks.sort_by(|a, b| a.id.cmp(&b.id));
        Some(ParticipantInfo {
            id: id.to_string(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            state: match member.state {
                MemberState::Active => ParticipantState::Active,
                MemberState::Reconnecting { .. } => ParticipantState::Reconnecting,
            },
            tracks,
            e2ee: p.e2ee,
        })
    }

    fn send_joined(&mut self, id: ParticipantId, resumed: bool, now: Instant) {
        let wall = self.wall(now);
        let Some(me) = self.participant_info(id) else {
            return;
        };
        let Some(p) = self.participants.get(&id) else {
            return;
        };
        let room = p.room;
        let resume_token = p.resume_token.clone();
        let identity = p.identity.clone();
        let mut others: Vec<ParticipantInfo> = self
            .members_of(room)
            .filter(|o| o.id != id)
            .filter_map(|o| self.participant_info(o.id))
            .collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        let room_name = self
            .rooms
            .get(&room)
            .map(|e| e.room.id().0.clone())
            .unwrap_or_default();
        let joined = ServerMessage::Joined {
            protocol: PROTOCOL_VERSION,
            room: room_name,
            participant: me,
            resume_token,
            resume_grace_s: self.config.resume_grace.as_secs(),
            resumed,
            participants: others,
            ice_servers: self.config.ice_servers.for_participant(&identity, wall),
        };
        self.notify(id, joined);
        let cap = self
            .rooms
            .get(&room)
            .map_or(0, |e| e.policy.max_publisher_kbps);
        if cap > 0 {
            self.notify(
                id,
                ServerMessage::PublishLimits {
                    max_video_kbps: Some(cap),
                },
            );
        }
        // After a resume: the layers of its tracks that nobody needs still.
        let demands: Vec<(TrackId, u8)> = self
            .rooms
            .get(&room)
            .map(|e| {
                e.room
                    .publications_of(id)
                    .filter_map(|p| e.room.told_demand(p.id).map(|layers| (p.id, layers)))
                    .collect()
            })
            .unwrap_or_default();
        for (track, layers) in demands {
            self.notify(
                id,
                ServerMessage::VideoDemand {
                    track_id: track.to_string(),
                    layers: Some(u32::from(layers)),
                },
            );
        }
        // Who speaks already: the room tells only changes, so a newcomer would otherwise see
        // nobody speaking until the list next changed.
        let speakers: Vec<String> = self
            .rooms
            .get(&room)
            .map(|e| {
                e.room
                    .active_speakers()
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .unwrap_or_default();
        if !speakers.is_empty() {
            self.notify(
                id,
                ServerMessage::ActiveSpeakers {
                    participant_ids: speakers,
                },
            );
        }
    }

    /// Tells every publisher of a room the room's cap on its video (after a change).
    pub(super) fn tell_publish_limits(&mut self, room: RoomKey) {
        let Some(cap) = self.rooms.get(&room).map(|e| e.policy.max_publisher_kbps) else {
            return;
        };
        let publishers: Vec<ParticipantId> = self
            .members_of(room)
            .filter(|p| p.grants.publish)
            .map(|p| p.id)
            .collect();
        for id in publishers {
            self.notify(
                id,
                ServerMessage::PublishLimits {
                    max_video_kbps: (cap > 0).then_some(cap),
                },
            );
        }
    }
}

/// Why a room was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoomRefused {
    /// The worker holds `room.max_rooms` rooms.
    NodeFull,
    /// Another worker holds the room now (it was closed here and placed there meanwhile).
    ElsewhereNow,
}
