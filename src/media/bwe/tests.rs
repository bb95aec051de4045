//! The estimator against the simulated link (`sim`), and against malformed feedback.
//! Run with `--nocapture` to see the measured numbers.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::sim::{ProbePolicy, Sample, Scenario, Trace, XorShift, run};
use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn kbps(bps: u64) -> u64 {
    bps / 1000
}

fn max_estimate(trace: &Trace, from: Duration, to: Duration) -> u64 {
    trace
        .between(from, to)
        .map(|s| s.estimate_bps)
        .max()
        .unwrap_or(0)
}

/// Scenario 1: steady 2.5 Mbit/s link, 1.5 Mbit/s demand. The estimate reaches the demand and
/// stays there, and never runs ahead of 1.5x what is acknowledged (rtc's `Gcc` climbed to
/// 20 Mbit/s on such a path).
#[test]
fn steady_link_holds_demand_without_running_away() {
    let trace = run(&Scenario::new(2_500_000, 1_500_000, secs(60)));
    let reached = trace
        .time_until(Duration::ZERO, |s| s.estimate_bps >= 1_500_000)
        .expect("estimate reaches the demand");
    let max = max_estimate(&trace, Duration::ZERO, secs(60));
    println!(
        "steady: demand reached after {reached:?}, max estimate {} kbit/s",
        kbps(max)
    );
    assert!(reached <= secs(8), "{reached:?}");
    for s in trace.between(secs(8), secs(60)) {
        assert!(s.estimate_bps >= 1_500_000, "{s:?}");
        assert_eq!(s.state, UsageState::Normal, "{s:?}");
        let acked = s.acked_bps.expect("feedback flows") as f64;
        assert!(
            s.estimate_bps as f64 <= 1.5 * acked * 1.03 + 10_000.0,
            "{s:?}"
        );
    }
    assert!(max <= 2_350_000, "{max}");
}

/// Scenario 1b: the same over a jittery last hop (up to 30 ms per packet): jitter is not
/// congestion, the estimate still holds the demand.
#[test]
fn jitter_is_not_congestion() {
    let mut scenario = Scenario::new(2_500_000, 1_500_000, secs(60));
    scenario.jitter = Duration::from_millis(30);
    let trace = run(&scenario);
    let overusing = trace
        .between(secs(8), secs(60))
        .filter(|s| s.state == UsageState::Overusing)
        .count();
    let min = trace
        .between(secs(8), secs(60))
        .map(|s| s.estimate_bps)
        .min()
        .unwrap_or(0);
    println!(
        "jitter: min estimate after 8 s {} kbit/s, {overusing} samples overusing",
        kbps(min)
    );
    assert!(min >= 1_500_000, "{min}");
    assert_eq!(overusing, 0);
}

/// Scenario 2: capacity drops from 2.5 Mbit/s to 300 kbit/s; the estimate falls under
/// 350 kbit/s fast, and not far under the capacity (the tail drops of packets sent at the old
/// rate must not cut it again and again).
#[test]
fn capacity_drop_backs_off_within_two_seconds() {
    let mut scenario = Scenario::new(2_500_000, 1_500_000, secs(40));
    scenario.capacity.push((secs(20), 300_000));
    let trace = run(&scenario);
    let backed_off = trace
        .time_until(secs(20), |s| s.estimate_bps < 350_000)
        .expect("estimate falls");
    let max_queue = trace.between(secs(20), secs(40)).map(|s| s.queue).max();
    let lowest = trace
        .between(secs(20), secs(40))
        .map(|s| s.estimate_bps)
        .min()
        .unwrap_or(0);
    let settled: Vec<u64> = trace
        .between(secs(25), secs(40))
        .map(|s| s.estimate_bps)
        .collect();
    let mean = settled.iter().sum::<u64>() / settled.len() as u64;
    println!(
        "drop: under 350 kbit/s after {backed_off:?}, lowest {} kbit/s; max queue {max_queue:?}; \
         mean estimate 5-20 s after the drop {} kbit/s",
        kbps(lowest),
        kbps(mean)
    );
    assert!(backed_off <= secs(2), "{backed_off:?}");
    assert!(lowest >= 200_000, "{lowest}");
    assert!((240_000..=320_000).contains(&mean), "{mean}");
}

/// Scenario 2b: a join on a downlink below the start rate costs about a second.
#[test]
fn a_start_above_capacity_is_corrected_within_a_second_or_so() {
    let trace = run(&Scenario::new(500_000, 1_500_000, secs(20)));
    let corrected = trace
        .time_until(Duration::ZERO, |s| s.estimate_bps < 500_000)
        .expect("estimate falls");
    let settled = trace.at(secs(19)).estimate_bps;
    println!(
        "start 1 Mbit/s on 500 kbit/s: under capacity after {corrected:?}, {} kbit/s at 19 s",
        kbps(settled)
    );
    assert!(corrected <= Duration::from_millis(1_500), "{corrected:?}");
    assert!((350_000..=550_000).contains(&settled), "{settled}");
}

/// Scenario 3: the limit lifts again. With probes asked for whenever the estimate is under the
/// demand, the estimate is back over 1.5 Mbit/s within 10 s, wherever the lift falls in the
/// backoff of the probes that failed while the limit held.
#[test]
fn recovers_after_the_limit_lifts_with_probes() {
    for lift in [38, 44, 50, 56] {
        let mut scenario = Scenario::new(2_500_000, 1_500_000, secs(lift + 30));
        scenario.capacity.push((secs(20), 300_000));
        scenario.capacity.push((secs(lift), 2_500_000));
        scenario.probes = ProbePolicy::BelowDemand { headroom: 1.2 };
        let trace = run(&scenario);
        let recovered = trace
            .time_until(secs(lift), |s| s.estimate_bps >= 1_500_000)
            .expect("estimate recovers");
        let limited: Vec<_> = trace
            .probes
            .iter()
            .filter(|(at, _)| (secs(20)..secs(lift)).contains(at))
            .collect();
        let max = max_estimate(&trace, secs(lift), secs(lift + 30));
        let max_queue = trace
            .between(secs(lift), secs(lift + 30))
            .map(|s| s.queue)
            .max();
        println!(
            "recovery (lift at {lift} s): over 1.5 Mbit/s {recovered:?} after the lift; {} probes \
             ({} succeeded) while limited; max estimate after {} kbit/s; max queue after \
             {max_queue:?}",
            limited.len(),
            limited.iter().filter(|(_, o)| o.succeeded()).count(),
            kbps(max)
        );
        assert!(recovered <= secs(10), "{recovered:?}");
        // Probes under the limit may succeed; none above it may.
        assert!(
            limited
                .iter()
                .all(|(_, o)| !o.succeeded() || o.probe.target_bps <= 300_000)
        );
        // Sending 1.5 Mbit/s, the cap keeps the estimate under the capacity.
        assert!(max <= 2_300_000, "{max}");
    }
}

/// Scenario 4: random loss: 10 % brings the estimate down, 1 % does not.
#[test]
fn ten_percent_loss_lowers_the_estimate_one_percent_does_not() {
    let mut lossy = Scenario::new(2_500_000, 1_500_000, secs(30));
    lossy.loss = 0.10;
    let ten = run(&lossy);
    lossy.loss = 0.01;
    let one = run(&lossy);
    let ten_end = ten.at(secs(29)).estimate_bps;
    let one_min = one
        .between(secs(10), secs(30))
        .map(|s| s.estimate_bps)
        .min()
        .unwrap_or(0);
    println!(
        "loss: 10 % -> {} kbit/s after 30 s (measured loss {:.3}); 1 % -> min {} kbit/s after 10 s",
        kbps(ten_end),
        ten.at(secs(29)).loss,
        kbps(one_min)
    );
    assert!(ten_end < 500_000, "{ten_end}");
    assert!(one_min >= 1_500_000, "{one_min}");
}

/// Scenario 5: without probes the estimate cannot climb far above what is sent, however fast
/// the link.
#[test]
fn without_probes_the_estimate_stays_near_what_is_sent() {
    let mut scenario = Scenario::new(10_000_000, 300_000, secs(60));
    scenario.config.start_bps = 200_000;
    let trace = run(&scenario);
    let max = max_estimate(&trace, Duration::ZERO, secs(60));
    println!(
        "cap: sending 300 kbit/s on 10 Mbit/s, max estimate {} kbit/s",
        kbps(max)
    );
    for s in trace.between(secs(2), secs(60)) {
        assert!(
            s.estimate_bps as f64 <= 1.5 * s.sent_bps as f64 * 1.03 + 10_000.0,
            "{s:?}"
        );
    }
    assert!(max <= 480_000, "{max}");
}

/// Scenario 6a: a probe on a fast link succeeds and lifts the estimate; on a slow one it fails
/// and does not.
#[test]
fn probe_succeeds_on_a_fast_link_and_fails_on_a_slow_one() {
    const ASK: &[(u64, u64)] = &[(10_000, 2_000_000)];
    let mut scenario = Scenario::new(5_000_000, 1_000_000, secs(12));
    scenario.probes = ProbePolicy::At(ASK);
    let fast = run(&scenario);
    scenario.capacity = vec![(Duration::ZERO, 1_300_000)];
    let slow = run(&scenario);
    let (at, fast_outcome) = fast.probes[0];
    let (_, slow_outcome) = slow.probes[0];
    assert!(fast.asks[0].1.is_some() && slow.asks[0].1.is_some());
    println!(
        "probe for 2 Mbit/s: on 5 Mbit/s {:?}, delivered {:?}, verdict {:?} after the ask; \
         on 1.3 Mbit/s {:?}, delivered {:?}",
        fast_outcome.verdict,
        fast_outcome.delivered_bps,
        at - secs(10),
        slow_outcome.verdict,
        slow_outcome.delivered_bps
    );
    assert_eq!(fast_outcome.probe.target_bps, 2_000_000);
    assert!(fast_outcome.succeeded());
    assert!(at - secs(10) < Duration::from_millis(600), "{at:?}");
    assert!(fast.at(at).estimate_bps >= 1_800_000);
    assert!(!slow_outcome.succeeded());
    assert!(slow.at(secs(11)).estimate_bps < 1_300_000);
}

// --- Probing and malformed feedback, on hand-made feedback ---

/// Builds feedback for a FIFO path: each packet waits behind the queue the previous ones left.
struct Remote {
    t0: Instant,
    seq: Cell<u64>,
    /// Arrival minus departure of the last packet.
    queue: Cell<Duration>,
}

impl Remote {
    fn new(t0: Instant) -> Self {
        Remote {
            t0,
            seq: Cell::new(0),
            queue: Cell::new(Duration::ZERO),
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.set(self.seq.get() + 1);
        self.seq.get()
    }

    /// `count` packets of 1200 bytes sent every `spacing` from `from`, served at `arrive_bps`.
    fn packets(
        &self,
        from: Instant,
        count: u32,
        spacing: Duration,
        arrive_bps: u64,
        probe: bool,
    ) -> Vec<PacketFeedback> {
        let service = Duration::from_micros(1200 * 8 * 1_000_000 / arrive_bps);
        let mut free = Duration::ZERO;
        let packets = (0..count)
            .map(|i| {
                let departure = from + spacing * i;
                let sent = departure - self.t0;
                free = free.max(sent + self.queue.get()) + service;
                PacketFeedback {
                    seq: self.next_seq(),
                    departure,
                    arrival: Some(Duration::from_secs(100) + free),
                    size_bytes: 1200,
                    probe,
                }
            })
            .collect::<Vec<_>>();
        if let Some(last) = packets.last() {
            self.queue.set(free - (last.departure - self.t0));
        }
        packets
    }

    /// One second of 960 kbit/s (1200 bytes every 10 ms) through a fast link, in feedback of
    /// five packets; returns the time of the last feedback.
    fn steady(&self, est: &mut SendSideEstimator, from: Instant) -> Instant {
        let packets = self.packets(from, 100, Duration::from_millis(10), 100_000_000, false);
        let mut now = from;
        for chunk in packets.chunks(5) {
            now = chunk[4].departure + Duration::from_millis(60);
            est.handle_timeout(now);
            est.on_feedback(now, chunk);
        }
        now
    }

    /// A probe's packets (2.4 Mbit/s of sends until `until`) served at `arrive_bps`, then one
    /// packet after its end; returns when the feedback was handled.
    fn probe(&self, est: &mut SendSideEstimator, probe: Probe, arrive_bps: u64) -> Instant {
        let count = (probe.until - probe.started).as_millis() as u32 / 4;
        let mut packets = self.packets(
            probe.started,
            count,
            Duration::from_millis(4),
            arrive_bps,
            true,
        );
        packets.extend(self.packets(probe.until, 1, Duration::ZERO, arrive_bps, false));
        let now = probe.until + Duration::from_millis(100);
        est.handle_timeout(now);
        est.on_feedback(now, &packets);
        now
    }
}

#[test]
fn failed_probes_back_off_and_success_resets() {
    let t0 = Instant::now();
    let remote = Remote::new(t0);
    let mut est = SendSideEstimator::new(EstimatorConfig::default(), t0);
    let now = remote.steady(&mut est, t0);

    let probe = est.start_probe(now, 2_000_000).expect("probe allowed");
    assert_eq!(probe.target_bps, 2_000_000);
    assert_eq!(est.start_probe(now, 2_000_000), None, "one at a time");
    assert_eq!(est.probe_target_bps(now), Some(2_000_000));
    let now = remote.probe(&mut est, probe, 1_000_000);
    let failed = est.last_probe_outcome().expect("concluded");
    assert!(!failed.succeeded(), "{failed:?}");
    assert_eq!(est.probe(), None);
    assert!(est.estimate_bps() < 1_100_000);

    // Backoff: 2 s, then 4 s. Steady traffic in between lets the delay detector settle.
    let now = remote.steady(&mut est, now);
    assert_eq!(est.start_probe(now, 2_000_000), None, "1 s after failure");
    let now = remote.steady(&mut est, now);
    assert!(now >= failed.concluded + secs(2));
    let probe = est.start_probe(now, 2_000_000).expect("2 s after failure");
    let now = remote.probe(&mut est, probe, 1_000_000);
    let failed = est.last_probe_outcome().expect("concluded");
    assert!(!failed.succeeded(), "{failed:?}");
    let mut now = now;
    for _ in 0..3 {
        now = remote.steady(&mut est, now);
        assert!(now < failed.concluded + secs(4));
        assert_eq!(
            est.start_probe(now, 2_000_000),
            None,
            "{:?}",
            now - failed.concluded
        );
    }
    let now = remote.steady(&mut est, now);
    assert!(now >= failed.concluded + secs(4));
    let probe = est
        .start_probe(now, 2_000_000)
        .expect("4 s after the second failure");
    remote.probe(&mut est, probe, 10_000_000);
    let ok = est.last_probe_outcome().expect("concluded");
    assert!(ok.succeeded(), "{ok:?}");
    let delivered = ok.delivered_bps.expect("measured");
    assert!(delivered >= probe.target_bps * 9 / 10);
    assert!(
        (est.estimate_bps() as f64 - delivered as f64 * 0.95).abs() < 1.0,
        "{ok:?}"
    );
}

#[test]
fn a_probe_without_feedback_fails_at_its_deadline() {
    let t0 = Instant::now();
    let mut est = SendSideEstimator::new(EstimatorConfig::default(), t0);
    let probe = est.start_probe(t0, 1_500_000).expect("probe allowed");
    assert_eq!(est.poll_timeout(), Some(probe.until));
    est.handle_timeout(probe.until);
    assert_eq!(est.probe_target_bps(probe.until), None, "padding over");
    assert!(est.probe().is_some(), "still waiting for feedback");
    let deadline = est.poll_timeout().expect("verdict deadline");
    assert!(deadline > probe.until);
    est.handle_timeout(deadline);
    let outcome = est.last_probe_outcome().expect("concluded");
    assert_eq!(outcome.verdict, ProbeVerdict::TooFewPackets);
    assert_eq!(est.poll_timeout(), None);
    assert_eq!(est.start_probe(deadline, 1_500_000), None, "backing off");
}

#[test]
fn probes_are_limited_to_twice_the_estimate_and_to_max() {
    let t0 = Instant::now();
    let config = EstimatorConfig {
        start_bps: 1_000_000,
        min_bps: 50_000,
        max_bps: 1_500_000,
    };
    let mut est = SendSideEstimator::new(config, t0);
    assert_eq!(est.start_probe(t0, 900_000), None, "already fits");
    assert_eq!(
        est.start_probe(t0, 50_000_000).map(|p| p.target_bps),
        Some(1_500_000)
    );
    let mut est = SendSideEstimator::new(EstimatorConfig::default(), t0);
    assert_eq!(
        est.start_probe(t0, 50_000_000).map(|p| p.target_bps),
        Some(2_000_000)
    );
}

#[test]
fn repeated_and_reordered_feedback_is_ignored() {
    let t0 = Instant::now();
    let remote = Remote::new(t0);
    let packets = remote.packets(t0, 100, Duration::from_millis(10), 100_000_000, false);
    let mut once = SendSideEstimator::new(EstimatorConfig::default(), t0);
    let mut twice = once.clone();
    for chunk in packets.chunks(5) {
        let now = chunk[4].departure + Duration::from_millis(60);
        once.on_feedback(now, chunk);
        twice.on_feedback(now, chunk);
        twice.on_feedback(now, chunk);
        twice.on_feedback(now, &packets[..5]);
        twice.on_feedback(now, &[]);
    }
    assert_eq!(once.acknowledged_bps(), twice.acknowledged_bps());
    assert_eq!(once.estimate_bps(), twice.estimate_bps());
    assert_eq!(once.loss_fraction(), twice.loss_fraction());
    assert!(once.acknowledged_bps().is_some());
}

#[test]
fn a_wild_sequence_number_does_not_blind_the_estimator() {
    let t0 = Instant::now();
    let remote = Remote::new(t0);
    let mut est = SendSideEstimator::new(EstimatorConfig::default(), t0);
    let now = remote.steady(&mut est, t0);
    let mut wild = remote.packets(now, 1, Duration::ZERO, 100_000_000, false);
    wild[0].seq = u64::MAX;
    est.on_feedback(now, &wild);
    let stale = est.poll_timeout().expect("staleness timer");
    est.handle_timeout(stale);
    assert_eq!(est.acknowledged_bps(), None);
    remote.steady(&mut est, stale);
    assert!(
        est.acknowledged_bps().is_some(),
        "reports after it still count"
    );
}

#[test]
fn remote_clock_jumps_restart_the_receive_side_only() {
    for jump in [-10_000i64, 3_600_000, 1_000_000_000] {
        let t0 = Instant::now();
        let remote = Remote::new(t0);
        let mut est = SendSideEstimator::new(EstimatorConfig::default(), t0);
        let mut now = t0;
        for _ in 0..5 {
            now = remote.steady(&mut est, now);
        }
        let before = est.estimate_bps();
        let mut packets = remote.packets(now, 100, Duration::from_millis(10), 100_000_000, false);
        for p in &mut packets {
            let arrival = p.arrival.expect("arrived");
            p.arrival = Some(if jump < 0 {
                arrival - Duration::from_millis(jump.unsigned_abs())
            } else {
                arrival + Duration::from_millis(jump as u64)
            });
        }
        for chunk in packets.chunks(5) {
            est.on_feedback(chunk[4].departure + Duration::from_millis(60), chunk);
            assert_ne!(est.state(), UsageState::Overusing, "jump {jump} ms");
        }
        let acked = est
            .acknowledged_bps()
            .expect("measured again after the jump");
        assert!(
            (900_000..1_000_000).contains(&acked),
            "jump {jump}: {acked}"
        );
        assert!(est.estimate_bps() >= before, "jump {jump} ms");
    }
}

#[test]
fn feedback_stopping_forgets_the_receive_side() {
    let t0 = Instant::now();
    let remote = Remote::new(t0);
    let mut est = SendSideEstimator::new(EstimatorConfig::default(), t0);
    let now = remote.steady(&mut est, t0);
    assert!(est.acknowledged_bps().is_some());
    let stale = est.poll_timeout().expect("staleness timer");
    est.handle_timeout(stale);
    assert_eq!(est.acknowledged_bps(), None);
    assert_eq!(est.poll_timeout(), None);
    assert!(
        est.estimate_bps() >= 1_000_000,
        "a pause does not cut the estimate"
    );
    assert!(stale > now);
}

/// Scenario 6b, garbage: random departures (often going backwards), arrivals (lost, zero, huge, the
/// maximum `Duration`), sizes (0 to `u32::MAX`) and probe flags, with probes and timers
/// interleaved. Nothing panics; the estimate stays within [min, max]; timers never point into
/// the past after they were handled.
#[test]
fn garbage_feedback_never_panics_and_stays_in_bounds() {
    let t0 = Instant::now();
    let config = EstimatorConfig::default();
    let mut est = SendSideEstimator::new(config, t0);
    let mut rng = XorShift::new(7);
    let mut now = t0;
    let mut seq = 0u64;
    for _ in 0..20_000 {
        now += Duration::from_micros(rng.next_u64() % 200_000);
        let count = (rng.next_u64() % 40) as usize;
        let reports: Vec<PacketFeedback> = (0..count)
            .map(|_| {
                let back = Duration::from_micros(rng.next_u64() % 5_000_000);
                let arrival = match rng.next_u64() % 6 {
                    0 => None,
                    1 => Some(Duration::ZERO),
                    2 => Some(Duration::MAX),
                    3 => Some(Duration::from_micros(rng.next_u64() % 1_000_000_000_000)),
                    _ => Some((now - t0) + Duration::from_micros(rng.next_u64() % 100_000)),
                };
                PacketFeedback {
                    seq: match rng.next_u64() % 8 {
                        0 => rng.next_u64(),
                        1 => seq.saturating_sub(rng.next_u64() % 100),
                        _ => {
                            seq = seq.wrapping_add(1);
                            seq
                        }
                    },
                    departure: now.checked_sub(back).unwrap_or(now),
                    arrival,
                    size_bytes: match rng.next_u64() % 4 {
                        0 => 0,
                        1 => u32::MAX,
                        _ => (rng.next_u64() % 1500) as u32,
                    },
                    probe: rng.next_u64().is_multiple_of(2),
                }
            })
            .collect();
        est.on_feedback(now, &reports);
        if rng.next_u64().is_multiple_of(10) {
            est.start_probe(now, rng.next_u64() % 100_000_000);
        }
        if est.poll_timeout().is_some_and(|at| at <= now) {
            est.handle_timeout(now);
            assert!(est.poll_timeout().is_none_or(|at| at > now));
        }
        let estimate = est.estimate_bps();
        assert!(
            (config.min_bps..=config.max_bps).contains(&estimate),
            "{estimate}"
        );
        assert!((0.0..=1.0).contains(&est.loss_fraction()));
    }
}

/// Scenario 7: ten minutes, a new capacity every 30 s: the estimate tracks it.
#[test]
fn ten_minutes_of_changing_capacity_are_tracked() {
    const LEVELS: [u64; 7] = [
        300_000, 500_000, 800_000, 1_200_000, 2_000_000, 3_000_000, 5_000_000,
    ];
    const PERIOD: u64 = 30;
    let mut scenario = Scenario::new(LEVELS[3], 6_000_000, secs(600));
    let mut rng = XorShift::new(42);
    for step in 1..20 {
        let level = LEVELS[(rng.next_u64() % LEVELS.len() as u64) as usize];
        scenario.capacity.push((secs(PERIOD * step), level));
    }
    scenario.probes = ProbePolicy::BelowDemand { headroom: 1.2 };
    let trace = run(&scenario);

    let ratio = |s: &Sample| s.estimate_bps as f64 / s.capacity_bps as f64;
    // Judge each period after a 5 s settling time.
    let judged: Vec<&Sample> = trace
        .samples
        .iter()
        .filter(|s| s.at.as_secs() % PERIOD >= 5)
        .collect();
    let n = judged.len() as f64;
    let mean_ratio = judged.iter().map(|s| ratio(s)).sum::<f64>() / n;
    let mean_error = judged.iter().map(|s| (ratio(s) - 1.0).abs()).sum::<f64>() / n;
    let over = judged.iter().filter(|s| ratio(s) > 1.1).count() as f64 / n;
    let mut queues: Vec<Duration> = judged.iter().map(|s| s.queue).collect();
    queues.sort();
    let p95_queue = queues[queues.len() * 95 / 100];
    // How long each change took to bring the estimate within 0.75-1.1x the new capacity.
    let settle: Vec<Duration> = (1..20)
        .map(|step| {
            trace
                .time_until(secs(PERIOD * step), |s| (0.75..=1.1).contains(&ratio(s)))
                .unwrap_or(secs(PERIOD))
        })
        .collect();
    let worst_settle = settle.iter().max().copied().unwrap_or_default();
    let mean_settle = settle.iter().sum::<Duration>() / settle.len() as u32;
    let probes = trace.probes.len();
    let won = trace.probes.iter().filter(|(_, o)| o.succeeded()).count();
    println!(
        "10 min: estimate/capacity mean {mean_ratio:.2}, mean |error| {:.0} %, over 1.1x {:.1} % \
         of the time, p95 queue {p95_queue:?}; settled within 0.75-1.1x in {mean_settle:?} mean, \
         {worst_settle:?} worst; {won}/{probes} probes succeeded",
        mean_error * 100.0,
        over * 100.0
    );
    assert!(mean_error < 0.15, "{mean_error}");
    assert!(over < 0.03, "{over}");
    assert!(p95_queue < Duration::from_millis(200), "{p95_queue:?}");
    assert!(worst_settle < secs(8), "{settle:?}");
}
