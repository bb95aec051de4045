//! What one client may ask of the relay: the limits, the counter of their breaches, and the two
//! rate limiters signaling applies itself (messages per session, joins per address).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use std::collections::{HashMap, VecDeque};
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
    HttpConnections,
    HttpConnectionsPerClient,
    SdpMediaSections,
    OfferRate,
    E2eeRate,
    /// A join refused because its media worker is over `media.max_worker_load_percent`.
    WorkerLoad,
}

impl Limit {
    pub const ALL: [Limit; 15] = [
        Limit::MessageSize,
        Limit::MessageRate,
        Limit::JoinRate,
        Limit::RoomParticipants,
        Limit::ParticipantTracks,
        Limit::NodeRooms,
        Limit::SdpSize,
        Limit::IdleSession,
        Limit::SlowSession,
        Limit::HttpConnections,
        Limit::HttpConnectionsPerClient,
        Limit::SdpMediaSections,
        Limit::OfferRate,
        Limit::E2eeRate,
        Limit::WorkerLoad,
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
            Limit::HttpConnections => "http_connections",
            Limit::HttpConnectionsPerClient => "http_connections_per_client",
            Limit::SdpMediaSections => "sdp_media_sections",
            Limit::OfferRate => "offer_rate",
            Limit::E2eeRate => "e2ee_rate",
            Limit::WorkerLoad => "worker_load",
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
/// guessing tokens is as limited as joining. IPv6 clients are counted per /64 (the block one host
/// usually holds) and, at [`PREFIX_48_FACTOR`] times the limit, per /48 (one site), so that
/// holding a whole /48 does not multiply an attacker's budget by 65,536.
///
/// Memory is bounded: past [`MAX_TRACKED`] windows the oldest is forgotten (its address starts
/// afresh). A flood of distinct addresses therefore only ever costs those addresses their own
/// attempts, never anybody else's.
pub struct JoinLimiter {
    per_minute: u32,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    by_bucket: HashMap<IpAddr, Window>,
    /// Buckets in the order they were first tracked, for eviction.
    order: VecDeque<IpAddr>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    attempts: u32,
}

const WINDOW: Duration = Duration::from_secs(60);
/// Windows tracked at once (about 3 MiB).
pub const MAX_TRACKED: usize = 65_536;
/// A /48 may make this many times the per-address attempts.
pub const PREFIX_48_FACTOR: u32 = 16;

impl JoinLimiter {
    /// `per_minute == 0` turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        JoinLimiter {
            per_minute,
            windows: Mutex::new(Windows::default()),
        }
    }

    /// Counts one attempt; `Err` carries how long until the address may try again.
    pub fn attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut buckets = vec![(bucket_of(ip), self.per_minute)];
        if let Some(site) = site_of(ip) {
            buckets.push((site, self.per_minute.saturating_mul(PREFIX_48_FACTOR)));
        }
        for &(bucket, limit) in &buckets {
            let window = windows.get(bucket, now);
            if window.attempts >= limit {
                return Err(WINDOW.saturating_sub(now.saturating_duration_since(window.started)));
            }
        }
        for (bucket, _) in buckets {
            windows.get(bucket, now).attempts += 1;
        }
        Ok(())
    }

    /// Addresses (buckets) tracked now.
    pub fn tracked(&self) -> usize {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.by_bucket.len()
    }
}

impl Windows {
    /// The current window of `bucket`, started afresh if it expired or was never tracked.
    fn get(&mut self, bucket: IpAddr, now: Instant) -> &mut Window {
        if !self.by_bucket.contains_key(&bucket) {
            while self.by_bucket.len() >= MAX_TRACKED {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.by_bucket.remove(&oldest);
            }
            self.order.push_back(bucket);
        }
        let window = self.by_bucket.entry(bucket).or_insert(Window {
            started: now,
            attempts: 0,
        });
        if now.saturating_duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                attempts: 0,
            };
        }
        window
    }
}

/// The bucket one client counts in: its IPv4 address, or its IPv6 /64.
pub fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
    }
}

/// The IPv6 /48 of an address (marked with a low bit no /64 bucket has, so the two kinds of
/// bucket never collide); `None` for IPv4.
fn site_of(ip: IpAddr) -> Option<IpAddr> {
    match ip.to_canonical() {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[6..].fill(0);
            octets[15] = 1;
            Some(IpAddr::from(octets))
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
    fn a_flood_of_distinct_addresses_refuses_nobody_else_and_memory_stays_bounded() {
        let limiter = JoinLimiter::new(2);
        let now = Instant::now();
        let legit: IpAddr = "198.51.100.7".parse().unwrap();
        limiter.attempt(legit, now).unwrap();
        for i in 0..(MAX_TRACKED as u32 + 1_000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            limiter.attempt(ip, now).unwrap();
        }
        assert!(limiter.tracked() <= MAX_TRACKED);
        limiter.attempt(legit, now).unwrap();
        limiter.attempt("127.0.0.1".parse().unwrap(), now).unwrap();
    }

    #[test]
    fn one_ipv6_site_cannot_multiply_its_budget_by_its_64s() {
        let limiter = JoinLimiter::new(1);
        let now = Instant::now();
        let allowed = (0..1_000u16)
            .filter(|i| {
                let ip: IpAddr = format!("2001:db8:1:{i:x}::1").parse().unwrap();
                limiter.attempt(ip, now).is_ok()
            })
            .count();
        assert_eq!(allowed, PREFIX_48_FACTOR as usize);
        // Another site is untouched.
        limiter
            .attempt("2001:db8:2::1".parse().unwrap(), now)
            .unwrap();
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
