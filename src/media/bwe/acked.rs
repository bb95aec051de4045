//! The rate the remote actually received, measured on its own clock.
//!
//! Arrival times come from the receiver, so the window slides over *when packets arrived there*,
//! not over when feedback reached us: Chromium batches feedback every ~60 ms and a lost feedback
//! packet makes the next one carry twice as much, but neither changes the arrival spacing.

use std::collections::VecDeque;
use std::time::Duration;

/// Long enough to span a few video frames at low rates, short enough that a capacity drop shows
/// within about half a second (the decrease multiplies this reading, so its lag is the back-off's).
const WINDOW: Duration = Duration::from_millis(500);
/// Fewer arrivals than this span say more about frame boundaries than about the rate.
const MIN_SPAN: Duration = Duration::from_millis(150);
/// 20 Mbit/s of 1200-byte packets is ~1000 per window; the cap leaves room for smaller packets
/// and stops a storm of tiny ones from growing the buffer (the window then just gets shorter).
const MAX_PACKETS: usize = 4096;

#[derive(Debug, Clone, Default)]
pub(super) struct AckedBitrate {
    /// Arrivals after `boundary`, sorted by arrival time.
    arrivals: VecDeque<(Duration, u32)>,
    bytes: u64,
    /// The rate counts bytes that arrived in `(boundary, newest]`. The first packet after a reset
    /// only sets the boundary: its bytes were on the wire before the interval began.
    boundary: Option<Duration>,
    newest: Duration,
}

impl AckedBitrate {
    pub fn on_arrival(&mut self, arrival: Duration, size_bytes: u32) {
        let Some(boundary) = self.boundary else {
            self.boundary = Some(arrival);
            self.newest = arrival;
            return;
        };
        if arrival <= boundary {
            return;
        }
        // Arrivals are sorted so eviction can stop at the first young one. Reordering across
        // feedback is rare and shallow, so the search from the back is short.
        let at = self
            .arrivals
            .iter()
            .rposition(|&(a, _)| a <= arrival)
            .map_or(0, |i| i + 1);
        self.arrivals.insert(at, (arrival, size_bytes));
        self.bytes += u64::from(size_bytes);
        self.newest = self.newest.max(arrival);
        self.evict();
    }

    fn evict(&mut self) {
        let mut boundary = self.boundary.unwrap_or_default();
        if let Some(start) = self.newest.checked_sub(WINDOW) {
            boundary = boundary.max(start);
        }
        while let Some(&(arrival, size)) = self.arrivals.front() {
            if arrival > boundary && self.arrivals.len() <= MAX_PACKETS {
                break;
            }
            self.arrivals.pop_front();
            self.bytes -= u64::from(size);
            boundary = boundary.max(arrival);
        }
        self.boundary = Some(boundary);
    }

    /// Bits per second received over the last window; `None` until the arrivals span enough time.
    pub fn rate_bps(&self) -> Option<f64> {
        let span = self.newest.saturating_sub(self.boundary?);
        if span < MIN_SPAN {
            return None;
        }
        Some(self.bytes as f64 * 8.0 / span.as_secs_f64())
    }

    /// Forget everything: the remote clock jumped, or feedback went stale.
    pub fn reset(&mut self) {
        *self = AckedBitrate::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn steady_arrivals_read_their_rate() {
        let mut acked = AckedBitrate::default();
        // 1250 bytes every 10 ms = 1 Mbit/s.
        for i in 0..200 {
            acked.on_arrival(ms(7_000 + i * 10), 1250);
        }
        let rate = acked.rate_bps().unwrap();
        assert!((rate - 1_000_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn needs_a_minimum_span_and_ignores_the_first_packet() {
        let mut acked = AckedBitrate::default();
        for i in 0..15 {
            acked.on_arrival(ms(i * 10), 1250);
        }
        assert_eq!(acked.rate_bps(), None);
        acked.on_arrival(ms(150), 1250);
        // 15 packets after the first over 150 ms: exactly 1 Mbit/s.
        let rate = acked.rate_bps().unwrap();
        assert!((rate - 1_000_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn reordered_arrivals_count_once_and_stay_sorted() {
        let mut acked = AckedBitrate::default();
        acked.on_arrival(ms(0), 1000);
        for i in (1..=100).rev() {
            acked.on_arrival(ms(i * 5), 1000);
        }
        // 100 packets of 8000 bits over 500 ms.
        let rate = acked.rate_bps().unwrap();
        assert!((rate - 1_600_000.0).abs() < 1.0, "{rate}");
        assert!(
            acked
                .arrivals
                .iter()
                .zip(acked.arrivals.iter().skip(1))
                .all(|(a, b)| a.0 <= b.0)
        );
    }

    #[test]
    fn buffer_is_capped() {
        let mut acked = AckedBitrate::default();
        for i in 0..20_000u64 {
            acked.on_arrival(Duration::from_micros(i * 100), 100);
        }
        assert!(acked.arrivals.len() <= MAX_PACKETS);
        // 100 bytes per 100 us = 8 Mbit/s, still read correctly over the shorter window.
        let rate = acked.rate_bps().unwrap();
        assert!((rate - 8_000_000.0).abs() < 1.0, "{rate}");
    }
}
