//! WHEP viewers: a subscribe leg negotiated once, from the viewer's own receive-only offer.
//!
//! The WebSocket protocol's subscribe leg is offered by the relay and renegotiated as tracks
//! come and go; a WHEP player cannot be renegotiated. So the relay answers the viewer's offer
//! with one sending m-line per receiving m-line it can serve (the codec fixed by that answer), and
//! points each m-line at one room track at a time, chosen by [`crate::media::follow::pick`]:
//! when the followed publisher's tracks change the m-line is re-pointed, and its stream goes on
//! with continuous numbering from the new track's first keyframe. Everything else (forwarding,
//! bandwidth control, NACK, keyframe requests) is the ordinary subscribe path: the m-lines are
//! the leg's slots, slot index = m-line order.

use super::demux::LegKey;
use super::formats;
use super::leg::{OutboundSlot, mid_extension, negotiated_extensions, sink_id};
use super::publish::answer_applied;
use super::refusal::{Refusal, refuse};
use super::relay::{Node, flush_leg};
use super::role::LegRole;
use super::sdp::{self, Direction, Format, Section};
use super::state::RoomKey;
use crate::media::codec::{Codec, MediaKind};
use crate::media::extmap::{ExtensionIds, ExtensionTranslator};
use crate::media::follow::{Candidate, Follow, pick};
use crate::media::forwarder::Forwarder;
use crate::media::ids::{ParticipantId, TrackId};
use crate::media::rewrite::RewriteTarget;
use crate::media::room::TrackSource;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverId};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;
use tern_signaling::control::{JoinVia, SessionKey, ViewFollow};
use tern_signaling::limits::Limit;
use tern_signaling::protocol::ErrorCode;
use tracing::{debug, info};

/// The `msid` stream of a viewer's tracks: one stream, so a player's `<video>` plays its audio
/// and video together.
const VIEW_STREAM: &str = "tern";

/// Chunk size of a view slot's arena for renumbered VP8 payloads (as on any subscribe leg).
const RENUMBERED_CHUNK_BYTES: usize = 16 * 1024;

/// A WHEP viewer's m-lines and whom they follow.
pub struct ViewState {
    follow: Follow,
    /// The publisher followed now (kept while it publishes, see `pick`).
    following: Option<ParticipantId>,
    lines: Vec<ViewLine>,
}

/// One sending m-line of a viewer's leg.
struct ViewLine {
    kind: MediaKind,
    mid: String,
    sender: RTCRtpSenderId,
    ssrc: u32,
    /// The format this m-line was answered with (the viewer's payload type).
    format: Format,
    extensions: ExtensionIds,
    /// Where the stream's numbering stands while the m-line carries no track.
    continuation: Option<Forwarder>,
    /// Sent on this SSRC so far, across tracks (for its sender reports).
    sent: (u32, u32),
}

/// What a receiving m-line of the offer will send, planned before `rtc` sees the offer.
struct LinePlan {
    mid: String,
    kind: MediaKind,
    format: Format,
    /// The viewer's RTX payload type for `format`, if it offered one.
    rtx: Option<u8>,
}

impl LinePlan {
    /// The catalogue's format for this m-line under the viewer's payload types.
    fn leg_format(&self) -> Option<formats::CatalogueFormat> {
        let catalogued = formats::find(self.format.codec, &self.format.fmtp)?;
        Some(formats::CatalogueFormat {
            payload_type: self.format.payload_type,
            rtx_payload_type: self.rtx.filter(|_| catalogued.rtx_payload_type.is_some()),
            ..catalogued
        })
    }
}

/// A room track as the view sees it: owned data for [`Candidate`].
struct Published {
    track: TrackId,
    owner: ParticipantId,
    identity: String,
    joined: u128,
    kind: MediaKind,
    source: TrackSource,
    format: Format,
}

impl Published {
    fn candidate(&self) -> Candidate<'_> {
        Candidate {
            track: self.track,
            owner: self.owner,
            identity: &self.identity,
            joined: self.joined,
            kind: self.kind,
            source: self.source,
        }
    }
}

fn follow_of(follow: ViewFollow) -> Follow {
    match follow {
        ViewFollow::Room => Follow::Room,
        ViewFollow::Identity(identity) => Follow::Identity(identity),
        // An id that names no track follows nothing, as a track that has gone does.
        ViewFollow::Track(id) => Follow::Track(TrackId::parse(&id).unwrap_or(TrackId(u64::MAX))),
    }
}

/// Whether an m-line answered with `format` can carry a track published as `other`. Any Opus
/// carries any Opus: its parameters are receiver preferences (see `formats`).
fn carries(format: &Format, other: &Format) -> bool {
    format.codec == other.codec
        && (format.codec == Codec::Opus
            || sdp::same_format(format.codec, &format.fmtp, &other.fmtp))
}

fn receiving(section: &Section) -> bool {
    !section.rejected
        && section.kind.is_some()
        && matches!(section.direction, Direction::RecvOnly | Direction::SendRecv)
}

impl Node {
    /// Answers a WHEP viewer's offer (`view` on the control seam). The first makes the leg;
    /// a later one on the same session is an ICE restart and must keep the m-lines.
    pub(super) fn view(
        &mut self,
        session: SessionKey,
        offer: String,
        follow: ViewFollow,
        now: Instant,
    ) -> Result<String, Refusal> {
        let id = self
            .current(session)
            .ok_or_else(|| refuse(ErrorCode::InvalidState, "the session has ended"))?;
        let participant = self
            .participants
            .get(&id)
            .ok_or_else(|| Refusal::internal("finding the viewer", "no participant"))?;
        if participant.via != JoinVia::Whep || !participant.grants.subscribe {
            return Err(refuse(
                ErrorCode::NotAllowed,
                "only a WHEP session with the subscribe grant views",
            ));
        }
        if offer.len() > self.config.max_sdp_bytes {
            self.metrics.limits.breached(Limit::SdpSize);
            return Err(refuse(ErrorCode::LimitExceeded, "SDP too large"));
        }
        let existing = participant.subscribe_leg;
        let room = participant.room;
        let (offer, sections) = self.read_offer(offer)?;
        if let Some(key) = existing {
            return self.restart_view(id, key, offer, &sections, now);
        }
        let follow = follow_of(follow);
        let plans = self.plan_view(room, &follow, &sections);
        if plans.is_empty() {
            return Err(refuse(
                ErrorCode::UnsupportedCodec,
                "the offer has no receive-only audio or video m-line with a codec this relay \
                 forwards (Opus; VP8, VP9 profile 0, H.264, AV1)",
            ));
        }
        // The leg's codecs are the planned formats under the viewer's payload types: `rtc` sends
        // only payload types of its own catalogue, and answers with the offer's.
        let codecs: Vec<formats::CatalogueFormat> =
            plans.iter().filter_map(LinePlan::leg_format).collect();
        let key = self.new_leg_with(id, LegRole::Subscribe, Some(&codecs), now)?;
        let answered = self.answer_view(key, offer, &plans, now);
        let (answer, lines) = match answered {
            Ok(done) => done,
            Err(refusal) => {
                self.close_leg(key);
                return Err(refusal);
            }
        };
        if let Some(leg) = self.legs.get_mut(&key) {
            if let Some(state) = leg.subscribe() {
                state.answered = true;
                state.slots = (0..lines.len()).map(|_| None).collect();
            }
            flush_leg(leg, &mut self.transmits);
        }
        self.sync_ufrag(key);
        self.arm_timer(key);
        if let Some(p) = self.participants.get_mut(&id) {
            p.subscribe_leg = Some(key);
            p.view = Some(Box::new(ViewState {
                follow,
                following: None,
                lines,
            }));
        }
        if let Some(entry) = self.rooms.get_mut(&room) {
            entry.room.keep_numbering(id);
        }
        self.refollow_view(id, now);
        Ok(sdp::repeat_candidates(&answer))
    }

    /// The format each receiving m-line will carry: the format of the track it will carry first
    /// when the offer has it, else the viewer's first choice among the formats the relay forwards.
    fn plan_view(&self, room: RoomKey, follow: &Follow, sections: &[Section]) -> Vec<LinePlan> {
        let lines: Vec<&Section> = sections.iter().filter(|s| receiving(s)).collect();
        let kinds: Vec<MediaKind> = lines.iter().filter_map(|s| s.kind).collect();
        let published = self.view_candidates(room);
        let candidates: Vec<Candidate<'_>> = published.iter().map(Published::candidate).collect();
        let offered = |line: usize, c: &Candidate<'_>| {
            published
                .iter()
                .find(|p| p.track == c.track)
                .is_some_and(|p| {
                    lines[line]
                        .formats
                        .iter()
                        .any(|f| carries(f, &p.format) && formats::find(f.codec, &f.fmtp).is_some())
                })
        };
        let (_, first) = pick(follow, &kinds, &candidates, None, offered);
        lines
            .iter()
            .zip(first)
            .filter_map(|(section, track)| {
                let wanted = track.and_then(|t| published.iter().find(|p| p.track == t));
                let format = match wanted {
                    Some(p) => section.formats.iter().find(|f| carries(f, &p.format)),
                    None => section.first_format(|f| formats::find(f.codec, &f.fmtp).is_some()),
                }?;
                Some(LinePlan {
                    mid: section.mid.clone(),
                    kind: section.kind?,
                    format: format.clone(),
                    rtx: section.rtx_for(format.payload_type),
                })
            })
            .collect()
    }

    /// Applies the offer, puts a sender on every planned m-line and stops the others, and
    /// returns the answer with the m-lines as they were negotiated.
    fn answer_view(
        &mut self,
        key: LegKey,
        offer: RTCSessionDescription,
        plans: &[LinePlan],
        now: Instant,
    ) -> Result<(String, Vec<ViewLine>), Refusal> {
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| Refusal::internal("answering the viewer", "leg gone"))?;
        let feedback = self.config.engine.subscriber_feedback;
        let pc = &mut leg.pc;
        let applied = catch_unwind(AssertUnwindSafe(|| {
            pc.set_remote_description(now, offer)
                .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("offer refused: {e}")))?;
            let mut lines = Vec::new();
            let transceivers: Vec<RTCRtpTransceiverId> = pc.get_transceivers().collect();
            for id in transceivers {
                let Some(transceiver) = pc.rtp_transceiver(id) else {
                    continue;
                };
                let mid = transceiver.mid().clone();
                let plan = mid
                    .as_ref()
                    .and_then(|mid| plans.iter().find(|p| &p.mid == mid));
                // The leg's own parameters, which carry the viewer's payload types.
                let catalogued = plan.and_then(LinePlan::leg_format);
                let (Some(plan), Some(catalogued)) = (plan, catalogued) else {
                    // Nothing the relay can send there: the answer rejects it, and no later
                    // track can land on it.
                    if let Some(mut transceiver) = pc.rtp_transceiver(id) {
                        transceiver.stop().map_err(|e| {
                            refuse(ErrorCode::InvalidSdp, format!("cannot reject m-line: {e}"))
                        })?;
                    }
                    continue;
                };
                let primary = formats::parameters(&catalogued, LegRole::Subscribe, feedback);
                let mut chosen = vec![primary.clone()];
                chosen.extend(formats::rtx_parameters(&catalogued));
                if let Some(mut transceiver) = pc.rtp_transceiver(id) {
                    transceiver.set_codec_preferences(chosen).map_err(|e| {
                        refuse(ErrorCode::InvalidSdp, format!("cannot choose codec: {e}"))
                    })?;
                }
                let ssrc = rand::random::<u32>();
                let track = MediaStreamTrack::new(
                    VIEW_STREAM.to_owned(),
                    format!("{VIEW_STREAM}-{}", plan.mid),
                    format!("{VIEW_STREAM}-{}", plan.mid),
                    super::formats::rtp_kind(plan.kind),
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: primary.rtp_codec.clone(),
                        ..Default::default()
                    }],
                );
                let sender = pc.add_track(track).map_err(|e| {
                    refuse(ErrorCode::InvalidSdp, format!("cannot send on m-line: {e}"))
                })?;
                // `add_track` takes the first free transceiver of the kind: earlier ones of the
                // kind all have senders or are stopped, so it is this one.
                if RTCRtpTransceiverId::from(sender) != id {
                    return Err(Refusal::internal(
                        "answering the viewer",
                        "a sender landed on another m-line",
                    ));
                }
                if let Some(mut transceiver) = pc.rtp_transceiver(id) {
                    transceiver.set_direction(RTCRtpTransceiverDirection::Sendonly);
                }
                lines.push(ViewLine {
                    kind: plan.kind,
                    mid: plan.mid.clone(),
                    sender,
                    ssrc,
                    format: plan.format.clone(),
                    extensions: ExtensionIds::default(),
                    continuation: None,
                    sent: (0, 0),
                });
            }
            let sdp = answer_applied(pc, now, "answering the viewer")?;
            Ok::<_, Refusal>((sdp, lines))
        }))
        .unwrap_or_else(|_| {
            Err(refuse(
                ErrorCode::InvalidSdp,
                "the offer could not be processed",
            ))
        });
        let (sdp, mut lines) = applied?;
        // The payload types the answer gave each m-line (the viewer's own).
        let answered = RTCSessionDescription::answer(sdp.clone())
            .and_then(|a| a.unmarshal())
            .map(|parsed| sdp::sections(&parsed))
            .map_err(|e| Refusal::internal("reading the answer to a viewer", e))?;
        lines.retain_mut(|line| {
            let format = answered
                .iter()
                .find(|s| s.mid == line.mid && !s.rejected)
                .and_then(|s| s.formats.iter().find(|f| carries(f, &line.format)));
            match format {
                Some(format) => {
                    line.format = format.clone();
                    true
                }
                None => false,
            }
        });
        if lines.is_empty() {
            return Err(refuse(
                ErrorCode::UnsupportedCodec,
                "no m-line of the offer can carry what this relay forwards",
            ));
        }
        // Extension ids per sender: an extension may be negotiated for one kind only.
        for line in &mut lines {
            if let Some(mut sender) = leg.pc.rtp_sender(line.sender) {
                let params = sender.get_parameters();
                line.extensions = negotiated_extensions(
                    params
                        .rtp_parameters
                        .header_extensions
                        .iter()
                        .map(|e| (e.id, e.uri.as_str())),
                );
            }
        }
        Ok((sdp, lines))
    }

    /// A viewer's later offer: an ICE restart (its m-lines must stay those of the session).
    fn restart_view(
        &mut self,
        id: ParticipantId,
        key: LegKey,
        offer: RTCSessionDescription,
        sections: &[Section],
        now: Instant,
    ) -> Result<String, Refusal> {
        let same_lines = self
            .participants
            .get(&id)
            .and_then(|p| p.view.as_ref())
            .is_some_and(|view| {
                view.lines
                    .iter()
                    .all(|line| sections.iter().any(|s| s.mid == line.mid && receiving(s)))
            });
        if !same_lines {
            return Err(refuse(
                ErrorCode::InvalidSdp,
                "a WHEP session's m-lines are fixed by its first offer; start a new session",
            ));
        }
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| refuse(ErrorCode::InvalidState, "the session's leg is gone"))?;
        let pc = &mut leg.pc;
        let answered = catch_unwind(AssertUnwindSafe(|| {
            pc.set_remote_description(now, offer)
                .map_err(|e| refuse(ErrorCode::InvalidSdp, format!("offer refused: {e}")))?;
            answer_applied(pc, now, "restarting the viewer")
        }))
        .unwrap_or_else(|_| {
            Err(refuse(
                ErrorCode::InvalidSdp,
                "the offer could not be processed",
            ))
        });
        flush_leg(leg, &mut self.transmits);
        let sdp = answered?;
        self.sync_ufrag(key);
        self.arm_timer(key);
        info!(participant = %id, "WHEP viewer restarted ICE");
        Ok(sdp::repeat_candidates(&sdp))
    }

    /// The room's tracks a viewer could be shown.
    fn view_candidates(&self, room: RoomKey) -> Vec<Published> {
        let Some(entry) = self.rooms.get(&room) else {
            return Vec::new();
        };
        entry
            .room
            .publications()
            .filter_map(|publication| {
                let owner = publication.info.owner;
                // A WHEP player cannot decrypt end-to-end encrypted media.
                let p = self.participants.get(&owner).filter(|p| !p.e2ee)?;
                let format = self.publication_format(owner, publication.id)?;
                let joined = p
                    .joined_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                Some(Published {
                    track: publication.id,
                    owner,
                    identity: p.identity.clone(),
                    joined,
                    kind: publication.kind(),
                    source: publication.info.source,
                    format,
                })
            })
            .collect()
    }

    /// Points each of a viewer's m-lines at the track it should carry now (the room's tracks
    /// changed, or the leg was just answered).
    pub(super) fn refollow_view(&mut self, id: ParticipantId, now: Instant) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        p.renegotiate_at = None;
        let (room, Some(key)) = (p.room, p.subscribe_leg) else {
            return;
        };
        let Some(mut view) = p.view.take() else {
            return;
        };
        let published = self.view_candidates(room);
        let candidates: Vec<Candidate<'_>> = published.iter().map(Published::candidate).collect();
        let kinds: Vec<MediaKind> = view.lines.iter().map(|l| l.kind).collect();
        let fits = |line: usize, c: &Candidate<'_>| {
            published
                .iter()
                .find(|p| p.track == c.track)
                .is_some_and(|p| carries(&view.lines[line].format, &p.format))
        };
        let (owner, chosen) = pick(&view.follow, &kinds, &candidates, view.following, fits);
        if owner != view.following {
            info!(participant = %id, following = ?owner, "WHEP viewer follows another publisher");
        }
        view.following = owner;
        for (index, wanted) in chosen.into_iter().enumerate() {
            self.point_line(id, room, key, &mut view.lines[index], index, wanted, now);
        }
        if let Some(p) = self.participants.get_mut(&id) {
            p.view = Some(view);
        }
        self.process_room_outputs(room, now);
    }

    /// Re-points one m-line: the track it carried (if any) lets go of the stream's numbering,
    /// and the new one (if any) goes on from it at its first keyframe.
    #[allow(clippy::too_many_arguments)]
    fn point_line(
        &mut self,
        id: ParticipantId,
        room: RoomKey,
        key: LegKey,
        line: &mut ViewLine,
        index: usize,
        wanted: Option<TrackId>,
        now: Instant,
    ) {
        let Some(state) = self.legs.get_mut(&key).and_then(|l| l.subscribe()) else {
            return;
        };
        let current = state
            .slots
            .get(index)
            .and_then(|s| s.as_ref())
            .map(|s| s.track);
        if current == wanted {
            return;
        }
        if let Some(old) = state.slots.get_mut(index).and_then(Option::take) {
            line.sent = (old.packets_sent, old.octets_sent);
            // Still published (the viewer follows someone else now), or gone with its numbering
            // kept by the room.
            if old.attached
                && let Some(entry) = self.rooms.get_mut(&room)
                && let Some(numbering) = entry
                    .room
                    .detach_continuation(old.track, id)
                    .or_else(|| entry.room.take_continuation(sink_id(key, index)))
            {
                line.continuation = Some(numbering);
            }
        }
        let Some(track) = wanted else {
            debug!(participant = %id, mid = %line.mid, "WHEP m-line carries nothing now");
            return;
        };
        let Some(publisher) = self.owner_of(room, track) else {
            return;
        };
        let publisher_ids = self.publisher_extensions(publisher);
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        // Once the leg has connected, a slot is attached at once (as a WebSocket subscriber's
        // stay attached through a short disconnection), so the numbering carries over.
        let connected = leg.connected_once;
        let Some(state) = leg.subscribe() else {
            return;
        };
        let Some(place) = state.slots.get_mut(index) else {
            return;
        };
        *place = Some(OutboundSlot {
            track,
            publisher,
            codec: line.format.codec,
            payload_type: line.format.payload_type,
            sender: line.sender,
            ssrc: line.ssrc,
            mid: Some(line.mid.clone()),
            rewrite: Some(RewriteTarget {
                ssrc: line.ssrc,
                payload_type: line.format.payload_type,
                mid_extension: mid_extension(&line.extensions, Some(&line.mid)),
                extensions: ExtensionTranslator::new(&publisher_ids, &line.extensions),
            }),
            packets_sent: line.sent.0,
            octets_sent: line.sent.1,
            attached: false,
            retired: false,
            renumbered: super::arena::Arena::new(RENUMBERED_CHUNK_BYTES),
        });
        debug!(participant = %id, mid = %line.mid, %track, "WHEP m-line carries a track");
        // Before the leg connects, `attach_ready_slots` starts it when it does.
        if !connected {
            return;
        }
        let sink = sink_id(key, index);
        let Some(entry) = self.rooms.get_mut(&room) else {
            return;
        };
        let attached = match line.continuation.take() {
            Some(numbering) => entry
                .room
                .attach_continuing(track, id, sink, numbering, now),
            None => entry
                .room
                .attach(track, id, sink, rand::random(), rand::random(), now),
        };
        if attached.is_ok()
            && let Some(Some(slot)) = self
                .legs
                .get_mut(&key)
                .and_then(|l| l.subscribe())
                .and_then(|s| s.slots.get_mut(index))
        {
            slot.attached = true;
        }
    }
}
