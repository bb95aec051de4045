//! The publish leg: the client offers, the relay answers, and every sending m-line becomes (or
//! stays) a published track with exactly one codec format, which never changes mid-call.

use super::demux::LegKey;
use super::engine::{host_candidate, new_peer_connection, tcp_candidate};
use super::formats;
use super::guard::RateLimit;
use super::leg::{Leg, LegMedia, PublishedMid, negotiated_extensions};
use super::participants::{room_source, track_kind, wire_source};
use super::refusal::{Refusal, refuse};
use super::relay::{Node, flush_leg};
use super::role::LegRole;
use super::sdp::{self, Format, Section};
use super::state::RoomKey;
use crate::media::codec::{Codec, MediaKind};
use crate::media::extmap::HeaderExtension;
use crate::media::ids::{ParticipantId, TrackId};
use crate::media::room::{PublicationInfo, TrackSource};
use crate::webhooks::EventKind;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;
use tern_signaling::limits::Limit;
use tern_signaling::protocol::{
    ErrorCode, IceCandidate, Leg as WireLeg, ServerMessage, TrackAnnouncement, TrackInfo,
};
use tracing::warn;

/// What each sending m-line of an offer will carry.
struct PublishPlan {
    sending: Vec<(String, TrackSource, Format)>,
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
        let accepted = |f: &Format| formats::find(f.codec, &f.fmtp).is_some();
        let Some(format) = section.first_format(accepted) else {
            return Err(refuse(
                ErrorCode::UnsupportedCodec,
                format!(
                    "m-line {:.16} offers no codec this relay forwards (Opus; VP8, VP9 profile 0, \
                     H.264 constrained baseline/baseline/main/high, AV1 main)",
                    section.mid
                ),
            ));
        };
        let source = match announcements.iter().find(|a| a.mid == section.mid) {
            Some(a) if track_kind(kind) != a.source.kind() => {
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
            Some(a) => room_source(a.source),
            None => match kind {
                MediaKind::Audio => TrackSource::Microphone,
                MediaKind::Video => TrackSource::Camera,
            },
        };
        sending.push((section.mid.clone(), source, format.clone()));
    }
    Ok(PublishPlan { sending })
}

impl Node {
    /// Creates a leg for a participant. It joins the demux table once its first local
    /// description names its ufrag ([`Node::sync_ufrag`]).
    pub(super) fn new_leg(
        &mut self,
        participant: ParticipantId,
        role: LegRole,
        now: Instant,
    ) -> Result<LegKey, Refusal> {
        self.new_leg_with(participant, role, None, now)
    }

    /// [`Node::new_leg`] with `codecs` registered instead of the catalogue.
    pub(super) fn new_leg_with(
        &mut self,
        participant: ParticipantId,
        role: LegRole,
        codecs: Option<&[super::formats::CatalogueFormat]>,
        now: Instant,
    ) -> Result<LegKey, Refusal> {
        let taps = super::engine::LegTaps::default();
        let mut pc = new_peer_connection(
            role,
            &self.config.engine,
            codecs,
            self.metrics.clone(),
            self.decrypted.clone(),
            taps.clone(),
            now,
        )
        .map_err(|e| Refusal::internal("creating a peer connection", e))?;
        for addr in &self.config.advertised {
            let candidate = host_candidate(*addr)
                .map_err(|e| Refusal::internal("adding its host candidate", e))?;
            pc.add_local_candidate(candidate)
                .map_err(|e| Refusal::internal("adding its candidates", e))?;
        }
        for addr in &self.config.tcp_candidates {
            let candidate = tcp_candidate(*addr)
                .map_err(|e| Refusal::internal("adding its ICE-TCP candidate", e))?;
            pc.add_local_candidate(candidate)
                .map_err(|e| Refusal::internal("adding its candidates", e))?;
        }
        // End of candidates: the relay has no others to trickle.
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .map_err(|e| Refusal::internal("adding its candidates", e))?;
        let key = LegKey(self.next_leg);
        self.next_leg += 1;
        let limit = RateLimit::new(
            self.config.max_packets_per_leg_per_s,
            self.config.max_packets_per_leg_per_s / 2,
        );
        let mut leg = Leg::new(key, role, participant, pc, String::new(), limit);
        if let LegMedia::Subscribe(state) = &mut leg.media {
            state.feedback = taps.feedback;
            state.retransmissions = taps.retransmissions;
            state.probe = taps.probe;
        }
        self.legs.insert(key, leg);
        self.arm_connect_deadline(key, now);
        Ok(key)
    }

    /// Refuses an SDP with more media sections than the limit, before anything parses it: each
    /// costs the media worker time to apply, inactive ones included.
    pub(super) fn check_media_sections(&self, sdp: &str) -> Result<(), Refusal> {
        let sections = sdp.lines().filter(|l| l.starts_with("m=")).count();
        if sections > self.config.max_media_sections {
            self.metrics.limits.breached(Limit::SdpMediaSections);
            return Err(refuse(
                ErrorCode::LimitExceeded,
                format!(
                    "the SDP has {sections} media sections; at most {} are accepted",
                    self.config.max_media_sections
                ),
            ));
        }
        Ok(())
    }

    /// A client's offer, parsed, with its m-lines: bounded in sections, one set of ICE
    /// credentials, and leaving the DTLS server role to the relay.
    pub(super) fn read_offer(
        &self,
        sdp: String,
    ) -> Result<(RTCSessionDescription, Vec<Section>), Refusal> {
        self.check_media_sections(&sdp)?;
        let sdp = sdp::unify_bundle_credentials(&sdp).unwrap_or(sdp);
        let offer = RTCSessionDescription::offer(sdp)
            .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot parse offer: {e}")))?;
        let parsed = offer
            .unmarshal()
            .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot parse offer: {e}")))?;
        if sdp::offers_passive_dtls(&parsed) {
            return Err(refuse(
                ErrorCode::InvalidSdp,
                "the offer says a=setup:passive; offer a=setup:actpass (RFC 8842): the relay is \
                 the DTLS server",
            ));
        }
        let sections = sdp::sections(&parsed);
        Ok((offer, sections))
    }

    /// Keeps the demux table on the leg's current ICE credentials (new after every ICE restart).
    pub(super) fn sync_ufrag(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let Some(description) = leg.pc.local_description() else {
            return;
        };
        let (Some(ufrag), Some(password)) = (
            sdp::ice_ufrag(&description.sdp),
            sdp::ice_pwd(&description.sdp),
        ) else {
            return;
        };
        if ufrag != leg.ufrag {
            if !leg.ufrag.is_empty() {
                self.demux.remove_ufrag(&leg.ufrag);
                self.tcp_demux.remove_ufrag(&leg.ufrag);
            }
            self.demux.add_ufrag(ufrag, password, key);
            self.tcp_demux.add_ufrag(ufrag, password, key);
            leg.ufrag = ufrag.to_owned();
        }
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
            .ok_or_else(|| Refusal::internal("finding the participant", "no participant"))?;
        if !participant.grants.publish {
            return Err(refuse(
                ErrorCode::NotAllowed,
                "your token does not grant publish",
            ));
        }
        if sdp.len() > self.config.max_sdp_bytes {
            self.metrics.limits.breached(Limit::SdpSize);
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
        let (offer, sections) = self.read_offer(sdp)?;
        let mut plan = plan_publish(&sections, &announcements)?;

        // Which published mids stay, which are new, which went away.
        let current: Vec<PublishedMid> = existing_leg
            .and_then(|k| self.legs.get_mut(&k))
            .and_then(|l| l.publish().map(|s| s.mids.clone()))
            .unwrap_or_default();
        let sending_mids: Vec<String> = plan.sending.iter().map(|(m, _, _)| m.clone()).collect();
        let stays = |mid: &str| sending_mids.iter().any(|m| m == mid);
        let kept = current.iter().filter(|c| stays(&c.mid)).count();
        let added = plan
            .sending
            .iter()
            .filter(|(mid, _, _)| !current.iter().any(|c| &c.mid == mid))
            .count();
        if kept + added > self.config.max_tracks_per_participant {
            self.metrics.limits.breached(Limit::ParticipantTracks);
            return Err(refuse(
                ErrorCode::LimitExceeded,
                format!(
                    "at most {} tracks per participant",
                    self.config.max_tracks_per_participant
                ),
            ));
        }
        // A published m-line keeps its format: the subscribers' legs were negotiated for it.
        for (mid, _, format) in plan.sending.iter_mut() {
            let Some(c) = current.iter().find(|c| &c.mid == mid) else {
                continue;
            };
            let same = |f: &Format| {
                f.codec == c.format.codec && sdp::same_format(f.codec, &f.fmtp, &c.format.fmtp)
            };
            if same(format) {
                continue;
            }
            // Still offered, just not first: keep the published format.
            let offered = sections
                .iter()
                .find(|s| &s.mid == mid)
                .and_then(|s| s.formats.iter().find(|f| same(f)));
            match offered {
                Some(f) => *format = f.clone(),
                None => {
                    return Err(refuse(
                        ErrorCode::UnsupportedCodec,
                        format!(
                            "mid {mid:.16} cannot change codec from {} mid-call",
                            c.format.codec.mime_type()
                        ),
                    ));
                }
            }
        }

        let key = match existing_leg {
            Some(key) => key,
            None => self.new_leg(id, LegRole::Publish, now)?,
        };
        let answer_sdp = match self.apply_publish_offer(key, offer, &plan, now) {
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

        // Tracks: keep, add, remove. New tracks reach the room once the leg is connected.
        let connected = self.legs.get(&key).is_some_and(|l| l.is_connected());
        let mut mids: Vec<PublishedMid> = Vec::new();
        let removed: Vec<PublishedMid> =
            current.iter().filter(|c| !stays(&c.mid)).cloned().collect();
        for (mid, source, format) in &plan.sending {
            if let Some(c) = current.iter().find(|c| &c.mid == mid) {
                mids.push(c.clone());
                continue;
            }
            mids.push(PublishedMid {
                mid: mid.clone(),
                track: TrackId(rand::random::<u64>() >> 1),
                source: *source,
                format: format.clone(),
                announced: false,
                muted_before_announced: false,
            });
        }
        for gone in &removed {
            if gone.announced {
                self.unpublish_track(id, room_id, gone.track, now);
            }
        }
        if let Some(leg) = self.legs.get_mut(&key)
            && let Some(state) = leg.publish()
        {
            state.mids = mids.clone();
            state
                .streams
                .retain(|_, s| !removed.iter().any(|r| r.track == s.track));
        }

        // Each with its publish m-line, so the client can tell which of its tracks got which id.
        let tracks: Vec<TrackInfo> = mids
            .iter()
            .map(|m| self.own_track_info(id, room_id, m))
            .collect();
        // The dependency descriptor stays only where an SVC codec was answered (see engine.rs).
        let svc_mids: Vec<&str> = mids
            .iter()
            .filter(|m| matches!(m.format.codec, Codec::Vp9 | Codec::Av1))
            .map(|m| m.mid.as_str())
            .collect();
        let answer_sdp = sdp::keep_extension_only_in(
            &answer_sdp,
            HeaderExtension::DependencyDescriptor.uri(),
            &svc_mids,
        );
        self.notify(
            id,
            ServerMessage::PublishAnswer {
                sdp: sdp::repeat_candidates(&answer_sdp),
                tracks,
            },
        );
        if connected {
            self.announce_tracks(key, now);
        }
        self.process_room_outputs(room_id, now);
        Ok(())
    }

    /// Publishes to the room, and announces to the others, every track of a connected publish
    /// leg that the room does not know yet.
    pub(super) fn announce_tracks(&mut self, key: LegKey, now: Instant) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let owner = leg.participant;
        let Some(state) = leg.publish() else {
            return;
        };
        let pending: Vec<PublishedMid> = state
            .mids
            .iter_mut()
            .filter(|m| !m.announced)
            .map(|m| {
                m.announced = true;
                m.clone()
            })
            .collect();
        let Some(room_id) = self.participants.get(&owner).map(|p| p.room) else {
            return;
        };
        for m in pending {
            let Some(entry) = self.rooms.get_mut(&room_id) else {
                return;
            };
            let info = PublicationInfo {
                owner,
                source: m.source,
                codec: m.format.codec,
            };
            if let Err(err) = entry.room.publish(m.track, info) {
                warn!(participant = %owner, track = %m.track, "cannot publish: {err:?}");
                continue;
            }
            if m.muted_before_announced {
                let _ = entry.room.set_muted(m.track, true);
            }
            if let Some(info) = self.track_info(room_id, m.track) {
                self.track_event(EventKind::TrackPublished, owner, &info, now);
                self.broadcast(
                    room_id,
                    Some(owner),
                    ServerMessage::TrackPublished { track: info },
                );
            }
        }
        self.process_room_outputs(room_id, now);
    }

    /// Takes a track out of the room and tells everybody.
    fn unpublish_track(
        &mut self,
        owner: ParticipantId,
        room_id: RoomKey,
        track: TrackId,
        now: Instant,
    ) {
        if let Some(info) = self.track_info(room_id, track) {
            self.track_event(EventKind::TrackUnpublished, owner, &info, now);
        }
        if let Some(entry) = self.rooms.get_mut(&room_id) {
            let _ = entry.room.unpublish(track);
        }
        self.broadcast(
            room_id,
            Some(owner),
            ServerMessage::TrackUnpublished {
                track_id: track.to_string(),
                participant_id: owner.to_string(),
            },
        );
    }

    /// A publisher's own view of one of its tracks, announced to the room or not yet.
    fn own_track_info(
        &self,
        owner: ParticipantId,
        room_id: RoomKey,
        m: &PublishedMid,
    ) -> TrackInfo {
        let mut info = self
            .track_info(room_id, m.track)
            .unwrap_or_else(|| TrackInfo {
                id: m.track.to_string(),
                participant_id: owner.to_string(),
                kind: track_kind(m.format.codec.kind()),
                source: wire_source(m.source),
                muted: m.muted_before_announced,
                admin_muted: false,
                codec: Some(m.format.codec.mime_type().to_owned()),
                mid: None,
                stream_id: None,
            });
        info.mid = Some(m.mid.clone());
        info
    }

    /// Applies an offer to the publish leg, restricting every sending m-line to its planned
    /// format (plus its RTX), and returns the answer's SDP.
    fn apply_publish_offer(
        &mut self,
        key: LegKey,
        offer: RTCSessionDescription,
        plan: &PublishPlan,
        now: Instant,
    ) -> Result<String, Refusal> {
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| Refusal::internal("answering the offer", "leg gone"))?;
        let pc = &mut leg.pc;
        let result = catch_unwind(AssertUnwindSafe(|| {
            pc.set_remote_description(now, offer)
                .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("offer refused: {e}")))?;
            let transceivers: Vec<_> = pc.get_transceivers().collect();
            for id in transceivers {
                let Some(transceiver) = pc.rtp_transceiver(id) else {
                    continue;
                };
                let Some(mid) = transceiver.mid().clone() else {
                    continue;
                };
                let Some((_, _, format)) = plan.sending.iter().find(|(m, _, _)| *m == mid) else {
                    continue;
                };
                let Some(receiver) = transceiver.receiver() else {
                    continue;
                };
                let negotiated = pc
                    .rtp_receiver(receiver)
                    .map(|mut r| r.get_parameters().rtp_parameters.codecs.clone())
                    .unwrap_or_default();
                let chosen = one_format(&negotiated, format.payload_type);
                if chosen.is_empty() {
                    continue;
                }
                if let Some(mut transceiver) = pc.rtp_transceiver(id) {
                    transceiver.set_codec_preferences(chosen).map_err(|e| {
                        refuse(ErrorCode::InvalidSdp, format!("cannot choose codec: {e}"))
                    })?;
                }
            }
            answer_applied(pc, now, "answering the offer")
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
        flush_leg(leg, &mut self.transmits);
        self.sync_ufrag(key);
        self.arm_timer(key);
        Ok(sdp)
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
            .ok_or_else(|| Refusal::internal("finding the participant", "no participant"))?;
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
        // The candidate's ufrag is not checked: a client whose bundled m-lines had credentials
        // of their own names those, and an ICE-lite relay does not check candidates anyway.
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            username_fragment: None,
            ..Default::default()
        };
        let pc = &mut leg.pc;
        catch_unwind(AssertUnwindSafe(|| pc.add_remote_candidate(init)))
            .unwrap_or_else(|_| Err(rtc::shared::error::Error::Other("panic".into())))
            .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("bad candidate: {e}")))
    }

    /// The format a published track was answered with.
    pub(super) fn publication_format(
        &self,
        publisher: ParticipantId,
        track: TrackId,
    ) -> Option<Format> {
        let leg = self.participants.get(&publisher)?.publish_leg?;
        match &self.legs.get(&leg)?.media {
            LegMedia::Publish(state) => state
                .mids
                .iter()
                .find(|m| m.track == track)
                .map(|m| m.format.clone()),
            super::leg::LegMedia::Subscribe(_) => None,
        }
    }
}

/// Creates the answer to the applied offer and applies it; its SDP. (`doing` names the work for
/// an internal failure's log line.)
pub(super) fn answer_applied(
    pc: &mut rtc::peer_connection::RTCPeerConnection,
    now: Instant,
    doing: &'static str,
) -> Result<String, Refusal> {
    let answer = pc
        .create_answer(None)
        .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot answer: {e}")))?;
    pc.set_local_description(now, answer)
        .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("cannot apply answer: {e}")))?;
    pc.local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| Refusal::internal(doing, "no local description"))
}

/// From an m-line's negotiated codecs (the offer's payload types), the primary format with
/// `payload_type` and the RTX that repairs it: the answer then carries exactly that codec.
fn one_format(
    negotiated: &[RTCRtpCodecParameters],
    payload_type: u8,
) -> Vec<RTCRtpCodecParameters> {
    let apt = format!("apt={payload_type}");
    negotiated
        .iter()
        .filter(|c| {
            c.payload_type == payload_type
                || (c.rtp_codec.mime_type.eq_ignore_ascii_case("video/rtx")
                    && c.rtp_codec
                        .sdp_fmtp_line
                        .split(';')
                        .any(|p| p.trim() == apt))
        })
        .cloned()
        .collect()
}
