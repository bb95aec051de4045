//! The node's IO: the one place that reads the clock, owns the media socket, the ICE-TCP
//! connections and the signaling sessions' channels, and waits. Everything it does is move bytes
//! and messages between them and the sans-IO [`Node`].
//!
//! The node runs on a thread of its own with a current-thread runtime (the socket is registered
//! there, so its wake-ups never cross threads, and the node need not be `Send`-friendly inside).
//! The loop: run the node's due deadlines, send what it queued, then wait for the first of a
//! command, a readable socket, an ICE-TCP event, a stop request or the node's next deadline.

use super::arena::Arena;
use super::command::{CommandReply, NodeCommand};
use super::control::Command;
use super::guard::{self, Class};
use super::load::{LoadMeter, SAMPLE_EVERY};
use super::output::{Carrier, NodeEvent, Transmit};
use super::recv_batch::RecvBatch;
use super::relay::Node;
use super::send_batch::{BATCH, SendBatch};
use super::socket::MediaSocket;
use super::tcp::{TcpEvent, TcpWriter};
use crate::metrics::{DropReason, LATENCY_SAMPLE, MediaMetrics};
use crate::webhooks::Webhooks;
use rustc_hash::FxHashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_signaling::control::{Admission, Disconnect, JoinRefusal, SessionEvent, SessionKey};
use tern_signaling::limits::Limit;
use tern_signaling::protocol::ErrorCode;
use tokio::io::Interest;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, info, warn};

/// Received datagrams are copied into slices of one arena, so handing each to the node (which
/// takes an owned buffer) costs no allocation of its own.
const RECV_ARENA_BYTES: usize = 256 * 1024;
/// `recvmmsg` calls per wake-up before commands and deadlines are looked at again. A short batch
/// is not the end: only a call that would block tells tokio the socket is drained (else the
/// loop comes round again at once, which costs more than the call).
const RECV_ROUNDS: usize = 3;
/// How long the loop sleeps when the node has no deadline at all (it always has one: the
/// snapshot timer).
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Where the driver's outside connections come from.
pub struct DriverIo {
    /// Which worker this is (names its thread).
    pub index: usize,
    /// The bound media socket (non-blocking); registered on the node's own thread.
    pub socket: std::net::UdpSocket,
    pub commands: mpsc::Receiver<Command>,
    /// ICE-TCP connection events, when ICE-TCP is on.
    pub tcp_events: Option<mpsc::Receiver<TcpEvent>>,
    pub webhooks: Webhooks,
    /// Events queued per signaling session before it counts as too slow and is closed.
    pub session_queue: usize,
}

pub struct NodeDriver {
    node: Node,
    socket: MediaSocket,
    commands: mpsc::Receiver<Command>,
    tcp_events: Option<mpsc::Receiver<TcpEvent>>,
    webhooks: Webhooks,
    session_queue: usize,
    metrics: Arc<MediaMetrics>,
    tcp: FxHashMap<SocketAddr, TcpWriter>,
    sessions: FxHashMap<SessionKey, mpsc::Sender<SessionEvent>>,
    /// Sessions whose channel refused an event, to be reported to the node.
    lost: Vec<SessionKey>,
    /// UDP datagrams the node produced, sent together.
    outgoing: Vec<Transmit>,
    send_batch: SendBatch,
    recv_batch: RecvBatch,
    recv_arena: Arena,
    /// Forwarded RTP datagrams so far (picks the latency samples).
    forwarded: u64,
    /// How busy this thread is, for admission and placement (`node::load`): the time it did not
    /// spend waiting for a datagram, a command or a deadline.
    load: LoadMeter,
    next_load_sample: Instant,
    started: Instant,
    idle: Duration,
}

/// What woke the driver.
enum Woken {
    Command(Option<Command>),
    Readable(bool),
    Tcp(Option<TcpEvent>),
    Deadline,
}

/// The node's thread, as the rest of the relay holds it.
pub struct NodeThread {
    stop: Arc<Notify>,
    stopped: watch::Receiver<bool>,
}

impl NodeThread {
    /// Asks the node to stop; it does so at its next wake-up.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// Waits until the node's thread has ended (stopped, or every command sender gone).
    pub async fn stopped(&mut self) {
        let _ = self.stopped.wait_for(|stopped| *stopped).await;
    }
}

/// Sets the flag when the thread ends, however it ends.
struct StoppedGuard(watch::Sender<bool>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// Starts `node` on a thread of its own, driven by `io`.
pub fn spawn(node: Node, io: DriverIo, metrics: Arc<MediaMetrics>) -> std::io::Result<NodeThread> {
    let stop = Arc::new(Notify::new());
    let stop_rx = stop.clone();
    let (stopped_tx, stopped) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("tern-node-{}", io.index))
        .spawn(move || {
            let _guard = StoppedGuard(stopped_tx);
            runtime.block_on(async move {
                let socket =
                    match tokio::net::UdpSocket::from_std(io.socket).and_then(MediaSocket::new) {
                        Ok(socket) => socket,
                        Err(err) => {
                            tracing::error!("media socket unusable: {err}");
                            return;
                        }
                    };
                let dual_stack = socket.dual_stack();
                NodeDriver {
                    node,
                    socket,
                    commands: io.commands,
                    tcp_events: io.tcp_events,
                    webhooks: io.webhooks,
                    session_queue: io.session_queue,
                    metrics,
                    tcp: FxHashMap::default(),
                    sessions: FxHashMap::default(),
                    lost: Vec::new(),
                    outgoing: Vec::with_capacity(BATCH),
                    send_batch: SendBatch::new(dual_stack),
                    recv_batch: RecvBatch::default(),
                    recv_arena: Arena::new(RECV_ARENA_BYTES),
                    forwarded: 0,
                    load: LoadMeter::default(),
                    next_load_sample: Instant::now(),
                    started: Instant::now(),
                    idle: Duration::ZERO,
                }
                .run(stop_rx)
                .await;
            });
        })?;
    Ok(NodeThread { stop, stopped })
}

impl NodeDriver {
    /// Runs until stopped or every command sender is gone.
    async fn run(mut self, stop: Arc<Notify>) {
        info!(addr = ?self.socket.local_addr(), "media node running");
        loop {
            let now = Instant::now();
            self.node.handle_timeout(now);
            self.flush();
            if now >= self.next_load_sample {
                self.measure_load(now);
            }
            let wake = self
                .node
                .poll_timeout()
                .map_or(Instant::now() + IDLE_WAKE, |(at, _)| at);
            let waiting_since = Instant::now();
            let woken = tokio::select! {
                _ = stop.notified() => break,
                command = self.commands.recv() => Woken::Command(command),
                ready = self.socket.socket.readable() => Woken::Readable(ready.is_ok()),
                event = next_tcp_event(&mut self.tcp_events) => Woken::Tcp(event),
                _ = tokio::time::sleep_until(wake.into()) => Woken::Deadline,
            };
            self.idle += waiting_since.elapsed();
            match woken {
                Woken::Command(Some(command)) => self.command(command),
                Woken::Command(None) => break,
                Woken::Readable(true) => self.receive_batch(),
                Woken::Readable(false) | Woken::Deadline => {}
                Woken::Tcp(Some(event)) => self.tcp_event(event),
                Woken::Tcp(None) => self.tcp_events = None,
            }
        }
        info!("media node stopped");
    }

    /// Publishes how busy the thread was to signaling (the worker's snapshot) and `/metrics`.
    fn measure_load(&mut self, now: Instant) {
        self.next_load_sample = now + SAMPLE_EVERY;
        let busy = now
            .saturating_duration_since(self.started)
            .saturating_sub(self.idle);
        if let Some(load) = self.load.sample(now, busy) {
            self.node.publish_load(load);
            self.metrics.worker_load.set(load);
        }
    }

    /// Takes what waits on the socket, a `recvmmsg` batch at a time, and hands each datagram to
    /// the node, sending what it produced (one `sendmmsg`) before the next.
    fn receive_batch(&mut self) {
        let fd = self.socket.socket.as_raw_fd();
        for _ in 0..RECV_ROUNDS {
            // `try_io` clears the socket's readiness when the call would block, so that the loop
            // sleeps until more arrives.
            let batch = &mut self.recv_batch;
            let received = self
                .socket
                .socket
                .try_io(Interest::READABLE, || batch.receive(fd));
            let count = match received {
                Ok(count) => count,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(err) => {
                    // ICMP errors surface here on Linux (a peer went away); nothing to do.
                    debug!("udp receive error: {err}");
                    return;
                }
            };
            if count == 0 {
                return;
            }
            let mut bytes = 0;
            for index in 0..count {
                let Some((from, datagram)) = self.recv_batch.datagram(index) else {
                    continue;
                };
                let now = Instant::now();
                bytes += datagram.len();
                let datagram = self.recv_arena.copy(datagram);
                let rtp = guard::classify(&datagram) == Class::Rtp;
                self.node.handle_datagram(from, datagram, now);
                // Each datagram's copies leave before the next is looked at: sending a whole
                // batch's together saved no measurable CPU and held the first datagram's copies
                // back by the others' work (relay latency p50 from 0.2 to 1.5 ms in `two-rooms`).
                let sent = self.flush();
                if rtp && sent > 0 {
                    self.forwarded += 1;
                    if self.forwarded.is_multiple_of(LATENCY_SAMPLE) {
                        self.metrics
                            .forwarding_latency
                            .observe(now.elapsed().as_secs_f64());
                    }
                }
            }
            self.metrics.udp_bytes_received.inc_by(bytes as u64);
        }
    }

    fn tcp_event(&mut self, event: TcpEvent) {
        match event {
            TcpEvent::Opened { peer, writer } => {
                self.tcp.insert(peer, writer);
            }
            TcpEvent::Frame { peer, frame } => {
                self.node.handle_tcp_frame(peer, frame, Instant::now());
            }
            TcpEvent::Closed { peer } => {
                self.tcp.remove(&peer);
                self.node.handle_tcp_closed(peer);
            }
        }
        self.flush();
    }

    /// Runs one command, timing what it cost the node.
    fn execute(&mut self, command: NodeCommand) -> CommandReply {
        let kind = command.kind();
        let started = Instant::now();
        let reply = self.node.handle_command(command, started);
        self.metrics
            .command_took(kind, started.elapsed().as_secs_f64());
        reply
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Join { request, reply } => {
                let admitted = match self.execute(NodeCommand::Join(request)) {
                    CommandReply::Joined(result) => {
                        result.map(|session| self.open_session(session))
                    }
                    _ => Err(JoinRefusal::Unavailable),
                };
                if let Err(Ok(admission)) = reply.send(admitted) {
                    // The session gave up waiting: treat it as an immediate drop.
                    self.sessions.remove(&admission.session);
                    self.execute(NodeCommand::Disconnected {
                        session: admission.session,
                        how: Disconnect::Dropped,
                    });
                }
            }
            Command::Message { session, message } => {
                self.execute(NodeCommand::Message { session, message });
            }
            Command::View {
                session,
                offer,
                follow,
                reply,
            } => {
                let answered = match self.execute(NodeCommand::View {
                    session,
                    offer,
                    follow,
                }) {
                    CommandReply::Viewed(result) => result,
                    _ => Err((ErrorCode::Internal, "not answered".to_owned())),
                };
                let _ = reply.send(answered);
            }
            Command::Disconnected { session, how } => {
                self.execute(NodeCommand::Disconnected { session, how });
            }
            Command::Stats { reply } => {
                if let CommandReply::Stats(stats) = self.execute(NodeCommand::Stats) {
                    let _ = reply.send(stats);
                }
            }
            Command::Admin { request, reply } => {
                if let CommandReply::Admin(result) = self.execute(NodeCommand::Admin(request)) {
                    let _ = reply.send(result);
                }
            }
            #[cfg(feature = "fault-injection")]
            Command::LegReports { reply } => {
                if let CommandReply::LegReports(reports) = self.execute(NodeCommand::LegReports) {
                    let _ = reply.send(reports);
                }
            }
        }
        self.flush();
    }

    fn open_session(&mut self, session: SessionKey) -> Admission {
        let (sender, events) = mpsc::channel(self.session_queue);
        self.sessions.insert(session, sender);
        Admission { session, events }
    }

    /// Sends what the node queued and delivers its events, until it has nothing more to say.
    /// Returns how many datagrams went out.
    fn flush(&mut self) -> usize {
        let mut sent = 0;
        loop {
            while let Some(transmit) = self.node.poll_transmit() {
                sent += 1;
                match transmit.carrier {
                    Carrier::Udp => self.outgoing.push(transmit),
                    Carrier::Tcp => self.send_tcp(&transmit.bytes, transmit.to),
                }
            }
            self.send_udp();
            while let Some(event) = self.node.poll_event() {
                self.deliver(event);
            }
            // Reported after the events are out, not from inside whatever produced them.
            let lost = std::mem::take(&mut self.lost);
            if lost.is_empty() {
                return sent;
            }
            for session in lost {
                self.execute(NodeCommand::SessionLost(session));
            }
        }
    }

    /// Sends the queued datagrams, a batch per system call.
    fn send_udp(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let fd = self.socket.socket.as_raw_fd();
        let sent = self.send_batch.send(fd, &self.outgoing);
        self.outgoing.clear();
        self.metrics.udp_bytes_sent.inc_by(sent.bytes as u64);
        self.metrics
            .count_drops(DropReason::SocketBusy, sent.busy as u64);
        self.metrics
            .count_drops(DropReason::SendError, sent.failed as u64);
    }

    fn send_tcp(&self, bytes: &[u8], to: SocketAddr) {
        match self.tcp.get(&to) {
            Some(writer) if writer.send(bytes) => {
                // The RFC 4571 length prefix is on the wire too.
                self.metrics.tcp_bytes_sent.inc_by(bytes.len() as u64 + 2);
            }
            _ => self.metrics.count_drop(DropReason::TcpBacklog),
        }
    }

    fn deliver(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::Session { session, event } => {
                let Some(sender) = self.sessions.get(&session) else {
                    return; // ended already: nobody to tell
                };
                if let Err(err) = sender.try_send(event) {
                    if matches!(err, mpsc::error::TrySendError::Full(_)) {
                        warn!(
                            participant = session.participant,
                            "session too slow for its events; closing it"
                        );
                        self.metrics.limits.breached(Limit::SlowSession);
                    }
                    // Dropping the sender ends the connection; the node hears it is lost.
                    self.sessions.remove(&session);
                    self.lost.push(session);
                }
            }
            NodeEvent::SessionEnded(session) => {
                self.sessions.remove(&session);
            }
            NodeEvent::Webhook(event) => self.webhooks.emit(event),
            NodeEvent::TcpMatched(peer) => {
                if let Some(writer) = self.tcp.get(&peer) {
                    writer.mark_matched();
                }
            }
            // Dropping the writer closes the connection.
            NodeEvent::TcpClose(peer) => {
                self.tcp.remove(&peer);
            }
        }
    }
}

async fn next_tcp_event(events: &mut Option<mpsc::Receiver<TcpEvent>>) -> Option<TcpEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}
