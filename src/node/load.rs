//! How busy a media worker is: the share of wall time its thread spent working rather than
//! waiting for a datagram, a command or a deadline, smoothed over a couple of seconds.
//!
//! A worker past its capacity keeps forwarding at its ceiling, but what it cannot read overflows
//! its socket: publishers' packets are lost, and new participants' ICE and DTLS time out (5-20 %
//! of the joins in the saturation benchmark, BENCHMARKS.md). Signaling reads this load to refuse
//! such joins at once with a clear error instead, and to place new rooms on a worker with room
//! to spare.
//!
//! Busy time rather than the thread's CPU time: a worker that shares its core with other threads
//! or processes (or loses it to the hypervisor) is saturated once it never waits for input,
//! though its CPU time may stay well under a whole core (a relay pinned to one core measured
//! 99 % of it in all, and its worker thread alone too little to cross 95 %).
//!
//! Pure: the driver feeds its busy time and the wall clock.

use std::time::{Duration, Instant};

/// The driver measures about this often. Long enough that one burst (a keyframe fanned out to a
/// large room, a room's renegotiation) is not taken for saturation; short enough that a worker
/// that saturates stops taking joins within a few seconds.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Weight of the newest sample: an exponential average over about four samples (2 s).
const SMOOTHING: f64 = 0.25;

#[derive(Debug, Default)]
pub struct LoadMeter {
    /// The previous sample: when, and the thread's busy time then.
    last: Option<(Instant, Duration)>,
    smoothed: Option<f64>,
}

impl LoadMeter {
    /// Takes the thread's total busy time `busy` at `now` and returns the smoothed load (1.0:
    /// never waiting), `None` until two samples at least half of [`SAMPLE_EVERY`] apart were
    /// taken. Samples closer than that change nothing: the share of a few milliseconds is noise.
    pub fn sample(&mut self, now: Instant, busy: Duration) -> Option<f64> {
        let Some((then, busy_then)) = self.last else {
            self.last = Some((now, busy));
            return None;
        };
        let wall = now.saturating_duration_since(then);
        if wall < SAMPLE_EVERY / 2 {
            return self.smoothed;
        }
        self.last = Some((now, busy));
        // Busy time never grows faster than the wall clock; the clamp only guards against the
        // two being read a little apart.
        let share = (busy.saturating_sub(busy_then).as_secs_f64() / wall.as_secs_f64()).min(1.0);
        let smoothed = match self.smoothed {
            None => share,
            Some(previous) => previous + SMOOTHING * (share - previous),
        };
        self.smoothed = Some(smoothed);
        Some(smoothed)
    }
}

/// Whether a worker at `load` (0.0-1.0) is over `limit` (a share of its time; `None`: no
/// limit), and so takes no new participants.
pub fn over_limit(load: f64, limit: Option<f64>) -> bool {
    limit.is_some_and(|limit| load > limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_load_is_the_busy_share_of_wall_time_smoothed_over_samples() {
        let start = Instant::now();
        let mut meter = LoadMeter::default();
        assert_eq!(
            meter.sample(start, ms(100)),
            None,
            "one sample says nothing"
        );
        // 250 ms busy in 500 ms: half.
        let first = meter.sample(start + ms(500), ms(350)).unwrap();
        assert!((first - 0.5).abs() < 1e-9, "{first}");
        // Then never waiting: the average moves a quarter of the way.
        let second = meter.sample(start + ms(1000), ms(850)).unwrap();
        assert!((second - 0.625).abs() < 1e-9, "{second}");
        // Saturated for a few seconds: it converges on 1.
        let mut load = second;
        for i in 3..20u64 {
            load = meter
                .sample(start + ms(500 * i), ms(850 + 500 * (i - 2)))
                .unwrap();
        }
        assert!(load > 0.99, "{load}");
        // Idle again: back under a tenth within about 4 s.
        let busy_total = ms(850 + 500 * 17);
        for i in 20..28u64 {
            load = meter.sample(start + ms(500 * i), busy_total).unwrap();
        }
        assert!(load < 0.11, "{load}");
    }

    #[test]
    fn one_short_burst_does_not_look_like_saturation() {
        let start = Instant::now();
        let mut meter = LoadMeter::default();
        meter.sample(start, ms(0));
        let mut busy = ms(0);
        let mut load = 0.0;
        for i in 1..=10u64 {
            // 10 % busy, but one sample of 100 %.
            busy += if i == 6 { ms(500) } else { ms(50) };
            load = meter.sample(start + ms(500 * i), busy).unwrap();
            if i == 6 {
                assert!(load < 0.4, "one busy half-second moved the load to {load}");
            }
        }
        assert!(load < 0.2, "{load}");
    }

    #[test]
    fn samples_too_close_together_or_clocks_that_disagree_change_nothing_wrong() {
        let start = Instant::now();
        let mut meter = LoadMeter::default();
        meter.sample(start, ms(10));
        let load = meter.sample(start + ms(500), ms(60)).unwrap();
        // 10 ms later, with a busy time that jumped ahead: ignored, the last load stays.
        assert_eq!(meter.sample(start + ms(510), ms(5_000)), Some(load));
        // Busy time that went backwards counts as idle, a wall clock that did is ignored.
        let idle = meter.sample(start + ms(1000), ms(0)).unwrap();
        assert!((idle - load * 0.75).abs() < 1e-9, "{idle}");
        assert_eq!(meter.sample(start, ms(0)), Some(idle));
        // More busy than wall time (clocks read apart) counts as 1, not more.
        let capped = meter.sample(start + ms(1500), ms(10_000)).unwrap();
        assert!(capped <= 1.0, "{capped}");
    }

    #[test]
    fn the_limit_is_a_share_of_time_and_none_means_no_limit() {
        assert!(over_limit(0.96, Some(0.95)));
        assert!(!over_limit(0.95, Some(0.95)));
        assert!(!over_limit(1.0, None));
    }
}
