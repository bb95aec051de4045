//! One peer connection of one participant, and what the relay remembers about its media.
//!
//! A publish leg maps the publisher's SSRCs to tracks; a subscribe leg holds one outbound slot
//! per forwarded track (its sender, SSRC, negotiated payload type, extension ids and mid). The
//! slot index is part of the [`SinkId`] the room forwards into, so the packet path finds the
//! sender without a lookup by name.

use super::demux::LegKey;
use super::guard::RateLimit;
use super::role::LegRole;
use super::sdp::Format;
use crate::media::codec::{Codec, MediaKind};
use crate::media::extmap::{ExtensionIds, HeaderExtension};
use crate::media::ids::{ParticipantId, TrackId};
use crate::media::rewrite::RewriteTarget;
use crate::media::room::SinkId;
use crate::media::room::TrackSource;
use bytes::Bytes;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::time::Instant;

/// A publisher stream the relay has seen RTP from.
#[derive(Debug, Clone, Copy)]
pub struct InboundStream {
    pub track: TrackId,
    pub codec: Codec,
    pub receiver: RTCRtpReceiverId,
}

/// A track announced on the publish leg, by mid.
#[derive(Debug, Clone)]
pub struct PublishedMid {
    pub mid: String,
    pub track: TrackId,
    pub source: TrackSource,
    /// The one format this m-line was answered with; it never changes mid-call.
    pub format: Format,
    /// Whether the room knows the track. A track is published to the room (and announced to
    /// the others) only once the publish leg has connected: until then its media cannot flow.
    pub announced: bool,
    /// The publisher's mute, set before the track was announced.
    pub muted_before_announced: bool,
}

#[derive(Default)]
pub struct PublishState {
    pub streams: FxHashMap<u32, InboundStream>,
    pub mids: Vec<PublishedMid>,
    pub extensions: ExtensionIds,
}

impl PublishState {
    pub fn track_of_mid(&self, mid: &str) -> Option<&PublishedMid> {
        self.mids.iter().find(|m| m.mid == mid)
    }

    /// The SSRC and receiver to send a track's keyframe request to: `wanted` when it is one of
    /// the track's streams, else any of them.
    pub fn stream_for_keyframe(
        &self,
        track: TrackId,
        wanted: Option<u32>,
    ) -> Option<(u32, RTCRtpReceiverId)> {
        if let Some(ssrc) = wanted
            && let Some(stream) = self.streams.get(&ssrc).filter(|s| s.track == track)
        {
            return Some((ssrc, stream.receiver));
        }
        self.streams
            .iter()
            .filter(|(_, s)| s.track == track)
            .min_by_key(|(ssrc, _)| **ssrc)
            .map(|(ssrc, s)| (*ssrc, s.receiver))
    }
}

/// One forwarded track on a subscribe leg.
#[derive(Debug, Clone)]
pub struct OutboundSlot {
    pub track: TrackId,
    pub publisher: ParticipantId,
    pub codec: Codec,
    /// The payload type this slot's format has in the subscribe leg's catalogue.
    pub payload_type: u8,
    pub sender: RTCRtpSenderId,
    pub ssrc: u32,
    pub mid: Option<String>,
    /// Set once the subscriber's answer fixed the payload type and extension ids.
    pub rewrite: Option<RewriteTarget>,
    /// Forwarded so far, for this stream's sender reports.
    pub packets_sent: u32,
    pub octets_sent: u32,
    /// Whether the room forwards into this slot.
    pub attached: bool,
    /// The track left the room; the slot keeps its m-line (`sendonly`, carrying nothing) until
    /// a new track of its kind takes it over.
    pub retired: bool,
    /// Where this stream's VP8 payloads renumbered after a layer switch are copied to. One per
    /// slot: a chunk then holds only this stream's consecutive packets, so what the leg's
    /// retransmission buffer keeps pins about as much as it holds (a chunk shared by every
    /// stream of the worker would be pinned by any slow or paused one).
    pub renumbered: super::arena::Arena,
}

#[derive(Default)]
pub struct SubscribeState {
    /// Slot index = low 16 bits of the sink id; freed slots are `None` and reused.
    pub slots: Vec<Option<OutboundSlot>>,
    pub offer_in_flight: bool,
    /// Whether the client ever answered on this leg (until then, offers say `new_connection`).
    pub answered: bool,
    /// The payload types the subscriber's first answer accepted, per kind: `rtc` fixes the
    /// leg's codecs of a kind from that answer, so later tracks can only use these.
    pub accepted_audio: Option<Vec<u8>>,
    pub accepted_video: Option<Vec<u8>>,
    /// The relay's `tern` data channel on this leg, and whether it is open.
    pub data_channel: Option<rtc::data_channel::RTCDataChannelId>,
    pub data_open: bool,
    /// The offer in flight carries new ICE credentials (a new leg, an ICE restart): until its
    /// answer is applied the leg cannot answer the client's checks, which often arrive first
    /// (media is faster than signaling).
    pub awaiting_credentials: bool,
    /// Connectivity checks (already authenticated by the demux) held until then, replayed once
    /// the answer is applied; without this the client's first check is lost and its next one
    /// comes one retransmission interval later (200 ms for some stacks).
    pub early_checks: Vec<rtc::shared::TaggedBytesMut>,
    /// Transport-cc reports the leg's chain joined to its send history, for the estimator.
    pub feedback: super::feedback::FeedbackQueue,
    /// The retransmission limit the node sets and the bytes the chain retransmitted, and when
    /// and at what count the node last read them.
    pub retransmissions: std::sync::Arc<super::rtx_gate::RetransmissionBudget>,
    pub retransmitted: Option<(Instant, u64)>,
    /// Probe bytes the node orders as retransmitted copies, and what the chain sent of them.
    pub probe: std::sync::Arc<super::rtx_probe::ProbeTap>,
    /// When each packet toward this subscriber may leave, and those waiting (oldest first).
    pub pacer: crate::media::pacer::Pacer,
    pub paced: VecDeque<PacedPacket>,
    /// The pacing deadline queued on the node's timers.
    pub pace_armed: Option<Instant>,
}

/// A packet held by a subscribe leg's pacer.
#[derive(Debug)]
pub struct PacedPacket {
    pub at: Instant,
    pub sender: RTCRtpSenderId,
    pub packet: rtc::rtp::packet::Packet,
    /// Media (counted as forwarded when it leaves) or probe padding.
    pub kind: Option<MediaKind>,
}

/// Packets a subscribe leg's pacer holds at most: about a second of a 720p stream. More means
/// the subscriber's estimate collapsed far below what it is sent; the newest are dropped.
pub const MAX_PACED: usize = 512;

/// Connectivity checks held per leg while its answer is awaited (a client sends one per
/// candidate pair and retransmits: a few is enough, more is a flood).
pub const MAX_EARLY_CHECKS: usize = 8;

impl SubscribeState {
    pub fn accepted(&self, kind: MediaKind) -> Option<&[u8]> {
        match kind {
            MediaKind::Audio => self.accepted_audio.as_deref(),
            MediaKind::Video => self.accepted_video.as_deref(),
        }
    }

    /// Remembers what the first answer with an m-line of `kind` accepted (later ones change
    /// nothing, as in `rtc`).
    pub fn accept_once(&mut self, kind: MediaKind, payload_types: &[u8]) {
        let slot = match kind {
            MediaKind::Audio => &mut self.accepted_audio,
            MediaKind::Video => &mut self.accepted_video,
        };
        slot.get_or_insert_with(|| payload_types.to_vec());
    }

    /// The slots of tracks the leg carries now (retired ones left out).
    pub fn tracks(&self) -> impl Iterator<Item = &OutboundSlot> {
        self.slots.iter().flatten().filter(|s| !s.retired)
    }

    pub fn slot_of_track(&self, track: TrackId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.track == track && !s.retired))
    }

    /// Stores a slot in the first free place; `None` when the leg holds the maximum.
    pub fn insert(&mut self, slot: OutboundSlot) -> Option<usize> {
        if let Some(free) = self.slots.iter().position(Option::is_none) {
            self.slots[free] = Some(slot);
            return Some(free);
        }
        if self.slots.len() >= usize::from(u16::MAX) {
            return None;
        }
        self.slots.push(Some(slot));
        Some(self.slots.len() - 1)
    }
}

// One per leg, never moved on the packet path: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum LegMedia {
    Publish(PublishState),
    Subscribe(SubscribeState),
}

pub struct Leg {
    pub key: LegKey,
    pub role: LegRole,
    pub participant: ParticipantId,
    pub pc: RTCPeerConnection,
    pub ufrag: String,
    pub state: RTCPeerConnectionState,
    pub media: LegMedia,
    /// The deadline currently queued in the worker's timer heap for this leg.
    pub armed: Option<Instant>,
    /// Packets per second this leg may send the relay.
    pub rate_limit: RateLimit,
    /// ICE reached connected at least once (a later failure without DTLS is DTLS's).
    pub ice_connected: bool,
    /// The whole leg (ICE and DTLS) reached connected at least once.
    pub connected_once: bool,
}

impl Leg {
    pub fn new(
        key: LegKey,
        role: LegRole,
        participant: ParticipantId,
        pc: RTCPeerConnection,
        ufrag: String,
        rate_limit: RateLimit,
    ) -> Self {
        let media = match role {
            LegRole::Publish => LegMedia::Publish(PublishState::default()),
            LegRole::Subscribe => LegMedia::Subscribe(SubscribeState::default()),
        };
        Leg {
            key,
            role,
            participant,
            pc,
            ufrag,
            state: RTCPeerConnectionState::New,
            ice_connected: false,
            connected_once: false,
            media,
            armed: None,
            rate_limit,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.state == RTCPeerConnectionState::Connected
    }

    pub fn publish(&mut self) -> Option<&mut PublishState> {
        match &mut self.media {
            LegMedia::Publish(state) => Some(state),
            LegMedia::Subscribe(_) => None,
        }
    }

    pub fn subscribe(&mut self) -> Option<&mut SubscribeState> {
        match &mut self.media {
            LegMedia::Subscribe(state) => Some(state),
            LegMedia::Publish(_) => None,
        }
    }
}

/// A sink names a slot of a subscribe leg: leg key in the high 48 bits, slot in the low 16.
pub fn sink_id(leg: LegKey, slot: usize) -> SinkId {
    SinkId((leg.0 << 16) | (slot as u64 & 0xffff))
}

pub fn sink_parts(sink: SinkId) -> (LegKey, usize) {
    (LegKey(sink.0 >> 16), (sink.0 & 0xffff) as usize)
}

/// Builds a leg's extension table from what was negotiated on it.
pub fn negotiated_extensions<'a>(pairs: impl IntoIterator<Item = (u16, &'a str)>) -> ExtensionIds {
    ExtensionIds::from_negotiated(pairs)
}

/// The `mid` extension for a subscriber slot, when the leg negotiated it.
pub fn mid_extension(ids: &ExtensionIds, mid: Option<&str>) -> Option<(u8, Bytes)> {
    let id = ids.id(HeaderExtension::Mid)?;
    let mid = mid?;
    if mid.is_empty() || mid.len() > 16 || id > 14 {
        return None;
    }
    Some((id, Bytes::copy_from_slice(mid.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_ids_carry_leg_and_slot() {
        let sink = sink_id(LegKey(0x1234_5678), 513);
        assert_eq!(sink_parts(sink), (LegKey(0x1234_5678), 513));
    }
}
