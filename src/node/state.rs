//! What the node keeps per room and per participant. (The behaviour is in `participants.rs`,
//! `publish.rs` and `subscribe.rs`; these are the records, so that every module can name them
//! without depending on the others.)

use super::demux::LegKey;
use super::guard::RateLimit;
use crate::media::bandwidth::{BandwidthConfig, BandwidthPolicy};
use crate::media::ids::{ParticipantId, RoomId, TrackId};
use crate::media::room::Room;
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::admin::RoomPolicy;
use tern_signaling::auth::Grants;
use tern_signaling::control::SessionKey;
use tern_signaling::limits::TokenBucket;

/// The node's number for a room (its name is in the room itself); cheap to copy on the packet
/// path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomKey(pub u64);

pub struct RoomEntry {
    pub room: Room,
    pub policy: RoomPolicy,
    pub created_at: SystemTime,
    pub created_by_api: bool,
    /// Since when the room has had nobody in it; it closes after the policy's timeout.
    pub empty_since: Option<Instant>,
    /// Whether anybody ever joined: picks the departure timeout over the empty timeout.
    pub had_participants: bool,
    /// The room's own next deadline, as armed on the node's timers.
    pub timer_at: Option<Instant>,
    /// The closing deadline armed on the node's timers.
    pub close_armed: Option<Instant>,
}

impl RoomEntry {
    pub fn new(
        name: RoomId,
        policy: RoomPolicy,
        keyframe_interval: Duration,
        bandwidth_estimation: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let bandwidth = BandwidthConfig {
            estimation: bandwidth_estimation,
            ..BandwidthConfig::default()
        };
        let mut room = Room::with_bandwidth(name, keyframe_interval, bandwidth);
        room.set_bandwidth_policy(bandwidth_policy(&policy), now);
        RoomEntry {
            room,
            policy,
            created_at: wall,
            created_by_api: false,
            empty_since: Some(now),
            had_participants: false,
            timer_at: None,
            close_armed: None,
        }
    }

    /// Applies a changed policy; its budgets take effect at once.
    pub fn set_policy(&mut self, policy: RoomPolicy, now: Instant) {
        self.room
            .set_bandwidth_policy(bandwidth_policy(&policy), now);
        self.policy = policy;
    }

    /// When an empty room closes.
    pub(super) fn closes_at(&self) -> Option<Instant> {
        let since = self.empty_since?;
        let timeout = if self.had_participants {
            self.policy.departure_timeout_s
        } else {
            self.policy.empty_timeout_s
        };
        Some(since + Duration::from_secs(u64::from(timeout)))
    }
}

/// The room's budgets as the media core takes them (the API's 0 kbps means no limit).
pub fn bandwidth_policy(policy: &RoomPolicy) -> BandwidthPolicy {
    let bps = |kbps: u32| (kbps > 0).then(|| u64::from(kbps) * 1_000);
    BandwidthPolicy {
        max_egress_bps: bps(policy.max_egress_kbps),
        max_subscriber_bps: bps(policy.max_subscriber_kbps),
        max_publisher_bps: bps(policy.max_publisher_kbps),
    }
}

pub struct Participant {
    pub id: ParticipantId,
    pub room: RoomKey,
    pub identity: String,
    pub name: String,
    pub grants: Grants,
    /// The live signaling connection, if any.
    pub session: Option<SessionKey>,
    pub resume_token: String,
    pub publish_leg: Option<LegKey>,
    pub subscribe_leg: Option<LegKey>,
    /// When the subscribe leg should next be renegotiated (debounced).
    pub renegotiate_at: Option<Instant>,
    /// When the last subscribe offer went out (offers are spaced by the renegotiation interval).
    pub last_offer_at: Option<Instant>,
    /// Publish offers this participant may still send now.
    pub offers: TokenBucket,
    /// Tracks this participant's subscribe leg cannot receive (codec); it was told once.
    pub unreceivable: std::collections::HashSet<TrackId>,
    /// The next subscribe offer restarts ICE (the participant resumed, maybe from elsewhere).
    pub restart_subscribe_ice: bool,
    /// Messages this participant may send on its data channel (see `data.rs`).
    pub data_rate: RateLimit,
    /// Joined with `e2ee=1`: takes part in the end-to-end key exchange (see `e2ee.rs`).
    pub e2ee: bool,
    /// The WebSocket protocol, WHIP or WHEP.
    pub via: tern_signaling::control::JoinVia,
    /// A WHEP viewer's m-lines, once its offer is answered.
    pub view: Option<Box<super::view::ViewState>>,
    /// End-to-end key exchange messages this participant may still send now.
    pub e2ee_rate: RateLimit,
    /// Of those, messages to everyone (each costs the relay one per recipient).
    pub e2ee_broadcast_rate: RateLimit,
    pub joined_at: SystemTime,
    /// When the join was accepted, until the first peer connection connects (join duration).
    pub awaiting_media: Option<Instant>,
    /// Connection quality, judged every `QUALITY_INTERVAL` (see `quality.rs`).
    pub quality: crate::media::quality::QualityMeter,
    /// Publisher packets received and lost on the publish leg at the last judgement.
    pub uplink_counts: (u64, u64),
    /// The participant has been told everybody's quality since its last `joined`.
    pub quality_told: bool,
    /// When its quality is next judged.
    pub quality_due: Instant,
}
