//! The summary of a run (a table for people, one JSON document for scripts) and the live
//! progress line.

use super::participant::Samples;
use super::shared::{CounterSnapshot, Shared};
use super::stats::{Histogram, StreamReceiver, percentile};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// What the driver threads hand over at the end, summed.
#[derive(Debug, Default)]
pub struct Totals {
    pub streams_received: u64,
    pub packets_received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    jitter_sum_ns: f64,
    jitter_samples: u64,
    pub latency: Histogram,
    pub send_lag: Histogram,
    pub join_times_us: Vec<u64>,
    pub plis: u64,
    pub keyframes: u64,
    pub unstamped: u64,
    pub unexpected: u64,
    pub sealed_in_window: u64,
}

impl Totals {
    pub fn add_streams<'a>(&mut self, streams: impl Iterator<Item = &'a StreamReceiver>) {
        for s in streams {
            self.streams_received += u64::from(s.received_in_window > 0);
            self.packets_received += s.received_in_window;
            self.duplicates += s.duplicates;
            self.reordered += s.reordered;
            self.jitter_sum_ns += s.jitter_sum_ns;
            self.jitter_samples += s.jitter_samples;
        }
    }

    pub fn add_samples(&mut self, samples: Samples) {
        self.latency.merge(&samples.latency);
        self.send_lag.merge(&samples.send_lag);
        self.join_times_us.extend(samples.join_times_us);
        self.plis += samples.plis;
        self.keyframes += samples.keyframes;
        self.unstamped += samples.unstamped;
        self.unexpected += samples.unexpected;
        self.sealed_in_window += samples.sealed_in_window;
    }

    pub fn merge(&mut self, other: Totals) {
        self.streams_received += other.streams_received;
        self.packets_received += other.packets_received;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.jitter_sum_ns += other.jitter_sum_ns;
        self.jitter_samples += other.jitter_samples;
        self.add_samples(Samples {
            latency: other.latency,
            send_lag: other.send_lag,
            join_times_us: other.join_times_us,
            plis: other.plis,
            keyframes: other.keyframes,
            unstamped: other.unstamped,
            unexpected: other.unexpected,
            sealed_in_window: other.sealed_in_window,
        });
    }
}

/// The result of a run. Times in milliseconds, CPU in percent of one core; `None` (JSON `null`)
/// where nothing was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub rooms: u32,
    pub publishers_per_room: u32,
    pub subscribers_per_room: u32,
    pub participants: usize,
    /// Got `joined` from the relay.
    pub participants_joined: usize,
    /// Connected and receiving everything they expected when measurement started.
    pub participants_ready: usize,
    pub audio_only: bool,
    pub video_kbps: u32,
    /// Joined with `e2ee=1`, frames looking encrypted.
    pub e2ee: bool,
    /// Subscribers counted RTP without decrypting it (`--count-only`): loss by arrival time,
    /// no latency or jitter for those packets.
    pub count_only: bool,
    /// (receiver, stream) pairs that should have flowed, and those that delivered at least one
    /// packet sent inside the window.
    pub streams_expected: u64,
    pub streams_received: u64,
    /// Packets the publishers sent inside the window (each once, before fan-out).
    pub packets_sent: u64,
    /// Packets sent inside the window times their receivers.
    pub packets_expected: u64,
    /// Unique packets sent inside the window that arrived.
    pub packets_received: u64,
    pub loss_percent: Option<f64>,
    pub duplicates: u64,
    pub reordered: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    /// RFC 3550 interarrival jitter (on send stamps), averaged over every packet received.
    pub jitter_mean_ms: Option<f64>,
    /// Subscribers: WebSocket open to first media packet.
    pub join_time_p50_ms: Option<f64>,
    pub join_time_p95_ms: Option<f64>,
    pub ramp_up_s: f64,
    pub duration_s: f64,
    /// This process's user + system CPU over the window (includes a relay run in-process).
    pub loadtest_cpu_percent: f64,
    /// The driver threads alone (media of every peer connection).
    pub loadtest_media_threads_cpu_percent: Option<f64>,
    pub loadtest_threads: usize,
    /// How late media ticks ran: large values mean the generator itself was short of CPU.
    pub send_lag_p99_ms: Option<f64>,
    pub send_lag_max_ms: Option<f64>,
    pub keyframes_sent: u64,
    pub keyframe_requests_received: u64,
    /// Datagrams the generator's sockets would not take.
    pub send_dropped: u64,
    /// Packets a receiver should never have got (its own stream, another room's, or without
    /// a stamp): 0 unless the relay misroutes or corrupts.
    pub packets_foreign: u64,
    /// Errors met, by kind, with how often.
    pub errors: BTreeMap<String, u64>,
}

fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|us| us as f64 / 1000.0)
}

/// What `run` knows besides the driver totals.
pub struct RunFacts {
    pub url: String,
    pub shape: super::scenario::Shape,
    pub participants: usize,
    pub video_kbps: u32,
    pub e2ee: bool,
    pub count_only: bool,
    pub threads: usize,
    pub ramp_up: Duration,
    pub window: Duration,
    pub cpu: Duration,
    pub media_threads_cpu: Option<Duration>,
    pub participants_ready: usize,
}

impl Report {
    pub fn new(
        facts: RunFacts,
        totals: Totals,
        counters: CounterSnapshot,
        shared: &Shared,
    ) -> Report {
        let mut join_times = totals.join_times_us.clone();
        join_times.sort_unstable();
        let window_s = facts.window.as_secs_f64().max(1e-9);
        let expected = counters.expected_in_window;
        let received = totals.packets_received + totals.sealed_in_window;
        let lost = expected.saturating_sub(received);
        Report {
            url: facts.url,
            rooms: facts.shape.rooms,
            publishers_per_room: facts.shape.publishers,
            subscribers_per_room: facts.shape.subscribers,
            participants: facts.participants,
            participants_joined: shared.joined.load(Relaxed),
            participants_ready: facts.participants_ready,
            audio_only: facts.shape.audio_only,
            video_kbps: facts.video_kbps,
            e2ee: facts.e2ee,
            count_only: facts.count_only,
            streams_expected: facts.shape.streams_expected(),
            streams_received: totals.streams_received,
            packets_sent: counters.sent_in_window,
            packets_expected: expected,
            packets_received: received,
            loss_percent: (expected > 0).then(|| 100.0 * lost as f64 / expected as f64),
            duplicates: totals.duplicates,
            reordered: totals.reordered,
            latency_p50_ms: ms(totals.latency.quantile_us(0.50)),
            latency_p95_ms: ms(totals.latency.quantile_us(0.95)),
            latency_p99_ms: ms(totals.latency.quantile_us(0.99)),
            latency_max_ms: ms(totals.latency.max_us()),
            jitter_mean_ms: (totals.jitter_samples > 0)
                .then(|| totals.jitter_sum_ns / totals.jitter_samples as f64 / 1e6),
            join_time_p50_ms: ms(percentile(&join_times, 0.50)),
            join_time_p95_ms: ms(percentile(&join_times, 0.95)),
            ramp_up_s: facts.ramp_up.as_secs_f64(),
            duration_s: facts.window.as_secs_f64(),
            loadtest_cpu_percent: 100.0 * facts.cpu.as_secs_f64() / window_s,
            loadtest_media_threads_cpu_percent: facts
                .media_threads_cpu
                .map(|cpu| 100.0 * cpu.as_secs_f64() / window_s),
            loadtest_threads: facts.threads,
            send_lag_p99_ms: ms(totals.send_lag.quantile_us(0.99)),
            send_lag_max_ms: ms(totals.send_lag.max_us()),
            keyframes_sent: totals.keyframes,
            keyframe_requests_received: totals.plis,
            send_dropped: counters.send_dropped,
            packets_foreign: totals.unstamped + totals.unexpected,
            errors: shared.errors(),
        }
    }

    /// The table people read.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "-".to_owned(),
        };
        let media = if self.audio_only {
            "Opus only".to_owned()
        } else {
            format!("Opus + VP8 {} kbit/s", self.video_kbps)
        };
        let media = if self.e2ee {
            format!("{media}, end-to-end encrypted")
        } else {
            media
        };
        let receiving = if self.count_only {
            "per room, counting without decrypting (no latency)"
        } else {
            "per room"
        };
        let rows: Vec<(&str, String)> = vec![
            ("relay", self.url.clone()),
            ("rooms", self.rooms.to_string()),
            (
                "publishers",
                format!("{} per room ({media})", self.publishers_per_room),
            ),
            (
                "subscribers",
                format!("{} {receiving}", self.subscribers_per_room),
            ),
            (
                "participants",
                format!(
                    "{} ({} joined, {} receiving when measuring began)",
                    self.participants, self.participants_joined, self.participants_ready
                ),
            ),
            ("ramp-up", format!("{:.1} s", self.ramp_up_s)),
            ("duration", format!("{:.1} s measured", self.duration_s)),
            (
                "streams",
                if self.count_only {
                    format!(
                        "{} expected (counted packets are sealed: streams not told apart)",
                        self.streams_expected
                    )
                } else {
                    format!(
                        "{} expected, {} received",
                        self.streams_expected, self.streams_received
                    )
                },
            ),
            ("packets sent", self.packets_sent.to_string()),
            ("packets expected", self.packets_expected.to_string()),
            ("packets received", self.packets_received.to_string()),
            ("loss", format!("{} %", opt(self.loss_percent, 3))),
            ("duplicates", self.duplicates.to_string()),
            ("reordered", self.reordered.to_string()),
            (
                "latency p50/p95/p99/max",
                format!(
                    "{} / {} / {} / {} ms",
                    opt(self.latency_p50_ms, 2),
                    opt(self.latency_p95_ms, 2),
                    opt(self.latency_p99_ms, 2),
                    opt(self.latency_max_ms, 2)
                ),
            ),
            ("jitter mean", format!("{} ms", opt(self.jitter_mean_ms, 3))),
            (
                "join time p50/p95",
                format!(
                    "{} / {} ms (subscribers: WebSocket open to first media)",
                    opt(self.join_time_p50_ms, 0),
                    opt(self.join_time_p95_ms, 0)
                ),
            ),
            (
                "loadtest CPU",
                format!(
                    "{:.1} % of a core (media threads {} %, {} thread{})",
                    self.loadtest_cpu_percent,
                    opt(self.loadtest_media_threads_cpu_percent, 1),
                    self.loadtest_threads,
                    if self.loadtest_threads == 1 { "" } else { "s" }
                ),
            ),
            (
                "send lag p99/max",
                format!(
                    "{} / {} ms",
                    opt(self.send_lag_p99_ms, 2),
                    opt(self.send_lag_max_ms, 2)
                ),
            ),
            (
                "keyframes",
                format!(
                    "{} sent, {} requested by the relay",
                    self.keyframes_sent, self.keyframe_requests_received
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (key, value) in rows {
            let _ = writeln!(out, "  {key:<width$}  {value}");
        }
        // Rows that only matter when something is wrong.
        for (key, value) in [
            ("send dropped", self.send_dropped),
            ("foreign packets", self.packets_foreign),
        ] {
            if value > 0 {
                let _ = writeln!(out, "  {key:<width$}  {value}");
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "  {:<width$}  none", "errors");
        } else {
            for (i, (error, count)) in self.errors.iter().enumerate() {
                let key = if i == 0 { "errors" } else { "" };
                let _ = writeln!(out, "  {key:<width$}  {count} x {error}");
            }
        }
        out
    }
}

/// The live line on a terminal: elapsed, participants, packet rates, loss so far.
pub struct Progress {
    enabled: bool,
    started: Instant,
    last: Option<(Instant, CounterSnapshot)>,
    participants: usize,
}

impl Progress {
    pub fn new(enabled: bool, participants: usize) -> Self {
        Progress {
            enabled,
            started: Instant::now(),
            last: None,
            participants,
        }
    }

    /// Redraws the line if a second has passed.
    pub fn tick(&mut self, phase: &str, shared: &Shared, counters: CounterSnapshot) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let (since, before) = match self.last {
            Some((at, _)) if now - at < Duration::from_secs(1) => return,
            Some((at, before)) => (now - at, before),
            None => (now - self.started, CounterSnapshot::default()),
        };
        self.last = Some((now, counters));
        let rate = |n: u64, b: u64| (n - b.min(n)) as f64 / since.as_secs_f64().max(1e-3);
        let loss = if counters.expected_in_window > 0 {
            let lost = counters
                .expected_in_window
                .saturating_sub(counters.received_in_window);
            format!(
                "{:.2} %",
                100.0 * lost as f64 / counters.expected_in_window as f64
            )
        } else {
            "-".to_owned()
        };
        let line = format!(
            "{phase} {:>5.0} s | joined {}/{} receiving {} | sent {:.0} pkt/s | received {:.0} pkt/s | loss {loss}",
            (now - self.started).as_secs_f64(),
            shared.joined.load(Relaxed),
            self.participants,
            shared.ready.load(Relaxed),
            rate(counters.sent, before.sent),
            rate(counters.received, before.received),
        );
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{line}");
        let _ = out.flush();
    }

    pub fn clear(&self) {
        if self.enabled {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
        }
    }
}
