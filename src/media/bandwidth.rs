//! A room's bandwidth control loop: one downlink estimate per subscriber, one allocation for the
//! room, and the probes that let an estimate rise above what is being sent.
//!
//! The room feeds it transport-cc reports (per subscriber) and asks it for a round every
//! [`BandwidthConfig::round_interval`], or at once when an estimate falls below what that
//! subscriber is being sent ("down at once"). A round hands the allocator every video
//! subscription with its layers' measured rates and returns a target per subscription; the room
//! switches layers at keyframes. While a probe runs, the room asks for padding packets at a
//! steady pace ([`RoomBandwidth::padding_due`]), so the subscriber's total rate reaches the
//! probe's target; everything sent meanwhile is marked as the probe's in the estimator's feedback.
//! Subscription state changes are reported to subscribers at most once a second per track.

use super::allocator::{
    Allocation, Allocator, AllocatorConfig, Priority, RoomPolicy, SubscriberInput,
    SubscriptionInput, Target,
};
use super::bwe::{EstimatorConfig, PacketFeedback, SendSideEstimator};
use super::ids::{ParticipantId, TrackId};
use super::pacer::Pacer;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Size of one padding-only packet as transport-cc feedback counts it (the estimator's probe
/// measures these): 255 bytes of padding and the RTP header with its extensions.
pub const PADDING_PACKET_BYTES: u64 = 280;
/// Padding aims this far above what the probe needs: timers fire late and the pacer holds
/// padding back behind media, and a probe that delivers under 90 % of its target fails (measured
/// in a browser: 80 % without it).
const PADDING_MARGIN_PERCENT: u64 = 115;
/// Subscription state is told at most this often per subscription.
const NOTICE_INTERVAL: Duration = Duration::from_secs(1);
/// A subscriber that sent no transport-cc feedback for this long after joining does not
/// support it (some native and Python stacks): it is not estimated, paced or probed, and only
/// the room's budgets bound what it gets.
const NO_FEEDBACK_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
pub struct BandwidthConfig {
    /// Off: subscribers are not estimated, paced or probed; layers follow the budgets alone.
    pub estimation: bool,
    pub estimator: EstimatorConfig,
    pub allocator: AllocatorConfig,
    /// How often the room re-allocates when nothing forces it.
    pub round_interval: Duration,
    /// How often padding goes out during a probe (its bursts are this long).
    pub padding_interval: Duration,
}

impl Default for BandwidthConfig {
    fn default() -> Self {
        BandwidthConfig {
            estimation: true,
            estimator: EstimatorConfig::default(),
            allocator: AllocatorConfig::default(),
            round_interval: Duration::from_millis(500),
            padding_interval: Duration::from_millis(5),
        }
    }
}

/// A room's budgets (`None` = unlimited), settable during a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthPolicy {
    /// All video sent to the room's subscribers together (RTX and probes included).
    pub max_egress_bps: Option<u64>,
    /// One subscriber's video.
    pub max_subscriber_bps: Option<u64>,
    /// One publisher's video: layers above it are never forwarded (and the publisher is told to
    /// cap its encodings).
    pub max_publisher_bps: Option<u64>,
}

/// One packet the subscriber reported on, as the shell got it (in send order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentPacket {
    /// Increases by one per packet sent on the subscriber's leg.
    pub id: u64,
    pub departure: Instant,
    /// On the subscriber's clock; `None` when reported lost.
    pub arrival: Option<Duration>,
    pub size_bytes: u32,
}

/// One video subscription as a round sees it.
#[derive(Debug, Clone, Copy)]
pub struct VideoSubscription<'a> {
    pub track: TrackId,
    pub subscriber: ParticipantId,
    pub priority: Priority,
    /// Each layer's rate, lowest quality first; 0 = not live.
    pub layer_bps: &'a [u64],
    /// The subscriber's wishes: the highest layer its tile needs, and paused.
    pub max_layer: Option<u8>,
    pub wants_paused: bool,
}

/// What a round decided for one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub track: TrackId,
    pub subscriber: ParticipantId,
    /// A quality rank (0 = lowest) or paused with its reason.
    pub target: Target,
    /// Whether the subscriber should be told now (its state changed, and it was not told within
    /// the last second).
    pub notify: bool,
}

struct Subscriber {
    estimator: SendSideEstimator,
    added_at: Instant,
    /// Whether any transport-cc feedback came.
    fed: bool,
    /// The last probe success already handed to the allocator.
    probe_succeeded_at: Option<Instant>,
    padding: Option<Padding>,
    /// The video the last round gave this subscriber.
    allocated_video_bps: u64,
    /// Retransmissions the relay sends it, bits per second.
    retransmission_bps: u64,
}

impl Subscriber {
    /// Whether a probe succeeded since the last look: its padding stops, and the allocator may
    /// move up at once.
    fn take_probe_success(&mut self) -> bool {
        let Some(outcome) = self.estimator.last_probe_outcome() else {
            return false;
        };
        if !outcome.succeeded() || self.probe_succeeded_at == Some(outcome.concluded) {
            return false;
        }
        self.probe_succeeded_at = Some(outcome.concluded);
        self.padding = None;
        true
    }
}

/// Padding toward one subscriber for a running probe.
#[derive(Debug, Clone, Copy)]
struct Padding {
    bps: u64,
    until: Instant,
    next_at: Instant,
    /// When padding was last credited: a late wake-up is credited for the time that really
    /// passed (a fixed share per wake-up lost a quarter of every probe to timer lateness).
    credited_at: Instant,
    /// Bytes owed but not yet sent.
    credit_bytes: u64,
}

/// Padding owed is capped at this much time's worth: a long stall must not become a burst.
const MAX_PADDING_CREDIT: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
struct Notice {
    target: Target,
    told: Option<(Target, Instant)>,
    /// When this subscription was last in a round (gone ones are forgotten).
    seen_at: Instant,
}

pub struct RoomBandwidth {
    config: BandwidthConfig,
    policy: BandwidthPolicy,
    allocator: Allocator,
    subscribers: BTreeMap<ParticipantId, Subscriber>,
    notices: BTreeMap<(TrackId, ParticipantId), Notice>,
    next_round: Option<Instant>,
    // Reused between rounds.
    subscriber_inputs: Vec<SubscriberInput>,
    allocations: Vec<Allocation>,
    decisions: Vec<Decision>,
    feedback: Vec<PacketFeedback>,
}

/// The allocator's key for a subscription: the low halves of two random 64-bit ids. Two of a
/// room's subscriptions sharing one (odds about n^2 / 2^64) would share hysteresis state, no more.
fn subscription_key(track: TrackId, subscriber: ParticipantId) -> u64 {
    (track.0 << 32) | (subscriber.0 & 0xffff_ffff)
}

impl RoomBandwidth {
    pub fn new(config: BandwidthConfig) -> Self {
        RoomBandwidth {
            config,
            policy: BandwidthPolicy::default(),
            allocator: Allocator::new(config.allocator),
            subscribers: BTreeMap::new(),
            notices: BTreeMap::new(),
            next_round: None,
            subscriber_inputs: Vec::new(),
            allocations: Vec::new(),
            decisions: Vec::new(),
            feedback: Vec::new(),
        }
    }

    pub fn policy(&self) -> BandwidthPolicy {
        self.policy
    }

    /// New budgets take effect at the next round, which is now.
    pub fn set_policy(&mut self, policy: BandwidthPolicy, now: Instant) {
        self.policy = policy;
        self.next_round = Some(now);
    }

    pub fn add_subscriber(&mut self, id: ParticipantId, now: Instant) {
        self.subscribers.entry(id).or_insert_with(|| Subscriber {
            estimator: SendSideEstimator::new(self.config.estimator, now),
            added_at: now,
            fed: false,
            retransmission_bps: 0,
            probe_succeeded_at: None,
            padding: None,
            allocated_video_bps: 0,
        });
        self.next_round = Some(now);
    }

    /// The subscriber left; its share goes to the others at the next round.
    pub fn remove_subscriber(&mut self, id: ParticipantId) {
        self.subscribers.remove(&id);
        self.notices.retain(|(_, subscriber), _| *subscriber != id);
    }

    /// Something changed the set of subscriptions or their layers: allocate soon.
    pub fn wake(&mut self, now: Instant) {
        self.next_round = Some(self.next_round.map_or(now, |at| at.min(now)));
    }

    pub fn set_retransmission_rate(&mut self, id: ParticipantId, bps: u64) {
        if let Some(subscriber) = self.subscribers.get_mut(&id) {
            subscriber.retransmission_bps = bps;
        }
    }

    /// The subscriber's transport-cc reports. A round is due at once when its estimate no longer
    /// carries what it is being sent.
    pub fn on_feedback(&mut self, id: ParticipantId, now: Instant, reports: &[SentPacket]) {
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            return;
        };
        let probe = subscriber.estimator.probe();
        subscriber.fed |= !reports.is_empty();
        self.feedback.clear();
        for report in reports {
            self.feedback.push(PacketFeedback {
                seq: report.id,
                departure: report.departure,
                arrival: report.arrival,
                size_bytes: report.size_bytes,
                probe: probe.is_some_and(|p| (p.started..=p.until).contains(&report.departure)),
            });
        }
        subscriber.estimator.on_feedback(now, &self.feedback);
        let budget =
            subscriber.estimator.estimate_bps() * self.config.allocator.estimate_percent / 100;
        let probe_succeeded = subscriber.take_probe_success();
        if budget < subscriber.allocated_video_bps || probe_succeeded {
            self.wake(now);
        }
    }

    /// The subscriber's estimated downlink; `None` for a subscriber without transport-cc.
    pub fn estimate_bps(&self, id: ParticipantId) -> Option<u64> {
        self.subscribers
            .get(&id)
            .filter(|s| s.fed)
            .map(|s| s.estimator.estimate_bps())
    }

    /// What the allocator plans with: the estimate, the starting estimate until feedback comes,
    /// and no limit for a subscriber that never sends any.
    fn planning_estimate(&self, subscriber: &Subscriber, now: Instant) -> u64 {
        if !self.config.estimation {
            return self.config.estimator.max_bps;
        }
        if subscriber.fed || now.saturating_duration_since(subscriber.added_at) < NO_FEEDBACK_GRACE
        {
            subscriber.estimator.estimate_bps()
        } else {
            self.config.estimator.max_bps
        }
    }

    /// The subscriber's estimator, for its details (acknowledged rate, loss, delay state).
    pub fn estimator(&self, id: ParticipantId) -> Option<&SendSideEstimator> {
        self.subscribers.get(&id).map(|s| &s.estimator)
    }

    /// The rate to pace this subscriber's packets at now (see [`Pacer::rate_for`]); `None`
    /// (unpaced) until its first transport-cc feedback, and for subscribers that send none.
    pub fn pacing_bps(&self, id: ParticipantId, now: Instant) -> Option<u64> {
        let subscriber = self.subscribers.get(&id).filter(|s| s.fed)?;
        let estimator = &subscriber.estimator;
        Some(Pacer::rate_for(
            estimator.estimate_bps(),
            estimator.probe_target_bps(now),
        ))
    }

    /// All video the last round allocated to the room's subscribers.
    pub fn room_video_bps(&self) -> u64 {
        self.allocator.room_video_bps()
    }

    /// Whether the room's budget held somebody back in the last round.
    pub fn held_at_budget(&self) -> bool {
        self.allocator.held_at_budget()
    }

    pub fn is_round_due(&self, now: Instant) -> bool {
        self.next_round.is_some_and(|at| at <= now)
    }

    /// Allocates every video subscription. `audio_bps` is the audio each subscriber receives.
    pub fn round(
        &mut self,
        now: Instant,
        subscriptions: &[VideoSubscription],
        audio_bps: impl Fn(ParticipantId) -> u64,
    ) -> &[Decision] {
        self.next_round = Some(now + self.config.round_interval);
        self.subscriber_inputs.clear();
        for (id, subscriber) in &self.subscribers {
            self.subscriber_inputs.push(SubscriberInput {
                key: id.0,
                estimate_bps: self.planning_estimate(subscriber, now),
                audio_bps: audio_bps(*id),
                rtx_bps: subscriber.retransmission_bps,
                probe_succeeded_at: subscriber.probe_succeeded_at,
            });
        }
        let inputs: Vec<SubscriptionInput> = subscriptions
            .iter()
            .map(|s| SubscriptionInput {
                key: subscription_key(s.track, s.subscriber),
                subscriber: s.subscriber.0,
                priority: s.priority,
                layer_bps: s.layer_bps,
                max_layer: s.max_layer,
                wants_paused: s.wants_paused,
            })
            .collect();
        let policy = RoomPolicy {
            max_egress_bps: self.policy.max_egress_bps,
            max_subscriber_bps: self.policy.max_subscriber_bps,
        };
        self.allocations.clear();
        self.allocator.allocate(
            now,
            &policy,
            &self.subscriber_inputs,
            &inputs,
            &mut self.allocations,
        );
        for subscriber in self.subscribers.values_mut() {
            subscriber.allocated_video_bps = 0;
        }
        self.decisions.clear();
        for (allocation, subscription) in self.allocations.iter().zip(subscriptions) {
            if let Some(subscriber) = self.subscribers.get_mut(&subscription.subscriber) {
                subscriber.allocated_video_bps += allocation.bps;
            }
            let key = (subscription.track, subscription.subscriber);
            let notice = self.notices.entry(key).or_insert(Notice {
                target: allocation.target,
                told: None,
                seen_at: now,
            });
            notice.target = allocation.target;
            notice.seen_at = now;
            let notify = match notice.told {
                None => true,
                Some((told, at)) => {
                    told != allocation.target
                        && now.saturating_duration_since(at) >= NOTICE_INTERVAL
                }
            };
            if notify {
                notice.told = Some((allocation.target, now));
            }
            self.decisions.push(Decision {
                track: subscription.track,
                subscriber: subscription.subscriber,
                target: allocation.target,
                notify,
            });
        }
        self.notices.retain(|_, notice| notice.seen_at == now);
        self.start_probes(now);
        &self.decisions
    }

    fn start_probes(&mut self, now: Instant) {
        for (id, subscriber) in &mut self.subscribers {
            if !subscriber.fed {
                continue;
            }
            let Some(wanted) = self.allocator.probe_wanted(id.0) else {
                continue;
            };
            if wanted.padding_bps == 0 {
                continue;
            }
            if let Some(probe) = subscriber.estimator.start_probe(now, wanted.target_bps) {
                subscriber.padding = Some(Padding {
                    bps: wanted.padding_bps * PADDING_MARGIN_PERCENT / 100,
                    until: probe.until,
                    next_at: now,
                    credited_at: now,
                    credit_bytes: 0,
                });
            }
        }
    }

    /// The shell sent this many of the padding packets asked for (fewer when its pacer was busy
    /// or no stream could take one): what was not sent stays owed.
    pub fn padding_sent(&mut self, id: ParticipantId, packets: u32) {
        self.probe_bytes_sent(id, u64::from(packets) * PADDING_PACKET_BYTES);
    }

    /// The shell sent this much of a probe as retransmitted copies of media instead of padding.
    pub fn probe_bytes_sent(&mut self, id: ParticipantId, bytes: u64) {
        if let Some(padding) = self
            .subscribers
            .get_mut(&id)
            .and_then(|s| s.padding.as_mut())
        {
            padding.credit_bytes = padding.credit_bytes.saturating_sub(bytes);
        }
    }

    /// Padding packets to send now, per subscriber being probed.
    pub fn padding_due(&mut self, now: Instant, out: &mut Vec<(ParticipantId, u32)>) {
        for (id, subscriber) in &mut self.subscribers {
            let Some(padding) = &mut subscriber.padding else {
                continue;
            };
            if now >= padding.until {
                subscriber.padding = None;
                continue;
            }
            if now < padding.next_at {
                continue;
            }
            let interval = self.config.padding_interval;
            let elapsed = now
                .saturating_duration_since(padding.credited_at)
                .min(MAX_PADDING_CREDIT);
            padding.credited_at = now;
            let cap = padding.bps * MAX_PADDING_CREDIT.as_micros() as u64 / 8_000_000;
            padding.credit_bytes = (padding.credit_bytes
                + padding.bps * elapsed.as_micros() as u64 / 8_000_000)
                .min(cap);
            let packets = padding.credit_bytes / PADDING_PACKET_BYTES;
            padding.next_at = now + interval;
            if packets > 0 {
                out.push((*id, packets.min(u64::from(u32::MAX)) as u32));
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut probe_succeeded = false;
        for subscriber in self.subscribers.values_mut() {
            subscriber.estimator.handle_timeout(now);
            probe_succeeded |= subscriber.take_probe_success();
        }
        if probe_succeeded {
            self.wake(now);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let estimators = self
            .subscribers
            .values()
            .filter_map(|s| s.estimator.poll_timeout());
        let padding = self
            .subscribers
            .values()
            .filter_map(|s| s.padding.map(|p| p.next_at.min(p.until)));
        estimators
            .chain(padding)
            .chain(self.next_round)
            .chain(self.allocator.poll_timeout())
            .min()
    }

    /// What the last round decided for one subscription.
    pub fn target(&self, track: TrackId, subscriber: ParticipantId) -> Option<Target> {
        self.notices.get(&(track, subscriber)).map(|n| n.target)
    }
}
