//! What was sent, joined with what the receiver said about it.

use super::acknowledgement::{Acknowledgement, PacketReport};
use rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// An empty place in [`History::twcc_ids`]: no TWCC packet had that sequence number, or it is
/// gone.
const NO_ID: u64 = u64::MAX;

/// A jump in transport-wide sequence numbers up to this long is kept as empty places; a longer
/// one (or a step back) starts the index afresh.
const MAX_TWCC_GAP: u16 = 1024;

/// Records outgoing packets and matches incoming feedback against them.
///
/// Every packet sent passes through here, so the records need no hashing: ids are handed out
/// in order, and a record's place in `packets` follows from its id. TWCC names a packet by its
/// transport-wide sequence number, which also counts up by one per packet, so that index is a
/// ring too. RFC 8888 names a packet by the stream's SSRC and RTP sequence number; that index
/// is a hash map, built only once such feedback arrives.
#[derive(Debug, Default)]
pub struct History {
    /// Monotonic id, so reports come out in send order however sequence numbers wrap.
    next_id: u64,
    /// Records oldest first: `packets[i]` is id `first_id + i`, `None` once reported or pruned.
    packets: VecDeque<Option<PacketReport>>,
    first_id: u64,
    /// Records in `packets` that are `Some`.
    live: usize,
    /// Ids of TWCC packets: `twcc_ids[k]` has transport-wide sequence number `twcc_first + k`.
    twcc_ids: VecDeque<u64>,
    twcc_first: u16,
    /// `(ssrc, rtp_sequence_number) -> id`, kept from the first RFC 8888 feedback on.
    ssrc_sequence_index: Option<HashMap<(u32, u16), u64>>,
    /// Highest id acknowledged so far.
    highest_acknowledged: Option<u64>,
    /// Lowest id not yet reported to the consumer.
    next_to_report: u64,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many packets are being tracked.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether nothing is being tracked.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Record a packet as it leaves.
    ///
    /// `departure` must be the instant the packet was **released** to the network, not the
    /// instant the application handed it over. A pacer can hold a packet for tens of
    /// milliseconds, and counting that as network delay is exactly the error that makes a
    /// bandwidth estimate collapse (chain contract rule 3).
    #[allow(clippy::too_many_arguments)]
    pub fn add_outgoing(
        &mut self,
        ssrc: u32,
        rtp_sequence_number: u16,
        is_twcc: bool,
        twcc_sequence_number: u16,
        size: usize,
        departure: Instant,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.packets.is_empty() {
            self.first_id = id;
        }

        if is_twcc {
            self.index_twcc(twcc_sequence_number, id);
        }
        if let Some(index) = &mut self.ssrc_sequence_index {
            index.insert((ssrc, rtp_sequence_number), id);
        }

        self.packets.push_back(Some(PacketReport {
            ssrc,
            id,
            rtp_sequence_number,
            is_twcc,
            twcc_sequence_number,
            size,
            arrived: false,
            departure,
            arrival: None,
            ecn: Ecn::NotEct,
        }));
        self.live += 1;

        id
    }

    fn index_twcc(&mut self, sequence_number: u16, id: u64) {
        if !self.twcc_ids.is_empty() {
            let expected = self.twcc_first.wrapping_add(self.twcc_ids.len() as u16);
            // A step back into the ring (a reordered send) fills its empty place; the index is
            // not started again for it.
            let place = usize::from(sequence_number.wrapping_sub(self.twcc_first));
            if place < self.twcc_ids.len() {
                if self.twcc_ids[place] == NO_ID {
                    self.twcc_ids[place] = id;
                }
                return;
            }
            let gap = sequence_number.wrapping_sub(expected);
            // Half the sequence space at most, so a lookup is never ambiguous.
            if gap <= MAX_TWCC_GAP && self.twcc_ids.len() + usize::from(gap) < 0x8000 {
                self.twcc_ids
                    .extend(std::iter::repeat_n(NO_ID, usize::from(gap)));
                self.twcc_ids.push_back(id);
                return;
            }
            self.twcc_ids.clear();
        }
        self.twcc_first = sequence_number;
        self.twcc_ids.push_back(id);
    }

    fn slot(&mut self, id: u64) -> Option<&mut Option<PacketReport>> {
        let index = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        self.packets.get_mut(index)
    }

    fn take(&mut self, id: u64) -> Option<PacketReport> {
        let packet = self.slot(id)?.take()?;
        self.live -= 1;
        if let Some(index) = &mut self.ssrc_sequence_index {
            // Only while it still names this record: a later packet may reuse the key.
            if index.get(&(packet.ssrc, packet.rtp_sequence_number)) == Some(&id) {
                index.remove(&(packet.ssrc, packet.rtp_sequence_number));
            }
        }
        Some(packet)
    }

    /// Drops the empty places at the front of both rings.
    fn trim(&mut self) {
        while matches!(self.packets.front(), Some(None)) {
            self.packets.pop_front();
            self.first_id += 1;
        }
        if self.packets.is_empty() {
            self.first_id = self.next_id;
        }
        while let Some(&id) = self.twcc_ids.front() {
            let live = id
                .checked_sub(self.first_id)
                .and_then(|index| self.packets.get(index as usize))
                .is_some_and(Option::is_some);
            if id != NO_ID && live {
                break;
            }
            self.twcc_ids.pop_front();
            self.twcc_first = self.twcc_first.wrapping_add(1);
        }
    }

    /// Apply TWCC feedback, returning the round trip time it implies.
    ///
    /// `None` when the feedback names a packet this endpoint has no record of — which happens
    /// routinely at startup and after the history has been pruned, and is not an error.
    pub fn on_twcc_feedback(
        &mut self,
        received_at: Instant,
        acknowledgement: Acknowledgement,
    ) -> Option<Duration> {
        let place = acknowledgement
            .sequence_number
            .wrapping_sub(self.twcc_first);
        let id = *self.twcc_ids.get(usize::from(place))?;
        if id == NO_ID {
            return None;
        }
        self.apply(received_at, id, acknowledgement)
    }

    /// Apply RFC 8888 feedback for one stream, returning the round trip time it implies.
    pub fn on_ccfb_feedback(
        &mut self,
        received_at: Instant,
        ssrc: u32,
        acknowledgement: Acknowledgement,
    ) -> Option<Duration> {
        let packets = &self.packets;
        let index = self.ssrc_sequence_index.get_or_insert_with(|| {
            packets
                .iter()
                .flatten()
                .map(|p| ((p.ssrc, p.rtp_sequence_number), p.id))
                .collect()
        });
        let id = *index.get(&(ssrc, acknowledgement.sequence_number))?;
        self.apply(received_at, id, acknowledgement)
    }

    fn apply(
        &mut self,
        received_at: Instant,
        id: u64,
        acknowledgement: Acknowledgement,
    ) -> Option<Duration> {
        let packet = self.slot(id)?.as_mut()?;

        packet.arrived = acknowledgement.arrived;
        packet.arrival = acknowledgement.arrival;
        packet.ecn = acknowledgement.ecn;
        let departure = packet.departure;

        if acknowledgement.arrived {
            self.highest_acknowledged = Some(match self.highest_acknowledged {
                Some(highest) => highest.max(id),
                None => id,
            });
        }

        // Round trip: this feedback arrived now, and the packet left then. Both instants are on
        // this endpoint's clock, so unlike the arrival times this is a real duration.
        Some(received_at.saturating_duration_since(departure))
    }

    /// Take everything up to the highest *arrived* packet since the last call, in send order.
    ///
    /// Packets older than that which are still unreported are treated as lost and then dropped.
    /// Loss feedback alone does not advance the reporting window; losses are emitted when a later
    /// packet is reported as arrived.
    pub fn take_reports(&mut self) -> Vec<PacketReport> {
        let Some(highest) = self.highest_acknowledged else {
            return Vec::new();
        };
        if self.next_to_report > highest {
            return Vec::new();
        }

        let first = self.next_to_report.max(self.first_id);
        let mut reports = Vec::with_capacity((highest + 1).saturating_sub(first) as usize);
        for id in first..=highest {
            if let Some(packet) = self.take(id) {
                reports.push(packet);
            }
        }
        self.next_to_report = highest + 1;
        self.trim();

        reports
    }

    /// Drop records of packets sent before `cutoff` that were never acknowledged.
    ///
    /// Without this the history grows without bound on a lossy path: an unacknowledged packet is
    /// never reported and never removed, so nothing else would ever release it. Records are
    /// looked at oldest first, up to the first sent at or after `cutoff`.
    pub fn prune_before(&mut self, cutoff: Instant) {
        for index in 0..self.packets.len() {
            let Some(packet) = &self.packets[index] else {
                continue;
            };
            if packet.departure >= cutoff {
                break;
            }
            if !packet.arrived {
                self.take(packet.id);
            }
        }
        self.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history_with_three_packets(now: Instant) -> History {
        let mut history = History::new();
        for sequence_number in 0..3u16 {
            history.add_outgoing(1, 100 + sequence_number, true, sequence_number, 1200, now);
        }
        history
    }

    #[test]
    fn feedback_for_an_unknown_packet_is_ignored() {
        let now = Instant::now();
        let mut history = History::new();

        assert_eq!(
            None,
            history.on_twcc_feedback(now, Acknowledgement::received(5, None, Ecn::NotEct)),
            "nothing was sent with that sequence number"
        );
        assert!(history.take_reports().is_empty());
    }

    #[test]
    fn twcc_feedback_matches_by_transport_wide_sequence_number() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        let rtt = history.on_twcc_feedback(
            now + Duration::from_millis(80),
            Acknowledgement::received(1, Some(Duration::from_millis(5)), Ecn::NotEct),
        );
        assert_eq!(Some(Duration::from_millis(80)), rtt);

        let reports = history.take_reports();
        assert_eq!(2, reports.len(), "everything up to the acknowledgement");
        assert_eq!(101, reports[1].rtp_sequence_number);
        assert!(reports[1].arrived);
        assert!(!reports[0].arrived, "never acknowledged, so a loss");
    }

    /// RFC 8888 names packets by the stream's own sequence number, so two streams can use the
    /// same one and must not be confused.
    #[test]
    fn ccfb_feedback_matches_by_ssrc_and_sequence_number() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 500, false, 0, 1000, now);
        history.add_outgoing(2, 500, false, 0, 1000, now);

        history.on_ccfb_feedback(
            now + Duration::from_millis(50),
            2,
            Acknowledgement::received(500, Some(Duration::from_millis(1)), Ecn::Ce),
        );

        let reports = history.take_reports();
        assert_eq!(2, reports.len());
        assert!(
            !reports[0].arrived,
            "stream 1's packet was not acknowledged"
        );
        assert!(reports[1].arrived, "stream 2's was");
        assert_eq!(Ecn::Ce, reports[1].ecn);
    }

    /// Feedback naming a stream that never sent that sequence number must not match another
    /// stream that did. RFC 8888 numbers packets per stream, so the same sequence number is in
    /// use on every stream at once — matching on it alone would attribute one stream's arrival to
    /// another and corrupt both their delay estimates.
    ///
    /// Deterministic by construction: only stream 1 ever sent 500, so a lookup that ignores the
    /// SSRC can only match stream 1's packet, and a correct one can only fail.
    #[test]
    fn ccfb_feedback_for_a_sequence_number_another_stream_sent_does_not_match() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 500, false, 0, 1000, now);

        assert_eq!(
            None,
            history.on_ccfb_feedback(
                now + Duration::from_millis(50),
                2,
                Acknowledgement::received(500, Some(Duration::from_millis(1)), Ecn::NotEct),
            ),
            "stream 2 never sent sequence 500"
        );
        assert!(
            history.take_reports().is_empty(),
            "and nothing was acknowledged, so stream 1's packet is still outstanding"
        );
    }

    #[test]
    fn nothing_is_reported_until_something_is_acknowledged() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        assert!(
            history.take_reports().is_empty(),
            "sent but not yet acknowledged"
        );
        assert_eq!(3, history.len(), "and still tracked");
    }

    /// A packet reported once must not be reported again: congestion control would count it
    /// twice, and a loss re-reported later looks like a reordered arrival.
    #[test]
    fn packets_are_reported_once() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        history.on_twcc_feedback(now, Acknowledgement::received(2, None, Ecn::NotEct));
        assert_eq!(3, history.take_reports().len());
        assert!(history.take_reports().is_empty());
        assert!(history.is_empty(), "and released");
    }

    #[test]
    fn later_feedback_reports_only_what_follows() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);
        history.add_outgoing(1, 101, true, 1, 1200, now);

        history.on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct));
        assert_eq!(1, history.take_reports().len());

        history.on_twcc_feedback(now, Acknowledgement::received(1, None, Ecn::NotEct));
        let reports = history.take_reports();
        assert_eq!(1, reports.len());
        assert_eq!(101, reports[0].rtp_sequence_number);
    }

    /// A packet reported as lost does not advance the reporting window on its own — otherwise a
    /// long run of losses would flush packets that have not been heard about yet.
    #[test]
    fn a_loss_alone_does_not_advance_the_window() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        history.on_twcc_feedback(now, Acknowledgement::lost(1));
        assert!(
            history.take_reports().is_empty(),
            "nothing has been acknowledged as arrived"
        );
        assert_eq!(3, history.len());
    }

    /// The round trip is measured between two instants on *this* endpoint's clock, unlike the
    /// arrival times, which are on the receiver's.
    #[test]
    fn the_round_trip_is_measured_locally() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);

        assert_eq!(
            Some(Duration::from_millis(120)),
            history.on_twcc_feedback(
                now + Duration::from_millis(120),
                Acknowledgement::received(0, Some(Duration::from_secs(9999)), Ecn::NotEct),
            ),
            "the receiver's arrival clock does not affect it"
        );
    }

    /// Without pruning, an unacknowledged packet is never reported and never removed, so a lossy
    /// path grows the history without bound.
    /// A non-TWCC packet carries a meaningless `twcc_sequence_number` (whatever the caller
    /// passed, typically 0) and was never entered into the TWCC index. Removing that key when it
    /// is released evicts whichever *real* TWCC packet happens to hold it, and that packet's
    /// feedback can then never match.
    #[test]
    fn releasing_a_non_twcc_packet_does_not_evict_a_twcc_packets_index_entry() {
        let now = Instant::now();
        let mut history = History::new();

        // The non-TWCC packet is sent *first*, so reporting it does not sweep up the TWCC one:
        // the reporting window runs to the highest arrived id, and anything below it is dropped
        // as a loss regardless. Ordering this way isolates the index eviction from that.
        history.add_outgoing(2, 200, false, 0, 1200, now);
        // A real TWCC packet holding transport-wide sequence 0, sent after.
        history.add_outgoing(1, 100, true, 0, 1200, now);

        // Release the non-TWCC packet by reporting it.
        history.on_ccfb_feedback(now, 2, Acknowledgement::received(200, None, Ecn::NotEct));
        history.take_reports();

        assert!(
            history
                .on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct))
                .is_some(),
            "the TWCC packet is still matchable by its transport-wide sequence number"
        );
    }

    /// The same hazard on the pruning path.
    #[test]
    fn pruning_a_non_twcc_packet_does_not_evict_a_twcc_packets_index_entry() {
        let now = Instant::now();
        let mut history = History::new();

        // Old, non-TWCC, carrying the default 0 it never registered.
        history.add_outgoing(2, 200, false, 0, 1200, now);
        // Recent, a real TWCC packet holding transport-wide sequence 0.
        history.add_outgoing(1, 100, true, 0, 1200, now + Duration::from_secs(5));

        history.prune_before(now + Duration::from_secs(1));

        assert!(
            history
                .on_twcc_feedback(
                    now + Duration::from_secs(5),
                    Acknowledgement::received(0, None, Ecn::NotEct)
                )
                .is_some(),
            "pruning the unrelated packet must not take the TWCC index entry with it"
        );
    }

    /// An acknowledged packet that has not been reported yet must survive pruning, or the arrival
    /// is lost and congestion control never hears about it.
    #[test]
    fn an_acknowledged_packet_is_not_pruned_before_it_is_reported() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);

        history.on_twcc_feedback(
            now + Duration::from_millis(50),
            Acknowledgement::received(0, None, Ecn::NotEct),
        );

        // Well past the cutoff, but it has been acknowledged and not yet collected.
        history.prune_before(now + Duration::from_secs(30));

        let reports = history.take_reports();
        assert_eq!(1, reports.len(), "the arrival survived to be reported");
        assert!(reports[0].arrived);
    }

    #[test]
    fn old_unacknowledged_packets_are_pruned() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);
        history.add_outgoing(1, 101, true, 1, 1200, now + Duration::from_secs(5));

        history.prune_before(now + Duration::from_secs(1));

        assert_eq!(1, history.len(), "only the recent one survives");
        assert_eq!(
            None,
            history.on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct)),
            "and the pruned one is no longer matchable"
        );
    }

    /// Hours of a call on one leg: the transport-wide and RTP sequence numbers wrap many times,
    /// every acknowledged packet is matched and reported once, and the history stays small.
    #[test]
    fn sequence_numbers_wrap_many_times_and_the_history_stays_bounded() {
        let start = Instant::now();
        let mut history = History::new();
        let mut reported = 0u64;
        for n in 0..300_000u64 {
            let now = start + Duration::from_millis(n);
            history.add_outgoing(7, n as u16, true, n as u16, 1200, now);
            // Feedback every 50 packets for the 50 before, one in 10 of them lost.
            if n % 50 == 49 {
                for k in n - 49..=n {
                    if k % 10 != 3 {
                        let rtt = history.on_twcc_feedback(
                            now,
                            Acknowledgement::received(k as u16, None, Ecn::NotEct),
                        );
                        assert_eq!(Some(Duration::from_millis(n - k)), rtt);
                    }
                }
                let reports = history.take_reports();
                assert_eq!(50, reports.len());
                assert_eq!(45, reports.iter().filter(|r| r.arrived).count());
                reported += reports.len() as u64;
                history.prune_before(now - Duration::from_secs(2));
            }
            assert!(history.len() <= 50);
        }
        assert_eq!(300_000, reported);
    }

    /// A sender that skips transport-wide sequence numbers (or starts over) is still matched;
    /// the skipped numbers match nothing.
    #[test]
    fn skipped_and_restarted_transport_wide_sequence_numbers() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 1, true, 65_530, 1200, now);
        history.add_outgoing(1, 2, true, 4, 1200, now); // skips 10, across the wrap
        history.add_outgoing(1, 3, true, 9_000, 1200, now); // a jump: the index starts again
        history.add_outgoing(1, 4, true, 9_001, 1200, now);
        let ack = |seq| Acknowledgement::received(seq, None, Ecn::NotEct);
        assert_eq!(None, history.on_twcc_feedback(now, ack(65_535)));
        assert_eq!(
            None,
            history.on_twcc_feedback(now, ack(65_530)),
            "forgotten at the jump"
        );
        assert!(history.on_twcc_feedback(now, ack(9_000)).is_some());
        assert!(history.on_twcc_feedback(now, ack(9_001)).is_some());
        let reports = history.take_reports();
        assert_eq!(4, reports.len());
        assert_eq!(2, reports.iter().filter(|r| r.arrived).count());
        assert!(history.is_empty());
    }

    /// The RFC 8888 index is made when such feedback first arrives, and covers what was sent
    /// before and after.
    #[test]
    fn ccfb_feedback_matches_packets_sent_before_and_after_the_first_report() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 10, false, 0, 1200, now);
        history.add_outgoing(1, 11, false, 0, 1200, now);
        let ack = |seq| Acknowledgement::received(seq, None, Ecn::NotEct);
        assert!(history.on_ccfb_feedback(now, 1, ack(10)).is_some());
        history.add_outgoing(1, 12, false, 0, 1200, now);
        assert!(history.on_ccfb_feedback(now, 1, ack(11)).is_some());
        assert!(history.on_ccfb_feedback(now, 1, ack(12)).is_some());
        assert_eq!(3, history.take_reports().len());
        assert_eq!(
            None,
            history.on_ccfb_feedback(now, 1, ack(12)),
            "reported once"
        );
    }

    /// A transport-wide number sent out of order (behind the last one) is matched, and the
    /// packets already in the index stay matchable.
    #[test]
    fn a_step_back_does_not_forget_the_index() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 1, true, 100, 1200, now);
        history.add_outgoing(1, 2, true, 102, 1200, now); // 101 skipped, comes next
        history.add_outgoing(1, 3, true, 101, 1200, now);
        history.add_outgoing(1, 4, true, 100, 1200, now); // a duplicate number: ignored
        let ack = |seq| Acknowledgement::received(seq, None, Ecn::NotEct);
        for seq in [100, 101, 102] {
            assert!(history.on_twcc_feedback(now, ack(seq)).is_some(), "{seq}");
        }
        assert_eq!(
            3,
            history.take_reports().iter().filter(|r| r.arrived).count()
        );
    }
}
