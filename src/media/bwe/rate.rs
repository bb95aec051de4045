//! The estimate itself: additive/multiplicative increase, multiplicative decrease, driven by the
//! delay detector and limited by loss and by what the receiver acknowledged.

use std::time::{Duration, Instant};

use super::UsageState;
use super::loss::LossVerdict;

/// Overuse brings the estimate to this fraction of what the path delivered, which sits below
/// capacity so the queue the overuse built can drain.
const DECREASE_FACTOR: f64 = 0.85;
/// Far from any known limit the estimate grows 8 % per second.
const MULTIPLICATIVE_PER_SECOND: f64 = 1.08;
/// The estimate never climbs past this multiple of the acknowledged rate (plus
/// `CAP_HEADROOM_BPS`): it grows only from evidence, so a sender that sends little learns little.
/// This is what rtc's `Gcc` lacks, and why it reached 20 Mbit/s on loopback.
const ACKED_CAP_FACTOR: f64 = 1.5;
const CAP_HEADROOM_BPS: f64 = 10_000.0;
/// Near the level of the last decrease the estimate grows by about one packet per response time:
/// that level was the capacity a moment ago, so creep up on it instead of overshooting again.
const ADDITIVE_PACKET_BITS: f64 = 1200.0 * 8.0;
const ADDITIVE_MIN_BPS_PER_SECOND: f64 = 4_000.0;
const RESPONSE_TIME_EXTRA: Duration = Duration::from_millis(100);
/// The last decrease level stops being "near" once the path delivers this much more than it
/// (capacity grew), or once the estimate is this far under it (something else cut it, and
/// creeping back would take minutes).
const CAPACITY_GREW_FACTOR: f64 = 1.2;
const FAR_BELOW_CAPACITY_FACTOR: f64 = 0.5;
/// Longer gaps between feedback (a pause, a stall) do not turn into one big increase.
const MAX_INCREASE_STEP: Duration = Duration::from_millis(500);
/// A decrease needs a round trip to show in the feedback, and the acknowledged rate it cuts
/// relative to needs its whole window (500 ms) measured after it; deciding again before that
/// cuts twice for one queue, and behind a tail-dropping bottleneck (where the queue drains
/// slowly) each cut lowered what the subscriber was sent and so the next acknowledged rate:
/// measured behind a 300 kbit/s tbf, 100 ms apart, the estimate spiralled to 90 kbit/s and
/// paused video the link carried. Clamped because the RTT proxy includes the queue itself.
const DECREASE_INTERVAL_MIN: Duration = Duration::from_millis(600);
const DECREASE_INTERVAL_MAX: Duration = Duration::from_millis(900);

#[derive(Debug, Clone)]
pub(super) struct RateControl {
    estimate_bps: f64,
    min_bps: f64,
    max_bps: f64,
    last_update: Instant,
    last_decrease: Option<Instant>,
    /// The last time the estimate went down, for whatever reason.
    last_cut: Option<Instant>,
    /// What the path delivered when overuse was last detected.
    capacity_bps: Option<f64>,
}

/// Everything one feedback tells the rate controller.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateInput {
    pub usage: UsageState,
    pub acked_bps: Option<f64>,
    pub loss: LossVerdict,
    pub rtt: Duration,
}

impl RateControl {
    pub fn new(start_bps: f64, min_bps: f64, max_bps: f64, now: Instant) -> Self {
        RateControl {
            estimate_bps: start_bps.clamp(min_bps, max_bps),
            min_bps,
            max_bps,
            last_update: now,
            last_decrease: None,
            last_cut: None,
            capacity_bps: None,
        }
    }

    pub fn estimate_bps(&self) -> f64 {
        self.estimate_bps
    }

    pub fn last_cut(&self) -> Option<Instant> {
        self.last_cut
    }

    pub fn update(&mut self, now: Instant, input: RateInput) {
        let before = self.estimate_bps;
        let elapsed = now.saturating_duration_since(self.last_update);
        self.last_update = now;
        if let (Some(acked), Some(capacity)) = (input.acked_bps, self.capacity_bps)
            && acked > capacity * CAPACITY_GREW_FACTOR
        {
            self.capacity_bps = None;
        }
        match input.usage {
            UsageState::Overusing => self.decrease(now, input),
            // The queue is draining: growing now would refill it before the delay shows it.
            UsageState::Underusing => {}
            UsageState::Normal if input.loss == LossVerdict::Free => {
                self.increase(elapsed.min(MAX_INCREASE_STEP), input);
            }
            UsageState::Normal => {}
        }
        if let LossVerdict::Decrease(factor) = input.loss {
            // Never below what demonstrably gets through: a tail-dropping bottleneck loses a
            // large share of an overshoot, and cutting by half of it again and again would take
            // the estimate far under the path's capacity (measured behind a 400 kbit/s tbf:
            // 140 kbit/s, pausing video the link carried).
            let delivered = input.acked_bps.map_or(0.0, |acked| DECREASE_FACTOR * acked);
            self.estimate_bps = (self.estimate_bps * factor).max(delivered.min(self.estimate_bps));
        }
        self.clamp();
        if self.estimate_bps < before {
            self.last_cut = Some(now);
        }
    }

    fn decrease(&mut self, now: Instant, input: RateInput) {
        let interval = input
            .rtt
            .clamp(DECREASE_INTERVAL_MIN, DECREASE_INTERVAL_MAX);
        if self
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return;
        }
        self.last_decrease = Some(now);
        match input.acked_bps {
            // Relative to what got through, not to the estimate: after a capacity drop the
            // estimate can be many times the capacity, and 0.85 of it would still overuse.
            // Never upward: during a probe the delivered rate includes the padding.
            Some(acked) => {
                self.estimate_bps = self.estimate_bps.min(DECREASE_FACTOR * acked);
                self.capacity_bps = Some(acked);
            }
            None => self.estimate_bps *= DECREASE_FACTOR,
        }
    }

    fn increase(&mut self, elapsed: Duration, input: RateInput) {
        // No acknowledged rate, no evidence: hold.
        let Some(acked) = input.acked_bps else {
            return;
        };
        let near_capacity = self
            .capacity_bps
            .is_some_and(|c| self.estimate_bps > c * FAR_BELOW_CAPACITY_FACTOR);
        let increased = if near_capacity {
            let response = (input.rtt + RESPONSE_TIME_EXTRA).as_secs_f64();
            let per_second = (ADDITIVE_PACKET_BITS / response).max(ADDITIVE_MIN_BPS_PER_SECOND);
            self.estimate_bps + per_second * elapsed.as_secs_f64()
        } else {
            self.estimate_bps * MULTIPLICATIVE_PER_SECOND.powf(elapsed.as_secs_f64())
        };
        let cap = ACKED_CAP_FACTOR * acked + CAP_HEADROOM_BPS;
        // The cap stops growth; it does not pull the estimate down when the sender goes quiet
        // (a muted camera must not cost the subscriber its layer when it comes back).
        self.estimate_bps = increased.min(cap).max(self.estimate_bps);
    }

    /// A probe delivered more than the estimate: adopt it, and the old decrease level no longer
    /// describes the path.
    pub fn raise_to(&mut self, bps: f64) {
        if bps > self.estimate_bps {
            self.estimate_bps = bps;
            self.capacity_bps = None;
            self.clamp();
        }
    }

    /// A failed probe saturated the path and measured what it carries: sit where an overuse at
    /// that rate would put the estimate, if that is higher, and creep up from there.
    pub fn on_capacity_measured(&mut self, capacity_bps: f64) {
        let below = DECREASE_FACTOR * capacity_bps;
        if below > self.estimate_bps {
            self.estimate_bps = below;
            self.capacity_bps = Some(capacity_bps);
            self.clamp();
        }
    }

    fn clamp(&mut self) {
        self.estimate_bps = self.estimate_bps.clamp(self.min_bps, self.max_bps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(usage: UsageState, acked_bps: f64) -> RateInput {
        RateInput {
            usage,
            acked_bps: Some(acked_bps),
            loss: LossVerdict::Free,
            rtt: Duration::from_millis(100),
        }
    }

    #[test]
    fn increase_is_capped_by_acknowledged_rate() {
        let t0 = Instant::now();
        let mut rate = RateControl::new(500_000.0, 50_000.0, 20_000_000.0, t0);
        for i in 1..=600 {
            rate.update(
                t0 + Duration::from_millis(i * 100),
                input(UsageState::Normal, 400_000.0),
            );
        }
        assert_eq!(rate.estimate_bps(), 1.5 * 400_000.0 + CAP_HEADROOM_BPS);
    }

    #[test]
    fn overuse_cuts_to_delivered_rate_then_creeps() {
        let t0 = Instant::now();
        let mut rate = RateControl::new(2_000_000.0, 50_000.0, 20_000_000.0, t0);
        rate.update(t0, input(UsageState::Overusing, 1_000_000.0));
        assert_eq!(rate.estimate_bps(), 850_000.0);
        // One second of normal: ~one packet per 200 ms response time, not 8 %.
        for i in 1..=10 {
            rate.update(
                t0 + Duration::from_millis(i * 100),
                input(UsageState::Normal, 850_000.0),
            );
        }
        let grown = rate.estimate_bps() - 850_000.0;
        assert!((47_000.0..49_000.0).contains(&grown), "{grown}");
    }

    #[test]
    fn overuse_during_a_probe_never_raises() {
        let t0 = Instant::now();
        let mut rate = RateControl::new(1_000_000.0, 50_000.0, 20_000_000.0, t0);
        rate.update(t0, input(UsageState::Overusing, 3_000_000.0));
        assert_eq!(rate.estimate_bps(), 1_000_000.0);
    }

    #[test]
    fn a_measured_capacity_lifts_to_below_it() {
        let t0 = Instant::now();
        let mut rate = RateControl::new(1_000_000.0, 50_000.0, 20_000_000.0, t0);
        rate.on_capacity_measured(1_000_000.0);
        assert_eq!(rate.estimate_bps(), 1_000_000.0);
        rate.on_capacity_measured(2_000_000.0);
        assert_eq!(rate.estimate_bps(), 1_700_000.0);
        assert_eq!(rate.capacity_bps, Some(2_000_000.0));
    }

    #[test]
    fn loss_decrease_and_bounds() {
        let t0 = Instant::now();
        let mut rate = RateControl::new(100_000.0, 50_000.0, 20_000_000.0, t0);
        let lossy = RateInput {
            loss: LossVerdict::Decrease(0.5),
            ..input(UsageState::Normal, 40_000.0)
        };
        rate.update(t0, lossy);
        assert_eq!(rate.estimate_bps(), 50_000.0);
        rate.update(t0, lossy);
        assert_eq!(rate.estimate_bps(), 50_000.0);
        // A loss cut stops at 85 % of what got through.
        let mut rate = RateControl::new(1_000_000.0, 50_000.0, 20_000_000.0, t0);
        let tail_drop = RateInput {
            loss: LossVerdict::Decrease(0.6),
            ..input(UsageState::Normal, 400_000.0)
        };
        rate.update(t0, tail_drop);
        assert_eq!(rate.estimate_bps(), 600_000.0);
        rate.update(t0, tail_drop);
        assert_eq!(rate.estimate_bps(), 360_000.0);
        rate.raise_to(1e12);
        assert_eq!(rate.estimate_bps(), 20_000_000.0);
    }
}
