//! Send-side bandwidth estimation for one subscriber's downlink, from transport-cc feedback.
//!
//! The minimum of Google Congestion Control (draft-ietf-rmcat-gcc-02) that an SFU needs, with
//! the probing rtc 0.21 lacks:
//! - `acked`: the rate the receiver got, on its own clock;
//! - `groups` + `trendline`: whether the path's queue grows (overuse), holds or drains;
//! - `rate`: AIMD on those verdicts; increases never run ahead of 1.5x the acknowledged rate;
//! - `loss`: over 10 % loss cuts the rate, 2-10 % holds it;
//! - `probe`: the caller asks whether a higher rate fits, the shell pads, the feedback answers.
//!
//! Pure and clock-free like the rest of `media`: every input carries its time, `poll_timeout`
//! says when to call `handle_timeout`, and a simulated link in the tests runs minutes of a call
//! in milliseconds.

mod acked;
mod groups;
mod loss;
mod probe;
mod rate;
mod trendline;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use acked::AckedBitrate;
use groups::{BurstGrouper, signed_ms};
use loss::{LossCounts, LossTracker};
use probe::ProbeController;
pub use probe::{Probe, ProbeOutcome, ProbeVerdict};
use rate::{RateControl, RateInput};
use trendline::Trendline;

/// Arrival and departure spacing that disagree by more than this are not a queue: the remote
/// clock jumped (a wrap of TWCC's 24-bit reference time, a restarted receiver).
const CLOCK_JUMP: Duration = Duration::from_secs(3);
/// No probe this soon after the estimate was cut.
const PROBE_AFTER_CUT: Duration = Duration::from_secs(2);
/// ...nor while more than this share of recent packets was lost.
const PROBE_MAX_LOSS: f64 = 0.02;
/// No feedback for this long: what the receiver's clock told us is out of date.
const FEEDBACK_STALE: Duration = Duration::from_secs(2);
/// A report up to this many sequence numbers behind the newest is a repeat; further behind, the
/// numbering restarted (or the newest was garbage), and refusing everything after it would blind
/// the estimator for good.
const REPEAT_WINDOW: u64 = 1 << 16;
/// Smoothing of the feedback round trip (as TCP's SRTT).
const RTT_SMOOTHING: f64 = 0.125;
const RTT_START: Duration = Duration::from_millis(100);

/// One packet the remote reported on, in send order (the shell builds these from rtc's
/// `PacketReport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketFeedback {
    /// Increases by one per packet sent (rtc's `PacketReport::id`). Reports at or a little below
    /// the highest seen are repeats, or feedback that arrived out of order, and are ignored. rtc
    /// reports each packet once in send order, so this only guards against a misbehaving shell;
    /// without it a repeated report would count its bytes twice.
    pub seq: u64,
    /// When it left (the release instant, not when it was queued).
    pub departure: Instant,
    /// When it arrived, on the remote's clock; `None` when reported lost.
    pub arrival: Option<Duration>,
    pub size_bytes: u32,
    /// Sent while a probe ran. Mark every packet sent then, media and padding alike: the probe
    /// measures the total rate.
    pub probe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimatorConfig {
    pub start_bps: u64,
    pub min_bps: u64,
    pub max_bps: u64,
}

impl Default for EstimatorConfig {
    /// 1 Mbit/s to start: enough for the middle simulcast layer (640x360, ~500 kbit/s) plus audio,
    /// which most downlinks carry, so a join does not open on the thumbnail layer. A wrong guess
    /// costs about a second (1.3 s on a simulated 500 kbit/s link) before the delay half cuts it.
    /// Higher layers must be proven by a probe. 50 kbit/s keeps audio and the lowest layer alive
    /// through any cut; 20 Mbit/s is more than any simulcast set needs.
    fn default() -> Self {
        EstimatorConfig {
            start_bps: 1_000_000,
            min_bps: 50_000,
            max_bps: 20_000_000,
        }
    }
}

/// What the delay detector says the path's queue is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageState {
    /// Flat delay: the rate may grow.
    #[default]
    Normal,
    /// The queue grows: we send more than the path carries.
    Overusing,
    /// The queue drains: hold the rate until it is empty.
    Underusing,
}

impl UsageState {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageState::Normal => "normal",
            UsageState::Overusing => "overusing",
            UsageState::Underusing => "underusing",
        }
    }
}

/// The bandwidth estimate for one subscribe leg.
///
/// Inputs: `on_feedback`, `start_probe`, `handle_timeout`. Outputs: `estimate_bps` for the
/// allocator, `probe_target_bps` for the shell's padding, `poll_timeout`. The rest are getters
/// for logs and metrics.
#[derive(Debug, Clone)]
pub struct SendSideEstimator {
    config: EstimatorConfig,
    acked: AckedBitrate,
    bursts: BurstGrouper,
    trendline: Trendline,
    loss: LossTracker,
    rate: RateControl,
    probes: ProbeController,
    newest_seq: Option<u64>,
    newest_departure: Option<Instant>,
    last_arrived: Option<(Instant, Duration)>,
    rtt: Option<Duration>,
    last_feedback: Option<Instant>,
}

impl SendSideEstimator {
    pub fn new(config: EstimatorConfig, now: Instant) -> Self {
        let min_bps = config.min_bps.max(1);
        let max_bps = config.max_bps.max(min_bps);
        let config = EstimatorConfig {
            start_bps: config.start_bps.clamp(min_bps, max_bps),
            min_bps,
            max_bps,
        };
        SendSideEstimator {
            config,
            acked: AckedBitrate::default(),
            bursts: BurstGrouper::default(),
            trendline: Trendline::default(),
            loss: LossTracker::default(),
            rate: RateControl::new(config.start_bps as f64, min_bps as f64, max_bps as f64, now),
            probes: ProbeController::default(),
            newest_seq: None,
            newest_departure: None,
            last_arrived: None,
            rtt: None,
            last_feedback: None,
        }
    }

    /// One transport-cc feedback's worth of reports, in send order.
    pub fn on_feedback(&mut self, now: Instant, reports: &[PacketFeedback]) {
        let mut counts = LossCounts::default();
        let mut overuse = false;
        let last_cut = self.rate.last_cut();
        for report in reports {
            let repeat = self
                .newest_seq
                .is_some_and(|newest| report.seq <= newest && newest - report.seq < REPEAT_WINDOW);
            if repeat {
                continue;
            }
            self.newest_seq = Some(report.seq);
            self.newest_departure = Some(
                self.newest_departure
                    .map_or(report.departure, |d| d.max(report.departure)),
            );
            let fresh = last_cut.is_none_or(|cut| report.departure > cut);
            counts.add(report.arrival.is_none(), fresh);
            self.probes.on_packet(report);
            if let Some(arrival) = report.arrival {
                overuse |= self.on_arrival(report.departure, arrival, report.size_bytes)
                    == UsageState::Overusing;
            }
        }
        let Some(newest) = self.newest_departure.filter(|_| counts.reported > 0) else {
            return;
        };
        self.last_feedback = Some(now);
        self.update_rtt(now.saturating_duration_since(newest));
        self.loss.on_feedback(now, counts);
        let acked_bps = self.acked.rate_bps();
        let usage = if overuse {
            UsageState::Overusing
        } else {
            self.trendline.state()
        };
        let input = RateInput {
            usage,
            acked_bps,
            loss: self.loss.verdict(now),
            rtt: self.rtt.unwrap_or(RTT_START),
        };
        self.rate.update(now, input);
        if self.rate.last_cut() != last_cut {
            self.loss.on_cut();
        }
        if let Some(acked) = acked_bps {
            self.probes.on_acked(acked);
        }
        if let Some(outcome) = self.probes.on_feedback(now, overuse) {
            self.adopt(&outcome);
        }
    }

    /// Feeds the receive-clock side; returns the delay detector's state after this packet.
    fn on_arrival(&mut self, departure: Instant, arrival: Duration, size_bytes: u32) -> UsageState {
        if let Some((last_departure, last_arrival)) = self.last_arrived {
            let departure_ms = departure
                .saturating_duration_since(last_departure)
                .as_secs_f64()
                * 1000.0;
            let skew_ms = signed_ms(arrival, last_arrival) - departure_ms;
            if skew_ms.abs() > CLOCK_JUMP.as_secs_f64() * 1000.0 {
                self.forget_remote_clock();
            }
        }
        self.last_arrived = Some((departure, arrival));
        self.acked.on_arrival(arrival, size_bytes);
        match self.bursts.push(departure, arrival) {
            Some(delta) => self.trendline.update(delta),
            None => self.trendline.state(),
        }
    }

    fn forget_remote_clock(&mut self) {
        self.probes.forget_arrivals();
        self.acked.reset();
        self.bursts.reset();
        self.trendline.reset();
        self.last_arrived = None;
    }

    fn update_rtt(&mut self, sample: Duration) {
        let sample = sample.min(Duration::from_secs(10));
        self.rtt = Some(match self.rtt {
            None => sample,
            Some(rtt) => rtt.mul_f64(1.0 - RTT_SMOOTHING) + sample.mul_f64(RTT_SMOOTHING),
        });
    }

    fn adopt(&mut self, outcome: &ProbeOutcome) {
        if let Some(bps) = ProbeController::adopted_bps(outcome) {
            self.rate.raise_to(bps);
        } else if let Some(delivered) = outcome.delivered_bps {
            // A failed probe still measured a rate the path carried (when it overshot, the rate
            // it carries when full): never a reason to stay below most of it.
            self.rate.on_capacity_measured(delivered as f64);
        }
    }

    /// The caller wants to know whether `target_bps` fits. The shell then sends padding so that
    /// its total rate reaches the returned probe's `target_bps` until its `until`, marking the
    /// packets `probe: true`. The target is limited to twice the estimate (ask again after a
    /// success to climb further) and to `max_bps`.
    ///
    /// `None` when a probe is running, during the backoff after a failed one, while the path is
    /// overusing, or when the estimate already covers `target_bps`.
    pub fn start_probe(&mut self, now: Instant, target_bps: u64) -> Option<Probe> {
        if self.trendline.state() == UsageState::Overusing {
            return None;
        }
        // Right after congestion the queue is still draining and losses are still arriving: a
        // probe then overfills the path and costs another cut (measured behind a 300 kbit/s
        // tbf: a probe 0.6 s after the cut turned the lowest layer into a pause).
        let recently_cut = self
            .rate
            .last_cut()
            .is_some_and(|at| now.saturating_duration_since(at) < PROBE_AFTER_CUT);
        if recently_cut || self.loss.fraction() > PROBE_MAX_LOSS {
            return None;
        }
        self.probes.start(
            now,
            target_bps,
            self.rate.estimate_bps(),
            self.config.max_bps as f64,
        )
    }

    /// The probe that has not concluded yet (padding may be over; see `probe_target_bps`).
    pub fn probe(&self) -> Option<Probe> {
        self.probes.running()
    }

    /// The total rate the shell should send at now for the running probe, if any.
    pub fn probe_target_bps(&self, now: Instant) -> Option<u64> {
        self.probes.padding_target_bps(now)
    }

    pub fn last_probe_outcome(&self) -> Option<ProbeOutcome> {
        self.probes.last_outcome()
    }

    /// Ends a probe's padding, concludes a probe whose feedback never came, and forgets
    /// receive-side measurements once feedback has stopped.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(outcome) = self.probes.handle_timeout(now) {
            self.adopt(&outcome);
        }
        if let Some(stale_at) = self.stale_at()
            && now >= stale_at
        {
            // The next feedback starts fresh: no rate computed across the silence, no cap from
            // a rate that no longer flows, no delay trend spanning it.
            self.forget_remote_clock();
            self.loss.reset();
            self.last_feedback = None;
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.probes.poll_timeout(), self.stale_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn stale_at(&self) -> Option<Instant> {
        self.last_feedback?.checked_add(FEEDBACK_STALE)
    }

    pub fn estimate_bps(&self) -> u64 {
        self.rate.estimate_bps().round() as u64
    }

    /// The rate the receiver got over the last half second, measured from feedback.
    pub fn acknowledged_bps(&self) -> Option<u64> {
        self.acked.rate_bps().map(|bps| bps.round() as u64)
    }

    /// Lost over reported in the last second of feedback.
    pub fn loss_fraction(&self) -> f64 {
        self.loss.fraction()
    }

    pub fn state(&self) -> UsageState {
        self.trendline.state()
    }

    /// The smoothed time from a packet's departure to the feedback reporting it.
    pub fn feedback_rtt(&self) -> Option<Duration> {
        self.rtt
    }
}
