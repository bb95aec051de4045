//! What one client may ask of the relay: the limits, the counter of their breaches, and the two
//! rate limiters signaling applies itself (messages per session, joins per address).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A limit a client can run into. Each breach is refused with its own error code and counted in
/// `tern_limit_breaches_total{limit}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    MessageSize,
    MessageRate,
    JoinRate,
    RoomParticipants,
    ParticipantTracks,
    NodeRooms,
    SdpSize,
    IdleSession,
    SlowSession,
}

impl Limit {
    pub const ALL: [Limit; 9] = [
        Limit::MessageSize,
        Limit::MessageRate,
        Limit::JoinRate,
        Limit::RoomParticipants,
        Limit::ParticipantTracks,
        Limit::NodeRooms,
        Limit::SdpSize,
        Limit::IdleSession,
        Limit::SlowSession,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MessageSize => "message_size",
            Limit::MessageRate => "message_rate",
            Limit::JoinRate => "join_rate",
            Limit::RoomParticipants => "room_participants",
            Limit::ParticipantTracks => "participant_tracks",
            Limit::NodeRooms => "node_rooms",
            Limit::SdpSize => "sdp_size",
            Limit::IdleSession => "idle_session",
            Limit::SlowSession => "slow_session",
        }
    }
}

/// `tern_limit_breaches_total`, one cached child per limit. Cheap to clone into the worker.
#[derive(Clone)]
pub struct LimitCounters {
    counters: Arc<[IntCounter]>,
}

impl LimitCounters {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let vec = IntCounterVec::new(
            Opts::new(
                "tern_limit_breaches_total",
                "Requests refused because a configured limit was reached, by limit.",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(vec.clone()))?;
        Ok(LimitCounters {
            counters: Limit::ALL
                .iter()
                .map(|l| vec.with_label_values(&[l.as_str()]))
                .collect(),
        })
    }

    pub fn breached(&self, limit: Limit) {
        self.counters[limit as usize].inc();
    }
}

/// A token bucket: `per_second` sustained, bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Join attempts per client address per minute, counted before the token is checked so that
/// guessing tokens is as limited as joining. IPv6 clients are counted per /64, the block one
/// host usually holds.
pub struct JoinLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    attempts: u32,
}

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; past this, expired windows are swept, and if none has expired the
/// newcomer is refused (a flood of distinct addresses cannot grow the table without bound).
const MAX_TRACKED: usize = 65_536;

impl JoinLimiter {
    /// `per_minute == 0` turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        JoinLimiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt; `Err` carries how long until the address may try again.
    pub fn attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let key = bucket_of(ip);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_TRACKED && !windows.contains_key(&key) {
            windows.retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
            if windows.len() >= MAX_TRACKED {
                return Err(Duration::from_secs(1));
            }
        }
        let window = windows.entry(key).or_insert(Window {
            started: now,
            attempts: 0,
        });
        if now.saturating_duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                attempts: 0,
            };
        }
        if window.attempts >= self.per_minute {
            return Err(WINDOW.saturating_sub(now.saturating_duration_since(window.started)));
        }
        window.attempts += 1;
        Ok(())
    }
}

fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_bursts_then_the_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5, start);
        assert_eq!((0..8).filter(|_| bucket.take(start)).count(), 5);
        // 0.3 s later three more tokens have accrued.
        let later = start + Duration::from_millis(300);
        assert_eq!((0..8).filter(|_| bucket.take(later)).count(), 3);
    }

    #[test]
    fn joins_are_limited_per_address_and_window() {
        let limiter = JoinLimiter::new(3);
        let start = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            limiter.attempt(a, start).unwrap();
        }
        let wait = limiter
            .attempt(a, start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        limiter.attempt(b, start).unwrap();
        limiter.attempt(a, start + WINDOW).unwrap();
    }

    #[test]
    fn ipv6_hosts_share_their_64() {
        let limiter = JoinLimiter::new(1);
        let now = Instant::now();
        limiter
            .attempt("2001:db8::1".parse().unwrap(), now)
            .unwrap();
        assert!(
            limiter
                .attempt("2001:db8::2".parse().unwrap(), now)
                .is_err()
        );
        limiter
            .attempt("2001:db8:0:1::1".parse().unwrap(), now)
            .unwrap();
        // A v4-mapped address counts as the v4 address.
        limiter.attempt("192.0.2.9".parse().unwrap(), now).unwrap();
        assert!(
            limiter
                .attempt("::ffff:192.0.2.9".parse().unwrap(), now)
                .is_err()
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = JoinLimiter::new(0);
        let now = Instant::now();
        for _ in 0..1000 {
            limiter.attempt("192.0.2.1".parse().unwrap(), now).unwrap();
        }
    }
}
