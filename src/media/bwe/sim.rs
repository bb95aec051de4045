//! A simulated downlink for the estimator's tests: a sender of video frames (plus probe padding)
//! into a bottleneck with a FIFO queue, tail drop, optional random loss and propagation delay,
//! and a receiver that sends transport-cc-like feedback. Deterministic: virtual time in 1 ms
//! ticks, a seeded PRNG.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{EstimatorConfig, PacketFeedback, Probe, ProbeOutcome, SendSideEstimator, UsageState};

const TICK_US: u64 = 1_000;
const SAMPLE_US: u64 = 100_000;
const MAX_PACKET_BYTES: u64 = 1200;
/// The receiver's clock reads something unrelated to ours.
const REMOTE_EPOCH: Duration = Duration::from_secs(576);

/// xorshift64*: enough randomness for loss, and the same every run.
pub(super) struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum ProbePolicy {
    Never,
    /// Whenever the estimate is under the demand, probe for `headroom` x the demand.
    BelowDemand {
        headroom: f64,
    },
    /// Ask for a probe of `bps` at each `(ms, bps)`.
    At(&'static [(u64, u64)]),
}

#[derive(Debug, Clone)]
pub(super) struct Scenario {
    pub duration: Duration,
    /// Capacity steps `(from, bps)`, sorted by `from`.
    pub capacity: Vec<(Duration, u64)>,
    /// What the sender would send if the estimate allowed (the forwarded layers).
    pub demand_bps: u64,
    pub one_way: Duration,
    /// Tail drop beyond this much queue.
    pub max_queue: Duration,
    /// Random loss after the bottleneck.
    pub loss: f64,
    /// Random extra delay after the bottleneck, up to this (a radio hop); packets stay in order.
    pub jitter: Duration,
    pub seed: u64,
    pub feedback_interval: Duration,
    pub fps: u64,
    pub probes: ProbePolicy,
    pub config: EstimatorConfig,
}

impl Scenario {
    pub fn new(capacity_bps: u64, demand_bps: u64, duration: Duration) -> Self {
        Scenario {
            duration,
            capacity: vec![(Duration::ZERO, capacity_bps)],
            demand_bps,
            one_way: Duration::from_millis(25),
            max_queue: Duration::from_millis(400),
            loss: 0.0,
            jitter: Duration::ZERO,
            seed: 1,
            feedback_interval: Duration::from_millis(60),
            fps: 30,
            probes: ProbePolicy::Never,
            config: EstimatorConfig::default(),
        }
    }

    pub fn capacity_at(&self, at: Duration) -> u64 {
        self.capacity
            .iter()
            .rev()
            .find(|(from, _)| *from <= at)
            .map_or(self.capacity[0].1, |c| c.1)
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    pub at: Duration,
    pub estimate_bps: u64,
    pub acked_bps: Option<u64>,
    pub capacity_bps: u64,
    /// Sent over the last second, media and padding.
    pub sent_bps: u64,
    pub state: UsageState,
    pub loss: f64,
    pub queue: Duration,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Trace {
    pub samples: Vec<Sample>,
    pub probes: Vec<(Duration, ProbeOutcome)>,
    /// `ProbePolicy::At` asks and what `start_probe` answered.
    pub asks: Vec<(Duration, Option<Probe>)>,
}

impl Trace {
    /// The first sample at or after `from` that satisfies `pred`, as time since `from`.
    pub fn time_until(&self, from: Duration, pred: impl Fn(&Sample) -> bool) -> Option<Duration> {
        self.samples
            .iter()
            .find(|s| s.at >= from && pred(s))
            .map(|s| s.at - from)
    }

    pub fn between(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.at >= from && s.at < to)
    }

    pub fn at(&self, at: Duration) -> &Sample {
        self.samples
            .iter()
            .find(|s| s.at >= at)
            .expect("sample time within the run")
    }
}

struct Sent {
    seq: u64,
    departure_us: u64,
    size: u32,
    probe: bool,
    arrival_us: Option<u64>,
}

struct Link<'a> {
    scenario: &'a Scenario,
    rng: XorShift,
    free_at_us: u64,
    last_arrival_us: u64,
    in_flight: VecDeque<Sent>,
    next_seq: u64,
    sent_bytes_per_sample: VecDeque<u64>,
}

impl Link<'_> {
    fn send(&mut self, now_us: u64, size: u64, probe: bool) {
        let capacity = self
            .scenario
            .capacity_at(Duration::from_micros(now_us))
            .max(1);
        let done_us = self.free_at_us.max(now_us) + size * 8 * 1_000_000 / capacity;
        let arrival_us = if done_us - now_us > self.scenario.max_queue.as_micros() as u64 {
            None
        } else {
            self.free_at_us = done_us;
            let lost = self.scenario.loss > 0.0 && self.rng.unit() < self.scenario.loss;
            let jitter_us = (self.rng.unit() * self.scenario.jitter.as_micros() as f64) as u64;
            let arrival_us = (done_us + self.scenario.one_way.as_micros() as u64 + jitter_us)
                .max(self.last_arrival_us);
            self.last_arrival_us = arrival_us;
            (!lost).then_some(arrival_us)
        };
        self.next_seq += 1;
        self.in_flight.push_back(Sent {
            seq: self.next_seq,
            departure_us: now_us,
            size: size as u32,
            probe,
            arrival_us,
        });
        if let Some(bytes) = self.sent_bytes_per_sample.back_mut() {
            *bytes += size;
        }
    }

    /// What the receiver reports at `now_us`: everything up to the last packet that has arrived
    /// (later losses are not known as losses yet).
    fn feedback(&mut self, t0: Instant, now_us: u64) -> Vec<PacketFeedback> {
        let Some(last) = self
            .in_flight
            .iter()
            .rposition(|p| p.arrival_us.is_some_and(|a| a <= now_us))
        else {
            return Vec::new();
        };
        self.in_flight
            .drain(..=last)
            .map(|p| PacketFeedback {
                seq: p.seq,
                departure: t0 + Duration::from_micros(p.departure_us),
                arrival: p
                    .arrival_us
                    .map(|a| REMOTE_EPOCH + Duration::from_micros(a)),
                size_bytes: p.size,
                probe: p.probe,
            })
            .collect()
    }
}

/// Runs `scenario`, sampling every 100 ms.
pub(super) fn run(scenario: &Scenario) -> Trace {
    let t0 = Instant::now();
    let mut est = SendSideEstimator::new(scenario.config, t0);
    let mut link = Link {
        scenario,
        rng: XorShift::new(scenario.seed),
        free_at_us: 0,
        last_arrival_us: 0,
        in_flight: VecDeque::new(),
        next_seq: 0,
        sent_bytes_per_sample: VecDeque::from([0]),
    };
    let mut trace = Trace::default();
    let mut feedback: VecDeque<(u64, Vec<PacketFeedback>)> = VecDeque::new();
    let frame_us = 1_000_000 / scenario.fps;
    let feedback_us = scenario.feedback_interval.as_micros() as u64;
    let one_way_us = scenario.one_way.as_micros() as u64;
    let (mut next_frame_us, mut next_feedback_us, mut next_sample_us) = (0, feedback_us, 0);
    let mut padding_bits = 0.0;
    let mut last_outcome = None;
    for now_us in (0..scenario.duration.as_micros() as u64).step_by(TICK_US as usize) {
        let now = t0 + Duration::from_micros(now_us);
        while feedback.front().is_some_and(|(at, _)| *at <= now_us) {
            let (_, reports) = feedback.pop_front().expect("front checked");
            est.on_feedback(now, &reports);
        }
        if est.poll_timeout().is_some_and(|at| at <= now) {
            est.handle_timeout(now);
        }
        if est.last_probe_outcome() != last_outcome {
            last_outcome = est.last_probe_outcome();
            trace
                .probes
                .extend(last_outcome.map(|o| (Duration::from_micros(now_us), o)));
        }
        match scenario.probes {
            ProbePolicy::Never => {}
            ProbePolicy::BelowDemand { headroom } => {
                if est.estimate_bps() < scenario.demand_bps {
                    est.start_probe(now, (scenario.demand_bps as f64 * headroom) as u64);
                }
            }
            ProbePolicy::At(asks) => {
                for &(_, bps) in asks.iter().filter(|(ms, _)| ms * 1000 == now_us) {
                    let started = est.start_probe(now, bps);
                    trace.asks.push((Duration::from_micros(now_us), started));
                }
            }
        }

        let media_bps = est.estimate_bps().min(scenario.demand_bps);
        let probe_bps = est.probe_target_bps(now);
        if now_us >= next_frame_us {
            next_frame_us += frame_us;
            let frame_bytes = (media_bps / 8 / scenario.fps).max(1);
            let packets = frame_bytes.div_ceil(MAX_PACKET_BYTES);
            for _ in 0..packets {
                link.send(now_us, frame_bytes / packets, probe_bps.is_some());
            }
        }
        match probe_bps {
            Some(target) => {
                padding_bits += target.saturating_sub(media_bps) as f64 * TICK_US as f64 / 1e6;
                while padding_bits >= (MAX_PACKET_BYTES * 8) as f64 {
                    padding_bits -= (MAX_PACKET_BYTES * 8) as f64;
                    link.send(now_us, MAX_PACKET_BYTES, true);
                }
            }
            None => padding_bits = 0.0,
        }

        if now_us >= next_feedback_us {
            next_feedback_us += feedback_us;
            let reports = link.feedback(t0, now_us);
            if !reports.is_empty() {
                feedback.push_back((now_us + one_way_us, reports));
            }
        }
        if now_us >= next_sample_us {
            next_sample_us += SAMPLE_US;
            let at = Duration::from_micros(now_us);
            let sent_bytes: u64 = link.sent_bytes_per_sample.iter().sum();
            trace.samples.push(Sample {
                at,
                estimate_bps: est.estimate_bps(),
                acked_bps: est.acknowledged_bps(),
                capacity_bps: scenario.capacity_at(at),
                sent_bps: sent_bytes * 8 * 1_000_000 / (SAMPLE_US * 10),
                state: est.state(),
                loss: est.loss_fraction(),
                queue: Duration::from_micros(link.free_at_us.saturating_sub(now_us)),
            });
            if link.sent_bytes_per_sample.len() == 10 {
                link.sent_bytes_per_sample.pop_front();
            }
            link.sent_bytes_per_sample.push_back(0);
        }
    }
    trace
}
