//! Per-room bandwidth control on a virtual clock: the pure room (layers, forwarders, estimator,
//! allocator, probes) with a simulcast publisher and subscribers behind modelled bottlenecks.
//!
//! Each subscriber's downlink is a FIFO of a given capacity with a tail-drop queue limit and a
//! propagation delay; it turns the room's forwarded packets (media and probe padding) into
//! transport-cc reports every 50 ms, as a browser's feedback would. Minutes of a call run in
//! well under a second, and every number asserted comes from what the room forwarded.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tern::media::allocator::{PauseReason, Target};
use tern::media::bandwidth::{BandwidthPolicy, SentPacket};
use tern::media::codec::Codec;
use tern::media::codec::vp8::{PictureId, Vp8Descriptor};
use tern::media::forwarder::InboundPacket;
use tern::media::ids::{ParticipantId, RoomId, TrackId};
use tern::media::pacer::Pacer;
use tern::media::room::{
    MemberInfo, PublicationInfo, Room, RoomError, RoomOutput, SinkId, TrackSource, Wish,
};

const PUBLISHER: ParticipantId = ParticipantId(1);
const VIDEO: TrackId = TrackId(10);
const AUDIO: TrackId = TrackId(11);
const MTU_PAYLOAD: u32 = 1_100;
/// RTP header, extensions and SRTP tag on top of the payload.
const OVERHEAD: u32 = 40;
const PADDING_WIRE: u32 = 300;

/// One simulcast layer as the publisher encodes it.
struct Layer {
    ssrc: u32,
    rid: &'static str,
    size: (u16, u16),
    bitrate_bps: u32,
    sequence_number: u16,
    timestamp: u32,
    picture_id: u16,
    tl0: u8,
    /// The encoder dropped this layer (CPU, or its own bandwidth estimate).
    stopped: bool,
}

struct Publisher {
    layers: Vec<Layer>,
    audio_sequence_number: u16,
    keyframe_due: bool,
    frames: u64,
    temporal_position: usize,
}

impl Publisher {
    /// One stream, no simulcast, at `bitrate_bps`: what most non-browser clients send.
    fn single(bitrate_bps: u32) -> Self {
        let mut publisher = Publisher::new();
        publisher.layers.truncate(1);
        publisher.layers[0].rid = "";
        publisher.layers[0].size = (1280, 720);
        publisher.layers[0].bitrate_bps = bitrate_bps;
        publisher
    }

    fn new() -> Self {
        let layer = |ssrc, rid, size, bitrate_bps, base: u32, timestamp: u32| Layer {
            ssrc,
            rid,
            size,
            bitrate_bps,
            sequence_number: base as u16,
            // Each layer has its own timestamp base (as libvpx simulcast has); h's wraps in its
            // first second.
            timestamp,
            picture_id: (base % 0x8000) as u16,
            tl0: base as u8,
            stopped: false,
        };
        Publisher {
            layers: vec![
                layer(101, "q", (320, 180), 150_000, 60_000, 4_000_000_000),
                layer(102, "h", (640, 360), 500_000, 1_234, u32::MAX - 45_000),
                layer(103, "f", (1280, 720), 1_500_000, 40_000, 1_000),
            ],
            audio_sequence_number: 65_000,
            keyframe_due: true,
            frames: 0,
            temporal_position: 0,
        }
    }

    /// One video frame on every layer (30 fps, three temporal layers as browsers send: TIDs
    /// 0, 2, 1, 2, restarting at a keyframe), keyframes three times the size.
    fn frame(&mut self) -> Vec<InboundPacket> {
        let keyframe = std::mem::take(&mut self.keyframe_due);
        if keyframe {
            self.temporal_position = 0;
        }
        let temporal_id = [0, 2, 1, 2][self.temporal_position % 4];
        self.temporal_position += 1;
        self.frames += 1;
        let mut packets = Vec::new();
        for layer in self.layers.iter_mut().filter(|l| !l.stopped) {
            let mut bytes = layer.bitrate_bps / 8 / 30;
            if keyframe {
                bytes *= 3;
            }
            let count = bytes.div_ceil(MTU_PAYLOAD);
            for i in 0..count {
                packets.push(InboundPacket {
                    ssrc: layer.ssrc,
                    sequence_number: layer.sequence_number,
                    timestamp: layer.timestamp,
                    marker: i + 1 == count,
                    keyframe_start: keyframe && i == 0,
                    payload_bytes: (bytes / count).max(1),
                    resolution: (keyframe && i == 0).then_some(layer.size),
                    vp8: Some(Vp8Descriptor {
                        keyframe_start: keyframe && i == 0,
                        resolution: (keyframe && i == 0).then_some(layer.size),
                        picture_id: Some(PictureId {
                            value: layer.picture_id,
                            wide: true,
                        }),
                        tl0_picture_index: Some(layer.tl0),
                        temporal_id: Some(temporal_id),
                        layer_sync: false,
                        picture_start: i == 0,
                    }),
                });
                layer.sequence_number = layer.sequence_number.wrapping_add(1);
            }
            layer.timestamp = layer.timestamp.wrapping_add(3_000);
            layer.picture_id = (layer.picture_id + 1) % 0x8000;
            if temporal_id == 0 {
                layer.tl0 = layer.tl0.wrapping_add(1);
            }
        }
        packets
    }

    fn audio(&mut self) -> InboundPacket {
        self.audio_sequence_number = self.audio_sequence_number.wrapping_add(1);
        InboundPacket {
            ssrc: 201,
            sequence_number: self.audio_sequence_number,
            timestamp: u32::from(self.audio_sequence_number) * 960,
            marker: false,
            keyframe_start: true,
            payload_bytes: 80,
            ..InboundPacket::default()
        }
    }
}

/// A subscriber's downlink: a FIFO of `capacity_bps` with a queue limit, then propagation.
struct Link {
    capacity_bps: u64,
    max_queue: Duration,
    propagation: Duration,
    /// When the last packet finishes being serialised.
    busy_until: Instant,
    next_id: u64,
    /// The relay's pacing toward this subscriber.
    pacer: Pacer,
    /// (report, arrival at the receiver) waiting to be reported.
    in_flight: VecDeque<(SentPacket, Option<Instant>)>,
    delivered_bytes: u64,
}

impl Link {
    fn new(capacity_bps: u64, start: Instant) -> Self {
        Link {
            capacity_bps,
            max_queue: Duration::from_millis(250),
            propagation: Duration::from_millis(20),
            busy_until: start,
            next_id: 0,
            pacer: Pacer::default(),
            in_flight: VecDeque::new(),
            delivered_bytes: 0,
        }
    }

    /// One packet through the relay's pacer and onto the link.
    fn send(&mut self, size_bytes: u32, now: Instant, start: Instant) {
        let now = self.pacer.schedule(now, size_bytes);
        self.next_id += 1;
        let start_at = self.busy_until.max(now);
        let arrival = if start_at - now > self.max_queue {
            None
        } else {
            let serialise =
                Duration::from_nanos(u64::from(size_bytes) * 8 * 1_000_000_000 / self.capacity_bps);
            self.busy_until = start_at + serialise;
            self.delivered_bytes += u64::from(size_bytes);
            Some(self.busy_until + self.propagation)
        };
        self.in_flight.push_back((
            SentPacket {
                id: self.next_id,
                departure: now,
                arrival: arrival.map(|at| at - start),
                size_bytes,
            },
            arrival,
        ));
    }

    /// What a receiver reports now: packets that arrived (or that later ones overtook, lost).
    fn feedback(&mut self, now: Instant) -> Vec<SentPacket> {
        let mut reports = Vec::new();
        while let Some((report, arrival)) = self.in_flight.front() {
            match arrival {
                Some(at) if *at > now => break,
                // A loss is known once a later packet arrived.
                None if !self
                    .in_flight
                    .iter()
                    .any(|(_, a)| a.is_some_and(|a| a <= now)) =>
                {
                    break;
                }
                _ => {}
            }
            reports.push(*report);
            self.in_flight.pop_front();
        }
        reports
    }
}

/// What one subscriber got from the room.
#[derive(Default)]
struct Received {
    /// (when, layer SSRC) of every forwarded media packet.
    layers: Vec<(Instant, u32)>,
    /// Output sequence numbers of media and padding, in the order sent.
    sequence_numbers: Vec<u16>,
    timestamps: Vec<u32>,
    picture_ids: Vec<(u16, bool)>,
    video_bytes: u64,
    states: Vec<(Instant, Target)>,
    /// Every byte sent to the subscriber (media, probes), for the trace.
    sent_bytes: u64,
}

struct Call {
    start: Instant,
    now: Instant,
    room: Room,
    publisher: Publisher,
    links: BTreeMap<ParticipantId, Link>,
    received: BTreeMap<ParticipantId, Received>,
    /// What the publisher was told of the demand for its video (dynacast), and when.
    demands: Vec<(Instant, Option<u8>)>,
    next_frame: Instant,
    next_audio: Instant,
    next_feedback: Instant,
    next_report: Instant,
}

fn member(name: &str) -> MemberInfo {
    MemberInfo {
        identity: name.into(),
        name: name.into(),
        can_publish: true,
        can_subscribe: true,
    }
}

fn sink_of(id: ParticipantId, track: TrackId) -> SinkId {
    SinkId(id.0 * 1_000 + track.0)
}

fn subscriber_of(sink: SinkId) -> ParticipantId {
    ParticipantId(sink.0 / 1_000)
}

impl Call {
    fn new(subscribers: &[(ParticipantId, u64)], policy: BandwidthPolicy) -> Call {
        Call::with_publisher(subscribers, policy, Publisher::new())
    }

    fn with_publisher(
        subscribers: &[(ParticipantId, u64)],
        policy: BandwidthPolicy,
        publisher: Publisher,
    ) -> Call {
        let start = Instant::now();
        let mut room = Room::new(RoomId("bw".into()), Duration::from_millis(300));
        room.set_bandwidth_policy(policy, start);
        room.join(PUBLISHER, member("pub")).unwrap();
        let mut links = BTreeMap::new();
        let mut received = BTreeMap::new();
        for (id, capacity) in subscribers {
            room.join(*id, member("sub")).unwrap();
            links.insert(*id, Link::new(*capacity, start));
            received.insert(*id, Received::default());
        }
        for (track, source, codec) in [
            (VIDEO, TrackSource::Camera, Codec::Vp8),
            (AUDIO, TrackSource::Microphone, Codec::Opus),
        ] {
            room.publish(
                track,
                PublicationInfo {
                    owner: PUBLISHER,
                    source,
                    codec,
                },
            )
            .unwrap();
        }
        for layer in &publisher.layers {
            let rid = Some(layer.rid).filter(|rid| !rid.is_empty());
            assert!(room.bind_layer(VIDEO, layer.ssrc, rid, start));
        }
        for (id, _) in subscribers {
            for track in [VIDEO, AUDIO] {
                // Output timestamps wrap ten seconds into the call.
                room.attach(
                    track,
                    *id,
                    sink_of(*id, track),
                    1_000,
                    u32::MAX - 900_000,
                    start,
                )
                .unwrap();
            }
        }
        Call {
            start,
            now: start,
            room,
            publisher,
            links,
            received,
            demands: Vec::new(),
            next_frame: start,
            next_audio: start,
            next_feedback: start,
            next_report: start,
        }
    }

    fn at(&self, seconds: f64) -> Instant {
        self.start + Duration::from_secs_f64(seconds)
    }

    fn forward(&mut self, track: TrackId, packet: InboundPacket) {
        let mut out = Vec::new();
        self.room.forward(track, &packet, self.now, |f| out.push(f));
        for f in out {
            let id = subscriber_of(f.sink);
            let size = packet.payload_bytes + OVERHEAD;
            if let Some(link) = self.links.get_mut(&id) {
                link.send(size, self.now, self.start);
            }
            if let Some(r) = self.received.get_mut(&id) {
                r.sent_bytes += u64::from(size);
            }
            if track == VIDEO {
                let r = self.received.get_mut(&id).unwrap();
                r.layers.push((self.now, packet.ssrc));
                r.sequence_numbers.push(f.sequence_number);
                r.timestamps.push(f.timestamp);
                r.video_bytes += u64::from(size);
                let picture = f
                    .vp8
                    .and_then(|v| v.picture_id)
                    .or(packet.vp8.and_then(|v| v.picture_id.map(|p| p.value)));
                if let Some(picture) = picture {
                    r.picture_ids.push((picture, packet.keyframe_start));
                }
            }
        }
    }

    fn drain_outputs(&mut self) {
        while let Some(output) = self.room.poll_output() {
            match output {
                RoomOutput::RequestKeyframe { track: VIDEO, .. } => {
                    self.publisher.keyframe_due = true
                }
                RoomOutput::SendPadding {
                    subscriber,
                    packets,
                } => {
                    for _ in 0..packets {
                        // Padding fills the pacer's spare rate; it never queues behind media.
                        let link = self.links.get_mut(&subscriber).unwrap();
                        if link.pacer.backlog(self.now) > Duration::from_millis(10) {
                            break;
                        }
                        let Some(padding) = self.room.probe_padding(subscriber, self.now) else {
                            break;
                        };
                        let id = subscriber_of(padding.sink);
                        self.links
                            .get_mut(&id)
                            .unwrap()
                            .send(PADDING_WIRE, self.now, self.start);
                        let r = self.received.get_mut(&id).unwrap();
                        r.sequence_numbers.push(padding.sequence_number);
                        r.video_bytes += u64::from(PADDING_WIRE);
                        r.sent_bytes += u64::from(PADDING_WIRE);
                    }
                }
                RoomOutput::SubscriptionState {
                    subscriber,
                    track: VIDEO,
                    target,
                    ..
                } => self
                    .received
                    .get_mut(&subscriber)
                    .unwrap()
                    .states
                    .push((self.now, target)),
                RoomOutput::LayerDemand {
                    owner: PUBLISHER,
                    track: VIDEO,
                    layers,
                } => self.demands.push((self.now, layers)),
                _ => {}
            }
        }
    }

    /// Runs the call until `until`, one millisecond at a time.
    fn run(&mut self, until: Instant) {
        while self.now < until {
            if self.room.poll_timeout().is_some_and(|at| at <= self.now) {
                self.room.handle_timeout(self.now);
                for (id, link) in &mut self.links {
                    if let Some(rate) = self.room.bandwidth().pacing_bps(*id, self.now) {
                        link.pacer.set_rate(rate);
                    }
                }
            }
            self.drain_outputs();
            if self.now >= self.next_frame {
                for packet in self.publisher.frame() {
                    self.forward(VIDEO, packet);
                }
                self.next_frame += Duration::from_micros(33_333);
                self.drain_outputs();
            }
            if self.now >= self.next_audio {
                let packet = self.publisher.audio();
                self.forward(AUDIO, packet);
                self.next_audio += Duration::from_millis(20);
            }
            if self.now >= self.next_report {
                // Sender reports: every layer's RTP time for the same instant.
                let ntp = ((self.now - self.start).as_secs_f64() * 4_294_967_296.0) as u64
                    + (1_000u64 << 32);
                for i in 0..self.publisher.layers.len() {
                    let layer = &self.publisher.layers[i];
                    let frames_ahead = self.next_frame.saturating_duration_since(self.now);
                    let rtp = layer
                        .timestamp
                        .wrapping_sub((frames_ahead.as_micros() * 90 / 1_000) as u32);
                    let ssrc = layer.ssrc;
                    self.room.sender_report(VIDEO, ssrc, rtp, ntp, |_, _| {});
                }
                self.next_report += Duration::from_secs(1);
            }
            if self.now >= self.next_feedback {
                let ids: Vec<ParticipantId> = self.links.keys().copied().collect();
                for id in ids {
                    let reports = self.links.get_mut(&id).unwrap().feedback(self.now);
                    self.room.transport_feedback(id, &reports, self.now);
                    if let Some(rate) = self.room.bandwidth().pacing_bps(id, self.now) {
                        self.links.get_mut(&id).unwrap().pacer.set_rate(rate);
                    }
                }
                self.next_feedback += Duration::from_millis(50);
                self.drain_outputs();
            }
            self.now += Duration::from_millis(1);
        }
    }

    /// Runs until `until` in steps of `step`, writing one CSV row per step for `id` (seconds,
    /// capacity, estimate, sent rate, layer: -1 paused, 0 lowest) when
    /// `TERN_TEST_BANDWIDTH_TRACE` names a file (for docs/plot_bandwidth.py).
    fn run_traced(&mut self, id: ParticipantId, until: Instant, trace: &mut Option<String>) {
        let step = Duration::from_millis(250);
        while self.now < until {
            let before = self.received[&id].sent_bytes;
            let next = (self.now + step).min(until);
            self.run(next);
            if let Some(csv) = trace {
                let sent = (self.received[&id].sent_bytes - before) * 8 * 4;
                let layer = match self.layer_at(id, self.now) {
                    Some(ssrc)
                        if self.received[&id]
                            .layers
                            .last()
                            .is_some_and(|(t, _)| self.now - *t < Duration::from_millis(300)) =>
                    {
                        i64::from(ssrc - Q)
                    }
                    _ => -1,
                };
                csv.push_str(&format!(
                    "{:.2},{},{},{},{}\n",
                    (self.now - self.start).as_secs_f64(),
                    self.links[&id].capacity_bps,
                    self.room.bandwidth().estimate_bps(id).unwrap_or(0),
                    sent,
                    layer
                ));
            }
        }
    }

    fn set_capacity(&mut self, id: ParticipantId, bps: u64) {
        self.links.get_mut(&id).unwrap().capacity_bps = bps;
    }

    /// The layer SSRC last forwarded to `id` before `at`.
    fn layer_at(&self, id: ParticipantId, at: Instant) -> Option<u32> {
        self.received[&id]
            .layers
            .iter()
            .take_while(|(t, _)| *t <= at)
            .last()
            .map(|(_, ssrc)| *ssrc)
    }

    /// When `id` was first forwarded `ssrc` at or after `from`.
    fn first_on(&self, id: ParticipantId, ssrc: u32, from: Instant) -> Option<Duration> {
        self.received[&id]
            .layers
            .iter()
            .find(|(t, s)| *t >= from && *s == ssrc)
            .map(|(t, _)| *t - from)
    }

    /// Longest stretch without a forwarded video packet for `id` within [from, to).
    fn longest_gap(&self, id: ParticipantId, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut longest = Duration::ZERO;
        for (t, _) in self.received[&id]
            .layers
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
        {
            longest = longest.max(*t - last);
            last = *t;
        }
        longest.max(to - last)
    }

    /// Layer changes in what `id` was forwarded after `from` (the first seconds are the
    /// ramp from the starting estimate).
    fn switches_after(&self, id: ParticipantId, from: Instant) -> usize {
        self.received[&id]
            .layers
            .windows(2)
            .filter(|w| w[0].0 >= from && w[0].1 != w[1].1)
            .count()
    }
}

const Q: u32 = 101;
const H: u32 = 102;
const F: u32 = 103;
const STEADY: ParticipantId = ParticipantId(2);
const SQUEEZED: ParticipantId = ParticipantId(3);

/// The output every subscriber saw is one continuous stream: sequence numbers (media and
/// probe padding together) without a gap or repeat, timestamps never stepping back, and VP8
/// PictureIDs advancing by one per picture across every switch.
fn assert_continuous(call: &Call, id: ParticipantId) {
    let r = &call.received[&id];
    for w in r.sequence_numbers.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1), "sequence gap for {id:?}");
    }
    for w in r.timestamps.windows(2) {
        assert!(
            (w[1].wrapping_sub(w[0]) as i32) >= 0,
            "timestamp stepped back for {id:?}: {} -> {}",
            w[0],
            w[1]
        );
    }
    let mut pictures = r.picture_ids.iter().map(|(p, _)| *p).collect::<Vec<_>>();
    pictures.dedup();
    for w in pictures.windows(2) {
        assert_eq!(w[1], (w[0] + 1) % 0x8000, "PictureID jump for {id:?}");
    }
}

#[test]
fn a_squeezed_subscriber_moves_down_within_2_s_and_back_up_within_10_s() {
    let mut call = Call::new(
        &[(STEADY, 20_000_000), (SQUEEZED, 2_500_000)],
        BandwidthPolicy::default(),
    );
    let mut trace = std::env::var_os("TERN_TEST_BANDWIDTH_TRACE")
        .map(|_| String::from("seconds,capacity_bps,estimate_bps,sent_bps,layer\n"));
    // Both reach the full layer on 2.5 Mbit/s and more.
    call.run_traced(SQUEEZED, call.at(30.0), &mut trace);
    assert_eq!(call.layer_at(STEADY, call.at(30.0)), Some(F));
    assert_eq!(call.layer_at(SQUEEZED, call.at(30.0)), Some(F));

    // 2.5 Mbit/s -> 300 kbit/s.
    call.set_capacity(SQUEEZED, 300_000);
    let drop = call.at(30.0);
    call.run_traced(SQUEEZED, call.at(90.0), &mut trace);
    let down = call
        .first_on(SQUEEZED, Q, drop)
        .expect("moved down to the lowest layer");
    println!("moved down to q {down:?} after the drop");
    assert!(down < Duration::from_secs(2), "took {down:?}");
    assert_eq!(call.layer_at(SQUEEZED, call.at(90.0)), Some(Q));
    let gap = call.longest_gap(SQUEEZED, drop, call.at(90.0));
    println!("longest gap in forwarded video while squeezed: {gap:?}");
    assert!(gap < Duration::from_millis(500));

    // The limit lifts.
    call.set_capacity(SQUEEZED, 2_500_000);
    let lift = call.at(90.0);
    call.run_traced(SQUEEZED, call.at(150.0), &mut trace);
    if let (Some(path), Some(csv)) = (std::env::var_os("TERN_TEST_BANDWIDTH_TRACE"), &trace) {
        std::fs::write(path, csv).expect("trace written");
    }
    let up = call
        .first_on(SQUEEZED, F, lift)
        .expect("back on the full layer");
    println!("back on f {up:?} after the limit lifted");
    assert!(up < Duration::from_secs(10), "took {up:?}");
    assert_eq!(call.layer_at(SQUEEZED, call.at(150.0)), Some(F));

    // The steady subscriber never noticed.
    let ramped = call.at(10.0);
    assert_eq!(
        call.switches_after(STEADY, ramped),
        0,
        "steady subscriber switched"
    );
    let squeezed = call.switches_after(SQUEEZED, ramped);
    assert!(squeezed <= 6, "{squeezed} switches");
    for id in [STEADY, SQUEEZED] {
        assert_continuous(&call, id);
    }
}

#[test]
fn a_subscriber_that_cannot_carry_the_lowest_layer_is_paused_and_resumes_by_itself() {
    let mut call = Call::new(&[(SQUEEZED, 2_500_000)], BandwidthPolicy::default());
    call.run(call.at(20.0));
    // Less than even the base temporal layer of the lowest layer with audio.
    call.set_capacity(SQUEEZED, 45_000);
    call.run(call.at(50.0));
    let paused = call.received[&SQUEEZED]
        .states
        .iter()
        .any(|(_, t)| *t == Target::Paused(PauseReason::Bandwidth));
    assert!(paused, "states: {:?}", call.received[&SQUEEZED].states);
    let forwarded_late = call.received[&SQUEEZED]
        .layers
        .iter()
        .filter(|(t, _)| *t > call.at(45.0))
        .count();
    assert_eq!(forwarded_late, 0, "video still forwarded while paused");
    call.set_capacity(SQUEEZED, 2_500_000);
    let lift = call.at(50.0);
    call.run(call.at(80.0));
    let back = call.received[&SQUEEZED]
        .layers
        .iter()
        .find(|(t, _)| *t > lift)
        .map(|(t, _)| *t - lift)
        .expect("resumed");
    println!("resumed {back:?} after the limit lifted");
    assert!(back < Duration::from_secs(15), "took {back:?}");
    assert_continuous(&call, SQUEEZED);
}

#[test]
fn a_room_budget_holds_the_rooms_video_and_raising_it_moves_everyone_up() {
    let ids = [ParticipantId(2), ParticipantId(3), ParticipantId(4)];
    let subscribers: Vec<(ParticipantId, u64)> = ids.iter().map(|id| (*id, 20_000_000)).collect();
    let mut call = Call::new(
        &subscribers,
        BandwidthPolicy {
            max_egress_bps: Some(900_000),
            ..BandwidthPolicy::default()
        },
    );
    call.run(call.at(20.0));
    // A minute under the budget, and no 10-s stretch of it over.
    let mut minute = 0;
    for window in 0..6 {
        let before: u64 = ids.iter().map(|id| call.received[id].video_bytes).sum();
        call.run(call.at(30.0 + 10.0 * f64::from(window)));
        let after: u64 = ids.iter().map(|id| call.received[id].video_bytes).sum();
        let bps = (after - before) * 8 / 10;
        assert!(bps <= 990_000, "{bps} bit/s in window {window}");
        minute += after - before;
    }
    let bps = minute * 8 / 60;
    println!("room video over 60 s under a 900 kbit/s budget: {bps} bit/s");
    assert!(bps <= 900_000, "{bps} bit/s");
    for id in &ids {
        assert!(
            call.longest_gap(*id, call.at(20.0), call.at(80.0)) < Duration::from_millis(500),
            "{id:?} stopped"
        );
    }
    call.room
        .set_bandwidth_policy(BandwidthPolicy::default(), call.at(80.0));
    let raised = call.at(80.0);
    call.run(call.at(95.0));
    for id in &ids {
        let up = call.first_on(*id, F, raised).expect("moved up");
        println!("{id:?} on f {up:?} after the budget was raised");
        assert!(up < Duration::from_secs(10));
        assert_continuous(&call, *id);
    }
}

#[test]
fn a_subscriber_budget_and_a_publisher_cap_bound_the_layer() {
    let mut call = Call::new(
        &[(STEADY, 20_000_000)],
        BandwidthPolicy {
            max_subscriber_bps: Some(700_000),
            ..BandwidthPolicy::default()
        },
    );
    call.run(call.at(20.0));
    assert_eq!(call.layer_at(STEADY, call.at(20.0)), Some(H));
    call.room.set_bandwidth_policy(
        BandwidthPolicy {
            max_publisher_bps: Some(300_000),
            ..BandwidthPolicy::default()
        },
        call.at(20.0),
    );
    call.run(call.at(30.0));
    assert_eq!(call.layer_at(STEADY, call.at(30.0)), Some(Q));
    assert_continuous(&call, STEADY);
}

/// `update_subscription`: a small tile caps the layer at the smallest one that covers it, a
/// paused wish stops the video (told as requested), and without wishes the subscriber climbs
/// back.
#[test]
fn a_subscribers_wishes_cap_its_layer_and_pause_it() {
    let mut call = Call::new(&[(STEADY, 20_000_000)], BandwidthPolicy::default());
    call.run(call.at(20.0));
    assert_eq!(call.layer_at(STEADY, call.at(20.0)), Some(F));
    let wish = |paused, max_size| Wish { paused, max_size };
    // A 300x170 tile: 320x180 covers it.
    let at = call.at(20.0);
    call.room
        .set_wish(VIDEO, STEADY, wish(false, Some((300, 170))), at)
        .unwrap();
    call.run(call.at(25.0));
    let down = call.first_on(STEADY, Q, at).expect("down to q");
    println!("a 300x170 tile: on q {down:?} after the wish");
    assert!(down < Duration::from_secs(1), "{down:?}");
    assert_eq!(call.layer_at(STEADY, call.at(25.0)), Some(Q));
    // A 600x338 tile: 640x360.
    call.room
        .set_wish(VIDEO, STEADY, wish(false, Some((600, 338))), call.at(25.0))
        .unwrap();
    call.run(call.at(32.0));
    assert_eq!(call.layer_at(STEADY, call.at(32.0)), Some(H));
    // Paused (a hidden tile): nothing forwarded, and told why.
    call.room
        .set_wish(VIDEO, STEADY, wish(true, Some((600, 338))), call.at(32.0))
        .unwrap();
    call.run(call.at(40.0));
    let sent_while_paused = call.received[&STEADY]
        .layers
        .iter()
        .filter(|(t, _)| *t > call.at(33.0))
        .count();
    assert_eq!(sent_while_paused, 0);
    assert_eq!(
        call.received[&STEADY].states.last().map(|(_, s)| *s),
        Some(Target::Paused(PauseReason::Wish))
    );
    // No wish: the whole picture again.
    call.room
        .set_wish(VIDEO, STEADY, Wish::default(), call.at(40.0))
        .unwrap();
    call.run(call.at(50.0));
    let back = call.first_on(STEADY, F, call.at(40.0)).expect("back on f");
    println!("wishes lifted: on f {back:?} later");
    assert_eq!(call.layer_at(STEADY, call.at(50.0)), Some(F));
    assert_continuous(&call, STEADY);
    // Audio tracks take no wishes.
    assert_eq!(
        call.room
            .set_wish(AUDIO, STEADY, wish(true, None), call.at(50.0)),
        Err(RoomError::UnknownTrack)
    );
}

/// Dynacast: the publisher is told how many of its layers anybody may receive. A tile that needs
/// only 320x180 leaves the two upper layers to nobody (told after they have been unneeded for 3 s),
/// a larger tile asks for them back at once, a paused tile needs none, and so does a publisher
/// nobody subscribes to.
#[test]
fn the_publisher_is_told_which_layers_nobody_receives() {
    let mut call = Call::new(&[(STEADY, 20_000_000)], BandwidthPolicy::default());
    call.run(call.at(10.0));
    assert!(
        call.demands.is_empty(),
        "every layer is received: nothing to tell"
    );
    let wish = |paused, max_size| Wish { paused, max_size };
    let small = call.at(10.0);
    call.room
        .set_wish(VIDEO, STEADY, wish(false, Some((300, 170))), small)
        .unwrap();
    call.run(call.at(20.0));
    let (at, layers) = call.demands[0];
    println!("a thumbnail only: told {layers:?} after {:?}", at - small);
    assert_eq!(layers, Some(1));
    assert!(at - small >= Duration::from_secs(3) && at - small < Duration::from_secs(4));
    // A large tile again: every layer, at once (within the next allocation round).
    let large = call.at(20.0);
    call.room
        .set_wish(VIDEO, STEADY, wish(false, Some((1280, 720))), large)
        .unwrap();
    call.run(call.at(25.0));
    let (at, layers) = call.demands[1];
    println!("a full-size tile: told {layers:?} after {:?}", at - large);
    assert_eq!(layers, None);
    assert!(at - large < Duration::from_millis(600));
    // A tile that shrinks for a moment tells nothing.
    call.room
        .set_wish(VIDEO, STEADY, wish(false, Some((600, 338))), call.at(25.0))
        .unwrap();
    call.run(call.at(26.0));
    call.room
        .set_wish(VIDEO, STEADY, Wish::default(), call.at(26.0))
        .unwrap();
    call.run(call.at(32.0));
    assert_eq!(call.demands.len(), 2, "{:?}", call.demands);
    // Paused: no layer.
    call.room
        .set_wish(VIDEO, STEADY, wish(true, None), call.at(32.0))
        .unwrap();
    call.run(call.at(40.0));
    assert_eq!(call.demands.last().map(|d| d.1), Some(Some(0)));
    // Nobody subscribes: no layer either.
    call.room
        .set_wish(VIDEO, STEADY, Wish::default(), call.at(40.0))
        .unwrap();
    call.run(call.at(41.0));
    assert_eq!(call.demands.last().map(|d| d.1), Some(None));
    call.room.leave(STEADY).unwrap();
    call.run(call.at(50.0));
    assert_eq!(call.demands.last().map(|d| d.1), Some(Some(0)));
    assert_eq!(call.room.told_demand(VIDEO), Some(0));
}

#[test]
fn half_an_hour_of_changing_bandwidth_stays_continuous_with_few_switches() {
    let mut call = Call::new(
        &[(STEADY, 20_000_000), (SQUEEZED, 2_500_000)],
        BandwidthPolicy::default(),
    );
    let capacities = [2_500_000, 800_000, 3_000_000, 400_000, 1_200_000, 5_000_000];
    for minute in 0..30u64 {
        call.set_capacity(SQUEEZED, capacities[minute as usize % capacities.len()]);
        call.run(call.at(60.0 * (minute + 1) as f64));
    }
    let ramped = call.at(10.0);
    let (squeezed, steady) = (
        call.switches_after(SQUEEZED, ramped),
        call.switches_after(STEADY, ramped),
    );
    println!(
        "switches in 30 min with the capacity changing each minute: squeezed {squeezed}, steady {steady}"
    );
    // Each capacity change is worth a switch or two (one layer at a time on the way up).
    assert!(squeezed <= 75, "{squeezed}");
    assert_eq!(steady, 0);
    for id in [STEADY, SQUEEZED] {
        assert_continuous(&call, id);
    }
    // The sequence numbers wrapped several times on the way, the timestamps once.
    assert!(call.received[&STEADY].sequence_numbers.len() > 4 * 65_536);
    let timestamps = &call.received[&STEADY].timestamps;
    assert!(
        timestamps.windows(2).any(|w| w[1] < w[0]),
        "no timestamp wrap"
    );
}

#[test]
fn a_layer_that_stops_is_left_for_the_best_live_one_and_taken_back_when_it_returns() {
    let mut call = Call::new(&[(STEADY, 20_000_000)], BandwidthPolicy::default());
    call.run(call.at(15.0));
    assert_eq!(call.layer_at(STEADY, call.at(15.0)), Some(F));
    call.publisher.layers[2].stopped = true;
    let stopped = call.at(15.0);
    call.run(call.at(30.0));
    let fallback = call.first_on(STEADY, H, stopped).expect("fell back to h");
    println!("fell back to h {fallback:?} after f stopped");
    assert!(fallback < Duration::from_millis(1_500), "took {fallback:?}");
    let gap = call.longest_gap(STEADY, stopped, call.at(30.0));
    println!("longest gap in forwarded video: {gap:?}");
    call.publisher.layers[2].stopped = false;
    let resumed = call.at(30.0);
    call.run(call.at(45.0));
    let back = call.first_on(STEADY, F, resumed).expect("back on f");
    println!("back on f {back:?} after it resumed");
    assert!(back < Duration::from_secs(10));
    assert_continuous(&call, STEADY);
}

/// A 2 Mbit/s stream without simulcast does not fit the starting estimate (1 Mbit/s): it starts
/// paused and must probe its way up, with no video forwarded yet to carry the padding.
#[test]
fn a_single_stream_above_the_starting_estimate_is_probed_into_place() {
    let mut call = Call::with_publisher(
        &[(STEADY, 20_000_000)],
        BandwidthPolicy::default(),
        Publisher::single(2_000_000),
    );
    call.run(call.at(10.0));
    let first = call.received[&STEADY]
        .layers
        .first()
        .map(|(t, _)| *t - call.start)
        .expect("video forwarded");
    println!("a 2 Mbit/s single stream forwarded {first:?} after the start");
    assert!(first < Duration::from_secs(5), "took {first:?}");
    assert!(call.longest_gap(STEADY, call.at(5.0), call.at(10.0)) < Duration::from_millis(200));
    assert_continuous(&call, STEADY);
}

/// A link too narrow for the lowest layer whole still carries some of its temporal layers:
/// fewer frames a second instead of a pause, with sequence numbers and pictures still continuous.
#[test]
fn below_the_lowest_layer_temporal_layers_give_fewer_frames_instead_of_a_pause() {
    let mut call = Call::new(&[(SQUEEZED, 150_000)], BandwidthPolicy::default());
    call.run(call.at(40.0));
    let r = &call.received[&SQUEEZED];
    let late: Vec<u32> = r
        .layers
        .iter()
        .filter(|(t, _)| *t > call.at(30.0))
        .map(|(_, ssrc)| *ssrc)
        .collect();
    assert!(!late.is_empty(), "paused: {:?}", r.states.last());
    assert!(late.iter().all(|ssrc| *ssrc == Q));
    // Pictures per second forwarded in the last 10 s (q's frames fit one packet each): 30 on
    // the whole layer, 7.5 or 15 on its temporal layers.
    let fps = late.len() as f64 / 10.0;
    println!("on a 150 kbit/s link: q at {fps:.1} pictures/s");
    assert!(fps > 5.0 && fps < 20.0, "{fps}");
    assert_continuous(&call, SQUEEZED);
}
