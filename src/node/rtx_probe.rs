//! Bandwidth probes as retransmissions (RFC 4588) of what a subscriber just received, and
//! transport-wide numbers for every retransmission.
//!
//! A probe must reach the subscriber as packets its transport-cc feedback counts. Padding does,
//! but is pure overhead; a copy of a recent media packet on the RTX stream is also counted, and if
//! the original was lost on the way it repairs the loss as well (libwebrtc probes this way first).
//! A copy on the media SSRC itself would not do: the receiver's SRTP replay check drops it before
//! its feedback counts it.
//!
//! `rtc`'s `write_rtp` takes only a sender's primary SSRC, so [`RtxProber`] works in the chain,
//! a step of the subscribe leg's outbound interceptor (`node/egress.rs`) wire-ward of the NACK
//! responder and the retransmission gate: it remembers the last media
//! packets of every stream that has RTX and, when the node orders bytes through its
//! [`ProbeTap`], emits copies on the RTX SSRC during the next flush. One RTX stream carries both
//! the responder's retransmissions and these copies, so the prober numbers both from one counter
//! (two would repeat sequence numbers, and the receiver's replay check would drop the repeats).
//!
//! `rtc`'s transport-cc sender and send history bind only a stream's primary SSRC, so neither
//! retransmissions nor probes would be numbered or recorded: [`WithRtxStreams`] binds the RTX SSRC
//! too, so the estimator sees every byte the relay sends.

use bytes::{BufMut, BytesMut};
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtp::header::Header;
use rtc::shared::error::Error as RtcError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Recent media packets kept per leg for copies: a few frames of one video stream, enough to
/// fill a probe cluster without sending one packet twice.
const RECENT: usize = 32;
/// RTP header with the transport-cc extension, the original sequence number, and the SRTP tag:
/// what a copy adds to the payload it repeats.
const COPY_OVERHEAD_BYTES: u64 = 12 + 8 + 2 + 16;

/// What the node and the prober share: bytes wanted as copies (and the node's time of the
/// order, which the copies carry as their departure), and bytes sent as copies.
#[derive(Debug, Default)]
pub struct ProbeTap {
    wanted_bytes: AtomicU64,
    ordered_at: Mutex<Option<Instant>>,
    sent_bytes: AtomicU64,
}

impl ProbeTap {
    /// Asks for about `bytes` of copies, sent during the leg's next flush.
    pub fn order(&self, bytes: u64, now: Instant) {
        if let Ok(mut at) = self.ordered_at.lock() {
            *at = Some(now);
        }
        self.wanted_bytes.store(bytes, Ordering::Relaxed);
    }

    /// What was sent since the last call (and cancels what was not).
    pub fn take_sent(&self) -> u64 {
        self.wanted_bytes.store(0, Ordering::Relaxed);
        self.sent_bytes.swap(0, Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy)]
struct RtxStream {
    primary: u32,
    ssrc: u32,
    payload_type: u8,
    next_sequence_number: u16,
}

/// One remembered media packet: what a copy needs, with the payload shared, not copied.
#[derive(Debug, Clone)]
struct Recent {
    stream: usize,
    sequence_number: u16,
    timestamp: u32,
    marker: bool,
    payload: bytes::Bytes,
}

pub struct RtxProber {
    tap: Arc<ProbeTap>,
    streams: Vec<RtxStream>,
    recent: VecDeque<Recent>,
    /// Copies go newest first; this many of the newest were copied since the last media packet.
    copied: usize,
}

impl RtxProber {
    pub fn new(tap: Arc<ProbeTap>) -> Self {
        RtxProber {
            tap,
            streams: Vec::new(),
            recent: VecDeque::with_capacity(RECENT),
            copied: 0,
        }
    }

    /// A packet on its way out: a retransmission on an RTX stream takes the next number of that
    /// stream's one numbering; new media is remembered for copies.
    pub fn on_write(&mut self, msg: &mut TaggedPacket) {
        let retransmission = msg.message.has(&Attribute::Retransmission);
        let Packet::Rtp(packet) = &mut msg.message.packet else {
            return;
        };
        let ssrc = packet.header.ssrc;
        if let Some(stream) = self.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            packet.header.sequence_number = stream.next_sequence_number;
            stream.next_sequence_number = stream.next_sequence_number.wrapping_add(1);
        } else if !packet.header.padding && !retransmission {
            // (A retransmission without RTX repeats the media SSRC: not new media.)
            self.remember(&packet.header, &packet.payload);
        }
    }

    fn remember(&mut self, header: &Header, payload: &bytes::Bytes) {
        let Some(stream) = self.streams.iter().position(|s| s.primary == header.ssrc) else {
            return;
        };
        if payload.is_empty() {
            return; // padding: nothing worth repeating
        }
        if self.recent.len() == RECENT {
            self.recent.pop_back();
        }
        self.recent.push_front(Recent {
            stream,
            sequence_number: header.sequence_number,
            timestamp: header.timestamp,
            marker: header.marker,
            payload: payload.clone(),
        });
        self.copied = 0;
    }

    /// The next copy for an order, if one is wanted and a packet is left to copy.
    pub fn next_copy(&mut self) -> Option<TaggedPacket> {
        // Only an order takes the lock: every walk of the chain comes through here.
        let wanted = self.tap.wanted_bytes.load(Ordering::Relaxed);
        if wanted == 0 {
            return None;
        }
        let now = self.tap.ordered_at.lock().ok().and_then(|at| *at)?;
        let Some(original) = self.recent.get(self.copied).cloned() else {
            self.tap.wanted_bytes.store(0, Ordering::Relaxed);
            return None;
        };
        self.copied += 1;
        let stream = &mut self.streams[original.stream];
        let mut payload = BytesMut::with_capacity(2 + original.payload.len());
        payload.put_u16(original.sequence_number);
        payload.put_slice(&original.payload);
        let sequence_number = stream.next_sequence_number;
        stream.next_sequence_number = sequence_number.wrapping_add(1);
        let packet = rtc::rtp::packet::Packet {
            header: Header {
                version: 2,
                marker: original.marker,
                payload_type: stream.payload_type,
                sequence_number,
                timestamp: original.timestamp,
                ssrc: stream.ssrc,
                ..Header::default()
            },
            payload: payload.freeze(),
        };
        let bytes = original.payload.len() as u64 + COPY_OVERHEAD_BYTES;
        self.tap
            .wanted_bytes
            .store(wanted.saturating_sub(bytes), Ordering::Relaxed);
        self.tap.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        Some(TaggedPacket {
            now,
            transport: Default::default(),
            message: rtc::interceptor::AttributedPacket::new(Packet::Rtp(packet)),
        })
    }
}

impl RtxProber {
    pub fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let (Some(ssrc), Some(payload_type)) = (info.ssrc_rtx, info.payload_type_rtx) {
            self.streams.retain(|s| s.primary != info.ssrc);
            self.streams.push(RtxStream {
                primary: info.ssrc,
                ssrc,
                payload_type,
                next_sequence_number: rand::random(),
            });
            self.recent.clear();
            self.copied = 0;
        }
    }

    pub fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if self.streams.iter().any(|s| s.primary == info.ssrc) {
            self.streams.retain(|s| s.primary != info.ssrc);
            // Indices into `streams` moved.
            self.recent.clear();
            self.copied = 0;
        }
    }
}

/// An interceptor that also sees each local stream's RTX SSRC as a stream of its own (with the
/// stream's header extensions), for `rtc`'s transport-cc sender and send history.
pub struct WithRtxStreams<I>(pub I);

fn rtx_stream(info: &StreamInfo) -> Option<StreamInfo> {
    let (Some(ssrc), Some(payload_type)) = (info.ssrc_rtx, info.payload_type_rtx) else {
        return None;
    };
    Some(StreamInfo {
        ssrc,
        ssrc_rtx: None,
        payload_type,
        payload_type_rtx: None,
        ..info.clone()
    })
}

impl<I: Interceptor> rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for WithRtxStreams<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), RtcError> {
        self.0.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.0.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), RtcError> {
        self.0.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.0.poll_write()
    }

    fn handle_event(&mut self, event: ()) -> Result<(), RtcError> {
        self.0.handle_event(event)
    }

    fn poll_event(&mut self) -> Option<()> {
        self.0.poll_event()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), RtcError> {
        self.0.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn close(&mut self) -> Result<(), RtcError> {
        self.0.close()
    }
}

impl<I: Interceptor> Interceptor for WithRtxStreams<I> {
    fn handles_writes(&self) -> bool {
        self.0.handles_writes()
    }

    fn handles_reads(&self) -> bool {
        self.0.handles_reads()
    }

    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.0.bind_local_stream(info);
        if let Some(rtx) = rtx_stream(info) {
            self.0.bind_local_stream(&rtx);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_local_stream(info);
        if let Some(rtx) = rtx_stream(info) {
            self.0.unbind_local_stream(&rtx);
        }
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;

    const MEDIA: u32 = 0x1000;
    const RTX: u32 = 0x2000;

    fn rtp(ssrc: u32, sequence_number: u16, payload: &'static [u8]) -> rtc::rtp::packet::Packet {
        rtc::rtp::packet::Packet {
            header: Header {
                version: 2,
                ssrc,
                sequence_number,
                timestamp: 9_000,
                ..Header::default()
            },
            payload: bytes::Bytes::from_static(payload),
        }
    }

    fn tagged(packet: rtc::rtp::packet::Packet, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        }
    }

    /// What the prober lets out: `writes` as it numbered them, then the copies it is ordered to
    /// make (the egress interceptor's order).
    fn written(prober: &mut RtxProber, writes: Vec<TaggedPacket>) -> Vec<rtc::rtp::packet::Packet> {
        let mut out: Vec<TaggedPacket> = writes
            .into_iter()
            .map(|mut msg| {
                prober.on_write(&mut msg);
                msg
            })
            .collect();
        out.extend(std::iter::from_fn(|| prober.next_copy()));
        out.into_iter()
            .filter_map(|m| match m.message.packet {
                Packet::Rtp(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn prober() -> (RtxProber, Arc<ProbeTap>) {
        let tap = Arc::new(ProbeTap::default());
        let mut prober = RtxProber::new(tap.clone());
        prober.bind_local_stream(&StreamInfo {
            ssrc: MEDIA,
            ssrc_rtx: Some(RTX),
            payload_type: 96,
            payload_type_rtx: Some(97),
            ..StreamInfo::default()
        });
        (prober, tap)
    }

    #[test]
    fn copies_repeat_the_newest_packets_on_the_rtx_stream_in_one_numbering_with_retransmissions() {
        let (mut prober, tap) = prober();
        let now = Instant::now();
        let media = written(
            &mut prober,
            vec![
                tagged(rtp(MEDIA, 10, b"older"), now),
                tagged(rtp(MEDIA, 11, b"newest"), now),
            ],
        );
        assert_eq!(
            media
                .iter()
                .map(|p| p.header.sequence_number)
                .collect::<Vec<_>>(),
            vec![10, 11],
            "media passes unchanged"
        );
        // A retransmission from the NACK responder, numbered by its own counter.
        let mut resent = rtp(RTX, 0, b"\x00\x0aolder");
        resent.header.payload_type = 97;
        // A probe of a little more than the newest packet: two copies, newest first.
        tap.order(COPY_OVERHEAD_BYTES + 7, now);
        let out = written(&mut prober, vec![tagged(resent, now)]);
        assert_eq!(out.len(), 3);
        let first = out[0].header.sequence_number;
        let numbers: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(
            numbers,
            vec![first, first.wrapping_add(1), first.wrapping_add(2)]
        );
        assert!(
            out.iter()
                .all(|p| p.header.ssrc == RTX && p.header.payload_type == 97)
        );
        assert_eq!(&out[1].payload[..], b"\x00\x0bnewest");
        assert_eq!(&out[2].payload[..], b"\x00\x0aolder");
        assert_eq!(out[1].header.timestamp, 9_000);
        assert_eq!(tap.take_sent(), 2 * COPY_OVERHEAD_BYTES + 11);
        // Nothing more is sent until the next order, and never a packet twice in a row of orders
        // without new media.
        assert!(written(&mut prober, Vec::new()).is_empty());
        tap.order(10_000, now);
        assert!(
            written(&mut prober, Vec::new()).is_empty(),
            "both were copied already"
        );
    }

    #[test]
    fn streams_without_rtx_and_padding_are_never_copied() {
        let (mut prober, tap) = prober();
        let now = Instant::now();
        let mut padding = rtp(MEDIA, 1, b"");
        padding.header.padding = true;
        let audio = tagged(rtp(0x3000, 1, b"audio"), now);
        assert_eq!(
            written(&mut prober, vec![tagged(padding, now), audio]).len(),
            2
        );
        tap.order(10_000, now);
        assert!(written(&mut prober, Vec::new()).is_empty());
        assert_eq!(tap.take_sent(), 0);
    }

    #[test]
    fn the_rtx_stream_is_bound_as_a_stream_of_its_own() {
        let info = StreamInfo {
            ssrc: MEDIA,
            ssrc_rtx: Some(RTX),
            payload_type: 96,
            payload_type_rtx: Some(97),
            ..StreamInfo::default()
        };
        let rtx = rtx_stream(&info).unwrap();
        assert_eq!((rtx.ssrc, rtx.payload_type, rtx.ssrc_rtx), (RTX, 97, None));
        let no_rtx = StreamInfo {
            ssrc_rtx: None,
            ..info
        };
        assert!(rtx_stream(&no_rtx).is_none());
    }
}
