//! Every metric the relay exports, registered once into the App's registry (no globals).
//!
//! Rules (DESIGN.md): label values only from closed enums; every label combination created at
//! start so dashboards see zeros; labelled children cached (no `with_label_values` per packet);
//! state gauges (rooms, participants, ...) computed at scrape time from the worker's own state.
//! README's metric table documents each name; keep them in step.

use crate::media::codec::MediaKind;
use crate::process_metrics::ProcessMetrics;
use crate::webhooks::WebhookMetrics;
use prometheus::proto::{Metric, MetricFamily};
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tern_signaling::limits::LimitCounters;
use tern_signaling::metrics::SignalingMetrics;

/// Why a datagram or packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not STUN, and from an address no leg has verified.
    UnknownSource,
    /// STUN naming no leg of this relay.
    UnknownUfrag,
    /// A STUN request naming a leg whose MESSAGE-INTEGRITY is missing or wrong (a forgery by
    /// someone who saw the ufrag).
    StunUnauthenticated,
    /// Larger than any datagram a leg accepts.
    Oversized,
    /// The WebRTC stack rejected it (bad SRTP, malformed DTLS/RTP/RTCP, replay).
    Malformed,
    /// The leg panicked on it and was closed.
    LegPanic,
    /// RTP with an SSRC that belongs to no announced track.
    UnknownStream,
    /// Video for a subscription still waiting for its first keyframe.
    AwaitingKeyframe,
    /// Late packet of a replaced publisher stream.
    Stale,
    /// The subscriber leg refused the rewritten packet.
    SendRefused,
    /// The socket had no room (send would block).
    SocketBusy,
    /// The socket reported an error on send.
    SendError,
    /// Over the per-leg packet rate (a flood from one source).
    Flood,
    /// SRTP/SRTCP the WebRTC stack produced nothing from: failed authentication, a replay,
    /// malformed content after decryption, or an SSRC nobody announced.
    SrtpRejected,
    /// A data message not delivered because the receiver's data channel was backed up.
    DataBacklog,
    /// A packet of a track an operator muted.
    AdminMuted,
    /// An ICE-TCP connection's send queue was full (the client reads too slowly) or it closed.
    TcpBacklog,
    /// A publisher packet seen before (a retransmission that crossed its original, or a copy
    /// the publisher sent as a bandwidth probe).
    Duplicate,
    /// A padding-only publisher packet (the publisher's bandwidth probe).
    Padding,
    /// A subscriber's pacer was full (its estimate far below what it is sent).
    PacerOverflow,
    /// A retransmission to a subscriber over its share of the subscriber's estimate.
    RetransmissionLimit,
}

impl DropReason {
    pub const ALL: [DropReason; 21] = [
        DropReason::UnknownSource,
        DropReason::UnknownUfrag,
        DropReason::StunUnauthenticated,
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::LegPanic,
        DropReason::UnknownStream,
        DropReason::AwaitingKeyframe,
        DropReason::Stale,
        DropReason::SendRefused,
        DropReason::SocketBusy,
        DropReason::SendError,
        DropReason::Flood,
        DropReason::SrtpRejected,
        DropReason::DataBacklog,
        DropReason::AdminMuted,
        DropReason::TcpBacklog,
        DropReason::Duplicate,
        DropReason::Padding,
        DropReason::PacerOverflow,
        DropReason::RetransmissionLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownSource => "unknown_source",
            DropReason::UnknownUfrag => "unknown_ufrag",
            DropReason::StunUnauthenticated => "stun_unauthenticated",
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::LegPanic => "leg_panic",
            DropReason::UnknownStream => "unknown_stream",
            DropReason::AwaitingKeyframe => "awaiting_keyframe",
            DropReason::Stale => "stale",
            DropReason::SendRefused => "send_refused",
            DropReason::SocketBusy => "socket_busy",
            DropReason::SendError => "send_error",
            DropReason::Flood => "flood",
            DropReason::SrtpRejected => "srtp_rejected",
            DropReason::DataBacklog => "data_backlog",
            DropReason::AdminMuted => "admin_muted",
            DropReason::TcpBacklog => "tcp_backlog",
            DropReason::Duplicate => "duplicate",
            DropReason::Padding => "padding",
            DropReason::PacerOverflow => "pacer_overflow",
            DropReason::RetransmissionLimit => "retransmission_limit",
        }
    }
}

/// RTCP feedback the relay receives from subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    Pli,
    Fir,
    Nack,
}

impl Feedback {
    pub const ALL: [Feedback; 3] = [Feedback::Pli, Feedback::Fir, Feedback::Nack];

    pub fn as_str(self) -> &'static str {
        match self {
            Feedback::Pli => "pli",
            Feedback::Fir => "fir",
            Feedback::Nack => "nack",
        }
    }
}

/// Per-kind counter pair, cached.
#[derive(Clone)]
pub struct ByKind {
    audio: IntCounter,
    video: IntCounter,
}

impl ByKind {
    fn new(vec: &IntCounterVec) -> Self {
        ByKind {
            audio: vec.with_label_values(&[MediaKind::Audio.as_str()]),
            video: vec.with_label_values(&[MediaKind::Video.as_str()]),
        }
    }

    pub fn get(&self, kind: MediaKind) -> &IntCounter {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }
}

/// Why the relay closed an ICE-TCP connection, and how many are open (see `node::tcp`).
#[derive(Clone)]
pub struct TcpCounters {
    pub over_limit: IntCounter,
    pub no_stun: IntCounter,
    pub oversized_frame: IntCounter,
    pub open: prometheus::IntGauge,
}

/// Counters the media worker increments on the packet path.
pub struct MediaMetrics {
    pub rtp_packets_received: ByKind,
    pub rtp_packets_sent: ByKind,
    pub rtp_bytes_received: ByKind,
    pub rtp_bytes_sent: ByKind,
    pub udp_bytes_received: IntCounter,
    pub udp_bytes_sent: IntCounter,
    pub tcp_bytes_sent: IntCounter,
    /// ICE-TCP connections: open, and closed by the relay for each reason.
    pub tcp: TcpCounters,
    drops: Vec<IntCounter>,
    feedback: Vec<IntCounter>,
    pub keyframe_requests_sent: IntCounter,
    /// Subscriptions moved to a better or a worse simulcast layer.
    layer_switches_up: IntCounter,
    layer_switches_down: IntCounter,
    /// Subscribers' downlink estimates, observed at each transport-cc report batch.
    pub bandwidth_estimate: Histogram,
    /// Padding the relay sent to probe subscribers' downlinks.
    pub probe_bytes_sent: IntCounter,
    pub nacks_sent: IntCounter,
    pub retransmissions_sent: IntCounter,
    pub data_messages_received: IntCounter,
    pub data_messages_sent: IntCounter,
    pub data_messages_refused: IntCounter,
    leg_failures: Vec<IntCounter>,
    pub leg_panics: IntCounter,
    /// Datagram received -> last copy sent, for one inbound packet in [`LATENCY_SAMPLE`].
    pub forwarding_latency: Histogram,
    /// Join accepted -> the participant's first peer connection connected.
    pub join_duration: Histogram,
    /// The media worker's time for one command from signaling, by kind.
    command_duration: Vec<Histogram>,
    /// Limits the worker enforces (room size, tracks, rooms, SDP size); shared with signaling.
    pub limits: LimitCounters,
    /// The worker thread's measured load (`node::load`), labelled with the worker's index.
    pub worker_load: Gauge,
}

impl MediaMetrics {
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }

    pub fn count_drops(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.drops[reason as usize].inc_by(n);
        }
    }

    pub fn count_switches(&self, up: u32, down: u32) {
        if up > 0 {
            self.layer_switches_up.inc_by(u64::from(up));
        }
        if down > 0 {
            self.layer_switches_down.inc_by(u64::from(down));
        }
    }

    pub fn feedback(&self, kind: Feedback) {
        self.feedback[kind as usize].inc();
    }

    pub fn leg_failed(&self, stage: LegFailure) {
        self.leg_failures[stage as usize].inc();
    }

    pub fn command_took(&self, kind: CommandKind, seconds: f64) {
        self.command_duration[kind as usize].observe(seconds);
    }
}

/// What the media worker was asked to do, for its cost per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Join,
    PublishOffer,
    SubscribeAnswer,
    ViewOffer,
    Trickle,
    OtherMessage,
    Disconnected,
    Admin,
}

impl CommandKind {
    pub const ALL: [CommandKind; 8] = [
        CommandKind::Join,
        CommandKind::PublishOffer,
        CommandKind::SubscribeAnswer,
        CommandKind::ViewOffer,
        CommandKind::Trickle,
        CommandKind::OtherMessage,
        CommandKind::Disconnected,
        CommandKind::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Join => "join",
            CommandKind::PublishOffer => "publish_offer",
            CommandKind::SubscribeAnswer => "subscribe_answer",
            CommandKind::ViewOffer => "view_offer",
            CommandKind::Trickle => "trickle",
            CommandKind::OtherMessage => "other_message",
            CommandKind::Disconnected => "disconnected",
            CommandKind::Admin => "admin",
        }
    }
}

/// One inbound packet in this many has its forwarding latency measured (two clock reads).
pub const LATENCY_SAMPLE: u64 = 64;

/// Where a peer connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegFailure {
    /// ICE never connected, or consent was lost later.
    Ice,
    /// ICE connected but the DTLS handshake did not complete.
    Dtls,
}

impl LegFailure {
    pub const ALL: [LegFailure; 2] = [LegFailure::Ice, LegFailure::Dtls];

    pub fn as_str(self) -> &'static str {
        match self {
            LegFailure::Ice => "ice",
            LegFailure::Dtls => "dtls",
        }
    }
}

/// Gauges set at scrape time from a snapshot of the worker's state.
pub struct StateGauges {
    pub rooms: IntGauge,
    pub participants: IntGauge,
    pub publications: IntGaugeVec,
    pub subscriptions: IntGaugeVec,
    pub legs: IntGauge,
    pub paused_subscriptions: IntGauge,
    pub rooms_at_budget: IntGauge,
}

/// A snapshot of the worker's state for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub rooms: u64,
    pub participants: u64,
    pub audio_publications: u64,
    pub video_publications: u64,
    pub audio_subscriptions: u64,
    pub video_subscriptions: u64,
    pub legs: u64,
    /// Video subscriptions the bandwidth allocator paused.
    pub paused_subscriptions: u64,
    /// Rooms whose `max_egress_kbps` held a subscriber back in the last allocation.
    pub rooms_at_budget: u64,
}

/// The latest [`NodeStats`] a worker published, readable without asking it (a scrape must not
/// cost the media worker a round trip).
#[derive(Debug, Default)]
pub struct NodeSnapshot {
    rooms: AtomicU64,
    participants: AtomicU64,
    audio_publications: AtomicU64,
    video_publications: AtomicU64,
    audio_subscriptions: AtomicU64,
    video_subscriptions: AtomicU64,
    legs: AtomicU64,
    paused_subscriptions: AtomicU64,
    rooms_at_budget: AtomicU64,
    /// The worker thread's measured load (the busy share of its time), in millionths
    /// (`node::load`); not part of [`NodeStats`], which add up over workers where loads do not.
    load_millionths: AtomicU64,
}

impl NodeSnapshot {
    /// The worker's measured load: 1.0 is never waiting for input.
    pub fn set_load(&self, load: f64) {
        let millionths = (load.clamp(0.0, 1.0) * 1e6).round() as u64;
        self.load_millionths.store(millionths, Ordering::Relaxed);
    }

    pub fn load(&self) -> f64 {
        self.load_millionths.load(Ordering::Relaxed) as f64 / 1e6
    }

    pub fn publish(&self, stats: NodeStats) {
        let set = |field: &AtomicU64, value: u64| field.store(value, Ordering::Relaxed);
        set(&self.rooms, stats.rooms);
        set(&self.participants, stats.participants);
        set(&self.audio_publications, stats.audio_publications);
        set(&self.video_publications, stats.video_publications);
        set(&self.audio_subscriptions, stats.audio_subscriptions);
        set(&self.video_subscriptions, stats.video_subscriptions);
        set(&self.legs, stats.legs);
        set(&self.paused_subscriptions, stats.paused_subscriptions);
        set(&self.rooms_at_budget, stats.rooms_at_budget);
    }

    pub fn read(&self) -> NodeStats {
        let get = |field: &AtomicU64| field.load(Ordering::Relaxed);
        NodeStats {
            rooms: get(&self.rooms),
            participants: get(&self.participants),
            audio_publications: get(&self.audio_publications),
            video_publications: get(&self.video_publications),
            audio_subscriptions: get(&self.audio_subscriptions),
            video_subscriptions: get(&self.video_subscriptions),
            legs: get(&self.legs),
            paused_subscriptions: get(&self.paused_subscriptions),
            rooms_at_budget: get(&self.rooms_at_budget),
        }
    }
}

impl std::ops::Add for NodeStats {
    type Output = NodeStats;

    fn add(self, other: NodeStats) -> NodeStats {
        NodeStats {
            rooms: self.rooms + other.rooms,
            participants: self.participants + other.participants,
            audio_publications: self.audio_publications + other.audio_publications,
            video_publications: self.video_publications + other.video_publications,
            audio_subscriptions: self.audio_subscriptions + other.audio_subscriptions,
            video_subscriptions: self.video_subscriptions + other.video_subscriptions,
            legs: self.legs + other.legs,
            paused_subscriptions: self.paused_subscriptions + other.paused_subscriptions,
            rooms_at_budget: self.rooms_at_budget + other.rooms_at_budget,
        }
    }
}

impl std::iter::Sum for NodeStats {
    fn sum<I: Iterator<Item = NodeStats>>(iter: I) -> NodeStats {
        iter.fold(NodeStats::default(), |sum, stats| sum + stats)
    }
}

/// Every worker's snapshot: the relay's state is their sum.
#[derive(Debug, Default, Clone)]
pub struct NodeSnapshots(Vec<Arc<NodeSnapshot>>);

impl NodeSnapshots {
    pub fn new(workers: Vec<Arc<NodeSnapshot>>) -> Self {
        NodeSnapshots(workers)
    }

    /// The whole relay's state.
    pub fn read(&self) -> NodeStats {
        self.0.iter().map(|snapshot| snapshot.read()).sum()
    }

    /// Each worker's own state, in worker order.
    pub fn per_worker(&self) -> impl Iterator<Item = NodeStats> + '_ {
        self.0.iter().map(|snapshot| snapshot.read())
    }

    /// Each worker's measured load (1.0: never waiting for input), in worker order.
    pub fn loads(&self) -> impl Iterator<Item = f64> + '_ {
        self.0.iter().map(|snapshot| snapshot.load())
    }
}

pub struct Metrics {
    pub registry: Registry,
    /// The first media worker's counters (the only worker's, in tests and simulations).
    pub media: Arc<MediaMetrics>,
    /// ICE-TCP connection counters, shared by every worker's listener.
    pub tcp: TcpCounters,
    /// Each media worker's packet-path counters, in a registry of its own: a worker never
    /// touches another's cache lines, and a scrape sums them ([`merge_families`]).
    workers: Vec<WorkerMetrics>,
    pub signaling: Arc<SignalingMetrics>,
    pub gauges: StateGauges,
    pub webhooks: Arc<WebhookMetrics>,
    process: ProcessMetrics,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    registry
        .register(Box::new(vec.clone()))
        .expect("metric registered once");
    vec
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    for kind in [MediaKind::Audio, MediaKind::Video] {
        g.with_label_values(&[kind.as_str()]).set(0);
    }
    g
}

/// One media worker's counters and the registry they are in.
struct WorkerMetrics {
    registry: Registry,
    media: Arc<MediaMetrics>,
}

impl WorkerMetrics {
    fn new(worker: usize, limits: LimitCounters, tcp: TcpCounters) -> Self {
        let registry = Registry::new();
        let media = Arc::new(MediaMetrics::register(&registry, worker, limits, tcp));
        WorkerMetrics { registry, media }
    }
}

impl Metrics {
    /// The metrics of a relay with one media worker.
    pub fn new() -> Self {
        Self::with_workers(1)
    }

    /// The metrics of a relay with `workers` media workers (at least one).
    pub fn with_workers(workers: usize) -> Self {
        let registry = Registry::new();
        let kind = "kind";
        let signaling =
            SignalingMetrics::register(&registry).expect("signaling metrics registered once");
        let tcp = {
            let refused = counter_vec(
                &registry,
                "tern_ice_tcp_connections_closed_total",
                "ICE-TCP connections the relay closed or refused, by reason: over the \
                     connection limit, no accepted STUN request before the deadline, a frame \
                     larger than any packet.",
                "reason",
            );
            TcpCounters {
                over_limit: refused.with_label_values(&["limit"]),
                no_stun: refused.with_label_values(&["stun_deadline"]),
                oversized_frame: refused.with_label_values(&["oversized_frame"]),
                open: gauge(
                    &registry,
                    "tern_ice_tcp_connections",
                    "Open ICE-TCP connections.",
                ),
            }
        };
        let workers: Vec<WorkerMetrics> = (0..workers.max(1))
            .map(|worker| WorkerMetrics::new(worker, signaling.limits.clone(), tcp.clone()))
            .collect();
        let gauges = StateGauges {
            rooms: gauge(&registry, "tern_rooms", "Open rooms."),
            participants: gauge(
                &registry,
                "tern_participants",
                "Participants in rooms (including those resuming).",
            ),
            publications: gauge_vec(
                &registry,
                "tern_publications",
                "Published tracks, by media kind.",
                kind,
            ),
            subscriptions: gauge_vec(
                &registry,
                "tern_subscriptions",
                "Track subscriptions (one track delivered to one participant), by media kind.",
                kind,
            ),
            legs: gauge(
                &registry,
                "tern_peer_connections",
                "Open peer connections (legs).",
            ),
            paused_subscriptions: gauge(
                &registry,
                "tern_paused_subscriptions",
                "Video subscriptions paused by bandwidth control (the subscriber's estimate or a \
                 budget cannot carry even the lowest layer); their audio continues.",
            ),
            rooms_at_budget: gauge(
                &registry,
                "tern_rooms_at_budget",
                "Rooms whose max_egress_kbps held a subscriber below what its own bandwidth \
                 allowed, in the last allocation.",
            ),
        };
        let process = ProcessMetrics::register(&registry);
        let webhooks =
            Arc::new(WebhookMetrics::register(&registry).expect("webhook metrics registered once"));
        Metrics {
            registry,
            process,
            webhooks,
            media: workers[0].media.clone(),
            tcp,
            workers,
            signaling: Arc::new(signaling),
            gauges,
        }
    }

    /// Sets the state gauges from a snapshot and renders the text exposition format.
    pub fn render(&self, stats: NodeStats) -> String {
        self.process.update();
        let g = &self.gauges;
        g.rooms.set(stats.rooms as i64);
        g.participants.set(stats.participants as i64);
        g.legs.set(stats.legs as i64);
        g.publications
            .with_label_values(&["audio"])
            .set(stats.audio_publications as i64);
        g.publications
            .with_label_values(&["video"])
            .set(stats.video_publications as i64);
        g.subscriptions
            .with_label_values(&["audio"])
            .set(stats.audio_subscriptions as i64);
        g.subscriptions
            .with_label_values(&["video"])
            .set(stats.video_subscriptions as i64);
        g.paused_subscriptions
            .set(stats.paused_subscriptions as i64);
        g.rooms_at_budget.set(stats.rooms_at_budget as i64);
        let encoder = prometheus::TextEncoder::new();
        let mut families = self.registry.gather();
        for worker in &self.workers {
            families.extend(worker.registry.gather());
        }
        encoder
            .encode_to_string(&merge_families(families))
            .unwrap_or_else(|err| format!("# encoding failed: {err}\n"))
    }

    /// Worker `index`'s packet-path counters.
    pub fn worker(&self, index: usize) -> Arc<MediaMetrics> {
        self.workers[index].media.clone()
    }

    /// How many media workers these metrics were made for.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

/// Families of the same name (one per worker) summed into one: counters, gauges and histogram
/// buckets of equal labels add up. Families keep the order of their first appearance.
fn merge_families(families: Vec<MetricFamily>) -> Vec<MetricFamily> {
    let mut merged: Vec<MetricFamily> = Vec::with_capacity(families.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for mut family in families {
        let Some(&at) = by_name.get(family.name()) else {
            by_name.insert(family.name().to_owned(), merged.len());
            merged.push(family);
            continue;
        };
        let into = &mut merged[at];
        for metric in family.take_metric() {
            let same = into
                .mut_metric()
                .iter_mut()
                .find(|m| m.get_label() == metric.get_label());
            match same {
                Some(existing) => add_metric(existing, &metric),
                None => into.mut_metric().push(metric),
            }
        }
    }
    merged
}

fn add_metric(into: &mut Metric, other: &Metric) {
    let mut counter = into.get_counter().clone();
    counter.set_value(counter.get_value() + other.get_counter().get_value());
    into.set_counter(counter);
    let mut gauge = into.get_gauge().clone();
    gauge.set_value(gauge.get_value() + other.get_gauge().get_value());
    into.set_gauge(gauge);
    let (mine, theirs) = (into.get_histogram(), other.get_histogram());
    if !theirs.get_bucket().is_empty() || theirs.get_sample_count() > 0 {
        let mut histogram = mine.clone();
        histogram.set_sample_count(mine.get_sample_count() + theirs.get_sample_count());
        histogram.set_sample_sum(mine.get_sample_sum() + theirs.get_sample_sum());
        let buckets = mine
            .get_bucket()
            .iter()
            .zip(theirs.get_bucket())
            .map(|(a, b)| {
                let mut bucket = a.clone();
                bucket.set_cumulative_count(a.cumulative_count() + b.cumulative_count());
                bucket
            })
            .collect();
        histogram.set_bucket(buckets);
        into.set_histogram(histogram);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl MediaMetrics {
    /// The packet-path counters, registered in `registry` (a worker's own); `limits` and
    /// `tcp` are shared with the rest of the relay (they count rare events).
    fn register(
        registry: &Registry,
        worker: usize,
        limits: LimitCounters,
        tcp: TcpCounters,
    ) -> Self {
        let kind = "kind";
        let worker_load = Gauge::with_opts(
            Opts::new(
                "tern_media_worker_load",
                "Share of time the media worker's thread was busy rather than waiting for \
                 datagrams, commands or timers, averaged over about 2 s (1 = saturated), by \
                 worker. Over media.max_worker_load_percent, the worker takes no new \
                 participants.",
            )
            .const_label("worker", worker.to_string()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(worker_load.clone()))
            .expect("metric registered once");
        let rtp_received = counter_vec(
            registry,
            "tern_rtp_packets_received_total",
            "RTP packets received from publishers (after decryption), by media kind.",
            kind,
        );
        let rtp_sent = counter_vec(
            registry,
            "tern_rtp_packets_sent_total",
            "Forwarded RTP packets handed to subscriber legs, by media kind (retransmissions excluded).",
            kind,
        );
        let bytes_received = counter_vec(
            registry,
            "tern_rtp_bytes_received_total",
            "RTP payload bytes received from publishers, by media kind.",
            kind,
        );
        let bytes_sent = counter_vec(
            registry,
            "tern_rtp_bytes_sent_total",
            "RTP payload bytes forwarded to subscribers, by media kind.",
            kind,
        );
        let drops_vec = counter_vec(
            registry,
            "tern_packets_dropped_total",
            "Datagrams and packets not forwarded, by reason.",
            "reason",
        );
        let feedback_vec = counter_vec(
            registry,
            "tern_rtcp_feedback_received_total",
            "RTCP feedback received from subscribers, by type.",
            "type",
        );
        let layer_switches = counter_vec(
            registry,
            "tern_layer_switches_total",
            "Subscriptions moved to another simulcast layer (at its keyframe), by direction: \
             up to a better one, down to a worse one.",
            "direction",
        );
        MediaMetrics {
            limits,
            rtp_packets_received: ByKind::new(&rtp_received),
            rtp_packets_sent: ByKind::new(&rtp_sent),
            rtp_bytes_received: ByKind::new(&bytes_received),
            rtp_bytes_sent: ByKind::new(&bytes_sent),
            udp_bytes_received: counter(
                registry,
                "tern_udp_bytes_received_total",
                "Bytes received on the media UDP socket (all datagrams).",
            ),
            udp_bytes_sent: counter(
                registry,
                "tern_udp_bytes_sent_total",
                "Bytes sent on the media UDP socket (all datagrams).",
            ),
            tcp_bytes_sent: counter(
                registry,
                "tern_tcp_bytes_sent_total",
                "Bytes queued to ICE-TCP connections, framing included.",
            ),
            tcp,
            drops: DropReason::ALL
                .iter()
                .map(|r| drops_vec.with_label_values(&[r.as_str()]))
                .collect(),
            feedback: Feedback::ALL
                .iter()
                .map(|f| feedback_vec.with_label_values(&[f.as_str()]))
                .collect(),
            worker_load,
            keyframe_requests_sent: counter(
                registry,
                "tern_keyframe_requests_sent_total",
                "PLIs sent to publishers (after throttling).",
            ),
            layer_switches_up: layer_switches.with_label_values(&["up"]),
            layer_switches_down: layer_switches.with_label_values(&["down"]),
            bandwidth_estimate: histogram(
                registry,
                "tern_bandwidth_estimate_bps",
                "Subscribers' estimated downlink bandwidth (bits per second), observed each time \
                 transport-cc feedback updates an estimate.",
                vec![
                    50e3, 100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6, 20e6,
                ],
            ),
            probe_bytes_sent: counter(
                registry,
                "tern_probe_bytes_sent_total",
                "Padding bytes the relay sent to probe subscribers' downlinks.",
            ),
            nacks_sent: counter(
                registry,
                "tern_nacks_sent_total",
                "NACK packets the relay sent to publishers for packets it missed.",
            ),
            retransmissions_sent: counter(
                registry,
                "tern_retransmissions_sent_total",
                "Packets the relay retransmitted to subscribers from its own send history.",
            ),
            data_messages_received: counter(
                registry,
                "tern_data_messages_received_total",
                "Data-channel messages from participants that the relay accepted.",
            ),
            data_messages_sent: counter(
                registry,
                "tern_data_messages_sent_total",
                "Data-channel messages delivered to participants.",
            ),
            data_messages_refused: counter(
                registry,
                "tern_data_messages_refused_total",
                "Data-channel messages refused (no publish_data grant, too large, too many, not text).",
            ),
            leg_failures: {
                let vec = counter_vec(
                    registry,
                    "tern_leg_failures_total",
                    "Peer connections that failed, by stage (ICE never connected or consent lost; \
                     DTLS handshake).",
                    "stage",
                );
                LegFailure::ALL
                    .iter()
                    .map(|f| vec.with_label_values(&[f.as_str()]))
                    .collect()
            },
            leg_panics: counter(
                registry,
                "tern_leg_panics_total",
                "Peer connections closed because the WebRTC stack panicked on their input.",
            ),
            forwarding_latency: histogram(
                registry,
                "tern_forwarding_latency_seconds",
                "Time from receiving a publisher's datagram to sending its last forwarded copy \
                 (decrypt, decide, rewrite, encrypt, send), sampled one packet in 64.",
                vec![
                    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                    50e-3, 100e-3,
                ],
            ),
            join_duration: histogram(
                registry,
                "tern_join_duration_seconds",
                "Time from a join being accepted to the participant's first peer connection \
                 connected (ICE and DTLS done).",
                vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0],
            ),
            command_duration: {
                let vec = HistogramVec::new(
                    HistogramOpts::new(
                        "tern_worker_command_seconds",
                        "Time the media worker spent on one command from signaling (a join, a \
                         client message, a disconnect, an admin request), by kind: what one \
                         message can cost everybody else's media.",
                    )
                    .buckets(vec![
                        10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
                        25e-3, 50e-3, 100e-3,
                    ]),
                    &["command"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(vec.clone()))
                    .expect("metric registered once");
                CommandKind::ALL
                    .iter()
                    .map(|k| vec.with_label_values(&[k.as_str()]))
                    .collect()
            },
        }
    }
}
