//! What a receiver keeps per stream (loss, duplicates, reordering, jitter) and the latency
//! histograms, merged across driver threads at the end.

/// How far behind the highest counter a packet can still be told apart from a duplicate.
const SEEN_WINDOW: u64 = 4096;

/// One received stream, as one receiver saw it.
#[derive(Debug, Clone)]
pub struct StreamReceiver {
    highest: Option<u64>,
    /// Bit `c % SEEN_WINDOW` set: counter `c` (within the window below `highest`) arrived.
    seen: Vec<u64>,
    /// Unique packets sent inside the measurement window that arrived.
    pub received_in_window: u64,
    pub duplicates: u64,
    /// Packets that arrived after one with a higher counter.
    pub reordered: u64,
    last_transit_ns: Option<i128>,
    /// RFC 3550 §6.4.1 interarrival jitter estimate, in nanoseconds.
    jitter_ns: f64,
    pub jitter_sum_ns: f64,
    pub jitter_samples: u64,
}

/// What one packet turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    New,
    Reordered,
    Duplicate,
}

impl Default for StreamReceiver {
    fn default() -> Self {
        StreamReceiver {
            highest: None,
            seen: vec![0; (SEEN_WINDOW / 64) as usize],
            received_in_window: 0,
            duplicates: 0,
            reordered: 0,
            last_transit_ns: None,
            jitter_ns: 0.0,
            jitter_sum_ns: 0.0,
            jitter_samples: 0,
        }
    }
}

impl StreamReceiver {
    /// Takes one packet; only packets sent inside the window count towards the totals, but all
    /// of them keep the jitter estimate and the duplicate window current.
    pub fn on_packet(
        &mut self,
        counter: u64,
        sent_ns: u64,
        arrived_ns: u64,
        in_window: bool,
    ) -> Arrival {
        let arrival = self.classify(counter);
        // Transit time differences: both clocks are the same, so this is pure path variation
        // (the RTP timestamp would add the encoder's frame timing on top).
        let transit = i128::from(arrived_ns) - i128::from(sent_ns);
        if arrival != Arrival::Duplicate {
            if let Some(last) = self.last_transit_ns {
                let d = (transit - last).abs() as f64;
                self.jitter_ns += (d - self.jitter_ns) / 16.0;
            }
            self.last_transit_ns = Some(transit);
        }
        if in_window {
            match arrival {
                Arrival::New => self.received_in_window += 1,
                Arrival::Reordered => {
                    self.received_in_window += 1;
                    self.reordered += 1;
                }
                Arrival::Duplicate => self.duplicates += 1,
            }
            if arrival != Arrival::Duplicate {
                self.jitter_sum_ns += self.jitter_ns;
                self.jitter_samples += 1;
            }
        }
        arrival
    }

    pub fn has_packets(&self) -> bool {
        self.highest.is_some()
    }

    fn classify(&mut self, counter: u64) -> Arrival {
        let Some(highest) = self.highest else {
            self.highest = Some(counter);
            self.mark(counter);
            return Arrival::New;
        };
        if counter > highest {
            let gap = counter - highest;
            if gap >= SEEN_WINDOW {
                self.seen.fill(0);
            } else {
                for c in highest + 1..counter {
                    self.clear(c);
                }
            }
            self.highest = Some(counter);
            self.mark(counter);
            return Arrival::New;
        }
        if highest - counter >= SEEN_WINDOW {
            // Too old to remember; a late packet this far back is reordered either way.
            return Arrival::Reordered;
        }
        if self.is_marked(counter) {
            return Arrival::Duplicate;
        }
        self.mark(counter);
        Arrival::Reordered
    }

    fn bit(counter: u64) -> (usize, u64) {
        let slot = counter % SEEN_WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn mark(&mut self, counter: u64) {
        let (word, bit) = Self::bit(counter);
        self.seen[word] |= bit;
    }

    fn clear(&mut self, counter: u64) {
        let (word, bit) = Self::bit(counter);
        self.seen[word] &= !bit;
    }

    fn is_marked(&self, counter: u64) -> bool {
        let (word, bit) = Self::bit(counter);
        self.seen[word] & bit != 0
    }
}

/// Sub-buckets per power of two: about 3 % resolution.
const SUB_BUCKETS: u64 = 32;
const LINEAR_UNTIL: u64 = 2 * SUB_BUCKETS;
const BUCKETS: usize = (LINEAR_UNTIL + 58 * SUB_BUCKETS) as usize;

/// A log-linear histogram of microsecond values: exact below 64 us, about 3 % above.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, value_us: u64) {
        self.counts[Self::index(value_us)] += 1;
        self.total += 1;
        self.max = self.max.max(value_us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_us(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The value below which a fraction `q` (0..=1) of the samples lie (a bucket's midpoint,
    /// never above the maximum seen).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, high) = Self::bounds(index);
                return Some((low + (high - low) / 2).min(self.max));
            }
        }
        Some(self.max)
    }

    fn index(value: u64) -> usize {
        if value < LINEAR_UNTIL {
            return value as usize;
        }
        let magnitude = 63 - u64::from(value.leading_zeros()); // >= 6
        let shift = magnitude - SUB_BUCKETS.trailing_zeros() as u64;
        let sub = (value >> shift) - SUB_BUCKETS; // 0..SUB_BUCKETS
        let index = LINEAR_UNTIL + (magnitude - 6) * SUB_BUCKETS + sub;
        (index as usize).min(BUCKETS - 1)
    }

    /// The values bucket `index` holds, as [low, high).
    fn bounds(index: usize) -> (u64, u64) {
        let index = index as u64;
        if index < LINEAR_UNTIL {
            return (index, index + 1);
        }
        let magnitude = (index - LINEAR_UNTIL) / SUB_BUCKETS + 6;
        let sub = (index - LINEAR_UNTIL) % SUB_BUCKETS;
        let shift = magnitude - SUB_BUCKETS.trailing_zeros() as u64;
        let low = (SUB_BUCKETS + sub) << shift;
        (low, low.saturating_add(1 << shift))
    }
}

/// The value at fraction `q` of a sorted slice.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_duplicates_and_reordering_are_told_apart() {
        let mut s = StreamReceiver::default();
        for counter in [0, 1, 3, 2, 2, 5, 4] {
            s.on_packet(counter, 0, 1_000, true);
        }
        assert_eq!(s.received_in_window, 6);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 2, "2 after 3, 4 after 5");
    }

    #[test]
    fn the_duplicate_window_slides() {
        let mut s = StreamReceiver::default();
        s.on_packet(0, 0, 0, true);
        s.on_packet(10_000, 0, 0, true);
        // Counter 0 fell out of the window: reordered, not a duplicate.
        assert_eq!(s.on_packet(0, 0, 0, true), Arrival::Reordered);
        assert_eq!(s.on_packet(9_999, 0, 0, true), Arrival::Reordered);
        assert_eq!(s.on_packet(9_999, 0, 0, true), Arrival::Duplicate);
        // A bit left over from an earlier lap of the ring does not count as seen.
        let mut s = StreamReceiver::default();
        s.on_packet(1, 0, 0, true);
        s.on_packet(SEEN_WINDOW + 2, 0, 0, true);
        assert_eq!(s.on_packet(SEEN_WINDOW + 1, 0, 0, true), Arrival::Reordered);
    }

    #[test]
    fn packets_outside_the_window_are_not_counted() {
        let mut s = StreamReceiver::default();
        s.on_packet(0, 0, 0, false);
        s.on_packet(0, 0, 0, false);
        s.on_packet(1, 0, 0, true);
        assert_eq!((s.received_in_window, s.duplicates), (1, 0));
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        let mut s = StreamReceiver::default();
        // Transit alternates 1 ms and 3 ms: |D| = 2 ms each time after the first.
        for i in 0..200u64 {
            let transit = if i % 2 == 0 { 1_000_000 } else { 3_000_000 };
            s.on_packet(i, i * 20_000_000, i * 20_000_000 + transit, true);
        }
        let jitter = s.jitter_ns;
        assert!((jitter - 2_000_000.0).abs() < 10_000.0, "{jitter}");
    }

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 5_000.0), (0.95, 9_500.0), (0.99, 9_900.0)] {
            let got = h.quantile_us(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.04, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.max_us(), Some(10_000));
        assert_eq!(h.quantile_us(1.0), Some(10_000));
        let mut small = Histogram::default();
        small.record(3);
        assert_eq!(small.quantile_us(0.5), Some(3));
        let mut merged = Histogram::default();
        merged.merge(&h);
        merged.merge(&small);
        assert_eq!(merged.count(), 10_001);
        assert_eq!(Histogram::default().quantile_us(0.5), None);
        // Huge values land in the last bucket instead of panicking.
        h.record(u64::MAX);
        assert_eq!(h.max_us(), Some(u64::MAX));
    }

    #[test]
    fn bucket_bounds_hold_their_values() {
        for v in [0, 63, 64, 65, 127, 128, 1_000, 123_456, 1 << 40] {
            let (low, high) = Histogram::bounds(Histogram::index(v));
            assert!(low <= v && v < high, "{v}: [{low}, {high})");
        }
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 0.95), Some(4));
    }
}
