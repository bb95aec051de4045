//! Per-subscription rewriting of sequence numbers, timestamps and VP8 picture numbering.
//!
//! A subscriber sees one continuous RTP stream per track whatever the publisher does: a
//! subscription that starts mid-call begins at a keyframe, a publisher that restarts (new SSRC,
//! or a sequence jump on the same SSRC) continues where the old stream left off, and a switch to
//! another simulcast layer splices at that layer's keyframe with the timestamp carried across
//! (through the layers' sender reports when the caller has them, else by the wall clock) and
//! VP8 PictureID/TL0PICIDX continuing from the last picture sent. Loss in the publisher's stream
//! stays visible as the same gap, so the subscriber's NACKs still name real packets; packets
//! the relay drops on purpose (padding) close their gap, and padding the relay inserts (probes)
//! takes numbers of its own, so the subscriber never sees a loss that was not one.
//!
//! Plain synchronous code: the caller passes the time and acts on the returned [`Verdict`].

use super::codec::Vp8Descriptor;
use std::time::{Duration, Instant};

/// A forward sequence jump larger than this on one SSRC is a restart, not loss (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// A packet this far behind the newest is not reordering: the sender restarted its numbering.
/// Larger than any retransmission history (browsers keep about 1 s), so late retransmissions
/// are never mistaken for a restart.
const MAX_MISORDER: u16 = 1500;
/// Sequence shifts remembered for late packets (each dropped padding packet or inserted probe
/// is one); a late packet from before the oldest is dropped as stale rather than misnumbered.
const MAX_SHIFTS: usize = 16;

/// What the forwarder needs to know about one inbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboundPacket {
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// The first packet of a frame a decoder can start from (always true for audio).
    pub keyframe_start: bool,
    /// Payload size, for the publication's bitrate; 0 for a padding-only packet.
    pub payload_bytes: u32,
    /// The frame size, when this packet starts a keyframe that says it.
    pub resolution: Option<(u16, u16)>,
    pub vp8: Option<Vp8Descriptor>,
}

#[derive(Debug, Clone, Copy)]
pub struct ForwarderConfig {
    /// RTP clock rate of the codec, used to advance timestamps across a publisher restart.
    pub clock_rate: u32,
    /// Video must start (and restart) at a keyframe; audio can start anywhere.
    pub starts_at_keyframe: bool,
    /// Where the subscriber's sequence numbers and timestamps begin (random in production).
    pub initial_sequence_number: u16,
    pub initial_timestamp: u32,
}

/// New VP8 descriptor values for a forwarded packet, when they differ from the publisher's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Rewrite {
    pub picture_id: Option<u16>,
    pub tl0_picture_index: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward {
        sequence_number: u16,
        timestamp: u32,
        vp8: Option<Vp8Rewrite>,
    },
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Video before the first keyframe of this subscription or after a publisher restart.
    AwaitingKeyframe,
    /// A late packet of a stream that has since been replaced, or older than where this
    /// subscription started.
    Stale,
}

/// A change of the sequence offset: packets numbered below `boundary` (extended) keep `before`.
#[derive(Debug, Clone, Copy)]
struct Shift {
    boundary: u64,
    before: u16,
}

/// The input stream currently mapped onto the output.
///
/// Sequence numbers are kept extended (unwrapped into 64 bits, RFC 3550 A.1) so that "older than
/// where this subscription started" stays true across any number of 16-bit wraps: a 16-bit
/// comparison with the first number turns every packet "stale" after 32,768 of them.
#[derive(Debug, Clone)]
struct Source {
    ssrc: u32,
    first_extended: u64,
    highest_extended: u64,
    sequence_offset: u16,
    timestamp_offset: u32,
    /// Oldest first.
    shifts: Vec<Shift>,
    /// Late packets below this were numbered under a shift no longer remembered.
    forgotten_below: u64,
    picture_id_offset: u16,
    tl0_offset: u8,
}

impl Source {
    /// Extended numbers start one cycle up, so a packet from just before the first one (late
    /// reordering, bounded by `MAX_MISORDER`) still has a positive extended number.
    const FIRST_CYCLE: u64 = 1 << 16;

    fn highest(&self) -> u16 {
        self.highest_extended as u16
    }

    /// The extended number of `sequence_number`, taken as the value nearest the highest seen.
    fn extend(&self, sequence_number: u16) -> u64 {
        self.highest_extended
            .wrapping_add_signed(i64::from(seq_diff(sequence_number, self.highest())))
    }

    /// The offset that numbered `extended` when it was (or would have been) new.
    fn offset_for(&self, extended: u64) -> u16 {
        self.shifts
            .iter()
            .find(|s| extended < s.boundary)
            .map_or(self.sequence_offset, |s| s.before)
    }

    fn shift(&mut self, boundary: u64, new_offset: u16) {
        if self.shifts.len() == MAX_SHIFTS {
            let oldest = self.shifts.remove(0);
            self.forgotten_below = oldest.boundary;
        }
        self.shifts.push(Shift {
            boundary,
            before: self.sequence_offset,
        });
        self.sequence_offset = new_offset;
    }
}

/// A publisher that restarted its numbering on the same SSRC: where the old numbering ended.
#[derive(Debug, Clone, Copy)]
struct Renumbered {
    ssrc: u32,
    highest: u16,
}

/// The newest packet sent to the subscriber.
#[derive(Debug, Clone, Copy)]
struct LastOut {
    sequence_number: u16,
    timestamp: u32,
    at: Instant,
    /// It ended a frame: padding may follow without splitting one.
    marker: bool,
}

/// The newest VP8 picture sent, to continue the numbering on a switch.
#[derive(Debug, Clone, Copy)]
struct LastPicture {
    picture_id: Option<u16>,
    tl0_picture_index: Option<u8>,
}

#[derive(Debug, Clone)]
pub struct Forwarder {
    config: ForwarderConfig,
    source: Option<Source>,
    /// The SSRC replaced by the current source: its late packets are stale, not a new restart.
    retired_ssrc: Option<u32>,
    /// Where the previous numbering of a renumbered SSRC ended.
    renumbered: Option<Renumbered>,
    last_out: Option<LastOut>,
    last_picture: Option<LastPicture>,
    /// The PictureID of the last picture dropped on purpose (each is taken out of the numbering
    /// once).
    dropped_picture: Option<u16>,
}

/// Signed distance from `b` to `a` in 16-bit sequence space.
fn seq_diff(a: u16, b: u16) -> i32 {
    a.wrapping_sub(b) as i16 as i32
}

impl Forwarder {
    pub fn new(config: ForwarderConfig) -> Self {
        Forwarder {
            config,
            source: None,
            retired_ssrc: None,
            renumbered: None,
            last_out: None,
            last_picture: None,
            dropped_picture: None,
        }
    }

    /// Video: starts, and restarts, only at a keyframe.
    pub fn starts_at_keyframe(&self) -> bool {
        self.config.starts_at_keyframe
    }

    /// True until the first packet has been forwarded after a start or restart.
    pub fn is_awaiting_start(&self) -> bool {
        self.source.is_none()
    }

    /// Decides what to do with one packet and, when it is forwarded, its new numbers.
    pub fn forward(&mut self, packet: &InboundPacket, now: Instant) -> Verdict {
        if self.is_late_from_a_replaced_stream(packet) {
            return Verdict::Drop(DropReason::Stale);
        }
        let Some(source) = self.source.as_ref().filter(|s| s.ssrc == packet.ssrc) else {
            return self.start_source(packet, now, None);
        };
        let ahead = seq_diff(packet.sequence_number, source.highest());
        if ahead > i32::from(MAX_DROPOUT) || ahead < -i32::from(MAX_MISORDER) {
            // Same SSRC, unrelated numbering: the publisher restarted.
            self.renumbered = Some(Renumbered {
                ssrc: source.ssrc,
                highest: source.highest(),
            });
            self.source = None;
            return self.start_source(packet, now, None);
        }
        let extended = source.extend(packet.sequence_number);
        if extended < source.first_extended || extended < source.forgotten_below {
            return Verdict::Drop(DropReason::Stale);
        }
        self.emit(packet, extended, now)
    }

    /// Splices another stream in at `packet` (the first packet of a keyframe of the layer being
    /// switched to): the output continues from the last packet sent. `timestamp` is where the
    /// caller places this packet in the output (from sender reports); it is used when it moves
    /// forward from the last packet sent, else the wall clock decides.
    pub fn switch_to(
        &mut self,
        packet: &InboundPacket,
        timestamp: Option<u32>,
        now: Instant,
    ) -> Verdict {
        self.renumbered = None;
        self.start_source(packet, now, timestamp)
    }

    /// A late packet of a stream the current one replaced: of a retired SSRC, or of the old
    /// numbering of a renumbered SSRC (near where that numbering ended, and not near the current
    /// one). Forwarding it would restart the output on a dead stream.
    fn is_late_from_a_replaced_stream(&self, packet: &InboundPacket) -> bool {
        let current = self.source.as_ref().filter(|s| s.ssrc == packet.ssrc);
        if current.is_none() && self.retired_ssrc == Some(packet.ssrc) {
            return true;
        }
        let Some(old) = self.renumbered.filter(|r| r.ssrc == packet.ssrc) else {
            return false;
        };
        let near_current = current.is_some_and(|c| {
            seq_diff(packet.sequence_number, c.highest()).abs() <= i32::from(MAX_MISORDER)
        });
        let behind_old = seq_diff(old.highest, packet.sequence_number);
        let old_window = -i32::from(MAX_DROPOUT)..=i32::from(MAX_MISORDER);
        !near_current && old_window.contains(&behind_old)
    }

    /// The offset this forwarder adds to timestamps of `ssrc`, if that is the stream it is
    /// forwarding now (used to translate the publisher's sender reports).
    pub fn timestamp_offset(&self, ssrc: u32) -> Option<u32> {
        self.source
            .as_ref()
            .filter(|s| s.ssrc == ssrc)
            .map(|s| s.timestamp_offset)
    }

    /// Forgets the current input so the next packet starts a new mapping (for example when the
    /// publisher's track is replaced). Output stays continuous.
    pub fn reset_source(&mut self) {
        self.source = None;
    }

    /// The relay dropped this packet of the current stream (padding-only): when it is the
    /// newest, later packets are numbered one lower, so the subscriber sees no gap. (A late
    /// one leaves its gap: the packets after it are already out.)
    pub fn skip(&mut self, packet: &InboundPacket) {
        let Some(source) = self.source.as_mut().filter(|s| s.ssrc == packet.ssrc) else {
            return;
        };
        let ahead = seq_diff(packet.sequence_number, source.highest());
        if ahead <= 0 || ahead > i32::from(MAX_DROPOUT) {
            return;
        }
        let extended = source.extend(packet.sequence_number);
        let offset = source.sequence_offset.wrapping_sub(1);
        source.shift(extended, offset);
        source.highest_extended = extended;
    }

    /// The relay drops this packet of the current stream on purpose (a temporal layer above what
    /// the subscription gets): its sequence number is closed like padding's, and its picture's
    /// PictureID is taken out of the numbering, so the subscriber sees neither as a loss.
    pub fn drop_packet(&mut self, packet: &InboundPacket) {
        self.skip(packet);
        let Some(id) = packet.vp8.and_then(|d| d.picture_id) else {
            return;
        };
        if self.dropped_picture == Some(id.value) {
            return;
        }
        self.dropped_picture = Some(id.value);
        if let Some(source) = self.source.as_mut().filter(|s| s.ssrc == packet.ssrc) {
            source.picture_id_offset = source.picture_id_offset.wrapping_sub(1);
        }
    }

    /// Whether [`Forwarder::insert_padding`] would give numbers now.
    pub fn can_insert_padding(&self) -> bool {
        self.source.is_none() || self.last_out.is_some_and(|l| l.marker)
    }

    /// Numbers for one padding packet the relay inserts into this stream (a bandwidth probe),
    /// if it can go now: only between frames, after a packet that ended one, or while nothing is
    /// forwarded (paused, or not started). Later packets are numbered one higher.
    pub fn insert_padding(&mut self, now: Instant) -> Option<(u16, u32)> {
        if !self.can_insert_padding() {
            return None;
        }
        // A paused subscription (no source) pads freely: the next stream starts after it. One
        // that never sent anything starts its numbering with the padding (a subscription paused
        // from its start must still be able to probe its way to its first layer).
        let config = self.config;
        let last = self.last_out.get_or_insert(LastOut {
            sequence_number: config.initial_sequence_number.wrapping_sub(1),
            timestamp: config.initial_timestamp,
            at: now,
            marker: true,
        });
        let sequence_number = last.sequence_number.wrapping_add(1);
        last.sequence_number = sequence_number;
        if let Some(source) = self.source.as_mut() {
            let offset = source.sequence_offset.wrapping_add(1);
            source.shift(source.highest_extended + 1, offset);
        }
        Some((sequence_number, last.timestamp))
    }

    fn start_source(
        &mut self,
        packet: &InboundPacket,
        now: Instant,
        timestamp: Option<u32>,
    ) -> Verdict {
        if self.config.starts_at_keyframe && !packet.keyframe_start {
            return Verdict::Drop(DropReason::AwaitingKeyframe);
        }
        let (sequence_number, timestamp) = match self.last_out {
            None => (
                self.config.initial_sequence_number,
                self.config.initial_timestamp,
            ),
            Some(last) => {
                let by_clock = last
                    .timestamp
                    .wrapping_add(self.elapsed_ticks(now.saturating_duration_since(last.at)));
                let ahead = |ts: u32| {
                    let step = ts.wrapping_sub(last.timestamp) as i32;
                    step > 0 && (step as u32) < self.config.clock_rate * 10
                };
                (
                    last.sequence_number.wrapping_add(1),
                    timestamp.filter(|ts| ahead(*ts)).unwrap_or(by_clock),
                )
            }
        };
        if let Some(old) = self.source.take()
            && old.ssrc != packet.ssrc
        {
            self.retired_ssrc = Some(old.ssrc);
        }
        if self.retired_ssrc == Some(packet.ssrc) {
            self.retired_ssrc = None;
        }
        let (picture_id_offset, tl0_offset) = self.picture_offsets(packet);
        let first_extended = Source::FIRST_CYCLE + u64::from(packet.sequence_number);
        self.source = Some(Source {
            ssrc: packet.ssrc,
            first_extended,
            highest_extended: first_extended,
            sequence_offset: sequence_number.wrapping_sub(packet.sequence_number),
            timestamp_offset: timestamp.wrapping_sub(packet.timestamp),
            shifts: Vec::new(),
            forgotten_below: 0,
            picture_id_offset,
            tl0_offset,
        });
        self.emit(packet, first_extended, now)
    }

    /// Offsets that make this stream's first picture follow the last one sent.
    fn picture_offsets(&self, packet: &InboundPacket) -> (u16, u8) {
        let (Some(last), Some(vp8)) = (self.last_picture, packet.vp8) else {
            return (0, 0);
        };
        let picture_id_offset = match (last.picture_id, vp8.picture_id) {
            (Some(last_id), Some(id)) => last_id
                .wrapping_add(1)
                .wrapping_sub(id.value)
                .rem_euclid(id.modulus()),
            _ => 0,
        };
        let tl0_offset = match (last.tl0_picture_index, vp8.tl0_picture_index) {
            (Some(last_tl0), Some(tl0)) => last_tl0.wrapping_add(1).wrapping_sub(tl0),
            _ => 0,
        };
        (picture_id_offset, tl0_offset)
    }

    fn emit(&mut self, packet: &InboundPacket, extended: u64, now: Instant) -> Verdict {
        let Some(source) = self.source.as_mut() else {
            return Verdict::Drop(DropReason::Stale);
        };
        let offset = source.offset_for(extended);
        let sequence_number = packet.sequence_number.wrapping_add(offset);
        let timestamp = packet.timestamp.wrapping_add(source.timestamp_offset);
        source.highest_extended = source.highest_extended.max(extended);
        let vp8 = packet.vp8.map(|d| {
            let picture_id = d
                .picture_id
                .map(|id| id.value.wrapping_add(source.picture_id_offset) % id.modulus());
            let tl0_picture_index = d
                .tl0_picture_index
                .map(|tl0| tl0.wrapping_add(source.tl0_offset));
            (d, picture_id, tl0_picture_index)
        });
        let newest = self
            .last_out
            .is_none_or(|last| seq_diff(sequence_number, last.sequence_number) > 0);
        if newest {
            self.last_out = Some(LastOut {
                sequence_number,
                timestamp,
                at: now,
                marker: packet.marker,
            });
            if let Some((_, picture_id, tl0_picture_index)) = vp8 {
                self.last_picture = Some(LastPicture {
                    picture_id,
                    tl0_picture_index,
                });
            }
        }
        let rewrite = vp8.and_then(|(d, picture_id, tl0_picture_index)| {
            let changed = picture_id != d.picture_id.map(|id| id.value)
                || tl0_picture_index != d.tl0_picture_index;
            changed.then_some(Vp8Rewrite {
                picture_id,
                tl0_picture_index,
            })
        });
        Verdict::Forward {
            sequence_number,
            timestamp,
            vp8: rewrite,
        }
    }

    /// RTP ticks for a wall-clock gap, at least one so timestamps keep moving forward, and at
    /// most half the 32-bit space: a receiver compares timestamps modulo 2^32, so a longer step
    /// (a gap of over 6.6 h at 90 kHz) would read as a step backwards.
    fn elapsed_ticks(&self, elapsed: Duration) -> u32 {
        let ticks = elapsed.as_micros() * u128::from(self.config.clock_rate) / 1_000_000;
        ticks.clamp(1, i32::MAX as u128) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(initial_sequence_number: u16, initial_timestamp: u32) -> Forwarder {
        Forwarder::new(ForwarderConfig {
            clock_rate: 90_000,
            starts_at_keyframe: true,
            initial_sequence_number,
            initial_timestamp,
        })
    }

    fn audio(initial_sequence_number: u16, initial_timestamp: u32) -> Forwarder {
        Forwarder::new(ForwarderConfig {
            clock_rate: 48_000,
            starts_at_keyframe: false,
            initial_sequence_number,
            initial_timestamp,
        })
    }

    fn pkt(ssrc: u32, seq: u16, ts: u32, key: bool) -> InboundPacket {
        InboundPacket {
            ssrc,
            sequence_number: seq,
            timestamp: ts,
            keyframe_start: key,
            payload_bytes: 100,
            ..InboundPacket::default()
        }
    }

    fn fwd(seq: u16, ts: u32) -> Verdict {
        Verdict::Forward {
            sequence_number: seq,
            timestamp: ts,
            vp8: None,
        }
    }

    fn vp8_pkt(ssrc: u32, seq: u16, key: bool, picture_id: u16, tl0: u8) -> InboundPacket {
        InboundPacket {
            vp8: Some(Vp8Descriptor {
                keyframe_start: key,
                picture_id: Some(crate::media::codec::vp8::PictureId {
                    value: picture_id,
                    wide: true,
                }),
                tl0_picture_index: Some(tl0),
                ..Vp8Descriptor::default()
            }),
            marker: true,
            ..pkt(ssrc, seq, u32::from(seq) * 3000, key)
        }
    }

    fn numbers(verdict: Verdict) -> (u16, u32, Option<Vp8Rewrite>) {
        match verdict {
            Verdict::Forward {
                sequence_number,
                timestamp,
                vp8,
            } => (sequence_number, timestamp, vp8),
            other => panic!("dropped: {other:?}"),
        }
    }

    #[test]
    fn a_layer_switch_continues_numbering_timestamps_and_picture_ids() {
        let t0 = Instant::now();
        let mut f = video(65_530, u32::MAX - 1_000);
        // Layer q (SSRC 1): pictures 700.. with TL0 10..
        for i in 0..10u16 {
            let p = vp8_pkt(1, 100 + i, i == 0, 700 + i, 10 + i as u8);
            let (seq, _, vp8) =
                numbers(f.forward(&p, t0 + Duration::from_millis(u64::from(i) * 33)));
            assert_eq!(seq, 65_530u16.wrapping_add(i));
            assert_eq!(vp8, None, "the first stream keeps its own numbering");
        }
        // Switch to layer f (SSRC 2), numbering unrelated, at its keyframe; the caller places it
        // 33 ms after the last packet through sender reports.
        let last_ts = (u32::MAX - 1_000).wrapping_add(9 * 3000);
        let key = vp8_pkt(2, 40_000, true, 0x7ffe, 200);
        let at = t0 + Duration::from_millis(330);
        let (seq, ts, vp8) = numbers(f.switch_to(&key, Some(last_ts.wrapping_add(2_970)), at));
        assert_eq!(seq, 65_530u16.wrapping_add(10));
        assert_eq!(ts, last_ts.wrapping_add(2_970));
        assert_eq!(
            vp8,
            Some(Vp8Rewrite {
                picture_id: Some(710),
                tl0_picture_index: Some(20),
            })
        );
        // The stream continues, PictureIDs wrapping at 15 bits in the old layer's sequence.
        let (seq, _, vp8) = numbers(f.forward(&vp8_pkt(2, 40_001, false, 0x7fff, 200), at));
        assert_eq!(seq, 65_530u16.wrapping_add(11));
        assert_eq!(vp8.unwrap().picture_id, Some(711));
        // Late packets of the old layer are stale, and switching back to it is allowed.
        assert_eq!(
            f.forward(&vp8_pkt(1, 105, false, 705, 15), at),
            Verdict::Drop(DropReason::Stale)
        );
        let back = vp8_pkt(1, 200, true, 800, 30);
        let (seq, ts, vp8) = numbers(f.switch_to(&back, None, at + Duration::from_millis(33)));
        assert_eq!(seq, 65_530u16.wrapping_add(12));
        assert!(
            ts.wrapping_sub(last_ts) as i32 > 2_970,
            "wall clock moves it forward"
        );
        assert_eq!(vp8.unwrap().picture_id, Some(712));
        // A timestamp hint that would step backwards is ignored.
        let again = vp8_pkt(2, 40_100, true, 1, 1);
        let (_, ts2, _) = numbers(f.switch_to(
            &again,
            Some(ts.wrapping_sub(5)),
            at + Duration::from_millis(66),
        ));
        assert!(ts2.wrapping_sub(ts) as i32 > 0);
    }

    #[test]
    fn dropped_padding_closes_its_gap_and_late_packets_keep_their_numbers() {
        let t0 = Instant::now();
        let mut f = video(1_000, 0);
        assert_eq!(f.forward(&pkt(1, 65_534, 0, true), t0), fwd(1_000, 0));
        // 65,535 is lost for now; 0 and 1 are padding the relay drops.
        assert_eq!(f.forward(&pkt(1, 0, 0, false), t0).clone(), fwd(1_002, 0));
        f.skip(&pkt(1, 1, 0, false));
        f.skip(&pkt(1, 2, 0, false));
        assert_eq!(f.forward(&pkt(1, 3, 0, false), t0), fwd(1_003, 0));
        // The lost packet's retransmission still fills its own hole.
        assert_eq!(f.forward(&pkt(1, 65_535, 0, false), t0), fwd(1_001, 0));
        assert_eq!(f.forward(&pkt(1, 0, 0, false), t0), fwd(1_002, 0));
        // Skipping something old does nothing.
        f.skip(&pkt(1, 0, 0, false));
        assert_eq!(f.forward(&pkt(1, 4, 0, false), t0), fwd(1_004, 0));
    }

    #[test]
    fn a_subscription_that_never_started_can_pad_and_then_starts_after_the_padding() {
        let t0 = Instant::now();
        let mut f = video(500, 9_000);
        assert_eq!(f.insert_padding(t0), Some((500, 9_000)));
        assert_eq!(f.insert_padding(t0), Some((501, 9_000)));
        let Verdict::Forward {
            sequence_number,
            timestamp,
            ..
        } = f.forward(&pkt(1, 7, 0, true), t0 + Duration::from_millis(10))
        else {
            panic!("keyframe not forwarded");
        };
        assert_eq!(sequence_number, 502);
        assert_eq!(timestamp, 9_000 + 900);
    }

    #[test]
    fn dropped_temporal_layers_leave_no_gap_in_numbers_or_pictures() {
        let t0 = Instant::now();
        let mut f = video(100, 0);
        // L1T3 pictures 10..18 with TIDs 0,2,1,2,...; two packets each; T2 is dropped.
        let mut out = Vec::new();
        let mut seq = 5_000u16;
        for (i, picture) in (10u16..18).enumerate() {
            let tid = [0, 2, 1, 2][i % 4];
            for part in 0..2 {
                let mut p = vp8_pkt(1, seq, i == 0 && part == 0, picture, 3);
                p.marker = part == 1;
                seq = seq.wrapping_add(1);
                if tid == 2 {
                    f.drop_packet(&p);
                    continue;
                }
                let (s, _, vp8) = numbers(f.forward(&p, t0));
                out.push((s, vp8.and_then(|v| v.picture_id).unwrap_or(picture)));
            }
        }
        let numbers: Vec<u16> = out.iter().map(|o| o.0).collect();
        assert_eq!(numbers, (100..108).collect::<Vec<u16>>());
        let mut pictures: Vec<u16> = out.iter().map(|o| o.1).collect();
        pictures.dedup();
        assert_eq!(pictures, vec![10, 11, 12, 13]);
    }

    #[test]
    fn inserted_padding_takes_numbers_only_between_frames() {
        let t0 = Instant::now();
        let mut f = video(10, 500);
        let mut first = pkt(1, 100, 500, true);
        first.marker = false;
        assert_eq!(f.forward(&first, t0), fwd(10, 500));
        assert_eq!(f.insert_padding(t0), None, "never inside a frame");
        let mut end = pkt(1, 101, 500, false);
        end.marker = true;
        assert_eq!(f.forward(&end, t0), fwd(11, 500));
        assert_eq!(f.insert_padding(t0), Some((12, 500)));
        assert_eq!(f.insert_padding(t0), Some((13, 500)));
        assert_eq!(f.forward(&pkt(1, 102, 3500, false), t0), fwd(14, 3500));
        // A retransmission from before the padding keeps its number.
        assert_eq!(f.forward(&pkt(1, 101, 500, false), t0), fwd(11, 500));
    }

    #[test]
    fn shifts_beyond_memory_make_very_late_packets_stale_not_misnumbered() {
        let t0 = Instant::now();
        let mut f = video(0, 0);
        let mut seq = 0u16;
        let mut p = pkt(1, seq, 0, true);
        p.marker = true;
        f.forward(&p, t0);
        for _ in 0..(MAX_SHIFTS + 4) {
            seq += 1;
            let mut p = pkt(1, seq, 0, false);
            p.marker = true;
            f.forward(&p, t0);
            f.insert_padding(t0).unwrap();
        }
        assert_eq!(
            f.forward(&pkt(1, 1, 0, false), t0),
            Verdict::Drop(DropReason::Stale)
        );
        assert!(matches!(
            f.forward(&pkt(1, seq, 0, false), t0),
            Verdict::Forward { .. }
        ));
    }

    #[test]
    fn video_waits_for_a_keyframe_then_numbers_from_the_initial_values() {
        let t0 = Instant::now();
        let mut f = video(1000, 5000);
        assert!(f.is_awaiting_start());
        assert_eq!(
            f.forward(&pkt(1, 40, 900, false), t0),
            Verdict::Drop(DropReason::AwaitingKeyframe)
        );
        assert_eq!(f.forward(&pkt(1, 41, 3900, true), t0), fwd(1000, 5000));
        assert_eq!(f.forward(&pkt(1, 42, 3900, false), t0), fwd(1001, 5000));
        assert_eq!(f.forward(&pkt(1, 43, 6900, false), t0), fwd(1002, 8000));
        assert!(!f.is_awaiting_start());
    }

    #[test]
    fn audio_starts_anywhere() {
        let t0 = Instant::now();
        let mut f = audio(7, 70);
        assert_eq!(f.forward(&pkt(9, 500, 48_000, false), t0), fwd(7, 70));
        assert_eq!(f.forward(&pkt(9, 501, 48_960, false), t0), fwd(8, 1030));
    }

    #[test]
    fn sequence_and_timestamp_wrap_around_in_both_spaces() {
        let t0 = Instant::now();
        // Output near the top of both spaces, input wrapping at a different moment.
        let mut f = audio(65_534, u32::MAX - 959);
        let mut outs = Vec::new();
        for i in 0..6u16 {
            let seq = 65_533u16.wrapping_add(i);
            let ts = (u32::MAX - 1919).wrapping_add(u32::from(i) * 960);
            match f.forward(&pkt(1, seq, ts, true), t0) {
                Verdict::Forward {
                    sequence_number,
                    timestamp,
                    ..
                } => outs.push((sequence_number, timestamp)),
                other => panic!("dropped: {other:?}"),
            }
        }
        let seqs: Vec<u16> = outs.iter().map(|o| o.0).collect();
        assert_eq!(seqs, vec![65_534, 65_535, 0, 1, 2, 3]);
        for pair in outs.windows(2) {
            assert_eq!(pair[1].1.wrapping_sub(pair[0].1), 960);
        }
    }

    #[test]
    fn a_stream_keeps_flowing_past_32768_packets_and_many_wraps() {
        // Regression: "stale" was judged against the first sequence number in 16-bit space,
        // so from packet 32,768 on every packet was dropped.
        let t0 = Instant::now();
        let mut f = audio(100, 0);
        let start = 60_000u16;
        for i in 0..200_000u32 {
            let seq = start.wrapping_add(i as u16);
            let ts = i.wrapping_mul(960);
            let expected = fwd(100u16.wrapping_add(i as u16), ts);
            assert_eq!(
                f.forward(&pkt(1, seq, ts, false), t0),
                expected,
                "packet {i}"
            );
            // After a few wraps, a late packet still gets exactly the number its gap left.
            if i == 3 * 65_536 + 7 {
                let late = seq.wrapping_sub(5);
                let late_ts = (i - 5).wrapping_mul(960);
                let expected = fwd(100u16.wrapping_add((i - 5) as u16), late_ts);
                assert_eq!(f.forward(&pkt(1, late, late_ts, false), t0), expected);
            }
        }
    }

    #[test]
    fn loss_stays_a_gap_and_reordering_keeps_its_numbers() {
        let t0 = Instant::now();
        let mut f = audio(100, 0);
        assert_eq!(f.forward(&pkt(1, 10, 0, false), t0), fwd(100, 0));
        assert_eq!(f.forward(&pkt(1, 12, 1920, false), t0), fwd(102, 1920));
        // The late packet 11 gets exactly the number its gap left.
        assert_eq!(f.forward(&pkt(1, 11, 960, false), t0), fwd(101, 960));
        // Older than where this subscription started: never forwarded (would collide).
        assert_eq!(
            f.forward(&pkt(1, 9, 0, false), t0),
            Verdict::Drop(DropReason::Stale)
        );
    }

    #[test]
    fn a_publisher_restart_with_a_new_ssrc_continues_the_output() {
        let t0 = Instant::now();
        let mut f = video(500, 1_000_000);
        assert_eq!(
            f.forward(&pkt(1, 10, 90_000, true), t0),
            fwd(500, 1_000_000)
        );
        assert_eq!(
            f.forward(&pkt(1, 11, 93_000, false), t0),
            fwd(501, 1_003_000)
        );
        // New SSRC, unrelated numbers, 2 s later: waits for its keyframe...
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            f.forward(&pkt(2, 60_000, 7, false), t1),
            Verdict::Drop(DropReason::AwaitingKeyframe)
        );
        // ...then continues at the next sequence number, timestamp advanced by 2 s of 90 kHz.
        assert_eq!(
            f.forward(&pkt(2, 60_001, 7, true), t1),
            fwd(502, 1_003_000 + 180_000)
        );
        assert_eq!(
            f.forward(&pkt(2, 60_002, 3007, false), t1),
            fwd(503, 1_006_000 + 180_000)
        );
        // Late packets of the old stream are not forwarded.
        assert_eq!(
            f.forward(&pkt(1, 12, 96_000, false), t1),
            Verdict::Drop(DropReason::Stale)
        );
    }

    #[test]
    fn a_restart_on_the_same_ssrc_is_detected_by_the_sequence_jump() {
        let t0 = Instant::now();
        let mut f = audio(0, 0);
        assert_eq!(f.forward(&pkt(1, 100, 960, false), t0), fwd(0, 0));
        assert_eq!(f.forward(&pkt(1, 101, 1920, false), t0), fwd(1, 960));
        let t1 = t0 + Duration::from_millis(100);
        // 20_000 ahead: a new numbering, not loss.
        assert_eq!(f.forward(&pkt(1, 20_101, 5, false), t1), fwd(2, 960 + 4800));
        assert_eq!(
            f.forward(&pkt(1, 20_102, 965, false), t1),
            fwd(3, 960 + 4800 + 960)
        );
        // And far behind is a restart too (the other direction).
        let t2 = t1 + Duration::from_millis(20);
        assert_eq!(
            f.forward(&pkt(1, 10_000, 77, false), t2),
            fwd(4, 6720 + 960)
        );
    }

    #[test]
    fn a_late_packet_of_the_old_numbering_does_not_restart_the_stream_again() {
        let t0 = Instant::now();
        let mut f = video(0, 0);
        assert_eq!(f.forward(&pkt(1, 100, 0, true), t0), fwd(0, 0));
        assert_eq!(f.forward(&pkt(1, 101, 0, false), t0), fwd(1, 0));
        let t1 = t0 + Duration::from_millis(40);
        // Renumbered at a keyframe...
        assert_eq!(f.forward(&pkt(1, 30_000, 9000, true), t1), fwd(2, 3600));
        // ...then a packet of the old numbering that was held up on the way.
        assert_eq!(
            f.forward(&pkt(1, 102, 3000, false), t1),
            Verdict::Drop(DropReason::Stale)
        );
        assert_eq!(f.forward(&pkt(1, 30_001, 9000, false), t1), fwd(3, 3600));
        // Much later the new numbering passes where the old one ended: still forwarded.
        let mut seq = 30_001u16;
        for i in 0..40_000u32 {
            seq = seq.wrapping_add(1);
            let verdict = f.forward(&pkt(1, seq, 9000 + i * 30, false), t1);
            assert!(
                matches!(verdict, Verdict::Forward { .. }),
                "{seq}: {verdict:?}"
            );
        }
    }

    #[test]
    fn a_restart_after_hours_still_moves_timestamps_forward() {
        let t0 = Instant::now();
        let mut f = video(0, u32::MAX - 10);
        f.forward(&pkt(1, 1, 0, true), t0);
        // 14 hours later (more than the 13.3 h the 90 kHz space spans) a new stream starts.
        let t1 = t0 + Duration::from_secs(14 * 3600);
        let Verdict::Forward { timestamp, .. } = f.forward(&pkt(2, 500, 7, true), t1) else {
            panic!("not forwarded");
        };
        let step = timestamp.wrapping_sub(u32::MAX - 10) as i32;
        assert!(step > 0, "timestamp went backwards by {step}");
    }

    #[test]
    fn timestamps_advance_even_when_the_restart_is_immediate() {
        let t0 = Instant::now();
        let mut f = audio(0, 0);
        f.forward(&pkt(1, 1, 0, false), t0);
        assert_eq!(f.forward(&pkt(2, 1, 0, false), t0), fwd(1, 1));
    }

    #[test]
    fn the_timestamp_offset_is_known_for_the_current_source_only() {
        let t0 = Instant::now();
        let mut f = audio(0, 1000);
        assert_eq!(f.timestamp_offset(1), None);
        f.forward(&pkt(1, 5, 400, false), t0);
        assert_eq!(f.timestamp_offset(1), Some(600));
        assert_eq!(f.timestamp_offset(2), None);
    }

    #[test]
    fn reset_source_makes_video_wait_for_a_keyframe_again() {
        let t0 = Instant::now();
        let mut f = video(0, 0);
        f.forward(&pkt(1, 1, 0, true), t0);
        f.reset_source();
        assert_eq!(
            f.forward(&pkt(1, 2, 3000, false), t0),
            Verdict::Drop(DropReason::AwaitingKeyframe)
        );
        assert_eq!(f.forward(&pkt(1, 3, 6000, true), t0), fwd(1, 1));
    }
}
