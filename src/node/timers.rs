//! The node's deadlines, each named for why it is due, in one queue.
//!
//! Entries are never removed early: when a deadline moves, a new entry is queued and the old one
//! is recognised as stale when it comes due (the owner checks that the deadline it holds still
//! matches). That keeps arming O(log n) and the queue free of lookups.

use super::demux::LegKey;
use super::state::RoomKey;
use crate::media::ids::ParticipantId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Why the node wants to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// A leg's own protocol deadline (ICE checks, DTLS retransmission, RTCP, NACK).
    Leg(LegKey),
    /// A subscribe leg's paced packets are due.
    Pace(LegKey),
    /// A leg must have connected (ICE and DTLS) by now.
    ConnectDeadline(LegKey),
    /// A participant's subscribe leg is due for renegotiation (debounced, spaced).
    Renegotiate(ParticipantId),
    /// A room's own deadline: a member's resume grace, a deferred keyframe request.
    Room(RoomKey),
    /// An empty room closes.
    RoomClose(RoomKey),
    /// The state gauges are republished.
    Snapshot,
    /// Every participant's connection quality is judged.
    Quality,
}

#[derive(Debug, Default)]
pub struct Timers {
    queue: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub fn arm(&mut self, at: Instant, timer: Timer) {
        self.queue.push(Reverse((at, timer)));
    }

    /// The earliest deadline, stale or not.
    pub fn next(&self) -> Option<(Instant, Timer)> {
        self.queue.peek().map(|Reverse(entry)| *entry)
    }

    /// Takes the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        match self.queue.peek() {
            Some(Reverse((at, _))) if *at <= now => self.queue.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_come_due_in_order_and_not_before_their_time() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.arm(t0 + Duration::from_millis(30), Timer::Snapshot);
        timers.arm(t0 + Duration::from_millis(10), Timer::Leg(LegKey(1)));
        timers.arm(t0 + Duration::from_millis(20), Timer::Room(RoomKey(2)));
        assert_eq!(timers.next().map(|n| n.1), Some(Timer::Leg(LegKey(1))));
        assert_eq!(timers.pop_due(t0), None);
        let due: Vec<Timer> = std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_millis(25)))
            .map(|(_, timer)| timer)
            .collect();
        assert_eq!(due, vec![Timer::Leg(LegKey(1)), Timer::Room(RoomKey(2))]);
        assert_eq!(timers.len(), 1);
    }
}
