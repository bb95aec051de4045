//! Packets grouped into bursts by departure time, and the delay variation between bursts.
//!
//! A video frame leaves as a burst of packets within a millisecond or two; their individual
//! arrival spacing only says how fast the last hop serialises them. Comparing whole bursts
//! (how much later did this burst's last packet arrive than the previous burst's, versus how much
//! later it left) measures the queue the path is building, which is the congestion signal.

use std::time::{Duration, Instant};

/// Packets that left within this long of a burst's first packet belong to it.
const BURST: Duration = Duration::from_millis(5);

/// The change in one-way delay between two consecutive bursts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct GroupDelta {
    /// How much later the newer burst left, in ms (never negative: reports come in send order).
    pub departure_delta_ms: f64,
    /// How much later it arrived, in ms of the remote clock.
    pub arrival_delta_ms: f64,
    /// When the newer burst arrived, in ms of the remote clock.
    pub arrival_ms: f64,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    first_departure: Instant,
    last_departure: Instant,
    last_arrival: Duration,
}

#[derive(Debug, Clone, Default)]
pub(super) struct BurstGrouper {
    current: Option<Burst>,
    previous: Option<Burst>,
}

impl BurstGrouper {
    /// An arrived packet, in departure order. Returns the delta between the two bursts before it
    /// once this packet starts a new burst.
    pub fn push(&mut self, departure: Instant, arrival: Duration) -> Option<GroupDelta> {
        let Some(current) = &mut self.current else {
            self.current = Some(Burst {
                first_departure: departure,
                last_departure: departure,
                last_arrival: arrival,
            });
            return None;
        };
        if departure.saturating_duration_since(current.first_departure) <= BURST {
            current.last_departure = current.last_departure.max(departure);
            current.last_arrival = current.last_arrival.max(arrival);
            return None;
        }
        let completed = *current;
        *current = Burst {
            first_departure: departure,
            last_departure: departure,
            last_arrival: arrival,
        };
        let previous = self.previous.replace(completed)?;
        let arrival_delta_ms = signed_ms(completed.last_arrival, previous.last_arrival);
        if arrival_delta_ms < 0.0 {
            // The path reordered whole bursts: the spacing says nothing about a queue.
            return None;
        }
        Some(GroupDelta {
            departure_delta_ms: ms(completed
                .last_departure
                .saturating_duration_since(previous.last_departure)),
            arrival_delta_ms,
            arrival_ms: ms(completed.last_arrival),
        })
    }

    pub fn reset(&mut self) {
        *self = BurstGrouper::default();
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `a - b` in ms, negative when `b` is later.
pub(super) fn signed_ms(a: Duration, b: Duration) -> f64 {
    if a >= b { ms(a - b) } else { -ms(b - a) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_compared_by_their_last_packets() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let arr = |ms: u64| Duration::from_millis(1_000 + ms);
        let mut g = BurstGrouper::default();
        // Burst A at 0-2 ms, burst B at 20-21 ms, burst C at 40 ms; B queued 5 ms more than A.
        assert_eq!(g.push(at(0), arr(30)), None);
        assert_eq!(g.push(at(2), arr(33)), None);
        assert_eq!(g.push(at(20), arr(55)), None);
        assert_eq!(g.push(at(21), arr(57)), None);
        let delta = g.push(at(40), arr(70)).unwrap();
        assert_eq!(delta.departure_delta_ms, 19.0);
        assert_eq!(delta.arrival_delta_ms, 24.0);
        assert_eq!(delta.arrival_ms, 1_057.0);
    }

    #[test]
    fn reordered_bursts_give_no_delta() {
        let t0 = Instant::now();
        let mut g = BurstGrouper::default();
        g.push(t0, Duration::from_millis(100));
        g.push(t0 + Duration::from_millis(10), Duration::from_millis(90));
        assert_eq!(
            g.push(t0 + Duration::from_millis(20), Duration::from_millis(120)),
            None
        );
    }
}
