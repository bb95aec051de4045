//! Three hours of a call through the pure core, in well under a second of test time.
//!
//! One publisher sends Opus (50 packets/s) and VP8 video (30 frames/s, three packets a frame)
//! to two subscribers, one of whom joins half an hour in. Along the way: 1 % loss, 1 % of
//! packets swapped with their successor, publisher restarts (a new SSRC with new numbering, and
//! one restart on the same SSRC), about 14 wraps of the video's 16-bit sequence numbers and a
//! wrap of both streams' 32-bit timestamps on the way in and on the way out. Every forwarded
//! stream must be continuous: no number used twice, gaps only where the publisher's packets were
//! lost, timestamps always moving forward, no stall, and sender reports that agree with the
//! packets.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tern::media::codec::Codec;
use tern::media::forwarder::InboundPacket;
use tern::media::ids::{ParticipantId, RoomId, TrackId};
use tern::media::room::{MemberInfo, PublicationInfo, Room, RoomOutput, SinkId, TrackSource};

const PUBLISHER: ParticipantId = ParticipantId(1);
const EARLY: ParticipantId = ParticipantId(2);
const LATE: ParticipantId = ParticipantId(3);
const AUDIO: TrackId = TrackId(10);
const VIDEO: TrackId = TrackId(20);

const CALL: Duration = Duration::from_secs(3 * 3600);
const LATE_JOIN: Duration = Duration::from_secs(1800);
/// Publisher restarts: (when, same SSRC?).
const RESTARTS: [(Duration, bool); 3] = [
    (Duration::from_secs(3600), false),
    (Duration::from_secs(5400), true),
    (Duration::from_secs(7200), false),
];

/// A small deterministic generator, so a failure replays exactly.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn percent(&mut self, p: u32) -> bool {
        self.next() % 100 < p
    }
}

/// One publisher stream as the encoder numbers it.
struct Sender {
    track: TrackId,
    ssrc: u32,
    sequence_number: u16,
    timestamp: u32,
    ticks_per_frame: u32,
    packets_per_frame: u32,
    frame_interval: Duration,
    next_frame_at: Duration,
    /// The encoder owes a keyframe (start, request, restart).
    keyframe_due: bool,
}

impl Sender {
    fn restart(&mut self, rng: &mut Lcg, same_ssrc: bool) {
        if !same_ssrc {
            self.ssrc = rng.next();
        }
        // Far from the old numbering, and near the top of both spaces again.
        self.sequence_number = self
            .sequence_number
            .wrapping_add(20_000 + rng.next() as u16 % 9_000);
        self.timestamp = u32::MAX - rng.next() % 10_000_000;
        self.keyframe_due = true;
    }

    /// The packets of the next frame.
    fn frame(&mut self) -> Vec<InboundPacket> {
        let key = std::mem::take(&mut self.keyframe_due) || self.track == AUDIO;
        let packets = (0..self.packets_per_frame)
            .map(|i| {
                let packet = InboundPacket {
                    ssrc: self.ssrc,
                    sequence_number: self.sequence_number,
                    timestamp: self.timestamp,
                    keyframe_start: key && i == 0,
                    payload_bytes: 900,
                    marker: i + 1 == self.packets_per_frame,
                    ..InboundPacket::default()
                };
                self.sequence_number = self.sequence_number.wrapping_add(1);
                packet
            })
            .collect();
        self.timestamp = self.timestamp.wrapping_add(self.ticks_per_frame);
        self.next_frame_at += self.frame_interval;
        packets
    }
}

/// What one subscriber received on one track, checked as it arrives.
#[derive(Default)]
struct Received {
    /// Output sequence numbers (extended) seen.
    packets: std::collections::HashSet<u64>,
    last_sequence: Option<u64>,
    last_timestamp: Option<u64>,
    last_at: Option<Duration>,
    longest_silence: Duration,
    timestamp_wraps: u32,
}

impl Received {
    fn extend(last: Option<u64>, value: u64, bits: u32) -> u64 {
        let Some(last) = last else {
            return value + (1 << bits);
        };
        let modulus = 1u64 << bits;
        let low = last & (modulus - 1);
        let forward = value.wrapping_sub(low) & (modulus - 1);
        if forward < modulus / 2 {
            last + forward
        } else {
            last - (modulus - forward)
        }
    }

    fn record(&mut self, at: Duration, sequence: u16, timestamp: u32) {
        let sequence = Self::extend(self.last_sequence, u64::from(sequence), 16);
        let timestamp_ext = Self::extend(self.last_timestamp, u64::from(timestamp), 32);
        let fresh = self.packets.insert(sequence);
        assert!(fresh, "output sequence number {sequence} used twice");
        if self.last_sequence.is_none_or(|last| sequence > last) {
            if let Some(last_ts) = self.last_timestamp {
                assert!(
                    timestamp_ext >= last_ts,
                    "timestamp went backwards at {at:?}"
                );
                if timestamp_ext >> 32 != last_ts >> 32 {
                    self.timestamp_wraps += 1;
                }
            }
            self.last_sequence = Some(sequence);
            self.last_timestamp = Some(timestamp_ext);
        }
        if let Some(last) = self.last_at {
            self.longest_silence = self.longest_silence.max(at - last);
        }
        self.last_at = Some(at);
    }
}

#[test]
fn three_hours_of_a_call_stay_continuous_through_wraps_restarts_loss_and_reordering() {
    let t0 = Instant::now();
    let mut rng = Lcg(0x7e57_ca11);
    let mut room = Room::new(RoomId("long".into()), Duration::from_millis(500));
    for (id, name) in [(PUBLISHER, "p"), (EARLY, "e")] {
        room.join(
            id,
            MemberInfo {
                identity: name.into(),
                name: name.into(),
                can_publish: true,
                can_subscribe: true,
            },
        )
        .unwrap();
    }
    for (track, source, codec) in [
        (AUDIO, TrackSource::Microphone, Codec::Opus),
        (VIDEO, TrackSource::Camera, Codec::Vp8),
    ] {
        let info = PublicationInfo {
            owner: PUBLISHER,
            source,
            codec,
        };
        room.publish(track, info).unwrap();
    }
    let sink = |subscriber: ParticipantId, track: TrackId| SinkId(subscriber.0 * 100 + track.0);
    let attach = |room: &mut Room, subscriber: ParticipantId, now: Instant| {
        for track in [AUDIO, VIDEO] {
            // Output numbering starts near the top of both spaces: wraps come early.
            room.attach(
                track,
                subscriber,
                sink(subscriber, track),
                65_000,
                u32::MAX - 3_000_000,
                now,
            )
            .unwrap();
        }
    };
    attach(&mut room, EARLY, t0);

    let mut senders = [
        Sender {
            track: AUDIO,
            ssrc: 0xa0d1_0001,
            sequence_number: 65_500,
            timestamp: u32::MAX - 48_000 * 600,
            ticks_per_frame: 960,
            packets_per_frame: 1,
            frame_interval: Duration::from_millis(20),
            next_frame_at: Duration::ZERO,
            keyframe_due: false,
        },
        Sender {
            track: VIDEO,
            ssrc: 0x0b1d_0002,
            sequence_number: 64_000,
            timestamp: u32::MAX - 90_000 * 600,
            ticks_per_frame: 3_000,
            packets_per_frame: 3,
            frame_interval: Duration::from_micros(33_333),
            next_frame_at: Duration::from_millis(5),
            keyframe_due: true,
        },
    ];
    let mut received: HashMap<SinkId, Received> = HashMap::new();
    let mut lost = 0u64;
    let mut restarts = RESTARTS.iter().peekable();
    let mut late_joined = false;
    let mut held_back: Option<(TrackId, InboundPacket)> = None;
    let mut sender_report_checks = 0;
    loop {
        let (index, at) = senders
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.next_frame_at))
            .min_by_key(|(_, at)| *at)
            .unwrap();
        if at >= CALL {
            break;
        }
        let now = t0 + at;
        if !late_joined && at >= LATE_JOIN {
            late_joined = true;
            room.join(
                LATE,
                MemberInfo {
                    identity: "l".into(),
                    name: "l".into(),
                    can_publish: false,
                    can_subscribe: true,
                },
            )
            .unwrap();
            attach(&mut room, LATE, now);
        }
        if let Some((when, same_ssrc)) = restarts.peek()
            && at >= *when
        {
            for sender in &mut senders {
                sender.restart(&mut rng, *same_ssrc);
            }
            restarts.next();
        }
        let track = senders[index].track;
        for packet in senders[index].frame() {
            if rng.percent(1) && !packet.keyframe_start {
                lost += 1;
                continue;
            }
            // Reordering: this packet waits and goes after the next one.
            let deliver: Vec<(TrackId, InboundPacket)> = match held_back.take() {
                Some(late) => vec![(track, packet), late],
                None if rng.percent(1) => {
                    held_back = Some((track, packet));
                    Vec::new()
                }
                None => vec![(track, packet)],
            };
            for (track, packet) in deliver {
                let mut out = Vec::new();
                room.forward(track, &packet, now, |f| {
                    out.push((f.sink, f.sequence_number, f.timestamp))
                });
                for &(sink, seq, ts) in &out {
                    received.entry(sink).or_default().record(at, seq, ts);
                }
                // Now and then: the publisher's sender report for this stream must translate to
                // the timestamp each subscriber saw on this very packet.
                if packet.sequence_number.is_multiple_of(1000) {
                    room.sender_report(track, packet.ssrc, packet.timestamp, 0, |sink, rtp| {
                        let seen = out.iter().find(|(s, _, _)| *s == sink).map(|o| o.2);
                        assert_eq!(Some(rtp), seen, "sender report off at {at:?}");
                        sender_report_checks += 1;
                    });
                }
            }
        }
        while let Some(output) = room.poll_output() {
            if let RoomOutput::RequestKeyframe { track: VIDEO, .. } = output {
                senders[1].keyframe_due = true;
            }
        }
    }

    assert!(
        sender_report_checks > 100,
        "only {sender_report_checks} sender reports checked"
    );
    for subscriber in [EARLY, LATE] {
        let listening = if subscriber == EARLY {
            CALL
        } else {
            CALL - LATE_JOIN
        };
        for (track, packets_per_s) in [(AUDIO, 50u64), (VIDEO, 90)] {
            let r = &received[&sink(subscriber, track)];
            let expected = listening.as_secs() * packets_per_s;
            let got = r.packets.len() as u64;
            // 1 % loss, plus a keyframe's wait after each restart for video.
            assert!(
                got * 100 >= expected * 97,
                "{subscriber:?} {track:?}: {got} of about {expected} packets"
            );
            assert!(
                r.longest_silence < Duration::from_millis(500),
                "{subscriber:?} {track:?} stalled for {:?}",
                r.longest_silence
            );
            assert!(r.timestamp_wraps >= 1, "{track:?}: no timestamp wrap seen");
            // Gaps in the output only where the publisher's packets were lost: the numbers
            // between the first and the last are all used but for a loss-sized remainder.
            let first = *r.packets.iter().min().unwrap();
            let last = *r.packets.iter().max().unwrap();
            let span = last - first + 1;
            let missing = span - got;
            assert!(
                missing <= lost,
                "{subscriber:?} {track:?}: {missing} numbers never used, only {lost} packets lost"
            );
            assert!(
                missing * 100 <= span * 2,
                "{subscriber:?} {track:?}: {missing} of {span} numbers missing"
            );
            if track == VIDEO {
                assert!(
                    span > 10 * 65_536,
                    "video wrapped only {} times",
                    span >> 16
                );
            }
        }
    }
}
