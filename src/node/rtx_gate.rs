//! Retransmissions toward a subscriber, limited to a share of its estimated downlink.
//!
//! `rtc`'s NACK responder answers every NACK from its history at once, outside the relay's
//! pacer. On a congested downlink that is the wrong moment: every packet the bottleneck dropped
//! comes back as a NACK, every retransmission adds to the queue that dropped it, and behind a
//! 300 kbit/s tbf half of everything sent was lost. libwebrtc limits retransmissions the same way.
//! This gate sits between the NACK responder and the transport-wide numbering, so a dropped
//! retransmission is never numbered and never counts as loss. It also counts what it lets
//! through, for the allocator (retransmissions are part of a room's video budget).

use crate::metrics::{DropReason, MediaMetrics};
use rtc::interceptor::{Attribute, Packet, TaggedPacket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Retransmissions may spend this long of the limit at once.
const BURST: Duration = Duration::from_millis(200);

/// What the node and the gate share: the limit the node sets, the bytes the gate let through.
#[derive(Debug)]
pub struct RetransmissionBudget {
    /// Bits per second; `u64::MAX` = unlimited (a subscriber not estimated).
    pub limit_bps: AtomicU64,
    pub sent_bytes: AtomicU64,
}

impl Default for RetransmissionBudget {
    fn default() -> Self {
        RetransmissionBudget {
            limit_bps: AtomicU64::new(u64::MAX),
            sent_bytes: AtomicU64::new(0),
        }
    }
}

/// One step of a subscribe leg's outbound interceptor (`node/egress.rs`).
pub struct RetransmissionGate {
    budget: Arc<RetransmissionBudget>,
    metrics: Arc<MediaMetrics>,
    tokens_bytes: f64,
    refilled_at: Option<Instant>,
}

impl RetransmissionGate {
    pub fn new(budget: Arc<RetransmissionBudget>, metrics: Arc<MediaMetrics>) -> Self {
        RetransmissionGate {
            budget,
            metrics,
            tokens_bytes: 0.0,
            refilled_at: None,
        }
    }

    /// Whether `msg` goes on toward the wire: anything but a retransmission over the limit
    /// (dropped and counted). What passes is counted against the budget.
    pub fn pass(&mut self, msg: &TaggedPacket) -> bool {
        let Packet::Rtp(packet) = &msg.message.packet else {
            return true;
        };
        if !msg.message.has(&Attribute::Retransmission) {
            return true;
        }
        let bytes = packet.payload.len() + 12;
        if !self.admit(bytes, msg.now) {
            self.metrics.count_drop(DropReason::RetransmissionLimit);
            return false;
        }
        self.budget
            .sent_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        true
    }

    /// Whether a retransmission of `bytes` may go at `now`.
    fn admit(&mut self, bytes: usize, now: Instant) -> bool {
        let limit = self.budget.limit_bps.load(Ordering::Relaxed);
        if limit == u64::MAX {
            return true;
        }
        let rate = limit as f64 / 8.0;
        let elapsed = self
            .refilled_at
            .map_or(BURST, |at| now.saturating_duration_since(at));
        self.refilled_at = Some(now);
        self.tokens_bytes =
            (self.tokens_bytes + rate * elapsed.as_secs_f64()).min(rate * BURST.as_secs_f64());
        if self.tokens_bytes >= bytes as f64 {
            self.tokens_bytes -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_pass_within_the_limit_and_are_dropped_beyond_it() {
        let budget = Arc::new(RetransmissionBudget::default());
        let metrics = crate::metrics::Metrics::new().media.clone();
        let mut gate = RetransmissionGate::new(budget.clone(), metrics);
        let t0 = Instant::now();
        // Unlimited until the node sets a limit.
        assert!((0..1_000).all(|_| gate.admit(1_200, t0)));
        // 80 kbit/s = 10,000 bytes a second; a burst of 200 ms = 2,000 bytes.
        budget.limit_bps.store(80_000, Ordering::Relaxed);
        let later = t0 + Duration::from_secs(1);
        assert!(gate.admit(1_200, later));
        assert!(!gate.admit(1_200, later));
        assert!(gate.admit(1_000, later + Duration::from_millis(100)));
        assert!(!gate.admit(1_000, later + Duration::from_millis(100)));
    }
}
