//! Loss over the last second of feedback, and what it allows the rate to do.
//!
//! The loss half of GCC (draft-ietf-rmcat-gcc-02 section 6): a few percent of loss is normal on
//! wireless paths and says nothing about capacity, so between 2 % and 10 % the rate is only held;
//! above 10 % the path is dropping what we send (a shallow buffer overflowing, or a link that
//! is going bad without a queue to show it) and the rate comes down in proportion.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);
/// Feedback entries kept; Chromium sends ~16 a second. More than this in a second only shortens
/// the window.
const MAX_ENTRIES: usize = 64;
/// Fewer packets than this say nothing: one loss in five packets is not 20 % loss.
const MIN_PACKETS: u32 = 20;
const DECREASE_ABOVE: f64 = 0.10;
const HOLD_ABOVE: f64 = 0.02;
/// Decreases at most this often (a floor: each also waits for `MIN_PACKETS` sent after the
/// previous cut to be reported, so one loss event never cuts the rate twice).
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);

/// What the loss allows the rate to do now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum LossVerdict {
    /// Under 2 %: loss sets no limit.
    Free,
    /// 2-10 %: no increase.
    Hold,
    /// Over 10 %: multiply the rate by this (1 - loss / 2).
    Decrease(f64),
}

/// Packets one feedback reported on. `fresh` ones left after the estimate was last cut: only
/// they can say whether the cut was enough. (After a capacity drop the feedback reports, for a
/// round trip and a full queue, the tail drops of packets sent at the old rate; cutting again
/// for each of them would take the rate far below capacity.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct LossCounts {
    pub reported: u32,
    pub lost: u32,
    pub fresh_reported: u32,
    pub fresh_lost: u32,
}

impl LossCounts {
    pub fn add(&mut self, lost: bool, fresh: bool) {
        self.reported = self.reported.saturating_add(1);
        self.lost = self.lost.saturating_add(u32::from(lost));
        if fresh {
            self.fresh_reported = self.fresh_reported.saturating_add(1);
            self.fresh_lost = self.fresh_lost.saturating_add(u32::from(lost));
        }
    }

    fn merge(self, other: LossCounts) -> LossCounts {
        LossCounts {
            reported: self.reported.saturating_add(other.reported),
            lost: self.lost.saturating_add(other.lost),
            fresh_reported: self.fresh_reported.saturating_add(other.fresh_reported),
            fresh_lost: self.fresh_lost.saturating_add(other.fresh_lost),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct LossTracker {
    entries: VecDeque<(Instant, LossCounts)>,
    last_decrease: Option<Instant>,
}

impl LossTracker {
    pub fn on_feedback(&mut self, now: Instant, counts: LossCounts) {
        if self.entries.len() == MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back((now, counts));
        while let Some(&(at, _)) = self.entries.front() {
            if now.saturating_duration_since(at) <= WINDOW {
                break;
            }
            self.entries.pop_front();
        }
    }

    /// The estimate was cut: the packets reported so far were all sent before it.
    pub fn on_cut(&mut self) {
        for (_, counts) in &mut self.entries {
            counts.fresh_reported = 0;
            counts.fresh_lost = 0;
        }
    }

    /// Lost over reported in the window; 0 when nothing was reported.
    pub fn fraction(&self) -> f64 {
        let totals = self.totals();
        ratio(totals.lost, totals.reported)
    }

    pub fn verdict(&mut self, now: Instant) -> LossVerdict {
        let totals = self.totals();
        let may_decrease = self
            .last_decrease
            .is_none_or(|at| now.saturating_duration_since(at) >= DECREASE_INTERVAL);
        let fresh = ratio(totals.fresh_lost, totals.fresh_reported);
        if may_decrease && totals.fresh_reported >= MIN_PACKETS && fresh > DECREASE_ABOVE {
            self.last_decrease = Some(now);
            return LossVerdict::Decrease(1.0 - 0.5 * fresh);
        }
        if totals.reported >= MIN_PACKETS && self.fraction() > HOLD_ABOVE {
            LossVerdict::Hold
        } else {
            LossVerdict::Free
        }
    }

    fn totals(&self) -> LossCounts {
        self.entries
            .iter()
            .fold(LossCounts::default(), |sum, (_, counts)| sum.merge(*counts))
    }

    pub fn reset(&mut self) {
        *self = LossTracker::default();
    }
}

fn ratio(lost: u32, reported: u32) -> f64 {
    if reported == 0 {
        0.0
    } else {
        f64::from(lost) / f64::from(reported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(reported: u32, lost: u32) -> LossCounts {
        LossCounts {
            reported,
            lost,
            fresh_reported: reported,
            fresh_lost: lost,
        }
    }

    #[test]
    fn verdict_by_loss_level() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut loss = LossTracker::default();
        loss.on_feedback(at(0), counts(100, 1));
        assert_eq!(loss.verdict(at(0)), LossVerdict::Free);
        loss.on_feedback(at(100), counts(100, 9));
        assert_eq!(loss.verdict(at(100)), LossVerdict::Hold);
        assert_eq!(loss.fraction(), 0.05);
        loss.on_feedback(at(200), counts(100, 50));
        assert_eq!(
            loss.verdict(at(200)),
            LossVerdict::Decrease(1.0 - 0.5 * 0.2)
        );
    }

    #[test]
    fn losses_from_before_a_cut_do_not_cut_again() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut loss = LossTracker::default();
        loss.on_feedback(at(0), counts(100, 30));
        assert!(matches!(loss.verdict(at(0)), LossVerdict::Decrease(_)));
        loss.on_cut();
        // A round trip of packets sent before the cut, still lossy: they hold, not cut.
        for i in 1..=5 {
            let stale = LossCounts {
                reported: 20,
                lost: 6,
                ..LossCounts::default()
            };
            loss.on_feedback(at(i * 100), stale);
            assert_eq!(loss.verdict(at(i * 100)), LossVerdict::Hold);
        }
        // Then packets sent after it, clean; a second later the window has forgotten the loss.
        for i in 6..=16 {
            loss.on_feedback(at(i * 100), counts(20, 0));
        }
        assert_eq!(loss.verdict(at(1600)), LossVerdict::Free);
    }

    #[test]
    fn too_few_packets_say_nothing() {
        let t0 = Instant::now();
        let mut loss = LossTracker::default();
        loss.on_feedback(t0, counts(5, 3));
        assert_eq!(loss.verdict(t0), LossVerdict::Free);
        assert_eq!(loss.fraction(), 0.6);
    }
}
