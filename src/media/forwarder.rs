//! Per-subscription rewriting of sequence numbers and timestamps.
//!
//! A subscriber sees one continuous RTP stream per track whatever the publisher does: a
//! subscription that starts mid-call begins at a keyframe, and a publisher that restarts (new
//! SSRC, or a sequence jump on the same SSRC) continues where the old stream left off, with the
//! timestamp advanced by the wall-clock time that passed. Loss in the publisher's stream stays
//! visible as the same gap, so the subscriber's NACKs still name real packets.
//!
//! Plain synchronous code: the caller passes the time and acts on the returned [`Verdict`].

use std::time::{Duration, Instant};

/// A forward sequence jump larger than this on one SSRC is a restart, not loss (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// A packet this far behind the newest is not reordering: the sender restarted its numbering.
/// Larger than any retransmission history (browsers keep about 1 s), so late retransmissions
/// are never mistaken for a restart.
const MAX_MISORDER: u16 = 1500;

/// What the forwarder needs to know about one inbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundPacket {
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
    /// The first packet of a frame a decoder can start from (always true for audio).
    pub keyframe_start: bool,
    /// Payload size, for the publication's bitrate.
    pub payload_bytes: u32,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward {
        sequence_number: u16,
        timestamp: u32,
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

/// The input stream currently mapped onto the output.
///
/// Sequence numbers are kept extended (unwrapped into 64 bits, RFC 3550 A.1) so that "older than
/// where this subscription started" stays true across any number of 16-bit wraps: a 16-bit
/// comparison with the first number turns every packet "stale" after 32,768 of them.
#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    first_extended: u64,
    highest_extended: u64,
    sequence_offset: u16,
    timestamp_offset: u32,
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
        }
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
        let Some(source) = self.source.filter(|s| s.ssrc == packet.ssrc) else {
            return self.start_source(packet, now);
        };
        let ahead = seq_diff(packet.sequence_number, source.highest());
        if ahead > i32::from(MAX_DROPOUT) || ahead < -i32::from(MAX_MISORDER) {
            // Same SSRC, unrelated numbering: the publisher restarted.
            self.renumbered = Some(Renumbered {
                ssrc: source.ssrc,
                highest: source.highest(),
            });
            self.source = None;
            return self.start_source(packet, now);
        }
        if source.extend(packet.sequence_number) < source.first_extended {
            return Verdict::Drop(DropReason::Stale);
        }
        self.emit(source, packet, now)
    }

    /// A late packet of a stream the current one replaced: of a retired SSRC, or of the old
    /// numbering of a renumbered SSRC (near where that numbering ended, and not near the current
    /// one). Forwarding it would restart the output on a dead stream.
    fn is_late_from_a_replaced_stream(&self, packet: &InboundPacket) -> bool {
        let current = self.source.filter(|s| s.ssrc == packet.ssrc);
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
            .filter(|s| s.ssrc == ssrc)
            .map(|s| s.timestamp_offset)
    }

    /// Forgets the current input so the next packet starts a new mapping (for example when the
    /// publisher's track is replaced). Output stays continuous.
    pub fn reset_source(&mut self) {
        self.source = None;
    }

    fn start_source(&mut self, packet: &InboundPacket, now: Instant) -> Verdict {
        if self.config.starts_at_keyframe && !packet.keyframe_start {
            return Verdict::Drop(DropReason::AwaitingKeyframe);
        }
        let (sequence_number, timestamp) = match self.last_out {
            None => (
                self.config.initial_sequence_number,
                self.config.initial_timestamp,
            ),
            Some(last) => (
                last.sequence_number.wrapping_add(1),
                last.timestamp
                    .wrapping_add(self.elapsed_ticks(now.saturating_duration_since(last.at))),
            ),
        };
        if let Some(old) = self.source.take()
            && old.ssrc != packet.ssrc
        {
            self.retired_ssrc = Some(old.ssrc);
        }
        let first_extended = Source::FIRST_CYCLE + u64::from(packet.sequence_number);
        let source = Source {
            ssrc: packet.ssrc,
            first_extended,
            highest_extended: first_extended,
            sequence_offset: sequence_number.wrapping_sub(packet.sequence_number),
            timestamp_offset: timestamp.wrapping_sub(packet.timestamp),
        };
        self.emit(source, packet, now)
    }

    fn emit(&mut self, mut source: Source, packet: &InboundPacket, now: Instant) -> Verdict {
        let sequence_number = packet.sequence_number.wrapping_add(source.sequence_offset);
        let timestamp = packet.timestamp.wrapping_add(source.timestamp_offset);
        source.highest_extended = source
            .highest_extended
            .max(source.extend(packet.sequence_number));
        let newest = self
            .last_out
            .is_none_or(|last| seq_diff(sequence_number, last.sequence_number) > 0);
        if newest {
            self.last_out = Some(LastOut {
                sequence_number,
                timestamp,
                at: now,
            });
        }
        self.source = Some(source);
        Verdict::Forward {
            sequence_number,
            timestamp,
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
        }
    }

    fn fwd(seq: u16, ts: u32) -> Verdict {
        Verdict::Forward {
            sequence_number: seq,
            timestamp: ts,
        }
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
