//! Judging each participant's connection quality every `QUALITY_INTERVAL` (the judgement
//! itself is `media::quality`, pure): the node gathers what its legs measured and what the
//! allocator decided, and tells the room when someone's quality changed.

use super::relay::Node;
use super::state::RoomKey;
use super::timers::Timer;
use crate::media::ids::ParticipantId;
use crate::media::quality::LinkSample;
use crate::media::room::MemberState;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;
use rtc::statistics::stats::RTCStatsType;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tern_signaling::protocol::{ParticipantQuality, ServerMessage};

/// How often every participant's quality is judged.
pub const QUALITY_INTERVAL: Duration = Duration::from_secs(2);
/// The judging runs this often, each time for the participants who are due, at most a tenth of
/// them: a judgement reads a leg's stats (about 20 µs each), and 200 participants at once held
/// the packet path for 4.5 ms.
pub const QUALITY_TICK: Duration = Duration::from_millis(200);
const QUALITY_SLICES: usize = 10;

impl Node {
    /// Queues the next judging tick, unless it is queued or nobody is here to judge.
    pub(super) fn arm_quality(&mut self, now: Instant) {
        if !self.quality_armed && !self.participants.is_empty() {
            self.quality_armed = true;
            self.timers.arm(now + QUALITY_TICK, Timer::Quality);
        }
    }

    /// Judges the participants who are due (a slice of them), then tells each room who changed,
    /// and newcomers everybody's quality.
    pub(super) fn judge_quality(&mut self, now: Instant) {
        let started = Instant::now();
        let budget = self.participants.len().div_ceil(QUALITY_SLICES);
        let ids: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.quality_due <= now)
            .map(|p| p.id)
            .take(budget)
            .collect();
        let judged = ids.len();
        let mut changed: BTreeMap<RoomKey, Vec<ParticipantQuality>> = BTreeMap::new();
        for id in ids {
            let sample = self.link_sample(id, now);
            tracing::debug!(participant = %id, ?sample, "connection quality sample");
            let Some(p) = self.participants.get_mut(&id) else {
                continue;
            };
            p.quality_due = now + QUALITY_INTERVAL;
            if let Some(quality) = p.quality.update(&sample) {
                changed.entry(p.room).or_default().push(ParticipantQuality {
                    participant_id: id.to_string(),
                    quality: quality.as_str().to_owned(),
                });
            }
        }
        for (room, updates) in changed {
            self.broadcast(room, None, ServerMessage::ConnectionQuality { updates });
        }
        tracing::debug!(
            judged,
            participants = self.participants.len(),
            took_us = started.elapsed().as_micros() as u64,
            "connection quality judged"
        );
        let newcomers: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| !p.quality_told && p.session.is_some())
            .map(|p| p.id)
            .collect();
        for id in newcomers {
            let Some(room) = self.participants.get(&id).map(|p| p.room) else {
                continue;
            };
            let updates = self
                .members_of(room)
                .map(|p| ParticipantQuality {
                    participant_id: p.id.to_string(),
                    quality: p.quality.current().as_str().to_owned(),
                })
                .collect();
            self.notify(id, ServerMessage::ConnectionQuality { updates });
            if let Some(p) = self.participants.get_mut(&id) {
                p.quality_told = true;
            }
        }
    }

    /// What `id`'s legs measured since the last judgement, and whether the allocator holds its
    /// video back.
    fn link_sample(&mut self, id: ParticipantId, now: Instant) -> LinkSample {
        let Some(p) = self.participants.get(&id) else {
            return LinkSample::default();
        };
        let (room, publish, subscribe, before) =
            (p.room, p.publish_leg, p.subscribe_leg, p.uplink_counts);
        let mut sample = LinkSample {
            connected: p.session.is_some(),
            ..LinkSample::default()
        };
        if let Some(entry) = self.rooms.get(&room) {
            if entry
                .room
                .member(id)
                .is_some_and(|m| matches!(m.state, MemberState::Reconnecting { .. }))
            {
                sample.connected = false;
            }
            // The downlink as transport-cc feedback shows it: loss before any retransmission,
            // and the time from sending a packet to hearing of it.
            if let Some(estimator) = entry.room.bandwidth().estimator(id) {
                sample.downlink_loss = Some(estimator.loss_fraction());
                sample.rtt = estimator.feedback_rtt();
            }
            sample.held_back = entry.room.publications().any(|publication| {
                publication
                    .subscriptions()
                    .iter()
                    .any(|s| s.subscriber == id && s.held_back())
            });
        }
        let down = |state: RTCPeerConnectionState| {
            matches!(
                state,
                RTCPeerConnectionState::Disconnected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        };
        let mut counts = before;
        if let Some(leg) = publish.and_then(|key| self.legs.get_mut(&key)) {
            sample.connected &= !down(leg.state);
            let stats = leg.pc.get_stats(now, StatsSelector::None);
            let (received, lost) = stats.inbound_rtp_streams().fold((0u64, 0u64), |(r, l), s| {
                let stream = &s.received_rtp_stream_stats;
                (
                    r + stream.packets_received,
                    l + stream.packets_lost.max(0) as u64,
                )
            });
            let (new_received, new_lost) = (
                received.saturating_sub(before.0),
                lost.saturating_sub(before.1),
            );
            // A second of audio at least, so that one lost packet is not 10 % loss.
            if new_received + new_lost >= 50 {
                sample.uplink_loss = Some(new_lost as f64 / (new_received + new_lost) as f64);
            }
            counts = (received, lost);
        }
        if let Some(leg) = subscribe.and_then(|key| self.legs.get_mut(&key)) {
            sample.connected &= !down(leg.state);
            // Without bandwidth estimation, the subscriber's receiver reports say.
            if sample.downlink_loss.is_none() {
                let stats = leg.pc.get_stats(now, StatsSelector::None);
                for entry in stats.iter_by_type(RTCStatsType::RemoteInboundRTP) {
                    let RTCStatsReportEntry::RemoteInboundRtp(s) = entry else {
                        continue;
                    };
                    sample.downlink_loss =
                        Some(sample.downlink_loss.unwrap_or(0.0).max(s.fraction_lost));
                    if s.round_trip_time_measurements > 0 && s.round_trip_time.is_finite() {
                        let rtt = Duration::from_secs_f64(s.round_trip_time.clamp(0.0, 60.0));
                        sample.rtt = Some(sample.rtt.map_or(rtt, |worst| worst.max(rtt)));
                    }
                }
            }
        }
        if let Some(p) = self.participants.get_mut(&id) {
            p.uplink_counts = counts;
        }
        sample
    }
}
