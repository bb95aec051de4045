//! The node: the legs, the demux and the rooms placed on it, as a sans-IO state machine shaped
//! like the `rtc` legs inside it. Inputs are `handle_datagram`, `handle_tcp_frame`,
//! `handle_command` and `handle_timeout`; outputs are `poll_transmit`, `poll_event` and
//! `poll_timeout`. Time is always an argument: the node owns no socket, reads no clock and waits
//! on nothing, so a test can run minutes of a call in milliseconds (see `sim`), and the driver
//! (`driver.rs`) is all the IO there is.
//!
//! Nothing on the packet path takes a lock or waits: a datagram goes demux -> leg (SRTP) ->
//! room (decide) -> legs (rewrite + SRTP) -> transmits in one call. The control plane lives in
//! `participants.rs`, `publish.rs`, `subscribe.rs`, `admin.rs` and `data.rs` as further
//! `impl Node` blocks.

use super::command::{CommandReply, NodeCommand};
use super::demux::{Demux, LegKey, Route, normalize};
use super::engine::EngineSettings;
use super::guard::{self, Class, MAX_DATAGRAM_BYTES};
use super::leg::{Leg, LegMedia, MAX_EARLY_CHECKS, sink_parts};
use super::output::{Carrier, NodeEvent, Transmit};
use super::placement::WorkerPlace;
use super::resume::{KnownResumeTokens, ResumeTokens};
use super::role::LegRole;
use super::state::{Participant, RoomEntry, RoomKey};
use super::timers::{Timer, Timers};
use crate::ice_servers::IceServerConfig;
use crate::media::allocator::{PauseReason, Target};
use crate::media::bandwidth::{PADDING_PACKET_BYTES, SentPacket};
use crate::media::codec::Codec;
use crate::media::codec::vp8;
use crate::media::extmap::{ExtensionIds, HeaderExtension};
use crate::media::forwarder::InboundPacket;
use crate::media::ids::{ParticipantId, TrackId};
use crate::media::rewrite::{RewriteTarget, rewrite};
use crate::media::room::{Forwarded, RoomOutput, SinkId};
use crate::metrics::{DropReason, Feedback, LegFailure, MediaMetrics, NodeSnapshot};
use bytes::BytesMut;
use rtc::peer_connection::event::{RTCDataChannelEvent, RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::packet::Packet;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rustc_hash::FxHashMap;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::admin::RoomPolicy;
use tracing::{debug, info, warn};

/// With the `fault-injection` feature, a datagram starting with this makes its leg panic.
const FAULT_PANIC: &[u8] = b"TERN-FAULT-PANIC";

/// The state gauges are republished at least this often (and after every command).
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(250);
/// The least delay before a room's deadline is looked at again.
const MIN_RETRY: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub engine: EngineSettings,
    /// The address the media socket is bound to.
    pub local_addr: SocketAddr,
    /// Host candidates the relay puts in its SDP (the socket's public addresses).
    pub advertised: Vec<SocketAddr>,
    /// The relay's passive ICE-TCP candidates (advertised addresses with the ICE-TCP port);
    /// empty without ICE-TCP.
    pub tcp_candidates: Vec<SocketAddr>,
    /// Whether anyone receives webhook events (they are not built otherwise).
    pub webhooks: bool,
    /// STUN/TURN servers handed to participants at join (TURN credentials minted per join).
    pub ice_servers: IceServerConfig,
    /// How long a participant whose signaling dropped stays in the room to resume.
    pub resume_grace: Duration,
    /// The policy of rooms that a join creates, and the defaults of rooms the API creates.
    pub room_defaults: RoomPolicy,
    /// Rooms this worker holds at once.
    pub max_rooms: usize,
    /// Track changes within this window are folded into one subscribe offer.
    pub renegotiation_debounce: Duration,
    /// Least time between two subscribe offers to one participant.
    pub renegotiation_interval: Duration,
    /// Media sections an offer or answer may have.
    pub max_media_sections: usize,
    /// Publish offers per second per participant (bursts of three times as many).
    pub max_offers_per_s: u32,
    /// Minimum spacing of keyframe requests to one publisher track.
    pub keyframe_interval: Duration,
    /// Estimate subscribers' downlinks and choose layers from them (else budgets alone).
    pub bandwidth_estimation: bool,
    pub max_tracks_per_participant: usize,
    pub max_sdp_bytes: usize,
    /// Datagrams per second one leg may send (bursts of half that); more is a flood.
    pub max_packets_per_leg_per_s: u32,
    /// A leg whose ICE and DTLS have not both completed this long after it was created has
    /// failed.
    pub connect_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            engine: EngineSettings::default(),
            local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertised: Vec::new(),
            tcp_candidates: Vec::new(),
            webhooks: false,
            ice_servers: IceServerConfig::default(),
            resume_grace: Duration::from_secs(10),
            room_defaults: RoomPolicy {
                max_participants: 100,
                empty_timeout_s: 300,
                departure_timeout_s: 20,
                max_egress_kbps: 0,
                max_subscriber_kbps: 0,
                max_publisher_kbps: 0,
                e2ee_required: false,
            },
            max_rooms: 1_000,
            renegotiation_debounce: Duration::from_millis(20),
            renegotiation_interval: Duration::from_millis(300),
            max_media_sections: 32,
            max_offers_per_s: 2,
            keyframe_interval: Duration::from_millis(500),
            bandwidth_estimation: true,
            max_tracks_per_participant: 8,
            max_sdp_bytes: 32 * 1024,
            max_packets_per_leg_per_s: 5_000,
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// A packet received from a publisher, waiting to be fanned out.
pub(super) struct Inbound {
    pub room: RoomKey,
    pub track: TrackId,
    pub codec: Codec,
    pub packet: Packet,
    /// The RFC 6464 audio level the packet carries, if any (0 loudest, 127 silence).
    pub audio_level: Option<u8>,
}

/// A publisher stream `rtc` bound (by rid, for a simulcast layer).
pub(super) struct LayerBinding {
    pub track: TrackId,
    pub ssrc: u32,
    pub rid: Option<String>,
}

/// What draining a leg turned up that needs more than the leg itself.
#[derive(Default)]
pub(super) struct LegFindings {
    pub state: Option<RTCPeerConnectionState>,
    pub layers: Vec<LayerBinding>,
    pub keyframe_requests: Vec<TrackId>,
    pub sender_reports: Vec<SenderReport>,
    /// RTP packets and RTCP compounds the leg delivered.
    pub media_messages: usize,
    pub data_messages: Vec<rtc::data_channel::RTCDataChannelMessage>,
    pub panicked: bool,
}

/// What the node shares with the rest of the relay (gauges and resume tokens it publishes).
#[derive(Clone)]
pub struct NodeShared {
    pub metrics: Arc<MediaMetrics>,
    pub snapshot: Arc<NodeSnapshot>,
    pub place: WorkerPlace,
}

pub struct Node {
    pub(super) config: NodeConfig,
    /// Datagrams and frames waiting for `poll_transmit`.
    pub(super) transmits: VecDeque<Transmit>,
    /// Events waiting for `poll_event`.
    pub(super) events: VecDeque<NodeEvent>,
    pub(super) timers: Timers,
    /// A moment of both clocks, so wall-clock time (webhook and admin timestamps, TURN credential
    /// expiry) follows from the `now` every input carries without reading a clock.
    epoch: (Instant, SystemTime),
    /// STUN and learned addresses of ICE-TCP connections (a separate space from UDP's).
    pub(super) tcp_demux: Demux,
    pub(super) demux: Demux,
    pub(super) legs: FxHashMap<LegKey, Leg>,
    pub(super) next_leg: u64,
    pub(super) participants: FxHashMap<ParticipantId, Participant>,
    pub(super) rooms: FxHashMap<RoomKey, RoomEntry>,
    pub(super) room_keys: HashMap<crate::media::ids::RoomId, RoomKey>,
    pub(super) next_room: u64,
    pub(super) resume_tokens: ResumeTokens,
    pub(super) next_connection: u64,
    pub(super) metrics: Arc<MediaMetrics>,
    /// RTP/RTCP packets that got through SRTP on any leg (see `engine::new_peer_connection`).
    pub(super) decrypted: Arc<AtomicU64>,
    /// Where the state gauges are published for `/metrics`.
    snapshot: Arc<NodeSnapshot>,
    /// Which worker this is, and where its rooms are recorded.
    pub(super) place: WorkerPlace,
    /// The quality judging tick is queued (it runs only while anybody is here).
    pub(super) quality_armed: bool,
    inbound: Vec<Inbound>,
    fan_out: Vec<Forwarded>,
    feedback_buffer: Vec<SentPacket>,
}

impl Node {
    /// A node with nothing in it, as of `now` (and `wall`, the same moment on the wall clock).
    pub fn new(config: NodeConfig, shared: NodeShared, now: Instant, wall: SystemTime) -> Self {
        let mut node = Node {
            config,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: Timers::default(),
            epoch: (now, wall),
            tcp_demux: Demux::default(),
            demux: Demux::default(),
            legs: FxHashMap::default(),
            next_leg: 1,
            participants: FxHashMap::default(),
            rooms: FxHashMap::default(),
            room_keys: HashMap::new(),
            next_room: 1,
            resume_tokens: ResumeTokens::default(),
            next_connection: 1,
            metrics: shared.metrics,
            decrypted: Arc::default(),
            snapshot: shared.snapshot,
            place: shared.place,
            quality_armed: false,
            inbound: Vec::new(),
            fan_out: Vec::new(),
            feedback_buffer: Vec::new(),
        };
        node.timers.arm(now + SNAPSHOT_INTERVAL, Timer::Snapshot);
        node
    }

    /// The resume tokens of current sessions, for signaling.
    pub fn known_resume_tokens(&self) -> KnownResumeTokens {
        self.resume_tokens.known()
    }

    /// The wall-clock time at `now`.
    pub(super) fn wall(&self, now: Instant) -> SystemTime {
        let (instant, wall) = self.epoch;
        wall + now.saturating_duration_since(instant)
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for signaling, webhooks or ICE-TCP.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` is next due, and why (a stale deadline may come first: handling
    /// it early does nothing).
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        self.timers.next()
    }

    /// Runs every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.timers.pop_due(now) {
            self.fire(timer, at, now);
        }
    }

    /// One command from signaling or an operator, answered at once.
    pub fn handle_command(&mut self, command: NodeCommand, now: Instant) -> CommandReply {
        let reply = self.run_command(command, now);
        self.publish_snapshot();
        reply
    }

    fn publish_snapshot(&mut self) {
        self.snapshot.publish(self.stats());
    }

    /// The driver's measure of how busy this worker's thread is (1.0: never waiting for input).
    pub(super) fn publish_load(&self, load: f64) {
        self.snapshot.set_load(load);
    }

    fn fire(&mut self, timer: Timer, at: Instant, now: Instant) {
        match timer {
            Timer::Leg(key) => {
                let Some(leg) = self.legs.get_mut(&key) else {
                    return;
                };
                if leg.armed != Some(at) {
                    return; // superseded by an earlier deadline that already ran
                }
                leg.armed = None;
                self.leg_input(key, None, now);
            }
            Timer::Pace(key) => self.release_paced(key, at, now),
            Timer::ConnectDeadline(key) => self.check_connect_deadline(key, now),
            Timer::Renegotiate(id) => {
                let due = self
                    .participants
                    .get(&id)
                    .and_then(|p| p.renegotiate_at)
                    .is_some_and(|at| at <= now);
                if due {
                    self.renegotiate_subscriber(id, now);
                }
            }
            Timer::Room(room) => {
                let Some(entry) = self.rooms.get_mut(&room) else {
                    return;
                };
                entry.timer_at = None;
                if entry.room.poll_timeout().is_some_and(|at| at <= now) {
                    entry.room.handle_timeout(now);
                }
                self.process_room_outputs(room, now);
            }
            Timer::RoomClose(room) => {
                let Some(entry) = self.rooms.get(&room) else {
                    return;
                };
                if entry.room.is_empty() && entry.closes_at().is_some_and(|at| at <= now) {
                    self.close_room(room, now);
                }
            }
            Timer::Snapshot => {
                self.publish_snapshot();
                self.timers.arm(now + SNAPSHOT_INTERVAL, Timer::Snapshot);
            }
            Timer::Quality => {
                self.judge_quality(now);
                self.quality_armed = false;
                self.arm_quality(now);
            }
        }
    }

    /// Who publishes `track` in `room`.
    pub(super) fn owner_of(&self, room: RoomKey, track: TrackId) -> Option<ParticipantId> {
        self.rooms
            .get(&room)
            .and_then(|e| e.room.publication(track))
            .map(|p| p.info.owner)
    }

    /// The header extension ids negotiated on `publisher`'s publish leg (what its packets carry).
    pub(super) fn publisher_extensions(&mut self, publisher: ParticipantId) -> ExtensionIds {
        self.participants
            .get(&publisher)
            .and_then(|p| p.publish_leg)
            .and_then(|k| self.legs.get_mut(&k))
            .and_then(|l| l.publish().map(|s| s.extensions.clone()))
            .unwrap_or_default()
    }

    /// Renegotiates `id`'s subscribe leg at `at` (or earlier, if it already was to be).
    pub(super) fn schedule_renegotiation(&mut self, id: ParticipantId, at: Instant) {
        let Some(p) = self.participants.get_mut(&id) else {
            return;
        };
        if p.renegotiate_at.is_none_or(|current| at < current) {
            p.renegotiate_at = Some(at);
            self.timers.arm(at, Timer::Renegotiate(id));
        }
    }

    /// Keeps a timer on a room's own next deadline and on its closing.
    pub(super) fn arm_room_timer(&mut self, room: RoomKey, now: Instant) {
        let Some(entry) = self.rooms.get_mut(&room) else {
            return;
        };
        // A deadline the room did not clear when it was handled is retried a moment later, not
        // in a loop.
        if let Some(at) = entry.room.poll_timeout().map(|at| at.max(now + MIN_RETRY))
            && entry.timer_at.is_none_or(|armed| at < armed)
        {
            entry.timer_at = Some(at);
            self.timers.arm(at, Timer::Room(room));
        }
        if let Some(at) = entry.closes_at()
            && entry.close_armed != Some(at)
        {
            entry.close_armed = Some(at);
            self.timers.arm(at, Timer::RoomClose(room));
        }
    }

    /// A datagram from the media socket (`from` with v4-mapped addresses unmapped, see
    /// [`normalize`]).
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: BytesMut, now: Instant) {
        self.handle_packet(normalize(from), TransportProtocol::UDP, datagram, now);
    }

    /// One RFC 4571 frame from the ICE-TCP connection from `from`.
    pub fn handle_tcp_frame(&mut self, from: SocketAddr, frame: BytesMut, now: Instant) {
        self.handle_packet(normalize(from), TransportProtocol::TCP, frame, now);
    }

    /// The ICE-TCP connection from `from` closed.
    pub fn handle_tcp_closed(&mut self, from: SocketAddr) {
        self.tcp_demux.forget(normalize(from));
    }

    /// One datagram, or one ICE-TCP frame: same checks, same path into the leg.
    fn handle_packet(
        &mut self,
        from: SocketAddr,
        protocol: TransportProtocol,
        datagram: BytesMut,
        now: Instant,
    ) {
        if datagram.len() > MAX_DATAGRAM_BYTES {
            self.metrics.count_drop(DropReason::Oversized);
            return;
        }
        let tcp = protocol == TransportProtocol::TCP;
        let demux = if tcp { &self.tcp_demux } else { &self.demux };
        let key = match demux.route(from, &datagram) {
            Route::Leg(key) => key,
            Route::Stun {
                key,
                authentic: true,
            } => {
                self.learn(key, from, tcp);
                key
            }
            // Whoever saw the ufrag in a connectivity check can name the leg, but only the
            // client can sign for it: a forgery never reaches the leg (its ICE state, its packet
            // budget, its log).
            Route::Stun {
                authentic: false, ..
            } => {
                self.metrics.count_drop(DropReason::StunUnauthenticated);
                return;
            }
            Route::UnknownUfrag => {
                self.metrics.count_drop(DropReason::UnknownUfrag);
                return;
            }
            Route::UnknownSource => {
                self.metrics.count_drop(DropReason::UnknownSource);
                return;
            }
        };
        let class = guard::classify(&datagram);
        let well_formed = match class {
            Class::Stun | Class::Dtls => true,
            Class::Rtp => guard::rtp_header_fits(&datagram),
            Class::Rtcp => guard::rtcp_header_fits(&datagram),
            Class::Other => cfg!(feature = "fault-injection") && datagram.starts_with(FAULT_PANIC),
        };
        if !well_formed {
            self.metrics.count_drop(DropReason::Malformed);
            return;
        }
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        if !leg.rate_limit.allow(now) {
            self.metrics.count_drop(DropReason::Flood);
            return;
        }
        let expects_media = matches!(class, Class::Rtp | Class::Rtcp);
        let decrypted_before = self.decrypted.load(Ordering::Relaxed);
        let local_addr = if tcp {
            self.tcp_candidate_for(from)
        } else {
            self.candidate_for(from)
        };
        let message = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: protocol,
            },
            message: datagram,
        };
        if class == Class::Stun
            && let Some(state) = self.legs.get_mut(&key).and_then(|l| l.subscribe())
            && state.awaiting_credentials
        {
            if state.early_checks.len() < MAX_EARLY_CHECKS {
                state.early_checks.push(message);
            }
            return;
        }
        self.leg_input(key, Some(message), now);
        // Nothing got through SRTP: authentication failed, a replay, or garbage after
        // decryption. (RTCP that an interceptor consumed, such as receiver reports, did get
        // through and is not counted.)
        if expects_media && self.decrypted.load(Ordering::Relaxed) == decrypted_before {
            self.metrics.count_drop(DropReason::SrtpRejected);
        }
    }

    /// `from` sent an authentic request for `key`: what else comes from there is the leg's.
    fn learn(&mut self, key: LegKey, from: SocketAddr, tcp: bool) {
        if tcp {
            self.tcp_demux.learn(key, from);
            self.events.push_back(NodeEvent::TcpMatched(from));
        } else {
            self.demux.learn(key, from);
        }
    }

    /// The relay candidate a datagram from `from` reached: the first advertised address of the
    /// same family. (With a wildcard bind the socket cannot tell which of its addresses was
    /// hit; ICE matches the candidate by address, so it must be the advertised one.)
    fn candidate_for(&self, from: SocketAddr) -> SocketAddr {
        self.config
            .advertised
            .iter()
            .find(|a| a.is_ipv4() == from.is_ipv4())
            .copied()
            .unwrap_or(self.config.local_addr)
    }

    /// The relay's TCP candidate of the same family as `from`.
    fn tcp_candidate_for(&self, from: SocketAddr) -> SocketAddr {
        let candidates = &self.config.tcp_candidates;
        candidates
            .iter()
            .find(|a| a.is_ipv4() == from.is_ipv4())
            .or(candidates.first())
            .copied()
            .unwrap_or(self.config.local_addr)
    }

    /// Feeds one input (a datagram, or a timeout when `message` is `None`) to a leg, drains what
    /// it produced, and acts on it. Returns how many RTP/RTCP messages the leg produced.
    pub(super) fn leg_input(
        &mut self,
        key: LegKey,
        message: Option<TaggedBytesMut>,
        now: Instant,
    ) -> usize {
        let Some(leg) = self.legs.get_mut(&key) else {
            return 0;
        };
        let metrics = &self.metrics;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "fault-injection")]
            if message
                .as_ref()
                .is_some_and(|m| m.message.starts_with(FAULT_PANIC))
            {
                panic!("injected fault: a leg panics on hostile input");
            }
            let result = match message {
                Some(message) => leg.pc.handle_read(message),
                None => leg.pc.handle_timeout(now),
            };
            if result.is_err() {
                metrics.count_drop(DropReason::Malformed);
            }
        }));
        if outcome.is_err() {
            self.leg_panicked(key, now);
            return 0;
        }
        self.drain_leg(key, now)
    }

    /// Drains a leg's events, reads and writes, then forwards what it received. Returns how
    /// many RTP/RTCP messages the leg produced.
    pub(super) fn drain_leg(&mut self, key: LegKey, now: Instant) -> usize {
        let mut findings = LegFindings::default();
        let Some(leg) = self.legs.get_mut(&key) else {
            return 0;
        };
        let room = self.participants.get(&leg.participant).map(|p| p.room);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            collect_leg_output(leg, room, &mut self.inbound, &mut findings, &self.metrics);
            flush_leg(leg, &mut self.transmits);
        }));
        if outcome.is_err() {
            findings.panicked = true;
        }
        self.arm_timer(key);
        if findings.panicked {
            self.leg_panicked(key, now);
            return 0;
        }
        if let Some(state) = findings.state {
            self.leg_state_changed(key, state, now);
        }
        if let Some(entry) = room.and_then(|r| self.rooms.get_mut(&r)) {
            for binding in &findings.layers {
                if !entry
                    .room
                    .bind_layer(binding.track, binding.ssrc, binding.rid.as_deref(), now)
                {
                    debug!(
                        ssrc = binding.ssrc,
                        "more simulcast layers than a track may have"
                    );
                }
            }
        }
        if !self.inbound.is_empty() {
            self.forward_inbound(now);
        }
        self.deliver_transport_feedback(key, now);
        if !findings.keyframe_requests.is_empty() {
            let participant = self.legs.get(&key).map(|l| l.participant);
            if let Some(room) = participant
                .and_then(|p| self.participants.get(&p))
                .map(|p| p.room)
                && let Some(entry) = self.rooms.get_mut(&room)
            {
                for track in findings.keyframe_requests {
                    entry.room.request_keyframe(track, now);
                }
                self.process_room_outputs(room, now);
            }
        }
        for report in std::mem::take(&mut findings.sender_reports) {
            self.forward_sender_report(key, report, now);
        }
        if !findings.data_messages.is_empty()
            && let Some(from) = self.legs.get(&key).map(|l| l.participant)
        {
            for message in std::mem::take(&mut findings.data_messages) {
                self.data_message(from, message, now);
            }
        }
        findings.media_messages
    }

    /// Sends each subscriber a sender report for its copy of the reported stream, derived from
    /// the publisher's (same NTP time, RTP time in the subscriber's timestamp space).
    fn forward_sender_report(&mut self, publish_leg: LegKey, report: SenderReport, now: Instant) {
        let Some(leg) = self.legs.get(&publish_leg) else {
            return;
        };
        let LegMedia::Publish(state) = &leg.media else {
            return;
        };
        let Some(track) = state.streams.get(&report.ssrc).map(|s| s.track) else {
            return;
        };
        let Some(room) = self.participants.get(&leg.participant).map(|p| p.room) else {
            return;
        };
        let Some(entry) = self.rooms.get_mut(&room) else {
            return;
        };
        let mut targets: Vec<(SinkId, u32)> = Vec::new();
        entry.room.sender_report(
            track,
            report.ssrc,
            report.rtp_time,
            report.ntp_time,
            |sink, rtp| targets.push((sink, rtp)),
        );
        for (sink, rtp_time) in targets {
            let (leg_key, slot_index) = sink_parts(sink);
            let Some(leg) = self.legs.get_mut(&leg_key) else {
                continue;
            };
            let LegMedia::Subscribe(state) = &leg.media else {
                continue;
            };
            let Some(Some(slot)) = state.slots.get(slot_index) else {
                continue;
            };
            let translated = SenderReport {
                ssrc: slot.ssrc,
                ntp_time: report.ntp_time,
                rtp_time,
                packet_count: slot.packets_sent,
                octet_count: slot.octets_sent,
                ..Default::default()
            };
            let sender = slot.sender;
            let sent = leg
                .pc
                .rtp_sender(sender)
                .map(|mut s| s.write_rtcp(now, vec![Box::new(translated)]).is_ok())
                .unwrap_or(false);
            if sent {
                flush_leg(leg, &mut self.transmits);
            }
        }
    }

    /// Fans out everything publishers sent in the last drain.
    fn forward_inbound(&mut self, now: Instant) {
        let mut inbound = std::mem::take(&mut self.inbound);
        let mut rooms_touched: Vec<RoomKey> = Vec::new();
        for Inbound {
            room,
            track,
            codec,
            packet,
            audio_level,
        } in inbound.drain(..)
        {
            let kind = codec.kind();
            self.metrics.rtp_packets_received.get(kind).inc();
            self.metrics
                .rtp_bytes_received
                .get(kind)
                .inc_by(packet.payload.len() as u64);
            let Some(entry) = self.rooms.get_mut(&room) else {
                continue;
            };
            // The first level a room hears gives it a deadline (its speaker updates) that no
            // timer is armed for yet: without this, the updates waited for whatever next
            // re-armed the room's timer.
            if let Some(level) = audio_level
                && entry.room.observe_audio_level(track, level, now)
                && !rooms_touched.contains(&room)
            {
                rooms_touched.push(room);
            }
            let info = codec.inspect(&packet.payload);
            let meta = InboundPacket {
                ssrc: packet.header.ssrc,
                sequence_number: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                marker: packet.header.marker,
                keyframe_start: info.keyframe_start,
                payload_bytes: packet.payload.len() as u32,
                resolution: info.resolution,
                vp8: info.vp8,
            };
            let fan_out = &mut self.fan_out;
            fan_out.clear();
            let summary = entry
                .room
                .forward(track, &meta, now, |forwarded| fan_out.push(forwarded));
            self.metrics.count_drops(
                DropReason::AwaitingKeyframe,
                u64::from(summary.awaiting_keyframe),
            );
            self.metrics
                .count_drops(DropReason::Stale, u64::from(summary.stale));
            if summary.suppressed {
                self.metrics.count_drop(DropReason::AdminMuted);
            }
            if summary.duplicate {
                self.metrics.count_drop(DropReason::Duplicate);
            }
            if summary.padding {
                self.metrics.count_drop(DropReason::Padding);
            }
            if summary.unknown_layer {
                self.metrics.count_drop(DropReason::UnknownStream);
            }
            self.metrics
                .count_switches(summary.switched_up, summary.switched_down);
            if summary.awaiting_keyframe > 0 && !rooms_touched.contains(&room) {
                rooms_touched.push(room);
            }
            for i in 0..self.fan_out.len() {
                let forwarded = self.fan_out[i];
                self.send_forwarded(&forwarded, &packet, kind, now);
            }
        }
        self.inbound = inbound;
        for room in rooms_touched {
            self.process_room_outputs(room, now);
        }
    }

    /// A subscriber's transport-cc reports, from its subscribe leg's chain to its room's
    /// estimator.
    fn deliver_transport_feedback(&mut self, key: LegKey, now: Instant) {
        let Some(leg) = self.legs.get(&key) else {
            return;
        };
        let LegMedia::Subscribe(state) = &leg.media else {
            return;
        };
        let mut reports = std::mem::take(&mut self.feedback_buffer);
        reports.clear();
        super::feedback::drain(&state.feedback, &mut reports);
        let participant = leg.participant;
        if !reports.is_empty()
            && let Some(room) = self.participants.get(&participant).map(|p| p.room)
            && let Some(entry) = self.rooms.get_mut(&room)
        {
            entry.room.transport_feedback(participant, &reports, now);
            if let Some(estimate) = entry.room.bandwidth().estimate_bps(participant) {
                self.metrics.bandwidth_estimate.observe(estimate as f64);
            }
            if let Some(estimator) = entry.room.bandwidth().estimator(participant) {
                tracing::trace!(
                    %participant,
                    reports = reports.len(),
                    estimate = estimator.estimate_bps(),
                    acked = ?estimator.acknowledged_bps(),
                    loss = estimator.loss_fraction(),
                    state = estimator.state().as_str(),
                    probe = ?estimator.probe().map(|p| p.target_bps),
                    "transport feedback"
                );
            }
            self.update_pacing(participant, now);
            self.process_room_outputs(room, now);
        }
        self.feedback_buffer = reports;
    }

    /// A bandwidth probe toward a subscriber: retransmitted copies of what it just received
    /// first (`rtx_probe`), then padding-only packets for the rest, each numbered into one of its
    /// video streams so that its receiver sees no gap, and paced like its media.
    fn send_padding(
        &mut self,
        room: RoomKey,
        subscriber: ParticipantId,
        packets: u32,
        now: Instant,
    ) {
        self.update_pacing(subscriber, now);
        let Some(leg_key) = self
            .participants
            .get(&subscriber)
            .and_then(|p| p.subscribe_leg)
        else {
            return;
        };
        if !self.has_spare_pacing(leg_key, now) {
            return;
        }
        let copied =
            self.send_probe_copies(leg_key, u64::from(packets) * PADDING_PACKET_BYTES, now);
        if copied > 0
            && let Some(entry) = self.rooms.get_mut(&room)
        {
            entry.room.probe_copies_sent(subscriber, copied);
        }
        let packets = packets.saturating_sub(copied.div_ceil(PADDING_PACKET_BYTES) as u32);
        for _ in 0..packets {
            if !self.has_spare_pacing(leg_key, now) {
                return;
            }
            let Some(padding) = self
                .rooms
                .get_mut(&room)
                .and_then(|e| e.room.probe_padding(subscriber, now))
            else {
                return;
            };
            let (leg_key, slot_index) = sink_parts(padding.sink);
            let Some(leg) = self.legs.get(&leg_key) else {
                return;
            };
            let LegMedia::Subscribe(state) = &leg.media else {
                return;
            };
            let Some(Some(slot)) = state.slots.get(slot_index) else {
                return;
            };
            let Some(target) = &slot.rewrite else {
                return;
            };
            let packet = padding_packet(target, padding.sequence_number, padding.timestamp);
            let sender = slot.sender;
            self.pace_or_write(leg_key, sender, packet, None, now);
        }
    }

    fn tell_subscription_state(
        &mut self,
        subscriber: ParticipantId,
        track: TrackId,
        target: Target,
        resolution: Option<(u16, u16)>,
        now: Instant,
    ) {
        let (paused, reason, layer) = match target {
            Target::Layer(rank) => (false, None, Some(rank)),
            Target::Paused(reason) => (true, wire_pause_reason(reason), None),
        };
        let entry = self
            .participants
            .get(&subscriber)
            .and_then(|p| self.rooms.get(&p.room));
        if tracing::enabled!(tracing::Level::DEBUG) {
            let estimate = entry.and_then(|e| e.room.bandwidth().estimate_bps(subscriber));
            let mut layer_bps = Vec::new();
            if let Some(publication) = entry.and_then(|e| e.room.publication(track)) {
                publication.layers.bitrates_by_quality(now, &mut layer_bps);
            }
            debug!(%subscriber, %track, ?target, ?resolution, ?estimate, ?layer_bps, "subscription state");
        }
        self.notify(
            subscriber,
            tern_signaling::protocol::ServerMessage::SubscriptionState {
                track_id: track.to_string(),
                paused,
                reason,
                layer,
                width: resolution.map(|r| u32::from(r.0)),
                height: resolution.map(|r| u32::from(r.1)),
            },
        );
    }

    /// Rewrites one packet for one subscriber slot and sends it.
    fn send_forwarded(
        &mut self,
        forwarded: &Forwarded,
        packet: &Packet,
        kind: crate::media::codec::MediaKind,
        now: Instant,
    ) {
        let (leg_key, slot_index) = sink_parts(forwarded.sink);
        let Some(leg) = self.legs.get_mut(&leg_key) else {
            self.metrics.count_drop(DropReason::SendRefused);
            return;
        };
        let LegMedia::Subscribe(state) = &mut leg.media else {
            return;
        };
        let Some(Some(slot)) = state.slots.get_mut(slot_index) else {
            self.metrics.count_drop(DropReason::SendRefused);
            return;
        };
        slot.packets_sent = slot.packets_sent.wrapping_add(1);
        slot.octets_sent = slot.octets_sent.wrapping_add(packet.payload.len() as u32);
        let Some(target) = &slot.rewrite else {
            self.metrics.count_drop(DropReason::SendRefused);
            return;
        };
        let mut out = rewrite(
            packet,
            target,
            forwarded.sequence_number,
            forwarded.timestamp,
        );
        let sender = slot.sender;
        if let Some(vp8) = forwarded.vp8 {
            // Copied only for a subscription whose picture numbering differs from the
            // publisher's (after a layer switch).
            let mut payload = slot.renumbered.copy(&out.payload);
            vp8::rewrite(&mut payload, vp8.picture_id, vp8.tl0_picture_index);
            out.payload = payload.freeze();
        }
        self.pace_or_write(leg_key, sender, out, Some(kind), now);
    }

    /// Acts on what a room queued: keyframe requests, renegotiations, expired members.
    pub(super) fn process_room_outputs(&mut self, room: RoomKey, now: Instant) {
        loop {
            let Some(output) = self.rooms.get_mut(&room).and_then(|e| e.room.poll_output()) else {
                self.arm_room_timer(room, now);
                return;
            };
            match output {
                RoomOutput::RequestKeyframe { track, ssrc } => {
                    self.send_keyframe_request(room, track, ssrc, now)
                }
                RoomOutput::SubscriptionsChanged(participant) => {
                    let due = now + self.config.renegotiation_debounce;
                    self.schedule_renegotiation(participant, due);
                }
                RoomOutput::SubscriptionState {
                    subscriber,
                    track,
                    target,
                    resolution,
                } => self.tell_subscription_state(subscriber, track, target, resolution, now),
                RoomOutput::SendPadding {
                    subscriber,
                    packets,
                } => self.send_padding(room, subscriber, packets, now),
                RoomOutput::LayerDemand {
                    owner,
                    track,
                    layers,
                } => self.notify(
                    owner,
                    tern_signaling::protocol::ServerMessage::VideoDemand {
                        track_id: track.to_string(),
                        layers: layers.map(u32::from),
                    },
                ),
                RoomOutput::ActiveSpeakersChanged => {
                    let Some(entry) = self.rooms.get(&room) else {
                        continue;
                    };
                    let participant_ids = entry
                        .room
                        .active_speakers()
                        .iter()
                        .map(|id| id.to_string())
                        .collect();
                    self.broadcast(
                        room,
                        None,
                        tern_signaling::protocol::ServerMessage::ActiveSpeakers { participant_ids },
                    );
                }
                RoomOutput::GraceExpired(participant) => {
                    self.remove_participant(
                        participant,
                        tern_signaling::protocol::LeaveReason::Timeout,
                        now,
                    );
                }
            }
        }
    }

    /// A PLI on `ssrc` (the layer somebody waits for) or on the track's first stream. Simulcast
    /// encoders answer a PLI on one layer with keyframes on all of them.
    fn send_keyframe_request(
        &mut self,
        room: RoomKey,
        track: TrackId,
        ssrc: Option<u32>,
        now: Instant,
    ) {
        let Some(owner) = self.owner_of(room, track) else {
            return;
        };
        let Some(leg_key) = self.participants.get(&owner).and_then(|p| p.publish_leg) else {
            return;
        };
        let Some(leg) = self.legs.get_mut(&leg_key) else {
            return;
        };
        let Some((ssrc, receiver)) = leg
            .publish()
            .and_then(|s| s.stream_for_keyframe(track, ssrc))
        else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        };
        let sent = leg
            .pc
            .rtp_receiver(receiver)
            .map(|mut r| r.write_rtcp(now, vec![Box::new(pli)]).is_ok())
            .unwrap_or(false);
        if sent {
            self.metrics.keyframe_requests_sent.inc();
            flush_leg(leg, &mut self.transmits);
        }
    }

    /// Queues a leg's next protocol deadline.
    pub(super) fn arm_timer(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let Some(at) = leg.pc.poll_timeout() else {
            return;
        };
        if leg.armed.is_none_or(|armed| at < armed) {
            leg.armed = Some(at);
            self.timers.arm(at, Timer::Leg(key));
        }
    }

    /// Gives a new leg until `connect_timeout` from now to connect.
    pub(super) fn arm_connect_deadline(&mut self, key: LegKey, now: Instant) {
        self.timers.arm(
            now + self.config.connect_timeout,
            Timer::ConnectDeadline(key),
        );
    }

    /// A panic inside the WebRTC stack closes that leg only: the participant stays, a lost
    /// publish leg unpublishes its tracks (the client is told and may publish again), a lost
    /// subscribe leg is rebuilt with a fresh offer. A WHIP or WHEP session, which cannot be
    /// offered anything, ends instead.
    pub(super) fn leg_panicked(&mut self, key: LegKey, now: Instant) {
        self.metrics.leg_panics.inc();
        self.metrics.count_drop(DropReason::LegPanic);
        // The leg's state cannot be trusted: drop it without driving it further.
        let Some(leg) = self.legs.remove(&key) else {
            return;
        };
        self.forget_routes(key);
        let (participant, role) = (leg.participant, leg.role);
        drop(leg);
        warn!(leg = key.0, %participant, role = role.as_str(),
            "WebRTC stack panicked on this leg's input; closed the leg");
        // WHIP and WHEP have no way to take a new leg (no offer can reach them): they end.
        if self
            .participants
            .get(&participant)
            .is_some_and(|p| p.via != tern_signaling::control::JoinVia::WebSocket)
        {
            self.remove_participant(
                participant,
                tern_signaling::protocol::LeaveReason::TransportFailed,
                now,
            );
            return;
        }
        let Some(p) = self.participants.get_mut(&participant) else {
            return;
        };
        let room = p.room;
        match role {
            LegRole::Publish if p.publish_leg == Some(key) => {
                p.publish_leg = None;
                let tracks: Vec<TrackId> = self
                    .rooms
                    .get(&room)
                    .map(|e| e.room.publications_of(participant).map(|p| p.id).collect())
                    .unwrap_or_default();
                for track in tracks {
                    if let Some(entry) = self.rooms.get_mut(&room) {
                        let _ = entry.room.unpublish(track);
                    }
                    self.broadcast(
                        room,
                        None,
                        tern_signaling::protocol::ServerMessage::TrackUnpublished {
                            track_id: track.to_string(),
                            participant_id: participant.to_string(),
                        },
                    );
                }
                self.notify(
                    participant,
                    tern_signaling::protocol::ServerMessage::error(
                        tern_signaling::protocol::ErrorCode::Internal,
                        "your publish connection failed inside the relay and was closed; publish again",
                    ),
                );
            }
            LegRole::Subscribe if p.subscribe_leg == Some(key) => {
                p.subscribe_leg = None;
                let tracks = self
                    .rooms
                    .get(&room)
                    .map(|e| e.room.subscribed_tracks(participant))
                    .unwrap_or_default();
                if let Some(entry) = self.rooms.get_mut(&room) {
                    for track in tracks {
                        entry.room.detach(track, participant);
                    }
                }
                self.schedule_renegotiation(participant, now);
            }
            _ => {}
        }
        self.process_room_outputs(room, now);
    }

    fn leg_state_changed(&mut self, key: LegKey, state: RTCPeerConnectionState, now: Instant) {
        let Some(leg) = self.legs.get(&key) else {
            return;
        };
        let participant = leg.participant;
        let role = leg.role;
        let stage = if leg.ice_connected && !leg.connected_once {
            LegFailure::Dtls
        } else {
            LegFailure::Ice
        };
        debug!(leg = key.0, %participant, role = role.as_str(), %state, "leg state");
        if state == RTCPeerConnectionState::Connected
            && let Some(p) = self.participants.get_mut(&participant)
            && let Some(joined) = p.awaiting_media.take()
        {
            self.metrics
                .join_duration
                .observe(now.saturating_duration_since(joined).as_secs_f64());
        }
        match state {
            RTCPeerConnectionState::Connected if role == LegRole::Subscribe => {
                self.attach_ready_slots(key, now);
            }
            RTCPeerConnectionState::Connected => self.announce_tracks(key, now),
            RTCPeerConnectionState::Failed => self.leg_failed(key, stage, now),
            _ => {}
        }
    }

    /// A leg's transport failed (or never came up): it is counted by stage, and its participant
    /// is removed (told `transport_failed`) rather than left in the room without media.
    fn leg_failed(&mut self, key: LegKey, stage: LegFailure, now: Instant) {
        let Some(leg) = self.legs.get(&key) else {
            return;
        };
        let (participant, role) = (leg.participant, leg.role);
        self.metrics.leg_failed(stage);
        info!(%participant, role = role.as_str(), stage = stage.as_str(), "media transport failed");
        self.remove_participant(
            participant,
            tern_signaling::protocol::LeaveReason::TransportFailed,
            now,
        );
    }

    /// A leg that has not connected (ICE and DTLS) by its deadline has failed.
    fn check_connect_deadline(&mut self, key: LegKey, now: Instant) {
        let Some(leg) = self.legs.get(&key) else {
            return;
        };
        if leg.connected_once {
            return;
        }
        let stage = if leg.ice_connected {
            LegFailure::Dtls
        } else {
            LegFailure::Ice
        };
        self.leg_failed(key, stage, now);
    }

    /// Closes a leg: tells the peer (DTLS close_notify) and forgets it.
    pub(super) fn close_leg(&mut self, key: LegKey) {
        if let Some(mut leg) = self.legs.remove(&key) {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let _ = leg.pc.close();
                flush_leg(&mut leg, &mut self.transmits);
            }));
            self.forget_routes(key);
        }
    }

    /// Forgets how to reach a closed leg. Its TCP connections end with it: dropping their
    /// writers closes them.
    fn forget_routes(&mut self, key: LegKey) {
        self.demux.remove_leg(key);
        for peer in self.tcp_demux.remove_leg(key) {
            self.events.push_back(NodeEvent::TcpClose(peer));
        }
    }
}

/// Moves a leg's events and reads into the worker's scratch space.
fn collect_leg_output(
    leg: &mut Leg,
    room: Option<RoomKey>,
    inbound: &mut Vec<Inbound>,
    findings: &mut LegFindings,
    metrics: &MediaMetrics,
) {
    while let Some(event) = leg.pc.poll_event() {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                leg.state = state;
                leg.connected_once |= state == RTCPeerConnectionState::Connected;
                findings.state = Some(state);
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed,
            ) => leg.ice_connected = true,
            RTCPeerConnectionEvent::OnDataChannel(RTCDataChannelEvent::OnOpen(id)) => {
                if let LegMedia::Subscribe(state) = &mut leg.media
                    && state.data_channel == Some(id)
                {
                    state.data_open = true;
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                let transceiver = rtc::rtp_transceiver::RTCRtpTransceiverId::from(init.receiver_id);
                let mid = leg
                    .pc
                    .rtp_transceiver(transceiver)
                    .and_then(|t| t.mid().clone());
                if let (Some(mid), LegMedia::Publish(state)) = (mid, &mut leg.media)
                    && let Some(published) = state.track_of_mid(&mid).cloned()
                {
                    state.streams.insert(
                        init.ssrc,
                        super::leg::InboundStream {
                            track: published.track,
                            codec: published.format.codec,
                            receiver: init.receiver_id,
                        },
                    );
                    findings.layers.push(LayerBinding {
                        track: published.track,
                        ssrc: init.ssrc,
                        rid: init.rid.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    while let Some(message) = leg.pc.poll_read() {
        match message.message {
            RTCMessage::RtpPacket(_, packet) => {
                findings.media_messages += 1;
                let LegMedia::Publish(state) = &leg.media else {
                    continue;
                };
                match (state.streams.get(&packet.header.ssrc), &room) {
                    (Some(stream), Some(room)) => {
                        let audio_level = state
                            .extensions
                            .id(HeaderExtension::AudioLevel)
                            .and_then(|id| packet.header.extensions.iter().find(|e| e.id == id))
                            .and_then(|e| e.payload.first())
                            .map(|b| b & 0x7f);
                        inbound.push(Inbound {
                            room: *room,
                            track: stream.track,
                            codec: stream.codec,
                            packet,
                            audio_level,
                        })
                    }
                    _ => metrics.count_drop(DropReason::UnknownStream),
                }
            }
            RTCMessage::RtcpPacket(track_id, packets) => {
                findings.media_messages += 1;
                if leg.role == LegRole::Publish {
                    for packet in &packets {
                        if let Some(sr) = packet.as_any().downcast_ref::<SenderReport>() {
                            findings.sender_reports.push(sr.clone());
                        }
                    }
                    continue;
                }
                for packet in &packets {
                    let any = packet.as_any();
                    if any.is::<PictureLossIndication>() {
                        metrics.feedback(Feedback::Pli);
                    } else if any.is::<FullIntraRequest>() {
                        metrics.feedback(Feedback::Fir);
                    } else {
                        if any.is::<TransportLayerNack>() {
                            metrics.feedback(Feedback::Nack);
                        }
                        continue;
                    }
                    // By the sender's track id; a WHEP view's senders carry whichever track
                    // their m-line shows now, so there by the SSRC the request names.
                    let track = TrackId::parse(&track_id).or_else(|| {
                        let LegMedia::Subscribe(state) = &leg.media else {
                            return None;
                        };
                        let ssrcs = packet.destination_ssrc();
                        state
                            .tracks()
                            .find(|slot| ssrcs.contains(&slot.ssrc))
                            .map(|slot| slot.track)
                    });
                    if let Some(track) = track
                        && !findings.keyframe_requests.contains(&track)
                    {
                        findings.keyframe_requests.push(track);
                    }
                }
            }
            RTCMessage::DataChannelMessage(id, message) => {
                // Only the relay's own channel on the subscribe leg carries room data.
                if let LegMedia::Subscribe(state) = &leg.media
                    && state.data_channel == Some(id)
                {
                    findings.data_messages.push(message);
                }
            }
            _ => {}
        }
    }
}

/// Why a subscription is paused, in the protocol's words.
pub(super) fn wire_pause_reason(
    reason: PauseReason,
) -> Option<tern_signaling::protocol::PauseReason> {
    use tern_signaling::protocol::PauseReason as Wire;
    match reason {
        PauseReason::Bandwidth => Some(Wire::Bandwidth),
        PauseReason::SubscriberBudget => Some(Wire::SubscriberBudget),
        PauseReason::RoomBudget => Some(Wire::RoomBudget),
        PauseReason::NoLayer => Some(Wire::NoLayer),
        PauseReason::Wish => Some(Wire::Requested),
    }
}

/// A padding-only packet in a subscriber slot's stream (RFC 3550 §5.1; `patches/rtc-rtp` writes
/// it with 255 bytes of padding).
fn padding_packet(target: &RewriteTarget, sequence_number: u16, timestamp: u32) -> Packet {
    let mut packet = Packet::default();
    packet.header.version = 2;
    packet.header.padding = true;
    packet.header.payload_type = target.payload_type;
    packet.header.sequence_number = sequence_number;
    packet.header.timestamp = timestamp;
    packet.header.ssrc = target.ssrc;
    packet
}

/// Queues everything a leg wrote for sending.
pub(super) fn flush_leg(leg: &mut Leg, transmits: &mut VecDeque<Transmit>) {
    while let Some(out) = leg.pc.poll_write() {
        let carrier = if out.transport.transport_protocol == TransportProtocol::TCP {
            Carrier::Tcp
        } else {
            Carrier::Udp
        };
        transmits.push_back(Transmit {
            to: out.transport.peer_addr,
            carrier,
            bytes: out.message,
        });
    }
}
