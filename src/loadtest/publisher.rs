//! What a publishing participant sends: Opus every 20 ms and VP8 at 30 fps, each on its own
//! media clock, keyframes on schedule and whenever the relay asks.

use super::media::{Stamp, Vp8Packetizer, opus_payload};
use super::scenario::{ParticipantSpec, audio_stream, video_stream};
use super::shared::clock_ns;
use crate::node::pair::synthetic_track;
use bytes::Bytes;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverId};
use std::time::{Duration, Instant};
use tern_signaling::protocol::{ClientMessage, TrackAnnouncement, TrackSource};

const AUDIO_PERIOD: Duration = Duration::from_millis(20);
const VIDEO_FPS: u32 = 30;
/// After a stall longer than this (the driver thread did not get the CPU) the missed ticks are
/// skipped rather than sent in a burst; the stall shows as send lag in the report.
const MAX_CATCH_UP: Duration = Duration::from_millis(100);

/// The two kinds of stream a publisher sends, each on its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MediaKind {
    Audio,
    Video,
}

/// What publishers send.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub video_bps: u64,
    pub audio_only: bool,
    pub keyframe_interval: Duration,
    /// Frames look encrypted end to end (pseudo-random behind the clear codec bytes).
    pub e2ee: bool,
    /// Subscribers count RTP without decrypting it once they are ready (`--count-only`).
    pub count_only: bool,
}

/// One outgoing stream on a fixed media clock.
pub struct Track {
    pub sender: RTCRtpSenderId,
    ssrc: u32,
    payload_type: u8,
    pub stream: u32,
    /// RTP clock ticks per media tick (960 for 20 ms of Opus, 3,000 for a frame at 30 fps).
    timestamp_step: u32,
    period: Duration,
    origin: Instant,
    ticks: u64,
    sequence: u16,
    ts_base: u32,
    pub counter: u64,
}

impl Track {
    pub fn due(&self) -> Instant {
        self.origin + self.period * self.ticks as u32
    }

    fn header(&mut self, marker: bool) -> Header {
        let timestamp = (self.ticks as u32).wrapping_mul(self.timestamp_step);
        self.sequence = self.sequence.wrapping_add(1);
        Header {
            version: 2,
            marker,
            payload_type: self.payload_type,
            sequence_number: self.sequence,
            timestamp: self.ts_base.wrapping_add(timestamp),
            ssrc: self.ssrc,
            ..Default::default()
        }
    }

    /// Moves to the next tick, skipping ticks a stall made us miss.
    fn advance(&mut self, now: Instant) {
        self.ticks += 1;
        if now > self.due() + MAX_CATCH_UP {
            let behind = (now - self.origin).as_nanos() / self.period.as_nanos().max(1);
            self.ticks = behind as u64 + 1;
        }
    }

    fn start(&mut self, at: Instant) {
        self.origin = at;
        self.ticks = 0;
    }
}

pub struct Publisher {
    pub audio: Track,
    pub video: Option<(Track, Vp8Packetizer)>,
    pub running: bool,
    /// The relay asked for a keyframe (PLI or FIR): the next frame is one.
    pub keyframe_requested: bool,
    next_keyframe_at: Option<Instant>,
    keyframe_interval: Duration,
}

/// The packets of one media tick, ready for `write_rtp`.
pub struct Outgoing {
    pub sender: RTCRtpSenderId,
    pub packets: Vec<Packet>,
    pub sent_ns: u64,
    pub lag: Duration,
    pub next_due: Instant,
}

impl Publisher {
    /// Adds the tracks to the publish leg and makes its offer.
    pub fn create(
        pc: &mut RTCPeerConnection,
        spec: &ParticipantSpec,
        media: &MediaSettings,
        now: Instant,
    ) -> Result<(Publisher, ClientMessage), rtc::shared::error::Error> {
        let number = spec.publisher.unwrap_or_default();
        // Distinct per publisher, so a capture of a run tells the streams apart.
        let ssrc = 0x4c00_0000 | (number << 1);
        let audio = add_track(pc, RtpCodecKind::Audio, ssrc, audio_stream(number), now)?;
        let video = if media.audio_only {
            None
        } else {
            let track = add_track(pc, RtpCodecKind::Video, ssrc | 1, video_stream(number), now)?;
            let vp8 = Vp8Packetizer::new(media.video_bps, VIDEO_FPS).encrypted(media.e2ee);
            Some((track, vp8))
        };
        let offer = pc.create_offer(None)?;
        pc.set_local_description(now, offer.clone())?;
        let mut tracks = Vec::new();
        for (sender, source) in std::iter::once((audio.sender, TrackSource::Microphone))
            .chain(video.as_ref().map(|(t, _)| (t.sender, TrackSource::Camera)))
        {
            let mid = pc
                .rtp_transceiver(RTCRtpTransceiverId::from(sender))
                .and_then(|t| t.mid().clone())
                .unwrap_or_default();
            tracks.push(TrackAnnouncement { mid, source });
        }
        let mut publisher = Publisher {
            audio,
            video,
            running: false,
            keyframe_requested: true,
            next_keyframe_at: None,
            keyframe_interval: media.keyframe_interval,
        };
        publisher.resolve_payload_types(pc);
        let message = ClientMessage::PublishOffer {
            sdp: offer.sdp,
            tracks,
        };
        Ok((publisher, message))
    }

    /// The payload types the offer gave Opus and VP8 (the sender refuses any other).
    fn resolve_payload_types(&mut self, pc: &mut RTCPeerConnection) {
        let mut lookup = |track: &mut Track, mime: &str| {
            if let Some(mut sender) = pc.rtp_sender(track.sender) {
                track.payload_type = sender
                    .get_parameters()
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
                    .map(|c| c.payload_type)
                    .unwrap_or(track.payload_type);
            }
        };
        lookup(&mut self.audio, "audio/opus");
        if let Some((video, _)) = self.video.as_mut() {
            lookup(video, "video/VP8");
        }
    }

    /// The publish leg connected: media starts at `phase` into each period.
    pub fn start(&mut self, now: Instant, phase: Duration) -> Vec<(Instant, MediaKind)> {
        self.running = true;
        self.audio.start(now + offset(phase, AUDIO_PERIOD));
        let mut due = vec![(self.audio.due(), MediaKind::Audio)];
        if let Some((video, _)) = self.video.as_mut() {
            video.start(now + offset(phase, video.period));
            due.push((video.due(), MediaKind::Video));
        }
        due
    }

    pub fn audio_tick(&mut self, now: Instant) -> Outgoing {
        let track = &mut self.audio;
        let lag = now.saturating_duration_since(track.due());
        let sent_ns = clock_ns(now);
        let stamp = Stamp {
            stream: track.stream,
            counter: track.counter,
            sent_ns,
        };
        track.counter += 1;
        let packet = Packet {
            header: track.header(false),
            payload: Bytes::from(opus_payload(&stamp)),
        };
        track.advance(now);
        Outgoing {
            sender: track.sender,
            packets: vec![packet],
            sent_ns,
            lag,
            next_due: track.due(),
        }
    }

    /// One video frame; a keyframe when asked (PLI/FIR), when the interval is up, and first.
    /// Returns whether it was a keyframe.
    pub fn video_tick(&mut self, now: Instant) -> Option<(Outgoing, bool)> {
        let (track, vp8) = self.video.as_mut()?;
        let keyframe = self.keyframe_requested || self.next_keyframe_at.is_none_or(|at| now >= at);
        if keyframe {
            self.keyframe_requested = false;
            self.next_keyframe_at = Some(now + self.keyframe_interval);
        }
        let lag = now.saturating_duration_since(track.due());
        let sent_ns = clock_ns(now);
        let payloads = vp8.frame(keyframe, track.stream, track.counter, sent_ns);
        track.counter += payloads.len() as u64;
        let last = payloads.len() - 1;
        let packets = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Packet {
                // RFC 7741 §4.1: the marker bit ends a frame; all its packets share a timestamp.
                header: track.header(i == last),
                payload: Bytes::from(payload),
            })
            .collect();
        track.advance(now);
        Some((
            Outgoing {
                sender: track.sender,
                packets,
                sent_ns,
                lag,
                next_due: track.due(),
            },
            keyframe,
        ))
    }
}

/// `phase` folded into one period.
fn offset(phase: Duration, period: Duration) -> Duration {
    let ns = phase.as_nanos() % period.as_nanos().max(1);
    Duration::from_nanos(ns as u64)
}

fn add_track(
    pc: &mut RTCPeerConnection,
    kind: RtpCodecKind,
    ssrc: u32,
    stream: u32,
    now: Instant,
) -> Result<Track, rtc::shared::error::Error> {
    // (MIME type, clock rate, channels, media period, RTP clock ticks per period)
    let (mime, clock_rate, channels, period, timestamp_step) = match kind {
        RtpCodecKind::Video => (
            "video/VP8",
            90_000,
            0,
            Duration::from_secs(1) / VIDEO_FPS,
            90_000 / VIDEO_FPS,
        ),
        _ => ("audio/opus", 48_000, 2, AUDIO_PERIOD, 960),
    };
    let track = synthetic_track(kind, ssrc, mime, clock_rate, channels);
    let sender = pc.add_track(track)?;
    Ok(Track {
        sender,
        ssrc,
        payload_type: if kind == RtpCodecKind::Video { 96 } else { 111 },
        stream,
        timestamp_step,
        period,
        origin: now,
        ticks: 0,
        sequence: rand::random(),
        ts_base: rand::random(),
        counter: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::pair::client_peer_connection;

    fn publisher(audio_only: bool) -> Publisher {
        let now = Instant::now();
        let mut pc = client_peer_connection(now).unwrap();
        let spec = ParticipantSpec {
            index: 0,
            room: "r".into(),
            identity: "p".into(),
            publisher: Some(3),
            expected_streams: vec![],
            receivers_per_stream: 1,
        };
        let media = MediaSettings {
            video_bps: 500_000,
            audio_only,
            keyframe_interval: Duration::from_secs(3),
            e2ee: false,
            count_only: false,
        };
        let (publisher, offer) = Publisher::create(&mut pc, &spec, &media, now).unwrap();
        let ClientMessage::PublishOffer { sdp, tracks } = offer else {
            panic!("not an offer");
        };
        assert!(sdp.contains("VP8") != audio_only);
        assert_eq!(tracks.len(), if audio_only { 1 } else { 2 });
        publisher
    }

    #[test]
    fn media_runs_on_its_clocks() {
        let mut p = publisher(false);
        let start = Instant::now();
        let ticks = p.start(start, Duration::ZERO);
        assert_eq!(ticks.len(), 2);
        let a = p.audio_tick(start);
        let b = p.audio_tick(a.next_due);
        assert_eq!(b.next_due - a.next_due, AUDIO_PERIOD);
        let (ha, hb) = (&a.packets[0].header, &b.packets[0].header);
        assert_eq!(hb.timestamp.wrapping_sub(ha.timestamp), 960);
        assert_eq!(hb.sequence_number, ha.sequence_number.wrapping_add(1));
        assert_eq!(
            Stamp::read(&b.packets[0].payload).unwrap().stream,
            audio_stream(3)
        );

        let (first, key) = p.video_tick(start).unwrap();
        assert!(key, "the first frame is a keyframe");
        let (second, key) = p.video_tick(first.next_due).unwrap();
        assert!(!key);
        let markers: Vec<bool> = second.packets.iter().map(|p| p.header.marker).collect();
        assert_eq!(markers, [false, true], "the marker ends the frame");
        let ts = |o: &Outgoing| o.packets[0].header.timestamp;
        assert_eq!(ts(&second).wrapping_sub(ts(&first)), 3000);
        assert!(
            second
                .packets
                .iter()
                .all(|p| p.header.timestamp == ts(&second))
        );
        p.keyframe_requested = true;
        let (_, key) = p.video_tick(second.next_due).unwrap();
        assert!(key, "a PLI makes the next frame a keyframe");
    }

    #[test]
    fn a_stall_skips_ticks_instead_of_bursting() {
        let mut p = publisher(true);
        let start = Instant::now();
        p.start(start, Duration::ZERO);
        let late = start + Duration::from_secs(1);
        let tick = p.audio_tick(late);
        assert!(tick.lag >= Duration::from_millis(999));
        assert!(tick.next_due > late);
        assert!(p.video_tick(late).is_none(), "audio only");
    }
}
