//! State every thread of a run sees: the one clock packets are stamped with, the measurement
//! window, progress counters and the errors met.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

/// Nanoseconds since a process-wide epoch. Senders and receivers live in this process, so a
/// stamp and an arrival time compare directly: no clock sync, no skew.
pub fn clock_ns(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    at.saturating_duration_since(epoch).as_nanos() as u64
}

pub struct Shared {
    /// Packets sent at or after this (clock_ns) and before the end count; `u64::MAX` until set.
    window_start_ns: AtomicU64,
    window_end_ns: AtomicU64,
    /// Participants that got `joined`.
    pub joined: AtomicUsize,
    /// Participants whose session ended in an error before the run ended.
    pub failed: AtomicUsize,
    /// Participants connected and receiving every stream they expect.
    pub ready: AtomicUsize,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            window_start_ns: AtomicU64::new(u64::MAX),
            window_end_ns: AtomicU64::new(u64::MAX),
            joined: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Shared {
    /// Whether a packet stamped `sent_ns` belongs to the measurement. The window is decided by
    /// send time, so a packet still in flight when it closes counts once it arrives.
    pub fn in_window(&self, sent_ns: u64) -> bool {
        sent_ns >= self.window_start_ns.load(Relaxed) && sent_ns < self.window_end_ns.load(Relaxed)
    }

    pub fn open_window(&self, at: Instant) {
        self.window_start_ns.store(clock_ns(at), Relaxed);
    }

    pub fn close_window(&self, at: Instant) {
        self.window_end_ns.store(clock_ns(at), Relaxed);
    }

    /// Counts an error by its text (which therefore names no participant, so equal failures add
    /// up to one line of the report).
    pub fn error(&self, text: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(text.into()).or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn first_error(&self) -> Option<String> {
        self.errors().into_keys().next()
    }
}

/// Packet counters of one driver thread (written by it alone, read for the progress line).
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub sent_in_window: AtomicU64,
    /// Sent in the window times the number of receivers of each stream.
    pub expected_in_window: AtomicU64,
    /// Unique packets sent in the window that arrived.
    pub received_in_window: AtomicU64,
    /// Datagrams the kernel would not take (socket buffer full).
    pub send_dropped: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// The sum over every driver's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct CounterSnapshot {
    pub sent: u64,
    pub received: u64,
    pub sent_in_window: u64,
    pub expected_in_window: u64,
    pub received_in_window: u64,
    pub send_dropped: u64,
}

pub fn snapshot(counters: &[std::sync::Arc<Counters>]) -> CounterSnapshot {
    let mut s = CounterSnapshot::default();
    for c in counters {
        s.sent += c.sent.load(Relaxed);
        s.received += c.received.load(Relaxed);
        s.sent_in_window += c.sent_in_window.load(Relaxed);
        s.expected_in_window += c.expected_in_window.load(Relaxed);
        s.received_in_window += c.received_in_window.load(Relaxed);
        s.send_dropped += c.send_dropped.load(Relaxed);
    }
    s
}
