//! Transport-wide congestion control feedback from a subscribe leg, handed to the media core.
//!
//! `rtc`'s `CongestionControlInterceptor` keeps the leg's send history and joins every
//! transport-cc feedback packet to it: per packet, when it left and when (on the subscriber's
//! clock) it arrived. Its estimator seam must be `Send + Sync` and lives inside the chain,
//! out of the node's reach; Tern's estimator is plain code in the media core, owned by the room.
//! So the seam here only queues the reports for the node to drain after each input to the leg
//! (same thread: the lock is never contended).

use crate::media::bandwidth::SentPacket;
use rtc::interceptor::{BandwidthEstimator, PacketReport};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Reports held between drains: a few feedback intervals of a busy leg. More means the node is
/// not draining, and the oldest are worth least.
const MAX_QUEUED: usize = 4_096;

/// The queue a leg's chain fills and the node drains, in the form the room's estimator takes.
pub type FeedbackQueue = Arc<Mutex<VecDeque<SentPacket>>>;

/// The "estimator" the chain calls: it only exports.
pub struct FeedbackExport {
    queue: FeedbackQueue,
}

impl FeedbackExport {
    pub fn new(queue: FeedbackQueue) -> Self {
        FeedbackExport { queue }
    }
}

impl BandwidthEstimator for FeedbackExport {
    fn on_reports(&mut self, _now: Instant, reports: &[PacketReport]) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        for report in reports {
            if queue.len() == MAX_QUEUED {
                queue.pop_front();
            }
            queue.push_back(SentPacket {
                id: report.id,
                departure: report.departure,
                arrival: report.arrival.filter(|_| report.arrived),
                size_bytes: report.size.min(u32::MAX as usize) as u32,
            });
        }
    }

    /// Not used by Tern (no pacer in the chain); a neutral value for `rtc`'s stats.
    fn target_bitrate(&self) -> f64 {
        0.0
    }
}

/// Takes everything queued, oldest first.
pub fn drain(queue: &FeedbackQueue, into: &mut Vec<SentPacket>) {
    if let Ok(mut queue) = queue.lock() {
        into.extend(queue.drain(..));
    }
}
