//! Is the path's queue growing? The slope of the one-way delay over the last bursts, compared
//! with a threshold that adapts to how noisy that slope usually is.
//!
//! This is the delay half of Google Congestion Control as described in
//! draft-ietf-rmcat-gcc-02 section 5 and in the trendline variant browsers run: the delay
//! variations of consecutive bursts are summed into the queueing delay built up since the start,
//! smoothed, and a least-squares line through the recent points gives the rate at which the queue
//! grows. A positive slope means the sender exceeds capacity; a negative one means a queue drains.

use std::collections::VecDeque;

use super::UsageState;
use super::groups::GroupDelta;

/// Bursts in the regression. At 30 frames/s that is ~0.7 s of history: long enough to average
/// out one frame's jitter, short enough to see a new queue within a few hundred ms.
const WINDOW: usize = 20;
/// Exponential smoothing of the accumulated delay before the regression.
const SMOOTHING: f64 = 0.9;
/// The slope is scaled by the number of deltas seen (up to this) times `GAIN`, so the threshold
/// can be expressed in ms; early slopes, from few samples, weigh less.
const MAX_DELTAS: f64 = 60.0;
const GAIN: f64 = 4.0;
/// The threshold starts here and stays within these bounds (ms, scaled as above). 12.5 means a
/// queue growing ~50 ms per second: sending ~5 % above capacity.
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
/// The threshold follows |signal| up slowly and down faster, so it rises above the jitter of a
/// noisy path (and of competing TCP) but comes back quickly once the path calms. Per ms.
const THRESHOLD_UP: f64 = 0.0087;
const THRESHOLD_DOWN: f64 = 0.039;
/// A spike this far above the threshold is congestion or a glitch, not noise to adapt to.
const THRESHOLD_SPIKE: f64 = 15.0;
/// Time steps longer than this (a pause in sending) do not move the threshold further.
const THRESHOLD_MAX_STEP_MS: f64 = 100.0;
/// Overuse counts only after the signal stayed over the threshold this long and for more than
/// one burst, so a single late frame does not cut the rate.
const OVERUSE_MIN_MS: f64 = 10.0;

#[derive(Debug, Clone)]
pub(super) struct Trendline {
    /// (arrival ms since the first burst, smoothed accumulated delay ms)
    points: VecDeque<(f64, f64)>,
    first_arrival_ms: Option<f64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    deltas: u32,
    threshold: f64,
    last_threshold_update_ms: Option<f64>,
    previous_slope: f64,
    /// How long the signal has been over the threshold, `None` while it is not.
    overuse_ms: Option<f64>,
    overuse_bursts: u32,
    state: UsageState,
}

impl Default for Trendline {
    fn default() -> Self {
        Trendline {
            points: VecDeque::with_capacity(WINDOW),
            first_arrival_ms: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            deltas: 0,
            threshold: THRESHOLD_START,
            last_threshold_update_ms: None,
            previous_slope: 0.0,
            overuse_ms: None,
            overuse_bursts: 0,
            state: UsageState::Normal,
        }
    }
}

impl Trendline {
    pub fn state(&self) -> UsageState {
        self.state
    }

    pub fn update(&mut self, delta: GroupDelta) -> UsageState {
        let variation = delta.arrival_delta_ms - delta.departure_delta_ms;
        self.deltas = self.deltas.saturating_add(1);
        self.accumulated_ms += variation;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let first = *self.first_arrival_ms.get_or_insert(delta.arrival_ms);
        if self.points.len() == WINDOW {
            self.points.pop_front();
        }
        self.points
            .push_back((delta.arrival_ms - first, self.smoothed_ms));
        if self.points.len() < WINDOW {
            return self.state;
        }
        let Some(slope) = slope(&self.points) else {
            return self.state;
        };
        let signal = slope * f64::from(self.deltas).min(MAX_DELTAS) * GAIN;
        self.detect(signal, slope, delta.departure_delta_ms);
        self.adapt_threshold(signal, delta.arrival_ms);
        self.previous_slope = slope;
        self.state
    }

    fn detect(&mut self, signal: f64, slope: f64, departure_delta_ms: f64) {
        if signal > self.threshold {
            // The first burst over the line counts half its spacing: it crossed somewhere in it.
            let over = match self.overuse_ms {
                None => departure_delta_ms / 2.0,
                Some(ms) => ms + departure_delta_ms,
            };
            self.overuse_bursts += 1;
            // A slope that is already falling means the sender has reacted: not a new overuse.
            if over > OVERUSE_MIN_MS && self.overuse_bursts > 1 && slope >= self.previous_slope {
                self.state = UsageState::Overusing;
                self.overuse_ms = Some(0.0);
                self.overuse_bursts = 0;
            } else {
                self.overuse_ms = Some(over);
            }
        } else {
            self.overuse_ms = None;
            self.overuse_bursts = 0;
            self.state = if signal < -self.threshold {
                UsageState::Underusing
            } else {
                UsageState::Normal
            };
        }
    }

    fn adapt_threshold(&mut self, signal: f64, arrival_ms: f64) {
        let last = self.last_threshold_update_ms.replace(arrival_ms);
        if signal.abs() > self.threshold + THRESHOLD_SPIKE {
            return;
        }
        let step_ms = last.map_or(0.0, |last| {
            (arrival_ms - last).clamp(0.0, THRESHOLD_MAX_STEP_MS)
        });
        let k = if signal.abs() < self.threshold {
            THRESHOLD_DOWN
        } else {
            THRESHOLD_UP
        };
        self.threshold += k * (signal.abs() - self.threshold) * step_ms;
        self.threshold = self.threshold.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }

    pub fn reset(&mut self) {
        *self = Trendline::default();
    }
}

/// Least-squares slope of y over x; `None` when all x are equal.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for &(x, y) in points {
        num += (x - mean_x) * (y - mean_y);
        den += (x - mean_x) * (x - mean_x);
    }
    let slope = num / den;
    slope.is_finite().then_some(slope)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bursts every 33 ms whose delay grows by `growth_ms` each.
    fn feed(trend: &mut Trendline, bursts: u32, growth_ms: f64, start_ms: f64) -> UsageState {
        let mut state = trend.state();
        for i in 0..bursts {
            state = trend.update(GroupDelta {
                departure_delta_ms: 33.0,
                arrival_delta_ms: 33.0 + growth_ms,
                arrival_ms: start_ms + f64::from(i) * (33.0 + growth_ms),
            });
        }
        state
    }

    #[test]
    fn flat_delay_is_normal() {
        let mut trend = Trendline::default();
        assert_eq!(feed(&mut trend, 100, 0.0, 0.0), UsageState::Normal);
    }

    #[test]
    fn growing_queue_is_overuse_and_draining_is_underuse() {
        let mut trend = Trendline::default();
        feed(&mut trend, 40, 0.0, 0.0);
        // 3 ms more delay per 33 ms burst: a queue growing ~90 ms/s.
        assert_eq!(feed(&mut trend, 15, 3.0, 1320.0), UsageState::Overusing);
        assert_eq!(feed(&mut trend, 30, -3.0, 1900.0), UsageState::Underusing);
    }

    /// Steady bursts, then `late` bursts each arriving `extra_ms` later than the one before,
    /// then one that catches up (the queue empties at once, as after a radio stall), then steady
    /// again. Returns how many updates said Overusing.
    fn stall(late: usize, extra_ms: f64) -> usize {
        let mut trend = Trendline::default();
        feed(&mut trend, 40, 0.0, 0.0);
        let extras = std::iter::repeat_n(extra_ms, late)
            .chain([-extra_ms * late as f64])
            .chain(std::iter::repeat_n(0.0, 30));
        let mut arrival_ms = 1320.0;
        extras
            .map(|extra| {
                arrival_ms += 33.0 + extra;
                trend.update(GroupDelta {
                    departure_delta_ms: 33.0,
                    arrival_delta_ms: 33.0 + extra,
                    arrival_ms,
                })
            })
            .filter(|state| *state == UsageState::Overusing)
            .count()
    }

    #[test]
    fn a_short_stall_is_not_overuse_a_growing_queue_is() {
        assert_eq!(stall(1, 40.0), 0);
        assert_eq!(stall(2, 20.0), 0);
        assert!(stall(6, 20.0) > 0);
    }

    #[test]
    fn overuse_must_last_ten_ms_and_two_bursts() {
        let mut trend = Trendline::default();
        for _ in 0..2 {
            trend.detect(20.0, 0.1, 5.0);
            assert_eq!(trend.state, UsageState::Normal);
        }
        trend.detect(20.0, 0.1, 5.0);
        assert_eq!(trend.state, UsageState::Overusing);

        let mut trend = Trendline::default();
        trend.detect(20.0, 0.1, 33.0);
        assert_eq!(trend.state, UsageState::Normal);
        trend.detect(20.0, 0.1, 33.0);
        assert_eq!(trend.state, UsageState::Overusing);

        // A slope already falling is the sender's reaction, not more overuse.
        let mut trend = Trendline::default();
        trend.detect(20.0, 0.1, 33.0);
        trend.previous_slope = 0.1;
        trend.detect(20.0, 0.05, 33.0);
        assert_eq!(trend.state, UsageState::Normal);
    }

    #[test]
    fn slope_of_vertical_points_is_none() {
        let points: VecDeque<_> = [(1.0, 1.0), (1.0, 2.0)].into_iter().collect();
        assert_eq!(slope(&points), None);
        let points: VecDeque<_> = [(0.0, 1.0), (2.0, 2.0)].into_iter().collect();
        assert_eq!(slope(&points), Some(0.5));
    }
}
