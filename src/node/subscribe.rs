//! The subscribe leg: the relay offers whenever the tracks a participant should receive change,
//! debounced, with at most one offer in flight. A removed track leaves its m-line inactive and a
//! later track of the same kind reuses it, so the SDP does not grow without bound. A track whose
//! format the subscriber cannot receive is not forwarded, and the subscriber is told.

use super::data::DATA_CHANNEL_LABEL;
use super::demux::LegKey;
use super::formats::{self, rtp_kind};
use super::leg::{LegMedia, OutboundSlot, mid_extension, negotiated_extensions, sink_id};
use super::refusal::{Refusal, refuse};
use super::relay::{Node, flush_leg};
use super::role::LegRole;
use super::sdp::{self, Section};
use crate::media::extmap::{ExtensionIds, ExtensionTranslator};
use crate::media::ids::{ParticipantId, TrackId};
use crate::media::rewrite::RewriteTarget;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverId};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;
use tern_signaling::limits::Limit;
use tern_signaling::protocol::{ErrorCode, ServerMessage, TrackInfo};
use tracing::{debug, warn};

/// Chunk size of a slot's arena for renumbered VP8 payloads (about a dozen packets).
const RENUMBERED_CHUNK_BYTES: usize = 16 * 1024;

impl Node {
    /// Brings the subscribe leg in line with the tracks the participant should receive and
    /// sends a new offer if anything changed. Does nothing while an offer is in flight (the
    /// answer triggers the next round).
    /// A pending ICE restart (after a resume) goes with the next offer, with fresh credentials.
    pub(super) fn renegotiate_subscriber(&mut self, id: ParticipantId, now: Instant) {
        let Some(participant) = self.participants.get_mut(&id) else {
            return;
        };
        // A WHEP viewer is never offered anything: its m-lines are re-pointed instead.
        if participant.via == tern_signaling::control::JoinVia::Whep {
            self.refollow_view(id, now);
            return;
        }
        participant.renegotiate_at = None;
        // Offers are spaced: another participant's churn cannot renegotiate this one more often.
        if let Some(last) = participant.last_offer_at {
            let earliest = last + self.config.renegotiation_interval;
            if now < earliest {
                self.schedule_renegotiation(id, earliest);
                return;
            }
        }
        let grants = participant.grants;
        if !grants.subscribe && !grants.publish_data {
            return;
        }
        let room_id = participant.room;
        let existing = participant.subscribe_leg;
        if let Some(leg) = existing.and_then(|k| self.legs.get_mut(&k))
            && leg.subscribe().is_some_and(|s| s.offer_in_flight)
        {
            return;
        }
        let restart_ice =
            std::mem::take(&mut participant.restart_subscribe_ice) && existing.is_some();
        let new_credentials = restart_ice || existing.is_none();
        let unreceivable = self
            .participants
            .get(&id)
            .map(|p| p.unreceivable.clone())
            .unwrap_or_default();
        let desired: Vec<TrackId> = self
            .rooms
            .get(&room_id)
            .map(|e| e.room.subscribed_tracks(id))
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !unreceivable.contains(t))
            .collect();
        let key = match existing {
            Some(key) => key,
            None => match self.new_leg(id, LegRole::Subscribe, now) {
                Ok(key) => {
                    if let Some(p) = self.participants.get_mut(&id) {
                        p.subscribe_leg = Some(key);
                    }
                    self.open_data_channel(key);
                    key
                }
                Err(refusal) => {
                    warn!(participant = %id, "cannot create subscribe leg: {}", refusal.text());
                    return;
                }
            },
        };
        // Retire what is no longer wanted. Its m-line stays `sendonly`, carrying nothing, until a
        // new track of its kind takes it over: GStreamer up to 1.22 cannot take an m-line back
        // from `inactive`, and an m-line per track ever published would grow without bound.
        let on_leg: Vec<(usize, TrackId)> = self
            .legs
            .get_mut(&key)
            .and_then(|l| l.subscribe())
            .map(|s| {
                s.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().filter(|s| !s.retired).map(|s| (i, s.track)))
                    .collect()
            })
            .unwrap_or_default();
        let mut changed = existing.is_none() || restart_ice;
        for (index, track) in &on_leg {
            if desired.contains(track) {
                continue;
            }
            changed = true;
            if let Some(entry) = self.rooms.get_mut(&room_id) {
                entry.room.detach(*track, id);
            }
            if let Some(Some(slot)) = self
                .legs
                .get_mut(&key)
                .and_then(|l| l.subscribe())
                .and_then(|s| s.slots.get_mut(*index))
            {
                slot.retired = true;
            }
        }
        // Add what is new.
        for track in &desired {
            if on_leg.iter().any(|(_, t)| t == track) {
                continue;
            }
            let Some(publisher) = self.owner_of(room_id, *track) else {
                continue;
            };
            changed = true;
            if let Err(refusal) = self.add_outbound_slot(key, *track, publisher) {
                let (code, text) = refusal.into_wire();
                self.codec_not_receivable(id, *track, code, text);
            }
        }
        if !changed {
            return;
        }
        if restart_ice && let Some(leg) = self.legs.get_mut(&key) {
            leg.pc.restart_ice();
        }
        if new_credentials && let Some(state) = self.legs.get_mut(&key).and_then(|l| l.subscribe())
        {
            state.awaiting_credentials = true;
        }
        self.send_subscribe_offer(id, key, now);
    }

    /// The leg can answer checks now: the ones that came before its answer get their responses.
    fn replay_early_checks(&mut self, key: LegKey, now: Instant) {
        let Some(state) = self.legs.get_mut(&key).and_then(|l| l.subscribe()) else {
            return;
        };
        state.awaiting_credentials = false;
        for mut check in std::mem::take(&mut state.early_checks) {
            check.now = now;
            self.leg_input(key, Some(check), now);
        }
    }

    /// Opens the relay's `tern` data channel on a new subscribe leg (part of its first offer).
    fn open_data_channel(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let init = rtc::data_channel::RTCDataChannelInit {
            ordered: true,
            ..Default::default()
        };
        match leg.pc.create_data_channel(DATA_CHANNEL_LABEL, Some(init)) {
            Ok(channel) => {
                let id = channel.id();
                if let Some(state) = leg.subscribe() {
                    state.data_channel = Some(id);
                }
            }
            Err(e) => warn!("cannot open the data channel: {e}"),
        }
    }

    fn codec_not_receivable(
        &mut self,
        id: ParticipantId,
        track: TrackId,
        code: ErrorCode,
        text: String,
    ) {
        debug!(participant = %id, %track, "{text}");
        if let Some(p) = self.participants.get_mut(&id) {
            p.unreceivable.insert(track);
        }
        self.notify(
            id,
            ServerMessage::Error {
                code,
                message: text,
                request: None,
                track_id: Some(track.to_string()),
            },
        );
    }

    fn add_outbound_slot(
        &mut self,
        key: LegKey,
        track: TrackId,
        publisher: ParticipantId,
    ) -> Result<(), Refusal> {
        let published = self.publication_format(publisher, track).ok_or_else(|| {
            Refusal::internal(
                "adding a track to the subscribe leg",
                "publication has no format",
            )
        })?;
        let format = formats::find(published.codec, &published.fmtp).ok_or_else(|| {
            refuse(
                ErrorCode::CodecNotReceivable,
                format!(
                    "{} ({}) cannot be offered",
                    published.codec.mime_type(),
                    published.fmtp
                ),
            )
        })?;
        let codec = formats::parameters(
            &format,
            LegRole::Subscribe,
            self.config.engine.subscriber_feedback,
        )
        .rtp_codec;
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| Refusal::internal("adding a track to the subscribe leg", "leg gone"))?;
        let accepted = leg
            .subscribe()
            .and_then(|s| s.accepted(format.codec.kind()).map(<[u8]>::to_vec));
        let preferences = formats::subscribe_preferences(
            &format,
            accepted.as_deref(),
            self.config.engine.subscriber_feedback,
        )
        .ok_or_else(|| {
            refuse(
                ErrorCode::CodecNotReceivable,
                format!(
                    "your subscribe connection did not accept {} ({}) when it first \
                         answered; it is not forwarded to you",
                    format.codec.mime_type(),
                    format.fmtp
                ),
            )
        })?;
        // A retired m-line of this kind is taken over: its sender goes, and `add_track` puts the
        // new one on the same transceiver (same mid, new SSRC and msid).
        let kind = format.codec.kind();
        let retired = leg.subscribe().and_then(|s| {
            let index = s.slots.iter().position(|slot| {
                slot.as_ref()
                    .is_some_and(|slot| slot.retired && slot.codec.kind() == kind)
            })?;
            s.slots[index].take()
        });
        if let Some(retired) = &retired
            && let Err(e) = leg.pc.remove_track(retired.sender)
        {
            debug!("remove_track: {e}");
        }
        let ssrc = rand::random::<u32>();
        let media_track = MediaStreamTrack::new(
            // One msid stream per publishing participant keeps its audio and video in sync.
            publisher.to_string(),
            track.to_string(),
            track.to_string(),
            rtp_kind(format.codec.kind()),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        let sender = leg.pc.add_track(media_track).map_err(|e| {
            refuse(
                ErrorCode::CodecNotReceivable,
                format!(
                    "your subscribe leg cannot receive {} ({}): {e}",
                    format.codec.mime_type(),
                    format.fmtp
                ),
            )
        })?;
        let transceiver = RTCRtpTransceiverId::from(sender);
        // The relay only sends on a subscribe leg (`add_track` would offer sendrecv).
        if let Some(mut transceiver) = leg.pc.rtp_transceiver(transceiver) {
            transceiver.set_direction(RTCRtpTransceiverDirection::Sendonly);
        }
        if let Some(mut transceiver) = leg.pc.rtp_transceiver(transceiver)
            && let Err(e) = transceiver.set_codec_preferences(preferences)
        {
            let _ = leg.pc.remove_track(sender);
            return Err(refuse(
                ErrorCode::CodecNotReceivable,
                format!(
                    "your subscribe connection cannot receive {}: {e}",
                    format.codec.mime_type()
                ),
            ));
        }
        let state = leg.subscribe().ok_or_else(|| {
            Refusal::internal("adding a track to the subscribe leg", "not a subscribe leg")
        })?;
        state
            .insert(OutboundSlot {
                track,
                publisher,
                codec: format.codec,
                payload_type: format.payload_type,
                sender,
                ssrc,
                mid: None,
                rewrite: None,
                packets_sent: 0,
                octets_sent: 0,
                attached: false,
                retired: false,
                renumbered: super::arena::Arena::new(RENUMBERED_CHUNK_BYTES),
            })
            .ok_or_else(|| refuse(ErrorCode::LimitExceeded, "subscribe leg is full"))?;
        Ok(())
    }

    fn send_subscribe_offer(&mut self, id: ParticipantId, key: LegKey, now: Instant) {
        if let Some(p) = self.participants.get_mut(&id) {
            p.last_offer_at = Some(now);
        }
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let pc = &mut leg.pc;
        let offered = catch_unwind(AssertUnwindSafe(|| {
            let offer = pc.create_offer(None)?;
            pc.set_local_description(now, offer)?;
            Ok::<_, rtc::shared::error::Error>(pc.local_description().map(|d| d.sdp))
        }));
        let sdp = match offered {
            Ok(Ok(Some(sdp))) => sdp,
            other => {
                warn!(participant = %id, "cannot create subscribe offer: {:?}",
                    other.map(|r| r.err().map(|e| e.to_string())));
                return;
            }
        };
        // Mids are fixed once the offer is created.
        let senders: Vec<(usize, rtc::rtp_transceiver::RTCRtpSenderId)> = leg
            .subscribe()
            .map(|s| {
                s.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.sender)))
                    .collect()
            })
            .unwrap_or_default();
        let mids: Vec<(usize, Option<String>)> = senders
            .into_iter()
            .map(|(i, sender)| {
                let mid = leg
                    .pc
                    .rtp_transceiver(RTCRtpTransceiverId::from(sender))
                    .and_then(|t| t.mid().clone());
                (i, mid)
            })
            .collect();
        if let Some(state) = leg.subscribe() {
            for (i, mid) in mids {
                if let Some(Some(slot)) = state.slots.get_mut(i) {
                    slot.mid = mid;
                }
            }
            state.offer_in_flight = true;
        }
        flush_leg(leg, &mut self.transmits);
        self.sync_ufrag(key);
        self.arm_timer(key);
        self.send_offer_message(id, key, sdp);
    }

    fn send_offer_message(&mut self, id: ParticipantId, key: LegKey, sdp: String) {
        let new_connection = !self
            .legs
            .get_mut(&key)
            .and_then(|l| l.subscribe())
            .is_some_and(|s| s.answered);
        let tracks = self.subscribed_track_infos(id, key);
        self.notify(
            id,
            ServerMessage::SubscribeOffer {
                sdp,
                tracks,
                new_connection,
            },
        );
    }

    fn subscribed_track_infos(&mut self, id: ParticipantId, key: LegKey) -> Vec<TrackInfo> {
        let Some(room) = self.participants.get(&id).map(|p| p.room) else {
            return Vec::new();
        };
        let slots: Vec<(TrackId, ParticipantId, Option<String>)> = self
            .legs
            .get_mut(&key)
            .and_then(|l| l.subscribe())
            .map(|s| {
                s.tracks()
                    .map(|t| (t.track, t.publisher, t.mid.clone()))
                    .collect()
            })
            .unwrap_or_default();
        slots
            .into_iter()
            .filter_map(|(track, publisher, mid)| {
                let mut info = self.track_info(room, track)?;
                info.mid = mid;
                info.stream_id = Some(publisher.to_string());
                Some(info)
            })
            .collect()
    }

    /// On resume: the client may have missed the offer in flight, so send it again.
    pub(super) fn resend_pending_subscribe_offer(&mut self, id: ParticipantId) -> bool {
        let Some(key) = self.participants.get(&id).and_then(|p| p.subscribe_leg) else {
            return false;
        };
        let Some(leg) = self.legs.get_mut(&key) else {
            return false;
        };
        if !leg.subscribe().is_some_and(|s| s.offer_in_flight) {
            return false;
        }
        let Some(sdp) = leg.pc.pending_local_description().map(|d| d.sdp) else {
            return false;
        };
        self.send_offer_message(id, key, sdp);
        true
    }

    pub(super) fn subscribe_answer(
        &mut self,
        id: ParticipantId,
        sdp: String,
        now: Instant,
    ) -> Result<(), Refusal> {
        let key = self
            .participants
            .get(&id)
            .and_then(|p| p.subscribe_leg)
            .ok_or_else(|| refuse(ErrorCode::InvalidState, "no subscribe offer is outstanding"))?;
        if sdp.len() > self.config.max_sdp_bytes {
            self.metrics.limits.breached(Limit::SdpSize);
            return Err(refuse(ErrorCode::LimitExceeded, "SDP too large"));
        }
        self.check_media_sections(&sdp)?;
        let sdp = sdp::unify_bundle_credentials(&sdp).unwrap_or(sdp);
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| refuse(ErrorCode::InvalidState, "no subscribe leg"))?;
        if !leg.subscribe().is_some_and(|s| s.offer_in_flight)
            || leg.pc.pending_local_description().is_none()
        {
            return Err(refuse(
                ErrorCode::InvalidState,
                "no subscribe offer is outstanding",
            ));
        }
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot parse answer: {e}")))?;
        let sections = answer
            .unmarshal()
            .map(|parsed| sdp::sections(&parsed))
            .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot parse answer: {e}")))?;
        let pc = &mut leg.pc;
        let applied = catch_unwind(AssertUnwindSafe(|| pc.set_remote_description(now, answer)))
            .unwrap_or_else(|_| Err(rtc::shared::error::Error::Other("panic".into())));
        if let Err(e) = applied {
            // `rtc` may have left have-local-offer on the way (it moves to stable before it
            // validates): then the offer is spent, and a fresh one must follow, or this
            // participant would never be offered anything again.
            if leg.pc.pending_local_description().is_none() {
                if let Some(state) = leg.subscribe() {
                    state.offer_in_flight = false;
                }
                self.schedule_renegotiation(id, now + self.config.renegotiation_debounce);
            }
            return Err(refuse(
                ErrorCode::InvalidSdp,
                format!("answer refused: {e}"),
            ));
        }
        self.apply_subscribe_answer(id, key, &sections);
        if let Some(leg) = self.legs.get_mut(&key) {
            flush_leg(leg, &mut self.transmits);
        }
        self.arm_timer(key);
        self.replay_early_checks(key, now);
        self.attach_ready_slots(key, now);
        // Changes that arrived while the offer was in flight.
        let pending = self
            .participants
            .get(&id)
            .and_then(|p| self.rooms.get(&p.room))
            .map(|e| e.room.subscribed_tracks(id))
            .unwrap_or_default();
        let unreceivable = self
            .participants
            .get(&id)
            .map(|p| p.unreceivable.clone())
            .unwrap_or_default();
        let mut on_leg: Vec<TrackId> = self
            .legs
            .get_mut(&key)
            .and_then(|l| l.subscribe())
            .map(|s| s.tracks().map(|t| t.track).collect())
            .unwrap_or_default();
        on_leg.sort();
        let wanted: Vec<TrackId> = pending
            .into_iter()
            .filter(|t| !unreceivable.contains(t))
            .collect();
        if self
            .participants
            .get(&id)
            .is_some_and(|p| on_leg != wanted || p.restart_subscribe_ice)
        {
            self.schedule_renegotiation(id, now + self.config.renegotiation_debounce);
        }
        Ok(())
    }

    /// Caches what each slot needs per packet (payload type, extension ids, mid) from the
    /// applied answer, and tells the subscriber about tracks it cannot receive (`answer` is the
    /// answer's m-lines: a slot is receivable when its m-line lists the slot's payload type).
    fn apply_subscribe_answer(&mut self, id: ParticipantId, key: LegKey, answer: &[Section]) {
        let tracks: Vec<(TrackId, ParticipantId)> = self
            .legs
            .get_mut(&key)
            .and_then(|l| l.subscribe())
            .map(|s| s.tracks().map(|t| (t.track, t.publisher)).collect())
            .unwrap_or_default();
        let publisher_extensions: Vec<(TrackId, ExtensionIds)> = tracks
            .into_iter()
            .map(|(track, publisher)| (track, self.publisher_extensions(publisher)))
            .collect();
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let senders: Vec<(usize, rtc::rtp_transceiver::RTCRtpSenderId, bool)> = leg
            .subscribe()
            .map(|s| {
                s.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        let s = s.as_ref()?;
                        let receivable = answer.iter().any(|section| {
                            Some(&section.mid) == s.mid.as_ref()
                                && !section.rejected
                                && section.payload_types.contains(&s.payload_type)
                        });
                        Some((i, s.sender, receivable))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Extension ids are read per sender: a leg may negotiate an extension for one kind only.
        let mut negotiated: Vec<(usize, bool, ExtensionIds)> = Vec::new();
        for (index, sender, receivable) in &senders {
            let Some(mut s) = leg.pc.rtp_sender(*sender) else {
                negotiated.push((*index, false, ExtensionIds::default()));
                continue;
            };
            let params = s.get_parameters();
            let ids = negotiated_extensions(
                params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .map(|e| (e.id, e.uri.as_str())),
            );
            negotiated.push((*index, *receivable, ids));
        }
        let mut refused: Vec<(TrackId, String)> = Vec::new();
        if let Some(state) = leg.subscribe() {
            state.offer_in_flight = false;
            state.answered = true;
            for section in answer {
                if let Some(kind) = section.kind {
                    state.accept_once(kind, &section.payload_types);
                }
            }
            for (index, receivable, ids) in negotiated {
                let Some(Some(slot)) = state.slots.get_mut(index) else {
                    continue;
                };
                if !receivable {
                    slot.rewrite = None;
                    refused.push((slot.track, slot.codec.mime_type().to_owned()));
                    continue;
                }
                let publisher = publisher_extensions
                    .iter()
                    .find(|(t, _)| *t == slot.track)
                    .map(|(_, ids)| ids.clone())
                    .unwrap_or_default();
                slot.rewrite = Some(RewriteTarget {
                    ssrc: slot.ssrc,
                    payload_type: slot.payload_type,
                    mid_extension: mid_extension(&ids, slot.mid.as_deref()),
                    extensions: ExtensionTranslator::new(&publisher, &ids),
                });
            }
        }
        for (track, mime) in refused {
            self.codec_not_receivable(
                id,
                track,
                ErrorCode::CodecNotReceivable,
                format!("your answer does not accept {mime} for track {track}; it is not forwarded to you"),
            );
        }
    }

    /// Starts forwarding into every negotiated slot of a connected subscribe leg.
    pub(super) fn attach_ready_slots(&mut self, key: LegKey, now: Instant) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        if !leg.is_connected() {
            return;
        }
        let subscriber = leg.participant;
        let LegMedia::Subscribe(state) = &mut leg.media else {
            return;
        };
        let mut ready: Vec<(usize, TrackId)> = Vec::new();
        for (index, slot) in state.slots.iter_mut().enumerate() {
            if let Some(slot) = slot
                && slot.rewrite.is_some()
                && !slot.attached
                && !slot.retired
            {
                slot.attached = true;
                ready.push((index, slot.track));
            }
        }
        let Some(room) = self.participants.get(&subscriber).map(|p| p.room) else {
            return;
        };
        let Some(entry) = self.rooms.get_mut(&room) else {
            return;
        };
        for (index, track) in ready {
            let _ = entry.room.attach(
                track,
                subscriber,
                sink_id(key, index),
                rand::random(),
                rand::random(),
                now,
            );
        }
        self.process_room_outputs(room, now);
    }
}
