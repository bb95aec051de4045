//! Probing: the only way to learn that the path carries more than we send.
//!
//! The estimate may not grow past 1.5x what was acknowledged, so a subscriber receiving the
//! low layer would never earn the high one. Before an up-switch the caller asks for a probe: the
//! shell pads its output up to the probe's rate for `PROBE_DURATION`, and the feedback on those
//! packets says whether the path delivered that rate. Delivered rate is measured on both ends
//! (bytes over the send interval and over the receive interval, the smaller wins), so a probe
//! that left in a burst cannot look faster than the bottleneck let it arrive.

use std::time::{Duration, Instant};

use super::PacketFeedback;
use super::groups::signed_ms;

/// Long enough for ~60 bursts of padding, enough for the delay detector to see a queue start;
/// short enough that a failed probe adds at most a fraction of a second of queue.
const PROBE_DURATION: Duration = Duration::from_millis(300);
/// A probe whose feedback does not arrive within this after it ended has failed.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(1);
/// The least evidence a delivered rate is computed from.
const MIN_PACKETS: u32 = 5;
const MIN_ARRIVAL_SPAN: Duration = Duration::from_millis(20);
/// Delivered at least this fraction of the target: the target fits.
const SUCCESS_FRACTION: f64 = 0.9;
/// A successful probe sets the estimate to this fraction of what it delivered, leaving room
/// for the measurement's own error.
const ADOPT_FRACTION: f64 = 0.95;
/// A probe asks at most this multiple of the estimate: a probe far above capacity fills the
/// queue for its whole length before its feedback can stop it. Larger targets are reached in
/// steps, each success allowing the next probe at once.
const MAX_STEP: f64 = 2.0;
/// After a failure the next probe waits this long, doubling up to the maximum.
const BACKOFF_START: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A failure is forgotten once the path delivers this much more than the failed probe got
/// through: the path has changed and the backoff would only delay finding out how much.
const FAILURE_STALE_FACTOR: f64 = 1.1;

/// A probe the shell should be padding for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The total rate (media plus padding) to send at.
    pub target_bps: u64,
    pub started: Instant,
    /// Stop padding here. The verdict comes with the feedback on the last packets.
    pub until: Instant,
}

/// How a probe ended. A failed probe that measured a delivered rate still tells the estimator
/// what the path carried while saturated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// The path delivered the target; the estimate was raised.
    Succeeded,
    /// The delay detector saw a queue build during the probe.
    Overuse,
    /// The probe packets arrived slower than the target.
    BelowTarget,
    /// Too few probe packets were reported to measure (not sent, lost, or no feedback).
    TooFewPackets,
}

/// The last probe's result, for the caller and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub probe: Probe,
    pub verdict: ProbeVerdict,
    /// What the probe packets measured, when there were enough of them.
    pub delivered_bps: Option<u64>,
    pub concluded: Instant,
}

impl ProbeOutcome {
    pub fn succeeded(&self) -> bool {
        self.verdict == ProbeVerdict::Succeeded
    }
}

/// What the feedback said about one running probe's packets.
#[derive(Debug, Clone, Copy)]
struct Running {
    probe: Probe,
    /// The estimate when the probe started.
    estimate_bps: f64,
    padding_over: bool,
    sent_bytes: u64,
    first_departure: Option<Instant>,
    last_departure: Option<Instant>,
    last_departure_bytes: u32,
    arrived_packets: u32,
    arrived_bytes: u64,
    first_arrival: Option<(Duration, u32)>,
    last_arrival: Option<Duration>,
    /// Feedback reached past `until`: every probe packet has been reported on.
    covered: bool,
}

impl Running {
    fn new(probe: Probe, estimate_bps: f64) -> Self {
        Running {
            probe,
            estimate_bps,
            padding_over: false,
            sent_bytes: 0,
            first_departure: None,
            last_departure: None,
            last_departure_bytes: 0,
            arrived_packets: 0,
            arrived_bytes: 0,
            first_arrival: None,
            last_arrival: None,
            covered: false,
        }
    }

    fn on_packet(&mut self, report: &PacketFeedback) {
        if report.departure >= self.probe.until {
            self.covered = true;
        }
        if !report.probe || report.departure < self.probe.started {
            return;
        }
        self.sent_bytes += u64::from(report.size_bytes);
        self.first_departure.get_or_insert(report.departure);
        self.last_departure = Some(report.departure);
        self.last_departure_bytes = report.size_bytes;
        let Some(arrival) = report.arrival else {
            return;
        };
        self.arrived_packets = self.arrived_packets.saturating_add(1);
        self.arrived_bytes += u64::from(report.size_bytes);
        match self.first_arrival {
            Some((first, _)) if first <= arrival => {}
            _ => self.first_arrival = Some((arrival, report.size_bytes)),
        }
        self.last_arrival = Some(self.last_arrival.map_or(arrival, |last| last.max(arrival)));
    }

    /// min(send rate, receive rate). Each excludes the packet at its interval's open end: the
    /// last one sent left after the send interval closed, the first to arrive came before the
    /// receive interval opened.
    fn delivered_bps(&self) -> Option<f64> {
        let (first_arrival, first_arrival_bytes) = self.first_arrival?;
        let receive_ms = signed_ms(self.last_arrival?, first_arrival);
        if self.arrived_packets < MIN_PACKETS
            || receive_ms < MIN_ARRIVAL_SPAN.as_secs_f64() * 1000.0
        {
            return None;
        }
        let receive = (self.arrived_bytes - u64::from(first_arrival_bytes)) as f64 * 8.0
            / (receive_ms / 1000.0);
        let send_s = self
            .last_departure?
            .saturating_duration_since(self.first_departure?)
            .as_secs_f64();
        let sent = (self.sent_bytes - u64::from(self.last_departure_bytes)) as f64 * 8.0;
        let send = if send_s > 0.0 {
            sent / send_s
        } else {
            f64::INFINITY
        };
        Some(receive.min(send))
    }
}

#[derive(Debug, Clone)]
pub(super) struct ProbeController {
    running: Option<Running>,
    last_outcome: Option<ProbeOutcome>,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// What the path got through during the failed probe that set `retry_at`.
    failed_at_bps: f64,
}

impl Default for ProbeController {
    fn default() -> Self {
        ProbeController {
            running: None,
            last_outcome: None,
            backoff: BACKOFF_START,
            retry_at: None,
            failed_at_bps: 0.0,
        }
    }
}

impl ProbeController {
    /// Starts a probe toward `target_bps`, limited to `MAX_STEP` times the estimate and to
    /// `max_bps`. `None` when one runs, when backing off after a failure, or when the estimate
    /// already covers the target.
    pub fn start(
        &mut self,
        now: Instant,
        target_bps: u64,
        estimate_bps: f64,
        max_bps: f64,
    ) -> Option<Probe> {
        if self.running.is_some() || self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let target = (target_bps as f64)
            .min(estimate_bps * MAX_STEP)
            .min(max_bps);
        if target <= estimate_bps {
            return None;
        }
        let probe = Probe {
            target_bps: target as u64,
            started: now,
            until: now.checked_add(PROBE_DURATION)?,
        };
        self.running = Some(Running::new(probe, estimate_bps));
        Some(probe)
    }

    pub fn running(&self) -> Option<Probe> {
        self.running.map(|r| r.probe)
    }

    /// The rate the shell should pad up to now, while the probe's padding phase lasts.
    pub fn padding_target_bps(&self, now: Instant) -> Option<u64> {
        self.running
            .filter(|r| !r.padding_over && now < r.probe.until)
            .map(|r| r.probe.target_bps)
    }

    pub fn last_outcome(&self) -> Option<ProbeOutcome> {
        self.last_outcome
    }

    pub fn on_packet(&mut self, report: &PacketFeedback) {
        if let Some(running) = &mut self.running {
            running.on_packet(report);
        }
    }

    /// After a feedback's packets went through `on_packet`: concludes the probe when the
    /// detector saw overuse or every probe packet has been reported on.
    pub fn on_feedback(&mut self, now: Instant, overuse: bool) -> Option<ProbeOutcome> {
        let running = self.running?;
        if overuse {
            return Some(self.conclude(now, Some(ProbeVerdict::Overuse)));
        }
        running.covered.then(|| self.conclude(now, None))
    }

    /// The remote clock jumped: arrivals before and after it cannot be compared.
    pub fn forget_arrivals(&mut self) {
        if let Some(running) = &mut self.running {
            running.arrived_packets = 0;
            running.arrived_bytes = 0;
            running.first_arrival = None;
            running.last_arrival = None;
        }
    }

    /// The path delivered `acked_bps`; a failure it outgrew no longer holds probes back.
    pub fn on_acked(&mut self, acked_bps: f64) {
        if self.retry_at.is_some() && acked_bps > self.failed_at_bps * FAILURE_STALE_FACTOR {
            self.retry_at = None;
            self.backoff = BACKOFF_START;
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let running = self.running?;
        if running.padding_over {
            running.probe.until.checked_add(VERDICT_TIMEOUT)
        } else {
            Some(running.probe.until)
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<ProbeOutcome> {
        let running = self.running.as_mut()?;
        if now >= running.probe.until {
            running.padding_over = true;
        }
        let deadline = running.probe.until.checked_add(VERDICT_TIMEOUT)?;
        (now >= deadline).then(|| self.conclude(now, None))
    }

    /// Ends the running probe (which must exist) with `verdict`, or with the verdict its
    /// measurement gives. A failure remembers what the probe got through (the estimate it started
    /// from when nothing could be measured) to tell when the path has outgrown it.
    fn conclude(&mut self, now: Instant, verdict: Option<ProbeVerdict>) -> ProbeOutcome {
        let running = self
            .running
            .take()
            .expect("conclude is only called while running");
        let delivered = running.delivered_bps();
        let target = running.probe.target_bps as f64;
        let verdict = verdict.unwrap_or(match delivered {
            None => ProbeVerdict::TooFewPackets,
            Some(d) if d >= SUCCESS_FRACTION * target => ProbeVerdict::Succeeded,
            Some(_) => ProbeVerdict::BelowTarget,
        });
        if verdict == ProbeVerdict::Succeeded {
            self.backoff = BACKOFF_START;
            self.retry_at = None;
        } else {
            self.retry_at = now.checked_add(self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            self.failed_at_bps = delivered.unwrap_or(running.estimate_bps);
        }
        let outcome = ProbeOutcome {
            probe: running.probe,
            verdict,
            delivered_bps: delivered.map(|d| d as u64),
            concluded: now,
        };
        self.last_outcome = Some(outcome);
        outcome
    }

    /// The estimate a successful probe justifies.
    pub fn adopted_bps(outcome: &ProbeOutcome) -> Option<f64> {
        if !outcome.succeeded() {
            return None;
        }
        outcome.delivered_bps.map(|d| d as f64 * ADOPT_FRACTION)
    }
}
