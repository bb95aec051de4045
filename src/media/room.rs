//! One room: its members, their publications, and who receives what.
//!
//! The forwarding table is the set of subscriptions: every publication goes to every other member
//! allowed to subscribe, never back to its publisher. A subscription exists as soon as it is
//! wanted; it forwards once the relay has negotiated it on the subscriber's leg and attached a
//! sink. The room never touches a socket or a clock: inputs are method calls with the time,
//! outputs are returned or queued for [`Room::poll_output`].

use super::allocator::{Priority, Target};
use super::bandwidth::{
    BandwidthConfig, BandwidthPolicy, Decision, RoomBandwidth, SentPacket, VideoSubscription,
};
use super::codec::{Codec, MediaKind};
use super::forwarder::{
    DropReason, Forwarder, ForwarderConfig, InboundPacket, Verdict, Vp8Rewrite,
};
use super::ids::{ParticipantId, RoomId, TrackId};
use super::keyframe::KeyframeRequester;
use super::layers::{Arrival, ClockMapping, LayerSet};
use super::meter::BitrateMeter;
use super::speaker::{SpeakerConfig, SpeakerDetector};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Where a forwarded packet goes: chosen by the IO shell, opaque to the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SinkId(pub u64);

/// What a publisher says a track shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
}

#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub identity: String,
    pub name: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Active,
    /// Signaling dropped; the member leaves at `deadline` unless it resumes.
    Reconnecting {
        deadline: Instant,
    },
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: ParticipantId,
    pub info: MemberInfo,
    pub state: MemberState,
    /// Its sinks go on from one track to the next (see [`Room::keep_numbering`]).
    keeps_numbering: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct PublicationInfo {
    pub owner: ParticipantId,
    pub source: TrackSource,
    pub codec: Codec,
}

/// Which layer of a track a subscription should receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerTarget {
    /// Nobody decided yet: the track's only layer, or its lowest (the next allocation round,
    /// which a new subscription triggers at once, decides).
    Auto,
    /// This layer (a slot of the publication's [`LayerSet`]).
    Layer(u8),
    /// Nothing (the subscriber's audio continues).
    Paused,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub subscriber: ParticipantId,
    sink: Option<SinkId>,
    forwarder: Option<Forwarder>,
    /// The layer being forwarded now.
    current: Option<u8>,
    target: LayerTarget,
    /// The highest VP8 temporal layer forwarded (`ALL_TEMPORAL`: all), and the one wanted; a
    /// lower one applies at the next picture, a higher one at the next base-layer or sync picture.
    temporal: u8,
    temporal_target: u8,
    wish: Wish,
}

/// What a subscriber asked for of one video track it receives (`update_subscription`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wish {
    pub paused: bool,
    /// The size the video is shown at, in device pixels.
    pub max_size: Option<(u32, u32)>,
}

/// No temporal layer is dropped.
const ALL_TEMPORAL: u8 = u8::MAX;

impl Subscription {
    fn new(subscriber: ParticipantId) -> Self {
        Subscription {
            subscriber,
            sink: None,
            forwarder: None,
            current: None,
            target: LayerTarget::Auto,
            temporal: ALL_TEMPORAL,
            temporal_target: ALL_TEMPORAL,
            wish: Wish::default(),
        }
    }

    pub fn sink(&self) -> Option<SinkId> {
        self.sink
    }

    /// The layer slot being forwarded now.
    pub fn current_layer(&self) -> Option<u8> {
        self.current
    }

    pub fn target(&self) -> LayerTarget {
        self.target
    }

    /// What the subscriber asked for of this track.
    pub fn wish(&self) -> Wish {
        self.wish
    }

    /// Paused by bandwidth control (its budgets or the subscriber's estimate), not because the
    /// subscriber asked for nothing of it.
    pub fn held_back(&self) -> bool {
        self.target == LayerTarget::Paused && !self.wish.paused
    }
}

/// One packet for one subscriber: where it goes and its new numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub sink: SinkId,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub vp8: Option<Vp8Rewrite>,
}

#[derive(Debug, Clone)]
pub struct Publication {
    pub id: TrackId,
    pub info: PublicationInfo,
    /// The publisher's own mute. Kept apart from the operator's, so that an operator lifting
    /// theirs never unmutes what the publisher muted.
    pub publisher_muted: bool,
    /// Muted by an operator: nothing is forwarded, and the publisher cannot unmute it.
    pub admin_muted: bool,
    meter: BitrateMeter,
    keyframes: KeyframeRequester,
    /// The layer a keyframe was last wanted on (a subscription waiting to start or switch).
    keyframe_layer: Option<u8>,
    pub layers: LayerSet,
    /// What the allocator's ranks stood for in the last round: a layer, and the highest
    /// temporal layer of it (finer steps below the lowest layer, where they spare a pause).
    steps: Vec<(u8, u8)>,
    demand: Demand,
    subscriptions: Vec<Subscription>,
}

impl Publication {
    /// Muted as everybody sees it: by its publisher or by an operator.
    pub fn muted(&self) -> bool {
        self.publisher_muted || self.admin_muted
    }

    pub fn kind(&self) -> MediaKind {
        self.info.codec.kind()
    }

    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// The layer slot and the highest temporal layer an allocation rank stands for.
    pub fn step(&self, rank: u8) -> Option<(u8, Option<u8>)> {
        self.steps
            .get(usize::from(rank))
            .map(|&(slot, temporal)| (slot, (temporal != ALL_TEMPORAL).then_some(temporal)))
    }

    /// The highest allocation step a video shown at `size` (device pixels) needs: the whole of
    /// the smallest layer at least that wide or tall (downscaled rather than upscaled, as a
    /// browser shows it best), or of the largest layer when none is. `None` when a layer's size
    /// is not known (only VP8 keyframes show it): then any layer may go.
    fn highest_step_for(&self, size: (u32, u32)) -> Option<u8> {
        let rank = self.covering_rank(size)?;
        let top = *self.layers.by_quality().get(rank)?;
        self.steps
            .iter()
            .rposition(|&(slot, _)| slot == top)
            .map(|i| i as u8)
    }

    /// The quality rank of the smallest layer at least `width` wide or `height` tall (the
    /// largest layer when none is); `None` when a layer's size is not known.
    fn covering_rank(&self, (width, height): (u32, u32)) -> Option<usize> {
        let layers = self.layers.by_quality();
        for (rank, &slot) in layers.iter().enumerate() {
            let (w, h) = self.layers.layer(slot)?.resolution?;
            if u32::from(w) >= width || u32::from(h) >= height {
                return Some(rank);
            }
        }
        layers.len().checked_sub(1)
    }

    /// How many of the track's layers, lowest first, some subscriber may receive (`None`: all):
    /// none while nobody subscribes or an operator muted it; a subscription paused at its
    /// subscriber's request needs none, one capped by a tile size the layers that cover it.
    /// Subscriptions held lower by bandwidth still need the layers above, to climb back.
    fn layers_wanted(&self) -> Option<u8> {
        let known = self.layers.by_quality().len();
        if self.kind() != MediaKind::Video || known == 0 {
            return None;
        }
        if self.admin_muted {
            return Some(0);
        }
        let mut most = 0;
        for s in &self.subscriptions {
            let wanted = match s.wish {
                Wish { paused: true, .. } => 0,
                Wish {
                    max_size: Some(size),
                    ..
                } => self.covering_rank(size).map_or(known, |rank| rank + 1),
                Wish { max_size: None, .. } => known,
            };
            most = most.max(wanted);
            if most >= known {
                return None;
            }
        }
        Some(most as u8)
    }

    /// The slot `target` stands for now, if any.
    fn resolve(&self, target: LayerTarget) -> Option<u8> {
        match target {
            LayerTarget::Layer(slot) => Some(slot),
            LayerTarget::Paused => None,
            LayerTarget::Auto => self.layers.by_quality().first().copied(),
        }
    }

    /// Bits per second received on this track, over about the last second.
    pub fn bitrate_bps(&self, now: Instant) -> u64 {
        self.meter.bitrate_bps(now)
    }
}

/// Something the shell must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomOutput {
    /// Ask the publisher of this track for a keyframe (already throttled), on the SSRC of the
    /// layer somebody waits for when there is one.
    RequestKeyframe { track: TrackId, ssrc: Option<u32> },
    /// The set of tracks this member should receive changed: renegotiate its subscribe leg.
    SubscriptionsChanged(ParticipantId),
    /// This member did not resume in time and must be removed.
    GraceExpired(ParticipantId),
    /// Tell a subscriber what it now receives of a track: a layer (quality rank, 0 = lowest,
    /// with its size when known) or nothing, and why.
    SubscriptionState {
        subscriber: ParticipantId,
        track: TrackId,
        target: Target,
        resolution: Option<(u16, u16)>,
    },
    /// Send this many padding packets toward a subscriber now (a bandwidth probe): numbers for
    /// each come from [`Room::probe_padding`].
    SendPadding {
        subscriber: ParticipantId,
        packets: u32,
    },
    /// The room's active speakers changed: [`Room::active_speakers`] has the new list.
    ActiveSpeakersChanged,
    /// Tell a publisher how many of its track's layers, lowest first, anybody may receive
    /// (`None`: all), so that it stops encoding the others (dynacast).
    LayerDemand {
        owner: ParticipantId,
        track: TrackId,
        layers: Option<u8>,
    },
}

/// How long fewer layers must have been enough before a publisher is told to stop the others: a
/// tile shrunk for a moment, or a subscriber that leaves and comes back, must not stop and
/// restart the publisher's encoder. More layers are asked for at once.
const DEMAND_DOWN_DELAY: Duration = Duration::from_secs(3);

/// What a publisher was last told of the demand for one track, and a lower demand waiting out
/// [`DEMAND_DOWN_DELAY`].
#[derive(Debug, Clone, Copy, Default)]
struct Demand {
    /// `None` until told; then the layers told (`None`: all).
    told: Option<Option<u8>>,
    lower_since: Option<(Option<u8>, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    AlreadyMember,
    NotMember,
    NotAllowed,
    DuplicateTrack,
    UnknownTrack,
}

/// How one packet was fanned out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    pub forwarded: u32,
    pub awaiting_keyframe: u32,
    pub stale: u32,
    /// The track is muted by an operator: nothing was forwarded.
    pub suppressed: bool,
    /// Seen before (a retransmission that crossed its original, a probe's copy): dropped.
    pub duplicate: bool,
    /// Padding only (the publisher's bandwidth probe): dropped, its gap closed.
    pub padding: bool,
    /// Subscriptions that moved to another layer with this packet, up and down in quality.
    pub switched_up: u32,
    pub switched_down: u32,
    /// An SSRC the track has no room for (more layers than any encoder sends).
    pub unknown_layer: bool,
    /// Copies not sent because their temporal layer is above what the subscription gets.
    pub temporal_dropped: u32,
}

pub struct Room {
    id: RoomId,
    members: BTreeMap<ParticipantId, Member>,
    publications: HashMap<TrackId, Publication>,
    outputs: VecDeque<RoomOutput>,
    keyframe_interval: Duration,
    bandwidth: RoomBandwidth,
    padding_due: Vec<(ParticipantId, u32)>,
    speakers: SpeakerDetector,
    /// Where the numbering of sinks of members that keep it stood when their track went away,
    /// until the sink takes another track (at most one per such sink).
    continuations: HashMap<SinkId, (ParticipantId, Forwarder)>,
}

impl Room {
    pub fn new(id: RoomId, keyframe_interval: Duration) -> Self {
        Room::with_bandwidth(id, keyframe_interval, BandwidthConfig::default())
    }

    pub fn with_bandwidth(
        id: RoomId,
        keyframe_interval: Duration,
        config: BandwidthConfig,
    ) -> Self {
        Room {
            id,
            members: BTreeMap::new(),
            publications: HashMap::new(),
            outputs: VecDeque::new(),
            keyframe_interval,
            bandwidth: RoomBandwidth::new(config),
            padding_due: Vec::new(),
            speakers: SpeakerDetector::new(SpeakerConfig::default()),
            continuations: HashMap::new(),
        }
    }

    /// `id`'s sinks go on from one track to the next (a WHEP viewer's m-lines): when a track it
    /// receives is unpublished, where its sink's numbering stood is kept for
    /// [`Room::take_continuation`].
    pub fn keep_numbering(&mut self, id: ParticipantId) {
        if let Some(member) = self.members.get_mut(&id) {
            member.keeps_numbering = true;
        }
    }

    /// Where `sink`'s numbering stood when its track was unpublished, for
    /// [`Room::attach_continuing`].
    pub fn take_continuation(&mut self, sink: SinkId) -> Option<Forwarder> {
        self.continuations.remove(&sink).map(|(_, f)| f)
    }

    /// The audio level (RFC 6464: 0 loudest, 127 silence) of one packet of an audio track, for
    /// the active speakers. A muted track counts as silent. True when it is the room's first
    /// level, which gives [`Room::poll_timeout`] a deadline to arm a timer for.
    pub fn observe_audio_level(&mut self, track: TrackId, level: u8, now: Instant) -> bool {
        match self.publications.get(&track) {
            Some(p) if p.kind() == MediaKind::Audio && !p.muted() => {
                self.speakers.observe(p.info.owner, level, now)
            }
            _ => false,
        }
    }

    /// The active speakers, loudest first.
    pub fn active_speakers(&self) -> &[ParticipantId] {
        self.speakers.speakers()
    }

    /// The bandwidth control loop: estimates, the last allocation, the budgets.
    pub fn bandwidth(&self) -> &RoomBandwidth {
        &self.bandwidth
    }

    /// New budgets, effective at once.
    pub fn set_bandwidth_policy(&mut self, policy: BandwidthPolicy, now: Instant) {
        self.bandwidth.set_policy(policy, now);
    }

    /// What the relay retransmits to a subscriber, bits per second (part of its video budgets).
    pub fn set_retransmission_rate(&mut self, subscriber: ParticipantId, bps: u64) {
        self.bandwidth.set_retransmission_rate(subscriber, bps);
    }

    /// A subscriber's transport-cc reports for its estimate.
    pub fn transport_feedback(
        &mut self,
        subscriber: ParticipantId,
        reports: &[SentPacket],
        now: Instant,
    ) {
        self.bandwidth.on_feedback(subscriber, now, reports);
    }

    pub fn id(&self) -> &RoomId {
        &self.id
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member(&self, id: ParticipantId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn publication(&self, id: TrackId) -> Option<&Publication> {
        self.publications.get(&id)
    }

    pub fn publications(&self) -> impl Iterator<Item = &Publication> {
        self.publications.values()
    }

    pub fn publications_of(&self, owner: ParticipantId) -> impl Iterator<Item = &Publication> {
        self.publications
            .values()
            .filter(move |p| p.info.owner == owner)
    }

    /// The publications `subscriber` should receive, in a stable order (by track id).
    pub fn subscribed_tracks(&self, subscriber: ParticipantId) -> Vec<TrackId> {
        let mut tracks: Vec<TrackId> = self
            .publications
            .values()
            .filter(|p| p.subscriptions.iter().any(|s| s.subscriber == subscriber))
            .map(|p| p.id)
            .collect();
        tracks.sort();
        tracks
    }

    pub fn join(&mut self, id: ParticipantId, info: MemberInfo) -> Result<(), RoomError> {
        if self.members.contains_key(&id) {
            return Err(RoomError::AlreadyMember);
        }
        let can_subscribe = info.can_subscribe;
        self.members.insert(
            id,
            Member {
                id,
                info,
                state: MemberState::Active,
                keeps_numbering: false,
            },
        );
        if can_subscribe {
            let mut any = false;
            for publication in self.publications.values_mut() {
                publication.subscriptions.push(Subscription::new(id));
                any = true;
            }
            if any {
                self.outputs.push_back(RoomOutput::SubscriptionsChanged(id));
            }
        }
        Ok(())
    }

    /// Removes a member with its publications and subscriptions. Returns the tracks that were
    /// unpublished.
    pub fn leave(&mut self, id: ParticipantId) -> Result<Vec<TrackId>, RoomError> {
        if self.members.remove(&id).is_none() {
            return Err(RoomError::NotMember);
        }
        let mut owned: Vec<TrackId> = self.publications_of(id).map(|p| p.id).collect();
        owned.sort();
        for track in &owned {
            self.unpublish(*track)?;
        }
        for publication in self.publications.values_mut() {
            publication.subscriptions.retain(|s| s.subscriber != id);
        }
        self.bandwidth.remove_subscriber(id);
        self.continuations
            .retain(|_, (subscriber, _)| *subscriber != id);
        self.outputs.retain(|o| match o {
            RoomOutput::SubscriptionsChanged(p) | RoomOutput::GraceExpired(p) => *p != id,
            RoomOutput::SubscriptionState { subscriber, .. }
            | RoomOutput::SendPadding { subscriber, .. } => *subscriber != id,
            RoomOutput::RequestKeyframe { .. } => true,
            RoomOutput::LayerDemand { owner, .. } => *owner != id,
            RoomOutput::ActiveSpeakersChanged => true,
        });
        self.speakers.forget(id);
        Ok(owned)
    }

    pub fn set_reconnecting(&mut self, id: ParticipantId, deadline: Instant) {
        if let Some(member) = self.members.get_mut(&id) {
            member.state = MemberState::Reconnecting { deadline };
        }
    }

    pub fn set_active(&mut self, id: ParticipantId) {
        if let Some(member) = self.members.get_mut(&id) {
            member.state = MemberState::Active;
        }
    }

    pub fn publish(&mut self, id: TrackId, info: PublicationInfo) -> Result<(), RoomError> {
        let owner = self.members.get(&info.owner).ok_or(RoomError::NotMember)?;
        if !owner.info.can_publish {
            return Err(RoomError::NotAllowed);
        }
        if self.publications.contains_key(&id) {
            return Err(RoomError::DuplicateTrack);
        }
        let mut subscriptions = Vec::new();
        for member in self.members.values() {
            if member.id != info.owner && member.info.can_subscribe {
                subscriptions.push(Subscription::new(member.id));
                self.outputs
                    .push_back(RoomOutput::SubscriptionsChanged(member.id));
            }
        }
        self.publications.insert(
            id,
            Publication {
                id,
                info,
                publisher_muted: false,
                admin_muted: false,
                meter: BitrateMeter::default(),
                keyframes: KeyframeRequester::new(self.keyframe_interval),
                keyframe_layer: None,
                layers: LayerSet::default(),
                steps: Vec::new(),
                demand: Demand::default(),
                subscriptions,
            },
        );
        Ok(())
    }

    pub fn unpublish(&mut self, id: TrackId) -> Result<Publication, RoomError> {
        let mut publication = self
            .publications
            .remove(&id)
            .ok_or(RoomError::UnknownTrack)?;
        for subscription in &mut publication.subscriptions {
            self.outputs
                .push_back(RoomOutput::SubscriptionsChanged(subscription.subscriber));
            let keeps = self
                .members
                .get(&subscription.subscriber)
                .is_some_and(|m| m.keeps_numbering);
            if keeps
                && let Some(sink) = subscription.sink
                && let Some(forwarder) = subscription.forwarder.take()
            {
                self.continuations
                    .insert(sink, (subscription.subscriber, forwarder));
            }
        }
        Ok(publication)
    }

    /// The publisher mutes or unmutes its track (it still sends; the flag is for the others).
    /// A track an operator muted stays muted.
    pub fn set_muted(&mut self, id: TrackId, muted: bool) -> Result<(), RoomError> {
        let publication = self
            .publications
            .get_mut(&id)
            .ok_or(RoomError::UnknownTrack)?;
        if publication.admin_muted && !muted {
            return Err(RoomError::NotAllowed);
        }
        publication.publisher_muted = muted;
        Ok(())
    }

    /// A subscriber's wish for one video track it receives; the next allocation round (due at
    /// once) applies it.
    pub fn set_wish(
        &mut self,
        track: TrackId,
        subscriber: ParticipantId,
        wish: Wish,
        now: Instant,
    ) -> Result<(), RoomError> {
        let subscription = self
            .publications
            .get_mut(&track)
            .filter(|p| p.kind() == MediaKind::Video)
            .and_then(|p| {
                p.subscriptions
                    .iter_mut()
                    .find(|s| s.subscriber == subscriber)
            })
            .ok_or(RoomError::UnknownTrack)?;
        if subscription.wish != wish {
            subscription.wish = wish;
            self.bandwidth.wake(now);
        }
        Ok(())
    }

    /// An operator mutes a track: the relay forwards none of it until the operator unmutes it.
    /// Forwarding then resumes at a keyframe (one is requested), with continuous numbering.
    pub fn set_admin_muted(
        &mut self,
        id: TrackId,
        muted: bool,
        now: Instant,
    ) -> Result<(), RoomError> {
        let publication = self
            .publications
            .get_mut(&id)
            .ok_or(RoomError::UnknownTrack)?;
        let unmuting = publication.admin_muted && !muted;
        publication.admin_muted = muted;
        if unmuting {
            for subscription in &mut publication.subscriptions {
                if let Some(forwarder) = &mut subscription.forwarder {
                    forwarder.reset_source();
                }
                subscription.current = None;
            }
            if publication.kind() == MediaKind::Video && publication.keyframes.request(now) {
                self.outputs.push_back(RoomOutput::RequestKeyframe {
                    track: id,
                    ssrc: None,
                });
            }
        }
        Ok(())
    }

    /// The subscription is negotiated on the subscriber's leg: start forwarding into `sink`,
    /// beginning at a keyframe (one is requested).
    pub fn attach(
        &mut self,
        track: TrackId,
        subscriber: ParticipantId,
        sink: SinkId,
        initial_sequence_number: u16,
        initial_timestamp: u32,
        now: Instant,
    ) -> Result<(), RoomError> {
        self.attach_forwarder(track, subscriber, sink, now, |codec| {
            Forwarder::new(ForwarderConfig {
                clock_rate: codec.clock_rate(),
                starts_at_keyframe: codec.kind() == MediaKind::Video,
                initial_sequence_number,
                initial_timestamp,
            })
        })
    }

    /// Like [`Room::attach`], but the sink goes on from where `continuation` (taken from another
    /// track by [`Room::detach_continuation`]) left off: the subscriber sees one stream whose
    /// numbering never jumps, switching to `track` at its first keyframe (a WHEP viewer's m-line
    /// following a new publisher). The tracks must be of one kind.
    pub fn attach_continuing(
        &mut self,
        track: TrackId,
        subscriber: ParticipantId,
        sink: SinkId,
        continuation: Forwarder,
        now: Instant,
    ) -> Result<(), RoomError> {
        let kind = self
            .publications
            .get(&track)
            .ok_or(RoomError::UnknownTrack)?
            .kind();
        if continuation.starts_at_keyframe() != (kind == MediaKind::Video) {
            return Err(RoomError::NotAllowed);
        }
        let mut continuation = Some(continuation);
        self.attach_forwarder(track, subscriber, sink, now, |_| {
            let mut forwarder = continuation.take().expect("called once");
            forwarder.reset_source();
            forwarder
        })
    }

    fn attach_forwarder(
        &mut self,
        track: TrackId,
        subscriber: ParticipantId,
        sink: SinkId,
        now: Instant,
        forwarder: impl FnOnce(Codec) -> Forwarder,
    ) -> Result<(), RoomError> {
        let publication = self
            .publications
            .get_mut(&track)
            .ok_or(RoomError::UnknownTrack)?;
        let codec = publication.info.codec;
        let subscription = publication
            .subscriptions
            .iter_mut()
            .find(|s| s.subscriber == subscriber)
            .ok_or(RoomError::NotMember)?;
        subscription.sink = Some(sink);
        subscription.current = None;
        subscription.forwarder = Some(forwarder(codec));
        let target = subscription.target;
        let wanted = publication.resolve(target);
        if codec.kind() == MediaKind::Video {
            self.bandwidth.add_subscriber(subscriber, now);
        }
        if codec.kind() == MediaKind::Video && publication.keyframes.request(now) {
            let ssrc = wanted.and_then(|slot| publication.layers.layer(slot).map(|l| l.ssrc));
            self.outputs
                .push_back(RoomOutput::RequestKeyframe { track, ssrc });
        }
        Ok(())
    }

    /// Stops forwarding to a subscriber without removing the subscription (its leg is being
    /// renegotiated or rebuilt).
    pub fn detach(&mut self, track: TrackId, subscriber: ParticipantId) {
        self.detach_continuation(track, subscriber);
    }

    /// Stops forwarding `track` to `subscriber` and hands back where its numbering stands, for
    /// [`Room::attach_continuing`].
    pub fn detach_continuation(
        &mut self,
        track: TrackId,
        subscriber: ParticipantId,
    ) -> Option<Forwarder> {
        let publication = self.publications.get_mut(&track)?;
        let subscription = publication
            .subscriptions
            .iter_mut()
            .find(|s| s.subscriber == subscriber)?;
        subscription.sink = None;
        subscription.current = None;
        subscription.forwarder.take()
    }

    /// Binds a publisher's SSRC to a layer of its track by rid (when the publisher simulcasts).
    /// Returns false when the track already has all the layers it may have.
    pub fn bind_layer(
        &mut self,
        track: TrackId,
        ssrc: u32,
        rid: Option<&str>,
        now: Instant,
    ) -> bool {
        self.bandwidth.wake(now);
        self.publications
            .get_mut(&track)
            .is_some_and(|p| p.layers.bind(ssrc, rid).is_some())
    }

    /// Chooses the layer a subscription receives. Moving to another layer happens at that
    /// layer's next keyframe (one is requested); pausing stops forwarding at once.
    pub fn set_target(
        &mut self,
        track: TrackId,
        subscriber: ParticipantId,
        target: LayerTarget,
        now: Instant,
    ) {
        let Some(publication) = self.publications.get_mut(&track) else {
            return;
        };
        let Some(index) = publication
            .subscriptions
            .iter()
            .position(|s| s.subscriber == subscriber)
        else {
            return;
        };
        let wanted = publication.resolve(target);
        let subscription = &mut publication.subscriptions[index];
        subscription.target = target;
        if wanted.is_none() {
            subscription.current = None;
            if let Some(forwarder) = &mut subscription.forwarder {
                forwarder.reset_source();
            }
            return;
        }
        let switching = subscription.sink.is_some() && subscription.current != wanted;
        if switching && publication.kind() == MediaKind::Video {
            publication.keyframe_layer = wanted;
            if publication.keyframes.request(now) {
                let ssrc = wanted.and_then(|slot| publication.layers.layer(slot).map(|l| l.ssrc));
                self.outputs
                    .push_back(RoomOutput::RequestKeyframe { track, ssrc });
            }
        }
    }

    /// Fans one packet out to every attached subscription. `emit` is called with each sink and
    /// the packet's new numbering for it; nothing is allocated.
    pub fn forward(
        &mut self,
        track: TrackId,
        packet: &InboundPacket,
        now: Instant,
        mut emit: impl FnMut(Forwarded),
    ) -> FanOut {
        let mut fan_out = FanOut::default();
        let Some(publication) = self.publications.get_mut(&track) else {
            return fan_out;
        };
        let slot = match publication.layers.slot_of(packet.ssrc) {
            Some(slot) => slot,
            None => match publication.layers.bind(packet.ssrc, None) {
                Some(slot) => {
                    self.bandwidth.wake(now);
                    slot
                }
                None => {
                    fan_out.unknown_layer = true;
                    return fan_out;
                }
            },
        };
        let arrival = publication.layers.observe(
            slot,
            packet.sequence_number,
            packet.payload_bytes,
            packet.resolution,
            packet.vp8.and_then(|d| d.temporal_id),
            now,
        );
        if arrival == Arrival::Duplicate {
            fan_out.duplicate = true;
            return fan_out;
        }
        publication.meter.record(packet.payload_bytes, now);
        if packet.payload_bytes == 0 {
            fan_out.padding = true;
            for subscription in &mut publication.subscriptions {
                if let (Some(forwarder), Some(current)) =
                    (&mut subscription.forwarder, subscription.current)
                    && current == slot
                {
                    forwarder.skip(packet);
                }
            }
            return fan_out;
        }
        if publication.admin_muted {
            fan_out.suppressed = true;
            return fan_out;
        }
        let video = publication.kind() == MediaKind::Video;
        if packet.keyframe_start && video && arrival == Arrival::New {
            publication.keyframes.keyframe_received(now);
        }
        let clock_rate = publication.info.codec.clock_rate();
        let best = publication.layers.by_quality().last().copied();
        let mut keyframe_wanted = false;
        for subscription in &mut publication.subscriptions {
            let (Some(sink), Some(forwarder)) = (subscription.sink, &mut subscription.forwarder)
            else {
                continue;
            };
            let wanted = match subscription.target {
                LayerTarget::Layer(wanted) => Some(wanted),
                LayerTarget::Paused => None,
                LayerTarget::Auto => best,
            };
            let verdict = if subscription.current == Some(slot) {
                if let Some(vp8) = packet.vp8
                    && let Some(tid) = vp8.temporal_id
                {
                    if vp8.picture_start {
                        let wider = subscription.temporal_target > subscription.temporal;
                        if !wider || tid == 0 || vp8.layer_sync {
                            subscription.temporal = subscription.temporal_target;
                        }
                    }
                    if tid > subscription.temporal {
                        forwarder.drop_packet(packet);
                        fan_out.temporal_dropped += 1;
                        continue;
                    }
                }
                forwarder.forward(packet, now)
            } else if wanted != Some(slot) {
                continue;
            } else if !video {
                subscription.current = Some(slot);
                forwarder.forward(packet, now)
            } else if packet.keyframe_start && arrival == Arrival::New {
                // The splice: this keyframe of the wanted layer replaces the current one.
                let timestamp = subscription.current.and_then(|current| {
                    let from_ssrc = publication.layers.layer(current)?.ssrc;
                    let offset = forwarder.timestamp_offset(from_ssrc)?;
                    let in_current = publication.layers.translate_timestamp(
                        slot,
                        packet.timestamp,
                        current,
                        clock_rate,
                    )?;
                    Some(in_current.wrapping_add(offset))
                });
                let verdict = forwarder.switch_to(packet, timestamp, now);
                if matches!(verdict, Verdict::Forward { .. }) {
                    if let Some(current) = subscription.current {
                        let layers = &publication.layers;
                        if layers.rank_of(slot) > layers.rank_of(current) {
                            fan_out.switched_up += 1;
                        } else {
                            fan_out.switched_down += 1;
                        }
                    }
                    subscription.current = Some(slot);
                    // A keyframe is a base-layer picture: any temporal limit applies from here.
                    subscription.temporal = subscription.temporal_target;
                }
                verdict
            } else {
                keyframe_wanted = true;
                Verdict::Drop(DropReason::AwaitingKeyframe)
            };
            match verdict {
                Verdict::Forward {
                    sequence_number,
                    timestamp,
                    vp8,
                } => {
                    fan_out.forwarded += 1;
                    emit(Forwarded {
                        sink,
                        sequence_number,
                        timestamp,
                        vp8,
                    });
                }
                Verdict::Drop(DropReason::AwaitingKeyframe) => fan_out.awaiting_keyframe += 1,
                Verdict::Drop(DropReason::Stale) => fan_out.stale += 1,
            }
        }
        if fan_out.awaiting_keyframe > 0 {
            if keyframe_wanted {
                publication.keyframe_layer = Some(slot);
            }
            if publication.keyframes.request(now) {
                let ssrc = publication
                    .keyframe_layer
                    .and_then(|s| publication.layers.layer(s))
                    .map_or(packet.ssrc, |l| l.ssrc);
                self.outputs.push_back(RoomOutput::RequestKeyframe {
                    track,
                    ssrc: Some(ssrc),
                });
            }
        }
        fan_out
    }

    /// The shell sent this much of a probe toward `subscriber` as retransmitted copies of media.
    pub fn probe_copies_sent(&mut self, subscriber: ParticipantId, bytes: u64) {
        self.bandwidth.probe_bytes_sent(subscriber, bytes);
    }

    /// Numbers for one padding packet in a video subscription of `subscriber` (a bandwidth
    /// probe toward it), where one can go now.
    pub fn probe_padding(&mut self, subscriber: ParticipantId, now: Instant) -> Option<Forwarded> {
        // The lowest track id that can take padding now: deterministic, and no allocation per
        // padding packet.
        let track = self
            .publications
            .values()
            .filter(|p| p.kind() == MediaKind::Video)
            .filter(|p| {
                p.subscriptions.iter().any(|s| {
                    s.subscriber == subscriber
                        && s.sink.is_some()
                        && s.forwarder
                            .as_ref()
                            .is_some_and(Forwarder::can_insert_padding)
                })
            })
            .map(|p| p.id)
            .min()?;
        let publication = self.publications.get_mut(&track)?;
        let subscription = publication
            .subscriptions
            .iter_mut()
            .find(|s| s.subscriber == subscriber)?;
        let sink = subscription.sink?;
        let (sequence_number, timestamp) = subscription.forwarder.as_mut()?.insert_padding(now)?;
        self.bandwidth.padding_sent(subscriber, 1);
        Some(Forwarded {
            sink,
            sequence_number,
            timestamp,
            vp8: None,
        })
    }

    /// Translates a publisher's sender report (RFC 3550 §6.4.1) for every subscription that is
    /// forwarding that stream: same NTP time, RTP time moved by the subscription's timestamp
    /// offset. Receivers then map all of a participant's streams to one clock (lip sync).
    pub fn sender_report(
        &mut self,
        track: TrackId,
        ssrc: u32,
        rtp_time: u32,
        ntp_time: u64,
        mut emit: impl FnMut(SinkId, u32),
    ) {
        let Some(publication) = self.publications.get_mut(&track) else {
            return;
        };
        publication
            .layers
            .record_sender_report(ssrc, ClockMapping { rtp_time, ntp_time });
        for subscription in &publication.subscriptions {
            if let (Some(sink), Some(forwarder)) = (subscription.sink, &subscription.forwarder)
                && let Some(offset) = forwarder.timestamp_offset(ssrc)
            {
                emit(sink, rtp_time.wrapping_add(offset));
            }
        }
    }

    /// A subscriber lost the picture (PLI/FIR): ask the publisher, throttled.
    pub fn request_keyframe(&mut self, track: TrackId, now: Instant) {
        if let Some(publication) = self.publications.get_mut(&track)
            && publication.kind() == MediaKind::Video
            && publication.keyframes.request_from_subscriber(now)
        {
            self.outputs
                .push_back(RoomOutput::RequestKeyframe { track, ssrc: None });
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let members = self.members.values().filter_map(|m| match m.state {
            MemberState::Reconnecting { deadline } => Some(deadline),
            MemberState::Active => None,
        });
        let keyframes = self
            .publications
            .values()
            .filter_map(|p| p.keyframes.poll_timeout());
        let demands = self.publications.values().filter_map(|p| {
            p.demand
                .lower_since
                .map(|(_, since)| since + DEMAND_DOWN_DELAY)
        });
        members
            .chain(keyframes)
            .chain(demands)
            .chain(self.speakers.poll_timeout())
            .chain(self.bandwidth.poll_timeout())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for member in self.members.values() {
            if let MemberState::Reconnecting { deadline } = member.state
                && deadline <= now
                && !self.outputs.contains(&RoomOutput::GraceExpired(member.id))
            {
                self.outputs.push_back(RoomOutput::GraceExpired(member.id));
            }
        }
        let mut due: Vec<(TrackId, Option<u32>)> = Vec::new();
        for publication in self.publications.values_mut() {
            if publication.keyframes.handle_timeout(now) {
                let ssrc = publication
                    .keyframe_layer
                    .and_then(|s| publication.layers.layer(s))
                    .map(|l| l.ssrc);
                due.push((publication.id, ssrc));
            }
        }
        due.sort();
        self.outputs.extend(
            due.into_iter()
                .map(|(track, ssrc)| RoomOutput::RequestKeyframe { track, ssrc }),
        );
        self.bandwidth.handle_timeout(now);
        if self.bandwidth.is_round_due(now) {
            self.allocate(now);
        }
        self.update_demands(now);
        if self.speakers.update(now).is_some() {
            self.outputs.push_back(RoomOutput::ActiveSpeakersChanged);
            // Speakers' cameras come before the other cameras.
            self.bandwidth.wake(now);
        }
        self.padding_due.clear();
        self.bandwidth.padding_due(now, &mut self.padding_due);
        for (subscriber, packets) in self.padding_due.drain(..) {
            self.outputs.push_back(RoomOutput::SendPadding {
                subscriber,
                packets,
            });
        }
    }

    /// Tells publishers which layers anybody may receive when that changed: more at once, fewer
    /// once they have been enough for [`DEMAND_DOWN_DELAY`].
    fn update_demands(&mut self, now: Instant) {
        for publication in self.publications.values_mut() {
            if publication.kind() != MediaKind::Video {
                continue;
            }
            let wanted = publication.layers_wanted();
            let demand = &mut publication.demand;
            // `None` (all) is the most; publishers encode everything until told otherwise.
            let more = |a: Option<u8>, b: Option<u8>| match (a, b) {
                (None, Some(_)) => true,
                (Some(a), Some(b)) => a > b,
                _ => false,
            };
            let told = demand.told.unwrap_or(None);
            let tell = if wanted == told {
                demand.lower_since = None;
                false
            } else if more(wanted, told) {
                true
            } else {
                match demand.lower_since {
                    Some((lower, since)) if lower == wanted => now >= since + DEMAND_DOWN_DELAY,
                    _ => {
                        demand.lower_since = Some((wanted, now));
                        false
                    }
                }
            };
            if tell {
                demand.told = Some(wanted);
                demand.lower_since = None;
                self.outputs.push_back(RoomOutput::LayerDemand {
                    owner: publication.info.owner,
                    track: publication.id,
                    layers: wanted,
                });
            }
        }
    }

    /// What the owner of `track` was last told of its demand (`None`: nothing, or all layers),
    /// to repeat after it resumes.
    pub fn told_demand(&self, track: TrackId) -> Option<u8> {
        self.publications
            .get(&track)
            .and_then(|p| p.demand.told)
            .flatten()
    }

    /// One allocation round: every attached video subscription gets a layer or is paused.
    fn allocate(&mut self, now: Instant) {
        let cap = self.bandwidth.policy().max_publisher_bps;
        let mut audio: BTreeMap<ParticipantId, u64> = BTreeMap::new();
        let mut tracks: Vec<(TrackId, Priority, Vec<u64>)> = Vec::new();
        let mut steps_of: Vec<(TrackId, Vec<(u8, u8)>)> = Vec::new();
        let mut ids: Vec<TrackId> = self.publications.keys().copied().collect();
        ids.sort();
        for id in &ids {
            let publication = &self.publications[id];
            if publication.kind() == MediaKind::Audio {
                let bps = publication.bitrate_bps(now);
                for s in publication
                    .subscriptions
                    .iter()
                    .filter(|s| s.sink.is_some())
                {
                    *audio.entry(s.subscriber).or_default() += bps;
                }
                continue;
            }
            let mut layer_rates = Vec::new();
            publication
                .layers
                .bitrates_by_quality(now, &mut layer_rates);
            let (steps, mut rates) = temporal_steps(&publication.layers, &layer_rates, now);
            // The relay never forwards more of a publisher than its cap allows.
            if let Some(cap) = cap {
                for rate in &mut rates {
                    if *rate > cap {
                        *rate = 0;
                    }
                }
            }
            let priority = match publication.info.source {
                TrackSource::Screen => Priority::Screen,
                _ if self.speakers.speakers().contains(&publication.info.owner) => {
                    Priority::Speaker
                }
                _ => Priority::Normal,
            };
            tracks.push((*id, priority, rates));
            steps_of.push((*id, steps));
        }
        for (id, steps) in steps_of {
            if let Some(publication) = self.publications.get_mut(&id) {
                publication.steps = steps;
            }
        }
        let mut subscriptions: Vec<VideoSubscription> = Vec::new();
        for (track, priority, rates) in &tracks {
            let publication = &self.publications[track];
            if publication.admin_muted {
                continue;
            }
            for s in publication
                .subscriptions
                .iter()
                .filter(|s| s.sink.is_some())
            {
                subscriptions.push(VideoSubscription {
                    track: *track,
                    subscriber: s.subscriber,
                    priority: *priority,
                    layer_bps: rates,
                    max_layer: s
                        .wish
                        .max_size
                        .and_then(|size| publication.highest_step_for(size)),
                    wants_paused: s.wish.paused,
                });
            }
        }
        let decisions: Vec<Decision> = self
            .bandwidth
            .round(now, &subscriptions, |id| {
                audio.get(&id).copied().unwrap_or(0)
            })
            .to_vec();
        for decision in decisions {
            self.apply(decision, now);
        }
    }

    fn apply(&mut self, decision: Decision, now: Instant) {
        let Some(publication) = self.publications.get(&decision.track) else {
            return;
        };
        let (target, temporal, resolution, told) = match decision.target {
            Target::Layer(rank) => {
                let step = publication.steps.get(usize::from(rank)).copied();
                let slot = step.map(|(slot, _)| slot);
                let resolution = slot
                    .and_then(|slot| publication.layers.layer(slot))
                    .and_then(|l| l.resolution);
                // Subscribers are told the layer (its quality rank), not the temporal step.
                let told = slot
                    .and_then(|slot| publication.layers.rank_of(slot))
                    .map_or(decision.target, Target::Layer);
                (
                    slot.map_or(LayerTarget::Auto, LayerTarget::Layer),
                    step.map_or(ALL_TEMPORAL, |(_, temporal)| temporal),
                    resolution,
                    told,
                )
            }
            Target::Paused(_) => (LayerTarget::Paused, ALL_TEMPORAL, None, decision.target),
        };
        let unchanged = publication
            .subscriptions
            .iter()
            .any(|s| s.subscriber == decision.subscriber && s.target == target);
        if !unchanged {
            self.set_target(decision.track, decision.subscriber, target, now);
        }
        if let Some(subscription) = self.publications.get_mut(&decision.track).and_then(|p| {
            p.subscriptions
                .iter_mut()
                .find(|s| s.subscriber == decision.subscriber)
        }) {
            subscription.temporal_target = temporal;
        }
        if decision.notify {
            self.outputs.push_back(RoomOutput::SubscriptionState {
                subscriber: decision.subscriber,
                track: decision.track,
                target: told,
                resolution,
            });
        }
    }

    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        self.outputs.pop_front()
    }
}

/// The allocator's steps for a track, lowest first, with their rates: each layer whole, and below
/// the lowest one its temporal layers (7.5 and 15 of 30 frames a second for L1T3), so that a
/// subscriber whose link cannot carry the lowest layer gets fewer frames rather than none.
fn temporal_steps(layers: &LayerSet, rates: &[u64], now: Instant) -> (Vec<(u8, u8)>, Vec<u64>) {
    let slots = layers.by_quality();
    let mut steps = Vec::with_capacity(slots.len() + 2);
    let mut step_rates = Vec::with_capacity(slots.len() + 2);
    if let (Some(&lowest), Some(&rate)) = (slots.first(), rates.first())
        && rate > 0
        && let Some(shares) = layers.temporal_shares(lowest, now)
    {
        let top = layers
            .layer(lowest)
            .and_then(|l| l.max_temporal_id)
            .unwrap_or(0);
        for tid in 0..top {
            steps.push((lowest, tid));
            step_rates.push(rate * shares[usize::from(tid)] / 1_000);
        }
    }
    for (slot, rate) in slots.iter().zip(rates) {
        steps.push((*slot, ALL_TEMPORAL));
        step_rates.push(*rate);
    }
    (steps, step_rates)
}
