//! The interceptor chain: a flat list walked directionally over a shared belt.
//!
//! # The model
//!
//! Interceptors are held in one list ordered by **distance from the wire** — index 0 is closest to
//! the network, the last index closest to the application. Direction is a property of the walk,
//! not of the structure:
//!
//! ```text
//! read   (network → application)   walk forward:  0 → 1 → 2 → … → N
//! write  (application → network)   walk reverse:  N → … → 2 → 1 → 0
//! ```
//!
//! Each interceptor is fed from a belt and its output is collected back onto it, so **what an
//! interceptor emits is seen by every interceptor still ahead of it in the walk**. That is the
//! whole point: a retransmission emitted mid-chain still gets paced, tagged and recorded, because
//! there is no way out of the chain except through the interceptors that follow.
//!
//! The same list serves both directions, so "closest to the wire" means one thing rather than
//! opposite things per direction — the send history and FEC decode both sit near index 0, one
//! being the last thing on the way out and the other the first on the way in.
//!
//! # Ordering
//!
//! | # | Interceptor | Why there |
//! |---|---|---|
//! | 0 | congestion control — send history, feedback ingest | records what actually left, after everything |
//! | 1 | TWCC sender | tags every departing packet, before the history keys on it |
//! | 2 | pacer | gates departures; everything that generates a packet sits above it |
//! | 3 | NACK responder | its retransmissions reach 2, 1, 0 |
//! | 4 | FEC encoder | its repair packets reach 3, 2, 1, 0 |
//! | 5 | FEC decoder | recovery before anything inspects sequence numbers |
//! | 6 | NACK generator | loss detected from arrivals, not from released packets |
//! | 7–9 | TWCC receiver, RFC 8888, RTCP receiver reports | **arrival recorders — must precede the jitter buffer** |
//! | 10–11 | RTCP sender reports, interval PLI | generators with no read-side ordering constraint |
//! | 12 | jitter buffer | delays and re-stamps; releases toward the application |
//!
//! TWCC receiver and RFC 8888 do the same job in different formats — a chain carries one or the
//! other — so they are listed together; the receiver reports beside them are RFC 3550 reception
//! quality, not congestion-control feedback. Their order relative to each other does not matter.
//!
//! Arrival recorders precede the jitter buffer because the buffer re-stamps a packet with its
//! *release* instant. A recorder below it would report local playout times to the remote as
//! arrival times, and the remote's congestion controller would read this endpoint's buffering
//! depth as network delay variation.

use crate::Interceptor;
use crate::TaggedPacket;
use crate::stream_info::StreamInfo;
use sansio::Protocol;
use shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;

/// A flat list of interceptors, driven as one [`Protocol`].
///
/// The chain is the interceptor too; the interceptors are interceptors inside it.
#[derive(Default)]
pub(crate) struct Chain {
    /// Ordered by distance from the wire: index 0 is closest to the network.
    interceptors: Vec<Box<dyn Interceptor>>,
    /// Indices into `interceptors`, wire first, of those the read walk visits
    /// ([`Interceptor::handles_reads`]).
    readers: Vec<usize>,
    /// The same for the write walk ([`Interceptor::handles_writes`]).
    writers: Vec<usize>,
    read_outs: VecDeque<TaggedPacket>,
    write_outs: VecDeque<TaggedPacket>,
    /// An empty belt kept between walks, so that walking one packet through allocates nothing
    /// once the chain has warmed up.
    spare_belt: VecDeque<TaggedPacket>,
}

impl Chain {
    /// Build a chain from interceptors already in wire-to-application order.
    ///
    /// Crate-private: a chain is built by [`Registry`](crate::Registry), which also appends the
    /// terminus that ends the inbound RTCP path. A caller assembling the vector directly could
    /// leave it out, and the omission would look like working code.
    pub(crate) fn new(interceptors: Vec<Box<dyn Interceptor>>) -> Self {
        let indices_where = |keep: fn(&dyn Interceptor) -> bool| {
            interceptors
                .iter()
                .enumerate()
                .filter(|(_, i)| keep(i.as_ref()))
                .map(|(at, _)| at)
                .collect()
        };
        Self {
            readers: indices_where(|i| i.handles_reads()),
            writers: indices_where(|i| i.handles_writes()),
            interceptors,
            ..Self::default()
        }
    }

    /// How many interceptors the chain has.
    pub(crate) fn len(&self) -> usize {
        self.interceptors.len()
    }

    /// Whether the chain has no interceptors.
    pub(crate) fn is_empty(&self) -> bool {
        self.interceptors.is_empty()
    }

    /// One pass over the interceptors at `order`, feeding each from the belt and collecting what
    /// it emits back onto the belt.
    ///
    /// `handle` and `poll` pick the direction's method pair; `order` picks the direction and
    /// leaves out the interceptors that do not take part in it. A packet an interceptor emits
    /// lands on the belt *behind* the ones it passed through, and is then carried to every
    /// interceptor still ahead — which is what makes injected packets impossible to bypass with.
    fn walk<T>(
        interceptors: &mut [Box<dyn Interceptor>],
        order: impl Iterator<Item = usize>,
        belt: &mut VecDeque<T>,
        handle: fn(&mut dyn Interceptor, T) -> Result<(), Error>,
        poll: fn(&mut dyn Interceptor) -> Option<T>,
    ) {
        for at in order {
            let interceptor = interceptors[at].as_mut();
            while let Some(next) = belt.pop_front() {
                // An interceptor takes the packet and decides what becomes of it: hold it, drop
                // it, or put it on its own queue to be collected below.
                if let Err(err) = handle(interceptor, next) {
                    log::warn!("interceptor handle failed: {err}");
                }
            }
            // Whatever it has ready — passed through, transformed, generated, or released — is
            // what the next interceptor in the walk receives.
            while let Some(next) = poll(interceptor) {
                belt.push_back(next);
            }
        }
    }

    /// Appends a walk's output to `outs` and keeps an empty belt for the next walk. Usually
    /// `outs` is empty (the caller drained it), and the belt simply becomes it: no packet moves.
    fn deliver(
        outs: &mut VecDeque<TaggedPacket>,
        mut belt: VecDeque<TaggedPacket>,
        spare: &mut VecDeque<TaggedPacket>,
    ) {
        if outs.is_empty() {
            std::mem::swap(outs, &mut belt);
        } else {
            outs.extend(belt.drain(..));
        }
        *spare = belt;
    }

    /// Walks the read path, starting with `first` if given.
    fn read_walk(&mut self, first: Option<TaggedPacket>) {
        let mut belt = std::mem::take(&mut self.spare_belt);
        belt.extend(first);
        Self::walk(
            &mut self.interceptors,
            self.readers.iter().copied(),
            &mut belt,
            |s, p| s.handle_read(p),
            |s| s.poll_read(),
        );
        Self::deliver(&mut self.read_outs, belt, &mut self.spare_belt);
    }

    /// Walks the write path, starting with `first` if given.
    fn write_walk(&mut self, first: Option<TaggedPacket>) {
        let mut belt = std::mem::take(&mut self.spare_belt);
        belt.extend(first);
        Self::walk(
            &mut self.interceptors,
            self.writers.iter().rev().copied(),
            &mut belt,
            |s, p| s.handle_write(p),
            |s| s.poll_write(),
        );
        Self::deliver(&mut self.write_outs, belt, &mut self.spare_belt);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Chain {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_walk(Some(msg));
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        if self.read_outs.is_empty() {
            self.read_walk(None);
        }
        self.read_outs.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_walk(Some(msg));
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        if self.write_outs.is_empty() {
            self.write_walk(None);
        }
        self.write_outs.pop_front()
    }

    fn handle_timeout(&mut self, now: Self::Time) -> Result<(), Self::Error> {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.handle_timeout(now)?;
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.interceptors
            .iter_mut()
            .filter_map(|interceptor| interceptor.poll_timeout())
            .min()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.close()?;
        }
        Ok(())
    }
}

/// A chain is itself an interceptor: it implements the same `Protocol`, and binding a stream
/// on it binds that stream on every interceptor inside it.
impl Interceptor for Chain {
    /// A local stream this endpoint is now sending.
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.bind_local_stream(info);
        }
    }

    /// A local stream this endpoint has stopped sending.
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.unbind_local_stream(info);
        }
    }

    /// A remote stream this endpoint is now receiving.
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.bind_remote_stream(info);
        }
    }

    /// A remote stream this endpoint has stopped receiving.
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.unbind_remote_stream(info);
        }
    }

    fn handles_writes(&self) -> bool {
        !self.writers.is_empty()
    }

    fn handles_reads(&self) -> bool {
        !self.readers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttributedPacket, Packet};
    use shared::TransportContext;
    use std::sync::{Arc, Mutex};

    /// Who saw which packet, in order: (interceptor, direction, sequence number).
    type Log = Arc<Mutex<Vec<(&'static str, &'static str, u16)>>>;

    fn packet(sequence_number: u16) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    sequence_number,
                    ..Default::default()
                },
                payload: vec![0u8; 4].into(),
            })),
        }
    }

    fn sequence_number(msg: &TaggedPacket) -> u16 {
        match &msg.message.packet {
            Packet::Rtp(rtp) => rtp.header.sequence_number,
            _ => panic!("not RTP"),
        }
    }

    /// Records what passes; `echo` also emits a copy (sequence number + 1000) of each write;
    /// `reads`/`writes` are its `handles_*` answers, and being called on a path it declined panics.
    struct Probe {
        name: &'static str,
        log: Log,
        reads: bool,
        writes: bool,
        echo: bool,
        read_queue: VecDeque<TaggedPacket>,
        write_queue: VecDeque<TaggedPacket>,
    }

    impl Probe {
        fn boxed(name: &'static str, log: &Log, reads: bool, writes: bool) -> Box<Probe> {
            Box::new(Probe {
                name,
                log: log.clone(),
                reads,
                writes,
                echo: false,
                read_queue: VecDeque::new(),
                write_queue: VecDeque::new(),
            })
        }
    }

    impl Protocol<TaggedPacket, TaggedPacket, ()> for Probe {
        type Rout = TaggedPacket;
        type Wout = TaggedPacket;
        type Eout = ();
        type Error = Error;
        type Time = Instant;

        fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
            assert!(self.reads, "{} was walked on the read path", self.name);
            let entry = (self.name, "read", sequence_number(&msg));
            self.log.lock().unwrap().push(entry);
            self.read_queue.push_back(msg);
            Ok(())
        }

        fn poll_read(&mut self) -> Option<TaggedPacket> {
            assert!(self.reads, "{} was polled on the read path", self.name);
            self.read_queue.pop_front()
        }

        fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
            assert!(self.writes, "{} was walked on the write path", self.name);
            let seq = sequence_number(&msg);
            self.log.lock().unwrap().push((self.name, "write", seq));
            self.write_queue.push_back(msg);
            if self.echo {
                self.write_queue.push_back(packet(seq + 1000));
            }
            Ok(())
        }

        fn poll_write(&mut self) -> Option<TaggedPacket> {
            assert!(self.writes, "{} was polled on the write path", self.name);
            self.write_queue.pop_front()
        }
    }

    impl Interceptor for Probe {
        fn bind_local_stream(&mut self, _: &StreamInfo) {}
        fn unbind_local_stream(&mut self, _: &StreamInfo) {}
        fn bind_remote_stream(&mut self, _: &StreamInfo) {}
        fn unbind_remote_stream(&mut self, _: &StreamInfo) {}

        fn handles_writes(&self) -> bool {
            self.writes
        }

        fn handles_reads(&self) -> bool {
            self.reads
        }
    }

    fn drain_writes(chain: &mut Chain) -> Vec<u16> {
        std::iter::from_fn(|| chain.poll_write())
            .map(|m| sequence_number(&m))
            .collect()
    }

    #[test]
    fn an_interceptor_that_declines_a_path_is_skipped_on_it_and_walked_on_the_other() {
        let log = Log::default();
        // Wire first: `wire` sees everything, `reader` declines writes, `writer` declines reads.
        let mut chain = Chain::new(vec![
            Probe::boxed("wire", &log, true, true),
            Probe::boxed("reader", &log, true, false),
            Probe::boxed("writer", &log, false, true),
        ]);
        chain.handle_write(packet(1)).unwrap();
        assert_eq!(vec![1], drain_writes(&mut chain));
        chain.handle_read(packet(2)).unwrap();
        assert_eq!(Some(2), chain.poll_read().map(|m| sequence_number(&m)));
        assert_eq!(None, chain.poll_read().map(|m| sequence_number(&m)));
        assert_eq!(
            vec![
                ("writer", "write", 1),
                ("wire", "write", 1),
                ("wire", "read", 2),
                ("reader", "read", 2),
            ],
            *log.lock().unwrap()
        );
        assert!(chain.handles_reads() && chain.handles_writes());
    }

    #[test]
    fn packets_emitted_mid_chain_still_pass_everything_ahead_in_order() {
        let log = Log::default();
        let mut echo = Probe::boxed("echo", &log, true, true);
        echo.echo = true;
        let mut chain = Chain::new(vec![
            Probe::boxed("wire", &log, true, true),
            Probe::boxed("skipped", &log, true, false),
            echo,
        ]);
        // Two writes before a poll: the second walk appends behind the first's output.
        chain.handle_write(packet(1)).unwrap();
        chain.handle_write(packet(2)).unwrap();
        assert_eq!(vec![1, 1001, 2, 1002], drain_writes(&mut chain));
        let wire: Vec<u16> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(name, _, _)| *name == "wire")
            .map(|(_, _, seq)| *seq)
            .collect();
        assert_eq!(vec![1, 1001, 2, 1002], wire);
        // Drained, and the next write starts from an empty belt.
        chain.handle_write(packet(3)).unwrap();
        assert_eq!(vec![3, 1003], drain_writes(&mut chain));
    }

    #[test]
    fn a_chain_where_no_interceptor_takes_a_path_declines_it() {
        let log = Log::default();
        let chain = Chain::new(vec![Probe::boxed("reader", &log, true, false)]);
        assert!(chain.handles_reads());
        assert!(!chain.handles_writes());
    }
}
