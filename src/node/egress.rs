//! What a subscribe leg does to each packet it sends, as one interceptor.
//!
//! Three of Tern's steps sit between `rtc`'s NACK responder and its transport-wide numbering:
//! the retransmission gate (`rtx_gate.rs`), the prober (`rtx_probe.rs`) and the leg's counters
//! (`engine.rs`). As three interceptors, each moved every packet into a queue of its own and out
//! again (a packet in the chain is about 200 bytes) and was walked on every flush; as steps of one
//! interceptor, a packet is looked at by each in turn and queued once. The order is the one the
//! three had in the chain: the gate first (a retransmission it drops is never numbered, counted
//! or copied), then the prober (it numbers retransmissions on RTX streams, remembers media, and
//! adds its copies behind them), then the counters, which see whatever leaves.

use super::engine::LegCounters;
use super::rtx_gate::RetransmissionGate;
use super::rtx_probe::RtxProber;
use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::shared::error::Error as RtcError;
use std::collections::VecDeque;
use std::time::Instant;

pub(super) struct SubscribeEgress {
    counters: LegCounters,
    /// Only where the subscriber sends transport-cc feedback: without an estimate there is no
    /// retransmission limit and nothing to probe.
    steps: Option<(RetransmissionGate, RtxProber)>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl SubscribeEgress {
    pub(super) fn new(
        counters: LegCounters,
        steps: Option<(RetransmissionGate, RtxProber)>,
    ) -> Self {
        SubscribeEgress {
            counters,
            steps,
            reads: VecDeque::new(),
            writes: VecDeque::new(),
        }
    }
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for SubscribeEgress {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), RtcError> {
        self.counters.on_read();
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), RtcError> {
        if let Some((gate, prober)) = &mut self.steps {
            if !gate.pass(&msg) {
                return Ok(());
            }
            prober.on_write(&mut msg);
        }
        self.counters.on_write(&msg);
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        if let Some(msg) = self.writes.pop_front() {
            return Some(msg);
        }
        let copy = self.steps.as_mut()?.1.next_copy()?;
        self.counters.on_write(&copy);
        Some(copy)
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), RtcError> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for SubscribeEgress {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some((_, prober)) = &mut self.steps {
            prober.bind_local_stream(info);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        if let Some((_, prober)) = &mut self.steps {
            prober.unbind_local_stream(info);
        }
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::rtx_gate::RetransmissionBudget;
    use crate::node::rtx_probe::ProbeTap;
    use rtc::interceptor::{Attribute, AttributedPacket, Packet};
    use rtc::rtp::header::Header;
    use rtc::sansio::Protocol;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    const MEDIA: u32 = 0x1000;
    const RTX: u32 = 0x2000;

    fn rtp(ssrc: u32, sequence_number: u16, now: Instant, resent: bool) -> TaggedPacket {
        let mut message = AttributedPacket::new(Packet::Rtp(rtc::rtp::packet::Packet {
            header: Header {
                version: 2,
                ssrc,
                sequence_number,
                ..Header::default()
            },
            payload: bytes::Bytes::from_static(&[0; 1_000]),
        }));
        if resent {
            message.add(Attribute::Retransmission);
        }
        TaggedPacket {
            now,
            transport: Default::default(),
            message,
        }
    }

    fn sent(egress: &mut SubscribeEgress) -> Vec<(u32, u16)> {
        std::iter::from_fn(|| egress.poll_write())
            .filter_map(|m| match m.message.packet {
                Packet::Rtp(p) => Some((p.header.ssrc, p.header.sequence_number)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_dropped_retransmission_is_neither_numbered_nor_counted_and_copies_follow_the_rest() {
        let metrics = crate::metrics::Metrics::new().media.clone();
        let budget = Arc::new(RetransmissionBudget::default());
        let tap = Arc::new(ProbeTap::default());
        let decrypted = Arc::new(AtomicU64::new(0));
        let counters = LegCounters {
            metrics: metrics.clone(),
            decrypted: decrypted.clone(),
        };
        let steps = (
            RetransmissionGate::new(budget.clone(), metrics.clone()),
            RtxProber::new(tap.clone()),
        );
        let mut egress = SubscribeEgress::new(counters, Some(steps));
        egress.bind_local_stream(&StreamInfo {
            ssrc: MEDIA,
            ssrc_rtx: Some(RTX),
            payload_type: 96,
            payload_type_rtx: Some(97),
            ..StreamInfo::default()
        });
        let t0 = Instant::now();
        egress.handle_write(rtp(MEDIA, 7, t0, false)).unwrap();
        assert_eq!(sent(&mut egress), vec![(MEDIA, 7)]);

        // 80 kbit/s: a burst of 2,000 bytes, so the second retransmission is dropped.
        budget.limit_bps.store(80_000, Ordering::Relaxed);
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..2 {
            egress.handle_write(rtp(RTX, 0, t1, true)).unwrap();
        }
        let first = sent(&mut egress);
        assert_eq!(first.len(), 1);
        assert_eq!(metrics.retransmissions_sent.get(), 1);

        // The next admitted retransmission and a copy continue the RTX numbering without a gap.
        egress
            .handle_write(rtp(RTX, 0, t1 + Duration::from_millis(200), true))
            .unwrap();
        tap.order(100, t1);
        let next = first[0].1;
        assert_eq!(
            sent(&mut egress),
            vec![(RTX, next.wrapping_add(1)), (RTX, next.wrapping_add(2))]
        );
        assert_eq!(
            metrics.retransmissions_sent.get(),
            2,
            "copies are not retransmissions"
        );

        egress.handle_read(rtp(MEDIA, 1, t1, false)).unwrap();
        assert!(egress.poll_read().is_some());
        assert_eq!(decrypted.load(Ordering::Relaxed), 1);
    }
}
