//! A driver thread: owns the peer connections of many participants and their UDP sockets, and
//! runs them all from one epoll loop with one timer heap (protocol deadlines from
//! `poll_timeout`, and media ticks). Signaling tasks talk to it through a command queue.
//!
//! Why not a tokio task per peer: the generator must cost far less than the relay it loads, and
//! per-peer tasks pay a wake-up, a waker and a select per datagram. Here a datagram costs a
//! `recv_from`, the `rtc` pipeline and a `send_to`, and a quiet peer costs nothing.

use super::cpu;
use super::participant::{Participant, Samples};
use super::peer::{LegKind, Peer, answer, flush};
use super::poller::{Poller, Waker};
use super::publisher::{MediaKind, MediaSettings, Outgoing, Publisher};
use super::report::Totals;
use super::scenario::ParticipantSpec;
use super::shared::{Counters, Shared};
use crate::node::pair::datagram;
use crate::node::recv_batch::{RECV_BATCH, RecvBatch};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::sansio::Protocol;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tern_signaling::protocol::ClientMessage;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

const WAKER_TOKEN: u64 = u64::MAX;
/// Longest sleep with nothing scheduled.
const IDLE: Duration = Duration::from_millis(200);
/// A protocol deadline is never armed closer than this to now, so a deadline that stays in the
/// past cannot spin the loop.
const MIN_TIMER_GAP: Duration = Duration::from_millis(1);
/// `recvmmsg` calls on one socket per turn, so one busy peer cannot starve the others.
const READ_BATCHES: usize = 2;
/// With `--count-only`, the loop rests this long after each turn, so that a turn finds several
/// datagrams on each socket instead of waking for every one: a subscriber gets a few hundred a
/// second, and waking per datagram cost the generator about as much CPU as the relay.
const COUNTING_REST: Duration = Duration::from_millis(4);

pub enum Command {
    Join(Box<Join>),
    /// `socket` comes with the first offer of a subscribe connection (`new_connection`).
    SubscribeOffer {
        index: usize,
        sdp: String,
        socket: Option<UdpSocket>,
    },
    PublishAnswer {
        index: usize,
        sdp: String,
    },
    /// Close every peer connection and hand over the totals.
    Finish(oneshot::Sender<Totals>),
}

pub struct Join {
    pub spec: ParticipantSpec,
    pub ws_open: Instant,
    pub publish_socket: Option<UdpSocket>,
    pub outgoing: UnboundedSender<ClientMessage>,
}

/// How signaling tasks reach a driver thread.
#[derive(Clone)]
pub struct DriverHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    /// The thread's id, for its CPU time.
    pub tid: i32,
}

impl DriverHandle {
    pub fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            self.waker.wake();
        }
    }

    /// Stops the thread; `None` if it is already gone.
    pub async fn finish(&self) -> Option<Totals> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Finish(tx));
        rx.await.ok()
    }
}

pub fn spawn(
    id: usize,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    media: MediaSettings,
) -> io::Result<DriverHandle> {
    let poller = Poller::new()?;
    let waker = Arc::new(Waker::new()?);
    poller.add(waker.fd(), WAKER_TOKEN)?;
    let (commands, queue) = mpsc::channel();
    let (tid_tx, tid_rx) = mpsc::sync_channel(1);
    let thread_waker = waker.clone();
    std::thread::Builder::new()
        .name(format!("loadtest-{id}"))
        .spawn(move || {
            let _ = tid_tx.send(cpu::current_thread_id());
            Driver {
                poller,
                waker: thread_waker,
                queue,
                shared,
                counters,
                media,
                peers: Vec::new(),
                participants: Vec::new(),
                by_index: FxHashMap::default(),
                timers: BinaryHeap::new(),
                samples: Samples::default(),
                batch: RecvBatch::default(),
            }
            .run()
        })?;
    let tid = tid_rx.recv().map_err(io::Error::other)?;
    Ok(DriverHandle {
        commands,
        waker,
        tid,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A peer connection's protocol deadline (ICE, DTLS, RTCP, NACK).
    Leg(usize),
    /// A participant's next audio packet or video frame.
    Media(usize, MediaKind),
}

struct Driver {
    poller: Poller,
    waker: Arc<Waker>,
    queue: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    media: MediaSettings,
    /// Slots are never reused within a run, so a stale timer can never hit another peer.
    peers: Vec<Option<Peer>>,
    participants: Vec<Participant>,
    /// Global participant index -> slot in `participants`.
    by_index: FxHashMap<usize, usize>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    samples: Samples,
    batch: RecvBatch,
}

impl Driver {
    fn run(mut self) {
        let mut ready = Vec::with_capacity(256);
        loop {
            self.run_timers(Instant::now());
            let timeout = self
                .timers
                .peek()
                .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()))
                .unwrap_or(IDLE)
                .min(IDLE);
            ready.clear();
            if let Err(err) = self.poller.wait(timeout, &mut ready) {
                self.shared
                    .error(format!("load generator: epoll failed: {err}"));
                return;
            }
            for &token in &ready {
                if token == WAKER_TOKEN {
                    if !self.run_commands() {
                        return;
                    }
                } else {
                    self.read_peer(token as usize);
                }
            }
            if self.media.count_only && !ready.is_empty() {
                std::thread::sleep(COUNTING_REST);
            }
        }
    }

    /// Returns false when the thread should end.
    fn run_commands(&mut self) -> bool {
        // Reset before draining: a command queued after the drain wakes us again.
        self.waker.reset();
        loop {
            let command = match self.queue.try_recv() {
                Ok(command) => command,
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            };
            let now = Instant::now();
            match command {
                Command::Join(join) => self.join(*join, now),
                Command::SubscribeOffer { index, sdp, socket } => {
                    self.subscribe_offer(index, sdp, socket, now)
                }
                Command::PublishAnswer { index, sdp } => self.publish_answer(index, &sdp, now),
                Command::Finish(reply) => {
                    let _ = reply.send(self.finish());
                    return false;
                }
            }
        }
    }

    fn run_timers(&mut self, until: Instant) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > until {
                break;
            }
            self.timers.pop();
            let now = Instant::now();
            match timer {
                Timer::Leg(key) => self.leg_timer(key, at, now),
                Timer::Media(slot, kind) => self.media_tick(slot, kind, now),
            }
        }
    }

    fn join(&mut self, join: Join, now: Instant) {
        let slot = self.participants.len();
        let index = join.spec.index;
        let mut participant = Participant::new(join.spec, join.ws_open, join.outgoing);
        if let Some(socket) = join.publish_socket {
            match self.publish(&mut participant, socket, slot, now) {
                Ok(key) => participant.publish = Some(key),
                Err(err) => self.shared.error(format!("publish offer: {err}")),
            }
        }
        self.participants.push(participant);
        self.by_index.insert(index, slot);
        if let Some(key) = self.participants[slot].publish {
            self.after_input(key, now);
        }
    }

    fn publish(
        &mut self,
        participant: &mut Participant,
        socket: UdpSocket,
        slot: usize,
        now: Instant,
    ) -> anyhow::Result<usize> {
        let mut peer = Peer::new(socket, slot, LegKind::Publish, now)?;
        let (publisher, offer) =
            Publisher::create(&mut peer.pc, &participant.spec, &self.media, now)?;
        participant.publisher = Some(publisher);
        let _ = participant.outgoing.send(offer);
        self.add_peer(peer)
    }

    fn publish_answer(&mut self, index: usize, sdp: &str, now: Instant) {
        let Some(key) = self.slot(index).and_then(|s| self.participants[s].publish) else {
            return;
        };
        let Some(peer) = self.peers[key].as_mut() else {
            return;
        };
        let applied = RTCSessionDescription::answer(sdp.to_owned())
            .and_then(|answer| peer.pc.set_remote_description(now, answer));
        if let Err(err) = applied {
            self.shared.error(format!("publish answer: {err}"));
        }
        self.after_input(key, now);
    }

    fn subscribe_offer(
        &mut self,
        index: usize,
        sdp: String,
        socket: Option<UdpSocket>,
        now: Instant,
    ) {
        let Some(slot) = self.slot(index) else {
            return;
        };
        // A new subscribe connection replaces the old one (PROTOCOL.md §2, `new_connection`).
        if let Some(socket) = socket {
            if let Some(old) = self.participants[slot].subscribe.take() {
                self.remove_peer(old);
            }
            let added = Peer::new(socket, slot, LegKind::Subscribe, now)
                .and_then(|peer| self.add_peer(peer));
            match added {
                Ok(key) => self.participants[slot].subscribe = Some(key),
                Err(err) => {
                    self.shared.error(format!("subscribe leg: {err}"));
                    return;
                }
            }
        }
        let Some(key) = self.participants[slot].subscribe else {
            self.shared
                .error("subscribe offer without a subscribe connection");
            return;
        };
        let Some(peer) = self.peers[key].as_mut() else {
            return;
        };
        match answer(&mut peer.pc, sdp, now) {
            Ok(sdp) => {
                let _ = self.participants[slot]
                    .outgoing
                    .send(ClientMessage::SubscribeAnswer { sdp });
            }
            Err(err) => self.shared.error(format!("subscribe answer: {err}")),
        }
        self.after_input(key, now);
    }

    fn slot(&self, index: usize) -> Option<usize> {
        self.by_index.get(&index).copied()
    }

    fn add_peer(&mut self, peer: Peer) -> anyhow::Result<usize> {
        let key = self.peers.len();
        self.poller.add(peer.socket.as_raw_fd(), key as u64)?;
        self.peers.push(Some(peer));
        Ok(key)
    }

    fn remove_peer(&mut self, key: usize) {
        if let Some(mut peer) = self.peers[key].take() {
            let _ = peer.pc.close();
            flush(&mut peer, &self.counters);
            self.poller.remove(peer.socket.as_raw_fd());
        }
    }

    /// Feeds the peer connection what its socket holds, then drains it once. Each `recvmmsg`
    /// batch is tagged with its arrival time, which `poll_read` hands back with each packet.
    /// With `--count-only`, a ready subscriber's RTP is counted here and never reaches `rtc`.
    fn read_peer(&mut self, key: usize) {
        let Some(peer) = self.peers.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        let participant = &self.participants[peer.participant];
        let counting =
            self.media.count_only && peer.kind == LegKind::Subscribe && participant.is_ready();
        let fd = peer.socket.as_raw_fd();
        let mut fed = false;
        for _ in 0..READ_BATCHES {
            // WouldBlock: drained. Anything else (an ICMP error) has nothing to read either.
            let Ok(received) = self.batch.receive(fd) else {
                break;
            };
            let now = Instant::now();
            for index in 0..received {
                let Some((from, bytes)) = self.batch.datagram(index) else {
                    continue;
                };
                if counting && is_rtp(bytes) {
                    participant.on_sealed_rtp(now, &self.shared, &self.counters, &mut self.samples);
                } else {
                    let _ = peer.pc.handle_read(datagram(now, from, peer.local, bytes));
                    fed = true;
                }
            }
            if received < RECV_BATCH {
                break;
            }
        }
        // Counted datagrams leave the peer connection as it was: nothing to drain or re-arm.
        if fed {
            self.after_input(key, Instant::now());
        }
    }

    fn leg_timer(&mut self, key: usize, at: Instant, now: Instant) {
        let Some(peer) = self.peers[key].as_mut() else {
            return;
        };
        if peer.armed != Some(at) {
            return; // superseded by an earlier deadline that already ran
        }
        peer.armed = None;
        let _ = peer.pc.handle_timeout(now);
        self.after_input(key, now);
    }

    fn after_input(&mut self, key: usize, now: Instant) {
        self.drain(key, now);
        self.arm(key, now);
    }

    /// Takes everything the peer connection has for us: state changes, RTP and RTCP, datagrams.
    fn drain(&mut self, key: usize, now: Instant) {
        let Some(peer) = self.peers[key].as_mut() else {
            return;
        };
        let participant = &mut self.participants[peer.participant];
        while let Some(event) = peer.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                for (at, kind) in participant.on_leg_state(peer.kind, state, now, &self.shared) {
                    self.timers
                        .push(Reverse((at, Timer::Media(peer.participant, kind))));
                }
            }
        }
        while let Some(message) = peer.pc.poll_read() {
            match message.message {
                RTCMessage::RtpPacket(_, packet) if peer.kind == LegKind::Subscribe => {
                    participant.on_rtp(
                        &packet.payload,
                        message.now,
                        &self.shared,
                        &self.counters,
                        &mut self.samples,
                    );
                }
                RTCMessage::RtcpPacket(_, packets) if peer.kind == LegKind::Publish => {
                    participant.on_rtcp(&packets, &mut self.samples);
                }
                _ => {}
            }
        }
        flush(peer, &self.counters);
    }

    /// Queues the peer's next protocol deadline if it is earlier than the one queued.
    fn arm(&mut self, key: usize, now: Instant) {
        let Some(peer) = self.peers[key].as_mut() else {
            return;
        };
        let Some(at) = peer.pc.poll_timeout() else {
            return;
        };
        let at = at.max(now + MIN_TIMER_GAP);
        if peer.armed.is_none_or(|armed| at < armed) {
            peer.armed = Some(at);
            self.timers.push(Reverse((at, Timer::Leg(key))));
        }
    }

    fn media_tick(&mut self, slot: usize, kind: MediaKind, now: Instant) {
        let participant = &mut self.participants[slot];
        let Some(key) = participant.publish else {
            return;
        };
        let Some(publisher) = participant.publisher.as_mut().filter(|p| p.running) else {
            return;
        };
        let outgoing = match kind {
            MediaKind::Audio => publisher.audio_tick(now),
            MediaKind::Video => {
                let Some((outgoing, keyframe)) = publisher.video_tick(now) else {
                    return;
                };
                self.samples.keyframes += u64::from(keyframe);
                outgoing
            }
        };
        let receivers = participant.spec.receivers_per_stream;
        self.timers
            .push(Reverse((outgoing.next_due, Timer::Media(slot, kind))));
        self.samples
            .send_lag
            .record(outgoing.lag.as_micros() as u64);
        self.send(key, outgoing, receivers, now);
    }

    fn send(&mut self, key: usize, outgoing: Outgoing, receivers: u64, now: Instant) {
        let Some(peer) = self.peers[key].as_mut() else {
            return;
        };
        let mut sent = 0;
        for packet in outgoing.packets {
            let written = peer
                .pc
                .rtp_sender(outgoing.sender)
                .map(|mut sender| sender.write_rtp(now, packet));
            if matches!(written, Some(Ok(()))) {
                sent += 1;
            }
        }
        let c = &self.counters;
        Counters::add(&c.sent, sent);
        if self.shared.in_window(outgoing.sent_ns) {
            Counters::add(&c.sent_in_window, sent);
            Counters::add(&c.expected_in_window, sent * receivers);
        }
        self.after_input(key, now);
    }

    fn finish(&mut self) -> Totals {
        for key in 0..self.peers.len() {
            self.remove_peer(key);
        }
        let mut totals = Totals::default();
        for participant in &self.participants {
            totals.add_streams(participant.streams.values());
        }
        totals.add_samples(std::mem::take(&mut self.samples));
        totals
    }
}

/// An RTP packet, not RTCP, STUN or DTLS (RFC 7983's first byte, RFC 5761's payload types).
fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [128..=191, second, ..] if !(192..=223).contains(second))
}

#[cfg(test)]
mod tests {
    use super::is_rtp;

    #[test]
    fn rtp_is_told_from_rtcp_stun_and_dtls() {
        assert!(is_rtp(&[0x80, 96, 0, 1]));
        assert!(is_rtp(&[0x90, 96 | 0x80, 0, 1])); // marker bit, extension
        assert!(!is_rtp(&[0x80, 200, 0, 6])); // sender report
        assert!(!is_rtp(&[0x81, 205, 0, 4])); // transport-cc feedback
        assert!(!is_rtp(&[0x00, 0x01, 0, 0])); // STUN binding request
        assert!(!is_rtp(&[22, 254, 253])); // DTLS handshake
        assert!(!is_rtp(&[0x80]));
    }
}
