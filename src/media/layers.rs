//! The layers of one published track: each simulcast encoding (or the one stream of a track
//! that does not simulcast), what it measures, and which of them is better.
//!
//! Layers are bound by rid (RFC 8851) when the publisher names them, and otherwise there is one
//! unnamed layer. A layer keeps its place (its slot) for the whole call; a publisher that
//! restarts a layer under a new SSRC moves that slot to the new SSRC. Quality order is measured,
//! not assumed from names: keyframes carry the frame size, and names or arrival order only break
//! ties (H.264 and VP9 do not show their size here).

use super::meter::BitrateMeter;
use std::time::{Duration, Instant};

/// More than any browser sends (three), few enough to search linearly per packet.
pub const MAX_LAYERS: usize = 4;
/// Temporal layers measured per layer (browsers send L1T3: three).
pub const TEMPORAL_LAYERS: usize = 3;
/// A layer with no packet for this long has stopped (the encoder dropped it, or the path lost
/// it); the allocator falls back to another.
const LIVENESS: Duration = Duration::from_secs(2);
/// ...and sooner when the track's other layers keep sending: a layer this far behind its
/// siblings has stopped while the track has not (a static screen share may send nothing for
/// seconds on every layer, which is not a stop).
const BEHIND_SIBLINGS: Duration = Duration::from_millis(500);
/// For this long after a layer's first packet its measured rate says little (encoders ramp
/// up over seconds): it counts at least what its frame size usually costs.
const YOUNG: Duration = Duration::from_secs(5);
/// That usual cost: bits per pixel per frame at 30 frames a second (about 1.4 Mbit/s for
/// 1280x720, 350 kbit/s for 640x360, 90 kbit/s for 320x180: what browsers send for them).
const NOMINAL_BITS_PER_PIXEL: f64 = 0.05;
/// Duplicates are recognised this far behind the newest packet.
const SEEN_WINDOW: u64 = 1024;
/// Sequence jumps beyond these are a restart of the layer's numbering, not loss or reordering.
const MAX_DROPOUT: i32 = 3000;
const MAX_MISORDER: i32 = 1500;

/// How a packet relates to what its layer already delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Newer than anything before it: may start a frame, or a switch.
    New,
    /// Older than the newest (reordered or retransmitted), seen for the first time.
    Late,
    /// Seen before (a retransmission that crossed its original, or a probe's copy).
    Duplicate,
}

#[derive(Debug, Clone)]
struct SeenWindow {
    highest: Option<u64>,
    bits: [u64; (SEEN_WINDOW / 64) as usize],
}

impl SeenWindow {
    fn new() -> Self {
        SeenWindow {
            highest: None,
            bits: [0; (SEEN_WINDOW / 64) as usize],
        }
    }

    fn bit(&mut self, extended: u64) -> (&mut u64, u64) {
        let index = (extended % SEEN_WINDOW) as usize;
        (&mut self.bits[index / 64], 1u64 << (index % 64))
    }

    fn check(&mut self, sequence_number: u16) -> Arrival {
        let Some(highest) = self.highest else {
            return self.restart(sequence_number);
        };
        let diff = i32::from(sequence_number.wrapping_sub(highest as u16) as i16);
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&diff) {
            return self.restart(sequence_number);
        }
        let extended = highest.wrapping_add_signed(i64::from(diff));
        if diff > 0 {
            if diff as u64 >= SEEN_WINDOW {
                self.bits = [0; (SEEN_WINDOW / 64) as usize];
            } else {
                for skipped in highest + 1..extended {
                    let (word, mask) = self.bit(skipped);
                    *word &= !mask;
                }
            }
            let (word, mask) = self.bit(extended);
            *word |= mask;
            self.highest = Some(extended);
            return Arrival::New;
        }
        if highest - extended >= SEEN_WINDOW {
            return Arrival::Late;
        }
        let (word, mask) = self.bit(extended);
        if *word & mask != 0 {
            return Arrival::Duplicate;
        }
        *word |= mask;
        Arrival::Late
    }

    fn restart(&mut self, sequence_number: u16) -> Arrival {
        // One cycle up, so that reordering just before the first packet stays positive.
        let extended = (1 << 16) + u64::from(sequence_number);
        self.bits = [0; (SEEN_WINDOW / 64) as usize];
        let (word, mask) = self.bit(extended);
        *word |= mask;
        self.highest = Some(extended);
        Arrival::New
    }
}

/// A publisher's sender report for one layer: an RTP time and the NTP time it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockMapping {
    pub rtp_time: u32,
    /// RFC 3550 §4: 32.32 fixed-point seconds.
    pub ntp_time: u64,
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub ssrc: u32,
    pub rid: Option<Box<str>>,
    /// From the newest keyframe that said it.
    pub resolution: Option<(u16, u16)>,
    pub last_packet: Option<Instant>,
    pub clock: Option<ClockMapping>,
    meter: BitrateMeter,
    /// The 1-s readings smoothed: a keyframe's burst must not read as the layer's rate (it would
    /// push subscribers down for a second every time the publisher sends one).
    smoothed_bps: u64,
    first_packet: Option<Instant>,
    bytes_before_first_window: u64,
    seen: SeenWindow,
    /// Bytes per temporal layer (VP8 TID 0-2), for finer steps than the layer itself.
    temporal: [BitrateMeter; TEMPORAL_LAYERS],
    /// The highest temporal layer seen.
    pub max_temporal_id: Option<u8>,
}

impl Layer {
    fn new(ssrc: u32, rid: Option<&str>) -> Self {
        Layer {
            ssrc,
            rid: rid.map(Into::into),
            resolution: None,
            last_packet: None,
            clock: None,
            meter: BitrateMeter::default(),
            smoothed_bps: 0,
            first_packet: None,
            bytes_before_first_window: 0,
            seen: SeenWindow::new(),
            temporal: Default::default(),
            max_temporal_id: None,
        }
    }

    pub fn is_live(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|at| now.saturating_duration_since(at) < LIVENESS)
    }

    /// The layer's rate for allocation: smoothed over seconds once it has a full second of
    /// history, and before that what it sent so far (a new publisher is allocated at once, not
    /// a second later); 0 when the layer is not live.
    pub fn bitrate_bps(&self, now: Instant) -> u64 {
        if !self.is_live(now) {
            return 0;
        }
        let Some(first) = self.first_packet else {
            return 0;
        };
        let measured = if self.smoothed_bps > 0 {
            self.smoothed_bps
        } else {
            let elapsed = now
                .saturating_duration_since(first)
                .max(Duration::from_millis(100));
            self.bytes_before_first_window * 8 * 1_000_000 / elapsed.as_micros() as u64
        };
        // A new layer is not cheap because its encoder has not ramped up yet: planned at its
        // measured rate, a fresh 1280x720 layer was given to a 400 kbit/s subscriber, whose
        // link its first keyframes then flooded.
        let young = now.saturating_duration_since(first) < YOUNG;
        match self.resolution {
            Some((w, h)) if young => {
                let nominal = f64::from(w) * f64::from(h) * 30.0 * NOMINAL_BITS_PER_PIXEL;
                measured.max(nominal as u64)
            }
            _ => measured,
        }
    }

    fn record(&mut self, bytes: u32, now: Instant) {
        self.first_packet.get_or_insert(now);
        self.last_packet = Some(now);
        if let Some(reading) = self.meter.record(bytes, now) {
            self.smoothed_bps = if self.smoothed_bps == 0 {
                reading
            } else {
                (self.smoothed_bps * 3 + reading) / 4
            };
        }
        if self.smoothed_bps == 0 {
            self.bytes_before_first_window += u64::from(bytes);
        }
    }

    /// Where names say it: 0 = lowest. Browsers and SDKs name simulcast encodings q/h/f,
    /// low/mid/high or by number.
    fn name_rank(&self) -> u8 {
        match self.rid.as_deref() {
            Some("q" | "l" | "low" | "0") => 0,
            Some("h" | "m" | "mid" | "1") => 1,
            Some("f" | "high" | "2") => 2,
            _ => 3,
        }
    }
}

/// The layers of one track.
#[derive(Debug, Clone, Default)]
pub struct LayerSet {
    layers: Vec<Layer>,
    /// Slots from lowest to highest quality.
    by_quality: Vec<u8>,
}

impl LayerSet {
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    pub fn layer(&self, slot: u8) -> Option<&Layer> {
        self.layers.get(usize::from(slot))
    }

    /// The slot of an SSRC, if it is bound.
    pub fn slot_of(&self, ssrc: u32) -> Option<u8> {
        self.layers
            .iter()
            .position(|l| l.ssrc == ssrc)
            .map(|i| i as u8)
    }

    /// Binds an SSRC to its layer: the layer of the same rid (a restarted encoding), the
    /// unnamed layer (a track that does not simulcast, restarted), or a new one. `None` once
    /// the track has all the layers it may have.
    pub fn bind(&mut self, ssrc: u32, rid: Option<&str>) -> Option<u8> {
        if let Some(slot) = self.slot_of(ssrc) {
            return Some(slot);
        }
        if let Some(index) = self.layers.iter().position(|l| l.rid.as_deref() == rid) {
            let layer = &mut self.layers[index];
            let resolution = layer.resolution;
            *layer = Layer::new(ssrc, rid);
            layer.resolution = resolution;
            return Some(index as u8);
        }
        if self.layers.len() >= MAX_LAYERS {
            return None;
        }
        self.layers.push(Layer::new(ssrc, rid));
        self.rank();
        Some((self.layers.len() - 1) as u8)
    }

    /// Counts one packet of a layer and says whether it is new, late or a duplicate.
    pub fn observe(
        &mut self,
        slot: u8,
        sequence_number: u16,
        payload_bytes: u32,
        resolution: Option<(u16, u16)>,
        temporal_id: Option<u8>,
        now: Instant,
    ) -> Arrival {
        let Some(layer) = self.layers.get_mut(usize::from(slot)) else {
            return Arrival::Duplicate;
        };
        let arrival = layer.seen.check(sequence_number);
        if arrival == Arrival::Duplicate {
            return arrival;
        }
        layer.record(payload_bytes, now);
        if let Some(tid) = temporal_id {
            let tid = tid.min(TEMPORAL_LAYERS as u8 - 1);
            layer.temporal[usize::from(tid)].record(payload_bytes, now);
            layer.max_temporal_id = layer.max_temporal_id.max(Some(tid));
        }
        if let Some(size) = resolution
            && layer.resolution != Some(size)
        {
            layer.resolution = Some(size);
            self.rank();
        }
        arrival
    }

    /// The share (in thousandths) of a layer's rate that its temporal layers up to each TID
    /// carry, when it sends more than one and they have been measured.
    pub fn temporal_shares(&self, slot: u8, now: Instant) -> Option<[u64; TEMPORAL_LAYERS]> {
        let layer = self.layers.get(usize::from(slot))?;
        let top = usize::from(layer.max_temporal_id.filter(|t| *t > 0)?);
        let mut cumulative = [0u64; TEMPORAL_LAYERS];
        let mut sum = 0;
        for (tid, meter) in layer.temporal.iter().enumerate().take(top + 1) {
            sum += meter.bitrate_bps(now);
            cumulative[tid] = sum;
        }
        if sum == 0 || cumulative[0] == 0 {
            return None;
        }
        let mut shares = [1_000u64; TEMPORAL_LAYERS];
        for tid in 0..=top {
            shares[tid] = cumulative[tid] * 1_000 / sum;
        }
        Some(shares)
    }

    pub fn record_sender_report(&mut self, ssrc: u32, mapping: ClockMapping) {
        if let Some(slot) = self.slot_of(ssrc) {
            self.layers[usize::from(slot)].clock = Some(mapping);
        }
    }

    /// Slots from lowest to highest quality.
    pub fn by_quality(&self) -> &[u8] {
        &self.by_quality
    }

    /// The quality rank of a slot (0 = lowest).
    pub fn rank_of(&self, slot: u8) -> Option<u8> {
        self.by_quality
            .iter()
            .position(|s| *s == slot)
            .map(|r| r as u8)
    }

    /// Each layer's bitrate for allocation, lowest quality first (0 = not live, including a
    /// layer that fell silent while its siblings kept sending).
    pub fn bitrates_by_quality(&self, now: Instant, out: &mut Vec<u64>) {
        let newest = self.layers.iter().filter_map(|l| l.last_packet).max();
        out.clear();
        out.extend(self.by_quality.iter().map(|slot| {
            let layer = &self.layers[usize::from(*slot)];
            let behind = match (newest, layer.last_packet) {
                (Some(newest), Some(last)) => newest.saturating_duration_since(last),
                _ => Duration::ZERO,
            };
            if behind > BEHIND_SIBLINGS {
                0
            } else {
                layer.bitrate_bps(now)
            }
        }));
    }

    fn rank(&mut self) {
        let layers = &self.layers;
        let mut order: Vec<u8> = (0..layers.len() as u8).collect();
        order.sort_by_key(|slot| {
            let layer = &layers[usize::from(*slot)];
            let area = layer
                .resolution
                .map_or(0, |(w, h)| u32::from(w) * u32::from(h));
            (area, layer.name_rank(), *slot)
        });
        self.by_quality = order;
    }

    /// The RTP timestamp, in layer `from`'s clock, of the instant that `timestamp` in layer
    /// `to`'s clock stands for, through both layers' sender reports (simulcast layers each have
    /// their own timestamp base). `None` until both layers have reported.
    pub fn translate_timestamp(
        &self,
        to: u8,
        timestamp: u32,
        from: u8,
        clock_rate: u32,
    ) -> Option<u32> {
        let to_clock = self.layers.get(usize::from(to))?.clock?;
        let from_clock = self.layers.get(usize::from(from))?.clock?;
        let since_to_report = i64::from(timestamp.wrapping_sub(to_clock.rtp_time) as i32);
        let ntp_gap = to_clock.ntp_time.wrapping_sub(from_clock.ntp_time) as i64;
        // 32.32 fixed point seconds to ticks, in i128 so hours of gap cannot overflow.
        let gap_ticks = (i128::from(ntp_gap) * i128::from(clock_rate)) >> 32;
        let ticks = i128::from(since_to_report) + gap_ticks;
        Some(from_clock.rtp_time.wrapping_add(ticks as i64 as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_late_and_new_packets_are_told_apart_across_wraps() {
        let mut w = SeenWindow::new();
        let mut seq = 65_000u16;
        for _ in 0..2_000 {
            assert_eq!(w.check(seq), Arrival::New);
            assert_eq!(w.check(seq), Arrival::Duplicate);
            seq = seq.wrapping_add(1);
        }
        // A gap, then the missing packet late, then again.
        let skipped = seq;
        seq = seq.wrapping_add(1);
        assert_eq!(w.check(seq), Arrival::New);
        assert_eq!(w.check(skipped), Arrival::Late);
        assert_eq!(w.check(skipped), Arrival::Duplicate);
        // Far behind the window: late, never mistaken for a duplicate of a newer packet.
        assert_eq!(w.check(seq.wrapping_sub(1_200)), Arrival::Late);
        // A jump beyond any loss restarts the window.
        assert_eq!(w.check(seq.wrapping_add(20_000)), Arrival::New);
    }

    #[test]
    fn layers_bind_by_rid_and_rank_by_measured_size() {
        let now = Instant::now();
        let mut set = LayerSet::default();
        let f = set.bind(30, Some("f")).unwrap();
        let q = set.bind(10, Some("q")).unwrap();
        let h = set.bind(20, Some("h")).unwrap();
        assert_eq!(set.by_quality(), &[q, h, f], "by name before any keyframe");
        // Sizes contradict the names: sizes win.
        set.observe(q, 1, 100, Some((1280, 720)), None, now);
        set.observe(h, 1, 100, Some((640, 360)), None, now);
        set.observe(f, 1, 100, Some((320, 180)), None, now);
        assert_eq!(set.by_quality(), &[f, h, q]);
        // The same rid under a new SSRC keeps its slot and its size.
        assert_eq!(set.bind(11, Some("q")), Some(q));
        assert_eq!(set.slot_of(10), None);
        assert_eq!(set.layer(q).unwrap().resolution, Some((1280, 720)));
        // A track without rids has one layer, rebound on restart.
        let mut plain = LayerSet::default();
        assert_eq!(plain.bind(1, None), Some(0));
        assert_eq!(plain.bind(2, None), Some(0));
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn bitrate_is_smoothed_over_keyframe_bursts_and_zero_when_stopped() {
        let start = Instant::now();
        let mut set = LayerSet::default();
        let slot = set.bind(1, None).unwrap();
        let mut seq = 0u16;
        // 500 kbit/s: 50 packets of 1250 bytes per second, and a 10x burst in second 3.
        for ms in (0..6_000u64).step_by(20) {
            let bursts = if (3_000..3_100).contains(&ms) { 10 } else { 1 };
            for _ in 0..bursts {
                seq = seq.wrapping_add(1);
                set.observe(
                    slot,
                    seq,
                    1250,
                    None,
                    None,
                    start + Duration::from_millis(ms),
                );
            }
        }
        let rate = set
            .layer(slot)
            .unwrap()
            .bitrate_bps(start + Duration::from_millis(6_000));
        assert!((450_000..800_000).contains(&rate), "{rate}");
        assert_eq!(
            set.layer(slot)
                .unwrap()
                .bitrate_bps(start + Duration::from_secs(9)),
            0
        );
    }

    #[test]
    fn a_layer_silent_while_its_siblings_send_reads_as_stopped() {
        let start = Instant::now();
        let mut set = LayerSet::default();
        let q = set.bind(1, Some("q")).unwrap();
        let f = set.bind(2, Some("f")).unwrap();
        let mut rates = Vec::new();
        for i in 0..100u16 {
            let at = start + Duration::from_millis(u64::from(i) * 20);
            set.observe(q, i, 500, None, None, at);
            if i < 50 {
                set.observe(f, i, 5_000, None, None, at);
            }
        }
        // f stopped 1 s ago while q went on.
        set.bitrates_by_quality(start + Duration::from_millis(2_000), &mut rates);
        assert!(rates[0] > 0);
        assert_eq!(rates[1], 0);
        // Both silent for a second (a static screen): neither is dropped yet.
        let mut quiet = LayerSet::default();
        let a = quiet.bind(1, Some("q")).unwrap();
        let b = quiet.bind(2, Some("f")).unwrap();
        quiet.observe(a, 1, 500, None, None, start);
        quiet.observe(b, 1, 5_000, None, None, start);
        quiet.bitrates_by_quality(start + Duration::from_secs(1), &mut rates);
        assert!(rates.iter().all(|r| *r > 0), "{rates:?}");
    }

    #[test]
    fn a_new_layer_has_a_rate_before_its_first_full_second() {
        let start = Instant::now();
        let mut set = LayerSet::default();
        let slot = set.bind(1, None).unwrap();
        for i in 0..10u16 {
            set.observe(
                slot,
                i,
                1250,
                None,
                None,
                start + Duration::from_millis(u64::from(i) * 20),
            );
        }
        let rate = set
            .layer(slot)
            .unwrap()
            .bitrate_bps(start + Duration::from_millis(200));
        assert_eq!(rate, 10 * 1250 * 8 * 5);
    }

    #[test]
    fn timestamps_translate_through_sender_reports() {
        let mut set = LayerSet::default();
        let a = set.bind(1, Some("q")).unwrap();
        let b = set.bind(2, Some("h")).unwrap();
        let second = 1u64 << 32;
        set.record_sender_report(
            1,
            ClockMapping {
                rtp_time: 1_000,
                ntp_time: 100 * second,
            },
        );
        set.record_sender_report(
            2,
            ClockMapping {
                rtp_time: u32::MAX - 44_999,
                ntp_time: 101 * second,
            },
        );
        // b's report time + 0.5 s is a's report time + 1.5 s: 135,000 ticks after a's report.
        let in_b = (u32::MAX - 44_999).wrapping_add(45_000);
        assert_eq!(
            set.translate_timestamp(b, in_b, a, 90_000),
            Some(1_000 + 135_000)
        );
        assert_eq!(set.translate_timestamp(b, in_b, 3, 90_000), None);
    }
}
