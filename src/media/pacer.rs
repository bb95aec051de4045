//! When each packet toward one subscriber may leave: a leaky bucket at a multiple of the
//! subscriber's estimated downlink.
//!
//! A forwarded video frame arrives at the relay as a burst (a 720p frame is 5-8 packets, a
//! keyframe dozens) and, sent as it came, reaches the subscriber's bottleneck as one. The queue
//! it builds there is read by the delay-based estimator as congestion, and a layer switch up
//! (its keyframe, its larger frames) then reads as overuse and switches back down: measured in
//! `tests/sim_bandwidth.rs`, an unpaced subscriber on 2.5 Mbit/s flapped between 640x360 and
//! 1280x720 every 1.5 s. Spreading each subscriber's packets at a little above its estimate
//! keeps that queue in the relay, where it is bounded, and out of the network. Audio is never
//! held (the caller sends it at once) but it takes its share of the bucket.

use std::time::{Duration, Instant};

/// Packets leave at this multiple of the estimate: a little above it, so the estimate can still
/// grow; not far above, or a keyframe reaches the bottleneck as a burst (at 150 % the
/// simulation still flapped: every switch up read as overuse).
pub const PACING_FACTOR_PERCENT: u64 = 110;
/// Never slower than this, whatever the estimate (a collapsed estimate must not hold a keyframe
/// for seconds). Low: a floor above a narrow link's rate overfills it at every keyframe (at
/// 300 kbit/s behind a 300 kbit/s tbf, the lowest layer froze again and again).
pub const MIN_PACING_BPS: u64 = 100_000;
/// Credit that idle time leaves: a short burst goes out at once.
const MAX_BURST: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
pub struct Pacer {
    rate_bps: u64,
    /// When the bucket has drained everything scheduled so far.
    next_free: Option<Instant>,
}

/// The rate of a pacer that holds nothing back (a subscriber not estimated).
pub const UNPACED_BPS: u64 = u64::MAX / 8_000_000_000;

impl Default for Pacer {
    /// Unpaced until a rate is set.
    fn default() -> Self {
        Pacer {
            rate_bps: UNPACED_BPS,
            next_free: None,
        }
    }
}

impl Pacer {
    /// The rate for a subscriber with this estimate, probing at `probe_bps` if it is (a probe
    /// must leave at its own rate to measure anything).
    pub fn rate_for(estimate_bps: u64, probe_bps: Option<u64>) -> u64 {
        (estimate_bps * PACING_FACTOR_PERCENT / 100)
            .max(probe_bps.unwrap_or(0))
            .max(MIN_PACING_BPS)
    }

    pub fn set_rate(&mut self, bps: u64) {
        self.rate_bps = bps.max(1);
    }

    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Books `bytes` into the bucket and returns when they may leave (at or after `now`).
    pub fn schedule(&mut self, now: Instant, bytes: u32) -> Instant {
        let idle_credit = now.checked_sub(MAX_BURST).unwrap_or(now);
        let start = self.next_free.map_or(idle_credit, |t| t.max(idle_credit));
        let serialise =
            Duration::from_nanos(u64::from(bytes) * 8 * 1_000_000_000 / self.rate_bps.max(1));
        self.next_free = Some(start + serialise);
        start.max(now)
    }

    /// How long what is booked takes to drain from `now`.
    pub fn backlog(&self, now: Instant) -> Duration {
        self.next_free
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_spread_at_the_pacing_rate_after_a_little_credit() {
        let now = Instant::now() + Duration::from_secs(1);
        let mut pacer = Pacer::default();
        pacer.set_rate(1_500_000); // 1,250 bytes every 6.67 ms
        let departures: Vec<Duration> = (0..6).map(|_| pacer.schedule(now, 1_250) - now).collect();
        // The first packet uses 5 ms of idle credit: the second leaves 1.67 ms later, not 6.67.
        assert_eq!(departures[0], Duration::ZERO);
        assert_eq!(departures[1], Duration::from_nanos(1_666_666));
        assert!(
            departures[5] > Duration::from_millis(28) && departures[5] < Duration::from_millis(29)
        );
        assert!(pacer.backlog(now) > Duration::from_millis(34));
    }

    #[test]
    fn idle_time_does_not_bank_more_than_a_short_burst() {
        let start = Instant::now();
        let mut pacer = Pacer::default();
        pacer.set_rate(1_500_000);
        pacer.schedule(start, 1_250);
        let later = start + Duration::from_secs(10);
        for _ in 0..3 {
            pacer.schedule(later, 1_250);
        }
        assert!(pacer.schedule(later, 1_250) > later + Duration::from_millis(14));
    }

    #[test]
    fn the_rate_follows_the_estimate_a_probe_and_a_floor() {
        assert_eq!(Pacer::rate_for(1_000_000, None), 1_100_000);
        assert_eq!(Pacer::rate_for(1_000_000, Some(2_000_000)), 2_000_000);
        assert_eq!(Pacer::rate_for(10_000, None), MIN_PACING_BPS);
    }
}
