//! SDP negotiation of both legs.
//!
//! Publish leg: the client offers, the relay answers, and every sending m-line becomes (or stays)
//! a published track. Subscribe leg: the relay offers whenever the tracks a participant should
//! receive change, debounced, with at most one offer in flight; removed tracks leave their
//! m-line inactive and a later track of the same kind reuses it, so the SDP does not grow
//! without bound.

use super::demux::LegKey;
use super::engine::{IceCredentials, LegRole, host_candidate, new_peer_connection};
use super::leg::{
    Leg, LegMedia, OutboundSlot, PublishedMid, mid_extension, negotiated_extensions, sink_id,
};
use super::participants::{room_source, track_kind};
use super::sdp::{self, Section};
use super::worker::{Worker, flush_leg};
use crate::media::codec::{Codec, MediaKind};
use crate::media::extmap::{ExtensionIds, ExtensionTranslator};
use crate::media::ids::{ParticipantId, TrackId};
use crate::media::rewrite::RewriteTarget;
use crate::media::room::{PublicationInfo, RoomError};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::time::Instant;
use tern_signaling::protocol::{
    ErrorCode, IceCandidate, Leg as WireLeg, ServerMessage, TrackAnnouncement, TrackInfo,
};
use tracing::{debug, warn};

type Refusal = (ErrorCode, String);

fn refuse(code: ErrorCode, text: impl Into<String>) -> Refusal {
    (code, text.into())
}

fn rtp_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

/// Which publish m-lines carry which track, decided from the offer and the announcements.
struct PublishPlan {
    /// (mid, source, codec) for every m-line the client sends on.
    sending: Vec<(String, crate::media::room::TrackSource, Codec)>,
}

fn plan_publish(
    sections: &[Section],
    announcements: &[TrackAnnouncement],
) -> Result<PublishPlan, Refusal> {
    for (i, a) in announcements.iter().enumerate() {
        if announcements[..i].iter().any(|b| b.mid == a.mid) {
            return Err(refuse(
                ErrorCode::MalformedMessage,
                format!("mid {:.16} announced twice", a.mid),
            ));
        }
        if !sections
            .iter()
            .any(|s| s.mid == a.mid && s.direction.client_sends() && !s.rejected)
        {
            return Err(refuse(
                ErrorCode::InvalidSdp,
                format!(
                    "announced mid {:.16} is not a sending m-line of the offer",
                    a.mid
                ),
            ));
        }
    }
    let mut sending = Vec::new();
    for section in sections {
        if section.rejected || !section.direction.client_sends() {
            continue;
        }
        let Some(kind) = section.kind else {
            continue; // data channels are not media tracks
        };
        let Some(codec) = section.codec() else {
            return Err(refuse(
                ErrorCode::UnsupportedCodec,
                format!(
                    "m-line {:.16} offers no codec this relay forwards (it forwards audio/opus and video/VP8)",
                    section.mid
                ),
            ));
        };
        let source = match announcements.iter().find(|a| a.mid == section.mid) {
            Some(a) => {
                let source = room_source(a.source);
                if track_kind(kind) != a.source.kind() {
                    return Err(refuse(
                        ErrorCode::InvalidSdp,
                        format!(
                            "mid {:.16} is {} but announced as {:?}",
                            section.mid,
                            kind.as_str(),
                            a.source
                        ),
                    ));
                }
                source
            }
            None => match kind {
                MediaKind::Audio => crate::media::room::TrackSource::Microphone,
                MediaKind::Video => crate::media::room::TrackSource::Camera,
            },
        };
        sending.push((section.mid.clone(), source, codec));
    }
    Ok(PublishPlan { sending })
}

impl Worker {
    /// Creates a leg for a participant, registered in the demux table under a fresh ufrag.
    fn new_leg(
        &mut self,
        participant: ParticipantId,
        role: LegRole,
        now: Instant,
    ) -> Result<LegKey, Refusal> {
        let credentials = IceCredentials::random();
        let mut pc =
            new_peer_connection(role, &self.config.engine, &credentials, now).map_err(|e| {
                refuse(
                    ErrorCode::Internal,
                    format!("cannot create peer connection: {e}"),
                )
            })?;
        for addr in &self.config.advertised {
            let candidate = host_candidate(*addr)
                .map_err(|e| refuse(ErrorCode::Internal, format!("bad advertised address: {e}")))?;
            pc.add_local_candidate(candidate)
                .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        }
        // End of candidates: the relay has no others to trickle.
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
        let key = LegKey(self.next_leg);
        self.next_leg += 1;
        self.demux.add_ufrag(&credentials.ufrag, key);
        self.legs
            .insert(key, Leg::new(key, role, participant, pc, credentials.ufrag));
        Ok(key)
    }

    pub(super) fn publish_offer(
        &mut self,
        id: ParticipantId,
        sdp: String,
        announcements: Vec<TrackAnnouncement>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let participant = self
            .participants
            .get(&id)
            .ok_or_else(|| refuse(ErrorCode::Internal, "no participant"))?;
        if !participant.grants.publish {
            return Err(refuse(
                ErrorCode::NotAllowed,
                "your token does not grant publish",
            ));
        }
        if sdp.len() > self.config.max_sdp_bytes {
            return Err(refuse(
                ErrorCode::LimitExceeded,
                format!(
                    "SDP of {} bytes exceeds the limit of {}",
                    sdp.len(),
                    self.config.max_sdp_bytes
                ),
            ));
        }
        let room_id = participant.room;
        let existing_leg = participant.publish_leg;
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot parse offer: {e}")))?;
        let parsed = offer
            .unmarshal()
            .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot parse offer: {e}")))?;
        let plan = plan_publish(&sdp::sections(&parsed), &announcements)?;

        // Which published mids stay, which are new, which went away.
        let current: Vec<PublishedMid> = existing_leg
            .and_then(|k| self.legs.get_mut(&k))
            .and_then(|l| l.publish().map(|s| s.mids.clone()))
            .unwrap_or_default();
        let new_count = plan
            .sending
            .iter()
            .filter(|(mid, _, _)| !current.iter().any(|c| &c.mid == mid))
            .count();
        let kept = current
            .iter()
            .filter(|c| plan.sending.iter().any(|(mid, _, _)| *mid == c.mid))
            .count();
        if kept + new_count > self.config.max_tracks_per_participant {
            return Err(refuse(
                ErrorCode::LimitExceeded,
                format!(
                    "at most {} tracks per participant",
                    self.config.max_tracks_per_participant
                ),
            ));
        }
        for (mid, _, codec) in &plan.sending {
            if let Some(c) = current.iter().find(|c| &c.mid == mid)
                && c.codec != *codec
            {
                return Err(refuse(
                    ErrorCode::UnsupportedCodec,
                    format!(
                        "mid {mid:.16} cannot change codec from {} mid-call",
                        c.codec.mime_type()
                    ),
                ));
            }
        }

        let key = match existing_leg {
            Some(key) => key,
            None => self.new_leg(id, LegRole::Publish, now)?,
        };
        let applied = self.apply_publish_offer(key, offer, now);
        let answer_sdp = match applied {
            Ok(sdp) => sdp,
            Err(refusal) => {
                if existing_leg.is_none() {
                    self.close_leg(key);
                }
                return Err(refusal);
            }
        };
        if let Some(p) = self.participants.get_mut(&id) {
            p.publish_leg = Some(key);
        }

        // Tracks: keep, add, remove.
        let mut mids: Vec<PublishedMid> = Vec::new();
        let mut added: Vec<TrackId> = Vec::new();
        let mut removed: Vec<TrackId> = Vec::new();
        for c in &current {
            if !plan.sending.iter().any(|(mid, _, _)| *mid == c.mid) {
                removed.push(c.track);
            }
        }
        for (mid, source, codec) in &plan.sending {
            if let Some(c) = current.iter().find(|c| &c.mid == mid) {
                mids.push(c.clone());
                continue;
            }
            let track = TrackId(rand::random::<u64>() >> 1);
            let entry = self
                .rooms
                .get_mut(&room_id)
                .ok_or_else(|| refuse(ErrorCode::Internal, "room gone"))?;
            match entry.room.publish(
                track,
                PublicationInfo {
                    owner: id,
                    source: *source,
                    codec: *codec,
                },
            ) {
                Ok(()) => {}
                Err(RoomError::NotAllowed) => {
                    return Err(refuse(ErrorCode::NotAllowed, "publish not granted"));
                }
                Err(err) => return Err(refuse(ErrorCode::Internal, format!("{err:?}"))),
            }
            mids.push(PublishedMid {
                mid: mid.clone(),
                track,
                codec: *codec,
            });
            added.push(track);
        }
        for track in &removed {
            if let Some(entry) = self.rooms.get_mut(&room_id) {
                let _ = entry.room.unpublish(*track);
            }
        }
        if let Some(leg) = self.legs.get_mut(&key)
            && let Some(state) = leg.publish()
        {
            state.mids = mids.clone();
            state.streams.retain(|_, s| !removed.contains(&s.track));
        }

        let tracks: Vec<TrackInfo> = mids
            .iter()
            .filter_map(|m| self.track_info(room_id, m.track))
            .collect();
        self.notify(
            id,
            ServerMessage::PublishAnswer {
                sdp: answer_sdp,
                tracks,
            },
        );
        for track in removed {
            self.broadcast(
                room_id,
                Some(id),
                ServerMessage::TrackUnpublished {
                    track_id: track.to_string(),
                    participant_id: id.to_string(),
                },
            );
        }
        for track in added {
            if let Some(info) = self.track_info(room_id, track) {
                self.broadcast(
                    room_id,
                    Some(id),
                    ServerMessage::TrackPublished { track: info },
                );
            }
        }
        self.process_room_outputs(room_id, now);
        Ok(())
    }

    /// Applies an offer to the publish leg and returns the answer's SDP.
    fn apply_publish_offer(
        &mut self,
        key: LegKey,
        offer: RTCSessionDescription,
        now: Instant,
    ) -> Result<String, Refusal> {
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| refuse(ErrorCode::Internal, "leg gone"))?;
        let pc = &mut leg.pc;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pc.set_remote_description(now, offer)
                .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("offer refused: {e}")))?;
            let answer = pc
                .create_answer(None)
                .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot answer: {e}")))?;
            pc.set_local_description(now, answer)
                .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot apply answer: {e}")))?;
            pc.local_description()
                .map(|d| d.sdp)
                .ok_or_else(|| refuse(ErrorCode::Internal, "no local description"))
        }))
        .unwrap_or_else(|_| {
            Err(refuse(
                ErrorCode::InvalidSdp,
                "the offer could not be processed",
            ))
        });
        let sdp = result?;
        // The publisher's extension ids, for translating to each subscriber.
        let mut pairs: Vec<(u16, String)> = Vec::new();
        let receivers: Vec<_> = leg.pc.get_receivers().collect();
        for receiver in receivers {
            if let Some(mut r) = leg.pc.rtp_receiver(receiver) {
                for ext in &r.get_parameters().rtp_parameters.header_extensions {
                    pairs.push((ext.id, ext.uri.clone()));
                }
            }
        }
        if let Some(state) = leg.publish() {
            state.extensions =
                negotiated_extensions(pairs.iter().map(|(id, uri)| (*id, uri.as_str())));
        }
        flush_leg(leg, &self.socket, &self.metrics, None);
        self.arm_timer(key);
        Ok(sdp)
    }

    /// Brings the subscribe leg in line with the tracks the participant should receive and
    /// sends a new offer if anything changed. Does nothing while an offer is in flight (the
    /// answer triggers the next round).
    pub(super) fn renegotiate_subscriber(&mut self, id: ParticipantId, now: Instant) {
        let Some(participant) = self.participants.get_mut(&id) else {
            return;
        };
        participant.renegotiate_at = None;
        if !participant.grants.subscribe {
            return;
        }
        let room_id = participant.room;
        let existing = participant.subscribe_leg;
        if let Some(leg) = existing.and_then(|k| self.legs.get_mut(&k))
            && leg.subscribe().is_some_and(|s| s.offer_in_flight)
        {
            return;
        }
        let desired: Vec<TrackId> = self
            .rooms
            .get(&room_id)
            .map(|e| e.room.subscribed_tracks(id))
            .unwrap_or_default();
        if existing.is_none() && desired.is_empty() {
            return;
        }
        let key = match existing {
            Some(key) => key,
            None => match self.new_leg(id, LegRole::Subscribe, now) {
                Ok(key) => {
                    if let Some(p) = self.participants.get_mut(&id) {
                        p.subscribe_leg = Some(key);
                    }
                    key
                }
                Err((_, text)) => {
                    warn!(participant = %id, "cannot create subscribe leg: {text}");
                    return;
                }
            },
        };
        // Remove what is no longer wanted.
        let on_leg: Vec<(usize, TrackId)> = self
            .legs
            .get_mut(&key)
            .and_then(|l| l.subscribe())
            .map(|s| {
                s.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.track)))
                    .collect()
            })
            .unwrap_or_default();
        let mut changed = existing.is_none();
        for (index, track) in &on_leg {
            if desired.contains(track) {
                continue;
            }
            changed = true;
            if let Some(entry) = self.rooms.get_mut(&room_id) {
                entry.room.detach(*track, id);
            }
            if let Some(leg) = self.legs.get_mut(&key) {
                let sender = leg
                    .subscribe()
                    .and_then(|s| s.slots[*index].take())
                    .map(|s| s.sender);
                if let Some(sender) = sender
                    && let Err(e) = leg.pc.remove_track(sender)
                {
                    debug!("remove_track: {e}");
                }
            }
        }
        // Add what is new.
        for track in &desired {
            if on_leg.iter().any(|(_, t)| t == track) {
                continue;
            }
            let Some((publisher, codec)) = self
                .rooms
                .get(&room_id)
                .and_then(|e| e.room.publication(*track))
                .map(|p| (p.info.owner, p.info.codec))
            else {
                continue;
            };
            changed = true;
            if let Err(text) = self.add_outbound_slot(key, *track, publisher, codec) {
                warn!(participant = %id, %track, "cannot add track to subscribe leg: {text}");
            }
        }
        if !changed {
            return;
        }
        self.send_subscribe_offer(id, key, now);
    }

    fn add_outbound_slot(
        &mut self,
        key: LegKey,
        track: TrackId,
        publisher: ParticipantId,
        codec: Codec,
    ) -> Result<(), String> {
        let leg = self.legs.get_mut(&key).ok_or("leg gone")?;
        let ssrc = rand::random::<u32>();
        let media_track = MediaStreamTrack::new(
            // One msid stream per publishing participant keeps its audio and video in sync.
            publisher.to_string(),
            track.to_string(),
            track.to_string(),
            rtp_kind(codec.kind()),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: codec.mime_type().to_owned(),
                    clock_rate: codec.clock_rate(),
                    channels: if codec.kind() == MediaKind::Audio {
                        2
                    } else {
                        0
                    },
                    ..Default::default()
                },
                ..Default::default()
            }],
        );
        let sender = leg.pc.add_track(media_track).map_err(|e| e.to_string())?;
        let state = leg.subscribe().ok_or("not a subscribe leg")?;
        state
            .insert(OutboundSlot {
                track,
                publisher,
                codec,
                sender,
                ssrc,
                mid: None,
                rewrite: None,
                attached: false,
            })
            .ok_or("subscribe leg is full")?;
        Ok(())
    }

    fn send_subscribe_offer(&mut self, id: ParticipantId, key: LegKey, now: Instant) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let pc = &mut leg.pc;
        let offered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let offer = pc.create_offer(None)?;
            pc.set_local_description(now, offer)?;
            Ok::<_, rtc::shared::error::Error>(pc.local_description().map(|d| d.sdp))
        }));
        let sdp = match offered {
            Ok(Ok(Some(sdp))) => sdp,
            other => {
                warn!(participant = %id, "cannot create subscribe offer: {:?}", other.map(|r| r.err().map(|e| e.to_string())));
                return;
            }
        };
        // Mids are fixed once the offer is created.
        let mids: Vec<(usize, Option<String>)> = leg
            .subscribe()
            .map(|s| {
                s.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.sender)))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .map(|(i, sender)| {
                let mid = leg
                    .pc
                    .rtp_transceiver(rtc::rtp_transceiver::RTCRtpTransceiverId::from(sender))
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
        flush_leg(leg, &self.socket, &self.metrics, None);
        self.arm_timer(key);
        let tracks = self.subscribed_track_infos(id, key);
        self.notify(id, ServerMessage::SubscribeOffer { sdp, tracks });
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
    pub(super) fn resend_pending_subscribe_offer(&mut self, id: ParticipantId) {
        let Some(key) = self.participants.get(&id).and_then(|p| p.subscribe_leg) else {
            return;
        };
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        if !leg.subscribe().is_some_and(|s| s.offer_in_flight) {
            return;
        }
        let Some(sdp) = leg.pc.pending_local_description().map(|d| d.sdp) else {
            return;
        };
        let tracks = self.subscribed_track_infos(id, key);
        self.notify(id, ServerMessage::SubscribeOffer { sdp, tracks });
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
            return Err(refuse(ErrorCode::LimitExceeded, "SDP too large"));
        }
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| refuse(ErrorCode::InvalidState, "no subscribe leg"))?;
        if !leg.subscribe().is_some_and(|s| s.offer_in_flight) {
            return Err(refuse(
                ErrorCode::InvalidState,
                "no subscribe offer is outstanding",
            ));
        }
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot parse answer: {e}")))?;
        let pc = &mut leg.pc;
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pc.set_remote_description(now, answer)
        }))
        .unwrap_or_else(|_| Err(rtc::shared::error::Error::Other("panic".into())));
        if let Err(e) = applied {
            return Err(refuse(
                ErrorCode::InvalidSdp,
                format!("answer refused: {e}"),
            ));
        }
        // Cache what each slot needs per packet: payload type, mid extension, extension map.
        let publisher_extensions: Vec<(TrackId, ExtensionIds)> = {
            let tracks: Vec<(TrackId, ParticipantId)> = self
                .legs
                .get_mut(&key)
                .and_then(|l| l.subscribe())
                .map(|s| s.tracks().map(|t| (t.track, t.publisher)).collect())
                .unwrap_or_default();
            tracks
                .into_iter()
                .map(|(track, publisher)| {
                    let ids = self
                        .participants
                        .get(&publisher)
                        .and_then(|p| p.publish_leg)
                        .and_then(|k| self.legs.get_mut(&k))
                        .and_then(|l| l.publish().map(|s| s.extensions.clone()))
                        .unwrap_or_default();
                    (track, ids)
                })
                .collect()
        };
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| refuse(ErrorCode::Internal, "leg gone"))?;
        let senders: Vec<(usize, rtc::rtp_transceiver::RTCRtpSenderId, Codec)> = leg
            .subscribe()
            .map(|s| {
                s.slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.sender, s.codec)))
                    .collect()
            })
            .unwrap_or_default();
        // Extension ids are read per sender: a leg may negotiate an extension for one kind only.
        let mut negotiated: Vec<(usize, Option<u8>, ExtensionIds)> = Vec::new();
        for (index, sender, codec) in &senders {
            let Some(mut s) = leg.pc.rtp_sender(*sender) else {
                negotiated.push((*index, None, ExtensionIds::default()));
                continue;
            };
            let params = s.get_parameters();
            let pt = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| {
                    c.rtp_codec
                        .mime_type
                        .eq_ignore_ascii_case(codec.mime_type())
                })
                .map(|c| c.payload_type);
            let ids = negotiated_extensions(
                params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .map(|e| (e.id, e.uri.as_str())),
            );
            negotiated.push((*index, pt, ids));
        }
        if let Some(state) = leg.subscribe() {
            state.offer_in_flight = false;
            for (index, pt, ids) in negotiated {
                let Some(Some(slot)) = state.slots.get_mut(index) else {
                    continue;
                };
                slot.rewrite = pt.map(|payload_type| {
                    let publisher = publisher_extensions
                        .iter()
                        .find(|(t, _)| *t == slot.track)
                        .map(|(_, ids)| ids.clone())
                        .unwrap_or_default();
                    RewriteTarget {
                        ssrc: slot.ssrc,
                        payload_type,
                        mid_extension: mid_extension(&ids, slot.mid.as_deref()),
                        extensions: ExtensionTranslator::new(&publisher, &ids),
                    }
                });
            }
        }
        flush_leg(leg, &self.socket, &self.metrics, None);
        self.arm_timer(key);
        self.attach_ready_slots(key, now);
        // Changes that arrived while the offer was in flight.
        let pending = self
            .participants
            .get(&id)
            .and_then(|p| self.rooms.get(&p.room))
            .map(|e| e.room.subscribed_tracks(id))
            .unwrap_or_default();
        let on_leg: Vec<TrackId> = self
            .legs
            .get_mut(&key)
            .and_then(|l| l.subscribe())
            .map(|s| s.tracks().map(|t| t.track).collect())
            .unwrap_or_default();
        let mut sorted = on_leg.clone();
        sorted.sort();
        if sorted != pending
            && let Some(p) = self.participants.get_mut(&id)
        {
            p.renegotiate_at = Some(now + self.config.renegotiation_debounce);
        }
        Ok(())
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

    pub(super) fn trickle(
        &mut self,
        id: ParticipantId,
        leg: WireLeg,
        candidate: IceCandidate,
    ) -> Result<(), Refusal> {
        let participant = self
            .participants
            .get(&id)
            .ok_or_else(|| refuse(ErrorCode::Internal, "no participant"))?;
        let key = match leg {
            WireLeg::Publish => participant.publish_leg,
            WireLeg::Subscribe => participant.subscribe_leg,
        }
        .ok_or_else(|| refuse(ErrorCode::InvalidState, "trickle before the leg's offer"))?;
        if candidate.candidate.len() > 1024 {
            return Err(refuse(ErrorCode::LimitExceeded, "candidate too long"));
        }
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| refuse(ErrorCode::InvalidState, "leg gone"))?;
        if leg.pc.remote_description().is_none() {
            return Err(refuse(
                ErrorCode::InvalidState,
                "trickle before the leg's offer/answer",
            ));
        }
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            username_fragment: candidate.username_fragment,
            ..Default::default()
        };
        let pc = &mut leg.pc;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pc.add_remote_candidate(init)
        }))
        .unwrap_or_else(|_| Err(rtc::shared::error::Error::Other("panic".into())))
        .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("bad candidate: {e}")))
    }
}
