//! Sending toward subscribers through each subscribe leg's pacer (`media::pacer` says why).
//!
//! Media and probe padding for a subscriber leave no faster than its pacer allows; what must
//! wait is held in the leg (bounded) and released by a `Pace` timer. Audio never waits, but
//! takes its share of the pacer. `rtc` stamps each packet's transport-wide number and records
//! its departure when it is written, so the estimator sees paced departures.

use super::leg::{LegMedia, MAX_PACED, PacedPacket};
use super::relay::{Node, flush_leg};
use super::timers::Timer;
use crate::media::codec::MediaKind;
use crate::media::ids::ParticipantId;
use crate::media::pacer::UNPACED_BPS;
use crate::metrics::DropReason;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::demux::LegKey;

/// RTP header with the extensions a subscribe leg sends, and the SRTP tag.
const PACKET_OVERHEAD_BYTES: u32 = 48;
/// Packets due this soon go out now, with the others due: one timer wake-up and one batch of
/// sends per few milliseconds rather than per packet (released one by one, the paced packets of
/// the benchmark's 25-subscriber rooms cost 40 % more CPU per packet than unpaced ones).
/// libwebrtc's pacer works in 5 ms steps too.
const PACE_SLACK: Duration = Duration::from_millis(4);
/// Retransmissions may take this share of a subscriber's estimate (libwebrtc allows up to the
/// whole target; a relay answering for many publishers at once needs the room for media).
const RETRANSMISSION_SHARE_PERCENT: u64 = 25;
/// Retransmission rates are measured over at least this long.
const RETRANSMISSION_WINDOW: Duration = Duration::from_millis(500);
/// Probe padding is only worth sending while the pacer is nearly idle: it fills spare rate and
/// must never delay media.
const PADDING_MAX_BACKLOG: Duration = Duration::from_millis(10);

impl Node {
    /// Writes a packet to a subscriber now, or holds it until the leg's pacer lets it go.
    /// `kind` is `None` for probe padding.
    pub(super) fn pace_or_write(
        &mut self,
        leg_key: LegKey,
        sender: RTCRtpSenderId,
        packet: Packet,
        kind: Option<MediaKind>,
        now: Instant,
    ) {
        let Some(leg) = self.legs.get_mut(&leg_key) else {
            return;
        };
        let LegMedia::Subscribe(state) = &mut leg.media else {
            return;
        };
        let bytes = packet.payload.len() as u32 + PACKET_OVERHEAD_BYTES;
        let at = state.pacer.schedule(now, bytes);
        let now_or_never = kind == Some(MediaKind::Audio);
        if now_or_never || (at <= now + PACE_SLACK && state.paced.is_empty()) {
            self.write_to_leg(leg_key, sender, packet, kind, now);
            return;
        }
        if state.paced.len() >= MAX_PACED {
            self.metrics.count_drop(DropReason::PacerOverflow);
            return;
        }
        state.paced.push_back(PacedPacket {
            at,
            sender,
            packet,
            kind,
        });
        if state.pace_armed.is_none() {
            state.pace_armed = Some(at);
            self.timers.arm(at, Timer::Pace(leg_key));
        }
    }

    /// Sends up to about `bytes` of a probe as retransmitted copies of what the leg just sent
    /// (none when it has no RTX); returns the bytes sent, which its pacer is charged with.
    pub(super) fn send_probe_copies(&mut self, leg_key: LegKey, bytes: u64, now: Instant) -> u64 {
        let Some(leg) = self.legs.get_mut(&leg_key) else {
            return 0;
        };
        let LegMedia::Subscribe(state) = &leg.media else {
            return 0;
        };
        let tap = state.probe.clone();
        tap.order(bytes, now);
        let transmits = &mut self.transmits;
        let outcome = catch_unwind(AssertUnwindSafe(|| flush_leg(leg, transmits)));
        let sent = tap.take_sent();
        if outcome.is_err() {
            self.leg_panicked(leg_key, now);
            return 0;
        }
        if let Some(leg) = self.legs.get_mut(&leg_key)
            && let LegMedia::Subscribe(state) = &mut leg.media
        {
            state
                .pacer
                .schedule(now, sent.min(u64::from(u32::MAX)) as u32);
        }
        self.metrics.probe_bytes_sent.inc_by(sent);
        sent
    }

    /// Whether a probe's padding may go to this leg now.
    pub(super) fn has_spare_pacing(&self, leg_key: LegKey, now: Instant) -> bool {
        self.legs.get(&leg_key).is_some_and(|leg| match &leg.media {
            LegMedia::Subscribe(state) => state.pacer.backlog(now) <= PADDING_MAX_BACKLOG,
            LegMedia::Publish(_) => false,
        })
    }

    /// The pacing rate follows the subscriber's estimate (and its probe, while one runs).
    pub(super) fn update_pacing(&mut self, subscriber: ParticipantId, now: Instant) {
        let Some(participant) = self.participants.get(&subscriber) else {
            return;
        };
        let (Some(leg_key), room) = (participant.subscribe_leg, participant.room) else {
            return;
        };
        let bandwidth = self.rooms.get(&room).map(|e| e.room.bandwidth());
        let rate = bandwidth
            .and_then(|b| b.pacing_bps(subscriber, now))
            .unwrap_or(UNPACED_BPS);
        let retransmission_limit = bandwidth
            .and_then(|b| b.estimate_bps(subscriber))
            .map_or(u64::MAX, |estimate| {
                estimate * RETRANSMISSION_SHARE_PERCENT / 100
            });
        let Some(leg) = self.legs.get_mut(&leg_key) else {
            return;
        };
        let LegMedia::Subscribe(state) = &mut leg.media else {
            return;
        };
        state.pacer.set_rate(rate);
        state
            .retransmissions
            .limit_bps
            .store(retransmission_limit, Ordering::Relaxed);
        // What the leg retransmitted since the last look, for the subscriber's budgets.
        let sent = state.retransmissions.sent_bytes.load(Ordering::Relaxed);
        let measured = match state.retransmitted {
            Some((at, before)) if now.saturating_duration_since(at) >= RETRANSMISSION_WINDOW => {
                let elapsed = now.saturating_duration_since(at).as_micros().max(1) as u64;
                Some(sent.saturating_sub(before) * 8 * 1_000_000 / elapsed)
            }
            Some(_) => None,
            None => Some(0),
        };
        if let Some(bps) = measured {
            state.retransmitted = Some((now, sent));
            if let Some(entry) = self.rooms.get_mut(&room) {
                entry.room.set_retransmission_rate(subscriber, bps);
            }
        }
    }

    /// The `Pace` timer: sends what is due and re-arms for the rest.
    pub(super) fn release_paced(&mut self, leg_key: LegKey, at: Instant, now: Instant) {
        match self.legs.get_mut(&leg_key).map(|l| &mut l.media) {
            Some(LegMedia::Subscribe(state)) if state.pace_armed == Some(at) => {
                state.pace_armed = None;
            }
            _ => return, // superseded, or the leg is gone
        }
        loop {
            let Some(leg) = self.legs.get_mut(&leg_key) else {
                return;
            };
            let LegMedia::Subscribe(state) = &mut leg.media else {
                return;
            };
            match state.paced.front() {
                Some(next) if next.at <= now + PACE_SLACK => {
                    let Some(due) = state.paced.pop_front() else {
                        return;
                    };
                    self.write_to_leg(leg_key, due.sender, due.packet, due.kind, now);
                }
                Some(next) => {
                    let at = next.at;
                    state.pace_armed = Some(at);
                    self.timers.arm(at, Timer::Pace(leg_key));
                    return;
                }
                None => return,
            }
        }
    }

    fn write_to_leg(
        &mut self,
        leg_key: LegKey,
        sender: RTCRtpSenderId,
        packet: Packet,
        kind: Option<MediaKind>,
        now: Instant,
    ) {
        let Some(leg) = self.legs.get_mut(&leg_key) else {
            return;
        };
        let payload_len = packet.payload.len() as u64;
        let metrics = &self.metrics;
        let transmits = &mut self.transmits;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let written = leg
                .pc
                .rtp_sender(sender)
                .map(|mut s| s.write_rtp(now, packet).is_ok())
                .unwrap_or(false);
            match (written, kind) {
                (true, Some(kind)) => {
                    metrics.rtp_packets_sent.get(kind).inc();
                    metrics.rtp_bytes_sent.get(kind).inc_by(payload_len);
                }
                (true, None) => metrics
                    .probe_bytes_sent
                    .inc_by(rtc::rtp::packet::PADDING_ONLY_LEN as u64),
                (false, _) => metrics.count_drop(DropReason::SendRefused),
            }
            flush_leg(leg, transmits);
        }));
        if outcome.is_err() {
            self.leg_panicked(leg_key, now);
        }
    }
}
