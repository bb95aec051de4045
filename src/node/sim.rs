//! A deterministic world for the node: in-memory `rtc` clients and a network on a virtual clock.
//!
//! Nothing here reads the clock or touches a socket. The node, every client peer connection and
//! the network between them are stepped by [`Sim`] in virtual time, so a test can run minutes
//! of a call (joins, offers, ICE and DTLS, media, timeouts) in milliseconds, and the same test
//! does the same thing every time. Clients behave as the browser client does: they answer
//! subscribe offers at once, apply publish answers, and report what they receive.

use super::command::{CommandReply, NodeCommand};
use super::engine::host_candidate;
use super::output::{Carrier, NodeEvent};
use super::pair::{client_peer_connection, synthetic_track};
use super::relay::{Node, NodeConfig, NodeShared};
use crate::metrics::Metrics;
use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverId};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::auth::Grants;
use tern_signaling::control::{Disconnect, JoinRefusal, JoinRequest, SessionEvent, SessionKey};
use tern_signaling::protocol::{
    ClientMessage, LeaveReason, ServerMessage, TrackAnnouncement, TrackSource,
};

/// A client, by its place in [`Sim::clients`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId(pub usize);

/// One datagram on the simulated network.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: BytesMut,
}

/// Decides the fate of each datagram: `true` drops it.
pub type Filter = Box<dyn FnMut(&Datagram) -> bool>;

/// One of a client's peer connections.
pub struct SimPeer {
    pub pc: RTCPeerConnection,
    pub addr: SocketAddr,
    pub state: RTCPeerConnectionState,
    /// Receivers of the tracks this peer connection got, by SSRC.
    pub receivers: Vec<(u32, RTCRtpReceiverId)>,
}

impl SimPeer {
    fn new(addr: SocketAddr, now: Instant) -> SimPeer {
        let mut pc = client_peer_connection(now).expect("a client peer connection");
        pc.add_local_candidate(host_candidate(addr).expect("a host candidate"))
            .expect("the candidate is accepted");
        SimPeer {
            pc,
            addr,
            state: RTCPeerConnectionState::New,
            receivers: Vec::new(),
        }
    }
}

/// One RTP packet a client received, with the tag its publisher wrote into it.
#[derive(Debug, Clone)]
pub struct Received {
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
    /// `publisher/kind/n`.
    pub tag: String,
}

pub struct SimClient {
    pub name: String,
    /// How it joins (the WebSocket protocol unless `join_via` said otherwise).
    pub via: tern_signaling::control::JoinVia,
    pub session: Option<SessionKey>,
    /// Every signaling message the node sent this client, oldest first.
    pub told: Vec<ServerMessage>,
    /// Why the node closed this client's session, when it did.
    pub closed: Option<LeaveReason>,
    pub resume_token: Option<String>,
    pub publish: SimPeer,
    pub subscribe: SimPeer,
    audio: Option<(RTCRtpSenderId, u32)>,
    video: Option<(RTCRtpSenderId, u32)>,
    rounds: u32,
    /// Bytes each video packet carries beyond its tag (its rate: 100 packets a second at
    /// `Media::STEADY`).
    pub video_filler: usize,
    /// Keyframes requested of this client's publish leg (PLIs received).
    pub plis: u32,
    /// NACKs this client's publish leg received.
    pub nacks: u32,
    pub received: Vec<Received>,
    /// Subscribe offers this client answered.
    pub offers_answered: u32,
    /// Signaling messages waiting to be sent.
    outbox: Vec<ClientMessage>,
}

impl SimClient {
    /// The tags received from `publisher`'s `kind` stream, in arrival order.
    pub fn tags_from(&self, publisher: &str, kind: &str) -> Vec<u32> {
        let prefix = format!("{publisher}/{kind}/");
        self.received
            .iter()
            .filter_map(|r| r.tag.strip_prefix(&prefix)?.parse().ok())
            .collect()
    }

    pub fn was_told(&self, matches: impl Fn(&ServerMessage) -> bool) -> bool {
        self.told.iter().any(matches)
    }

    fn handle_signal(&mut self, message: ServerMessage, now: Instant, next_port: &mut u16) {
        let reply = match &message {
            ServerMessage::Joined { resume_token, .. } => {
                self.resume_token = Some(resume_token.clone());
                None
            }
            ServerMessage::SubscribeOffer {
                sdp,
                new_connection,
                ..
            } => {
                if *new_connection && self.subscribe.pc.remote_description().is_some() {
                    self.subscribe = SimPeer::new(next_addr(self.subscribe.addr, next_port), now);
                }
                self.answer(sdp, now)
            }
            ServerMessage::PublishAnswer { sdp, .. } => {
                if let Ok(answer) = RTCSessionDescription::answer(sdp.clone()) {
                    let _ = self.publish.pc.set_remote_description(now, answer);
                }
                None
            }
            _ => None,
        };
        self.told.push(message);
        if let Some(reply) = reply {
            self.outbox.push(reply);
        }
    }

    fn answer(&mut self, sdp: &str, now: Instant) -> Option<ClientMessage> {
        let offer = RTCSessionDescription::offer(sdp.to_owned()).ok()?;
        self.subscribe.pc.set_remote_description(now, offer).ok()?;
        let answer = self.subscribe.pc.create_answer(None).ok()?;
        self.subscribe
            .pc
            .set_local_description(now, answer.clone())
            .ok()?;
        self.offers_answered += 1;
        Some(ClientMessage::SubscribeAnswer { sdp: answer.sdp })
    }
}

/// The next free address on the client's host.
fn next_addr(like: SocketAddr, next_port: &mut u16) -> SocketAddr {
    *next_port += 1;
    SocketAddr::new(like.ip(), *next_port)
}

struct InFlight {
    at: Instant,
    datagram: Datagram,
}

pub struct Sim {
    pub node: Node,
    pub metrics: Arc<Metrics>,
    snapshot: Arc<crate::metrics::NodeSnapshot>,
    pub now: Instant,
    pub clients: Vec<SimClient>,
    pub relay_addr: SocketAddr,
    /// One-way delay of every datagram.
    pub latency: Duration,
    /// How long a client's automatic replies (subscribe answers) take to reach the node.
    pub signaling_delay: Duration,
    /// Those replies on their way, in delivery order.
    signals: VecDeque<(Instant, SessionKey, ClientMessage)>,
    /// Drops the datagrams it returns `true` for.
    pub filter: Option<Filter>,
    /// Datagrams the filter dropped.
    pub dropped: u64,
    in_flight: VecDeque<InFlight>,
    next_port: u16,
}

impl Sim {
    /// A node with `config` (its addresses filled in) and nobody on it.
    pub fn new(mut config: NodeConfig) -> Sim {
        let relay_addr = SocketAddr::from(([10, 0, 0, 1], 3478));
        config.local_addr = relay_addr;
        config.advertised = vec![relay_addr];
        let metrics = Arc::new(Metrics::new());
        let snapshot = Arc::new(crate::metrics::NodeSnapshot::default());
        let now = Instant::now();
        // A fixed wall clock: what the node stamps is the same every run.
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let shared = NodeShared {
            metrics: metrics.media.clone(),
            snapshot: snapshot.clone(),
            place: super::placement::WorkerPlace::single(config.max_rooms),
        };
        Sim {
            node: Node::new(config, shared, now, wall),
            metrics,
            snapshot,
            now,
            clients: Vec::new(),
            relay_addr,
            latency: Duration::from_millis(5),
            signaling_delay: Duration::ZERO,
            signals: VecDeque::new(),
            filter: None,
            dropped: 0,
            in_flight: VecDeque::new(),
            next_port: 5_000,
        }
    }

    pub fn client(&self, id: ClientId) -> &SimClient {
        &self.clients[id.0]
    }

    pub fn client_mut(&mut self, id: ClientId) -> &mut SimClient {
        &mut self.clients[id.0]
    }

    /// The exposition text of the node's metrics, as `/metrics` serves it.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(self.snapshot.read())
    }

    /// One series' value from the metrics (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        self.render_metrics()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// A client with its own host (two addresses, one per peer connection) joins `room`.
    pub fn join(&mut self, room: &str, name: &str) -> Result<ClientId, JoinRefusal> {
        self.join_via(room, name, Default::default())
    }

    /// [`Sim::join`] as a client that came `via` WHIP or WHEP (its signaling is a task of the
    /// relay's HTTP side, dropped as that task would be).
    pub fn join_via(
        &mut self,
        room: &str,
        name: &str,
        via: tern_signaling::control::JoinVia,
    ) -> Result<ClientId, JoinRefusal> {
        let host = 10 + self.clients.len() as u8;
        let ip = std::net::Ipv4Addr::new(10, 0, 1, host);
        let publish = SimPeer::new(SocketAddr::from((ip, 4_000)), self.now);
        let subscribe = SimPeer::new(SocketAddr::from((ip, 4_001)), self.now);
        let id = ClientId(self.clients.len());
        self.clients.push(SimClient {
            name: name.to_owned(),
            via,
            session: None,
            told: Vec::new(),
            closed: None,
            resume_token: None,
            publish,
            subscribe,
            audio: None,
            video: None,
            rounds: 0,
            video_filler: 0,
            plis: 0,
            nacks: 0,
            received: Vec::new(),
            offers_answered: 0,
            outbox: Vec::new(),
        });
        self.connect(id, room, None)?;
        Ok(id)
    }

    /// A new signaling connection for `id` (a join, or a resume with `resume_token`).
    fn connect(
        &mut self,
        id: ClientId,
        room: &str,
        resume_token: Option<String>,
    ) -> Result<(), JoinRefusal> {
        let name = self.clients[id.0].name.clone();
        let request = JoinRequest {
            room: room.to_owned(),
            identity: name.clone(),
            name,
            grants: Grants::participant(),
            resume_token,
            e2ee: false,
            via: self.clients[id.0].via,
        };
        let reply = self
            .node
            .handle_command(NodeCommand::Join(request), self.now);
        let CommandReply::Joined(joined) = reply else {
            unreachable!("a join is answered with Joined");
        };
        let session = joined?;
        let client = &mut self.clients[id.0];
        client.session = Some(session);
        client.closed = None;
        self.pump();
        Ok(())
    }

    /// `id`'s signaling connection drops (no leave).
    pub fn drop_signaling(&mut self, id: ClientId) {
        if let Some(session) = self.clients[id.0].session.take() {
            self.node.handle_command(
                NodeCommand::Disconnected {
                    session,
                    how: Disconnect::Dropped,
                },
                self.now,
            );
            self.pump();
        }
    }

    /// `id` comes back on a new signaling connection with its resume token.
    pub fn resume(&mut self, id: ClientId, room: &str) -> Result<(), JoinRefusal> {
        let token = self.clients[id.0].resume_token.clone();
        self.connect(id, room, token)
    }

    /// `id` sends `message` on its signaling connection.
    pub fn send(&mut self, id: ClientId, message: ClientMessage) {
        if let Some(session) = self.clients[id.0].session {
            self.node
                .handle_command(NodeCommand::Message { session, message }, self.now);
            self.pump();
        }
    }

    /// `id` publishes a microphone and/or a camera track (Opus, VP8).
    pub fn publish(&mut self, id: ClientId, audio: bool, video: bool) {
        let client = &mut self.clients[id.0];
        let salt = 0x100 * (id.0 as u32 + 1);
        if audio && client.audio.is_none() {
            let ssrc = 0x1000_0000 + salt;
            let sender = client
                .publish
                .pc
                .add_track(synthetic_track(
                    RtpCodecKind::Audio,
                    ssrc,
                    "audio/opus",
                    48_000,
                    2,
                ))
                .expect("an audio track");
            client.audio = Some((sender, ssrc));
        }
        if video && client.video.is_none() {
            let ssrc = 0x2000_0000 + salt;
            let sender = client
                .publish
                .pc
                .add_track(synthetic_track(
                    RtpCodecKind::Video,
                    ssrc,
                    "video/VP8",
                    90_000,
                    0,
                ))
                .expect("a video track");
            client.video = Some((sender, ssrc));
        }
        self.offer_publish(id);
    }

    /// `id` moves to another network: its publish peer connection now sends from a new
    /// address, restarts ICE there and offers again (as a browser does when its network
    /// changes).
    pub fn move_publish_leg(&mut self, id: ClientId) {
        let client = &mut self.clients[id.0];
        let moved = next_addr(client.publish.addr, &mut self.next_port);
        client.publish.addr = moved;
        if let Ok(candidate) = host_candidate(moved) {
            let _ = client.publish.pc.add_local_candidate(candidate);
        }
        client.publish.pc.restart_ice();
        self.offer_publish(id);
    }

    fn offer_publish(&mut self, id: ClientId) {
        let client = &mut self.clients[id.0];
        let offer = client.publish.pc.create_offer(None).expect("an offer");
        client
            .publish
            .pc
            .set_local_description(self.now, offer.clone())
            .expect("the offer applies");
        let mut tracks = Vec::new();
        for (sender, source) in [
            (client.audio, TrackSource::Microphone),
            (client.video, TrackSource::Camera),
        ] {
            if let Some((sender, _)) = sender
                && let Some(mid) = client
                    .publish
                    .pc
                    .rtp_transceiver(RTCRtpTransceiverId::from(sender))
                    .and_then(|t| t.mid().clone())
            {
                tracks.push(TrackAnnouncement { mid, source });
            }
        }
        self.send(
            id,
            ClientMessage::PublishOffer {
                sdp: offer.sdp,
                tracks,
            },
        );
    }

    /// One round of media from `id`: an audio packet and a video frame of one packet, each
    /// tagged `name/kind/n`. Video is a keyframe when `keyframe` is set or a PLI is pending.
    pub fn send_media(&mut self, id: ClientId, keyframe: bool) {
        let now = self.now;
        let client = &mut self.clients[id.0];
        let n = client.rounds;
        client.rounds += 1;
        let name = client.name.clone();
        for (stream, kind) in [(client.audio, "audio"), (client.video, "video")] {
            let Some((sender, ssrc)) = stream else {
                continue;
            };
            let mut payload = if kind == "audio" {
                vec![0xfc]
            } else {
                // VP8 descriptor S=1 PID=0, then P=0 on a keyframe, P=1 on a delta frame.
                vec![0x10, if keyframe { 0x00 } else { 0x01 }]
            };
            if kind == "video" {
                payload.resize(payload.len() + client.video_filler, 0);
            }
            payload.extend_from_slice(format!("#{name}/{kind}/{n}").as_bytes());
            let Some(mut rtp_sender) = client.publish.pc.rtp_sender(sender) else {
                continue;
            };
            let payload_type = rtp_sender
                .get_parameters()
                .rtp_parameters
                .codecs
                .first()
                .map_or(0, |c| c.payload_type);
            let (sequence_number, timestamp) = if kind == "audio" {
                ((n as u16).wrapping_add(40_000), n.wrapping_mul(960))
            } else {
                ((n as u16).wrapping_add(65_500), n.wrapping_mul(3_000))
            };
            let packet = Packet {
                header: Header {
                    version: 2,
                    marker: kind == "video",
                    payload_type,
                    sequence_number,
                    timestamp,
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            let _ = rtp_sender.write_rtp(now, packet);
        }
        self.pump();
    }

    /// `id`'s subscribe leg asks for a keyframe of the stream it receives as `ssrc`.
    pub fn send_pli(&mut self, id: ClientId, ssrc: u32) {
        let now = self.now;
        let peer = &mut self.clients[id.0].subscribe;
        let Some(&(_, receiver)) = peer.receivers.iter().find(|(s, _)| *s == ssrc) else {
            return;
        };
        if let Some(mut receiver) = peer.pc.rtp_receiver(receiver) {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            let _ = receiver.write_rtcp(now, vec![Box::new(pli)]);
        }
        self.pump();
    }

    /// A datagram from anywhere to the node, as the network delivers it.
    pub fn inject(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.node
            .handle_datagram(from, BytesMut::from(bytes), self.now);
        self.pump();
    }

    /// Runs the world for `duration` of virtual time; every `media_every` (if set) each
    /// publishing client sends a round of media, a keyframe every `keyframe_every` rounds.
    pub fn run(&mut self, duration: Duration, media: Option<Media>) {
        let end = self.now + duration;
        let mut next_media = self.now;
        while self.now < end {
            if let Some(media) = media
                && self.now >= next_media
            {
                next_media += media.every;
                for i in 0..self.clients.len() {
                    let client = &self.clients[i];
                    if client.audio.is_none() && client.video.is_none() {
                        continue;
                    }
                    let keyframe = media
                        .keyframe_every
                        .is_some_and(|k| client.rounds.is_multiple_of(k));
                    self.send_media(ClientId(i), keyframe);
                }
            }
            let mut next = end;
            if media.is_some() {
                next = next.min(next_media);
            }
            self.advance(next);
        }
    }

    /// Runs until `done` holds (checked after every step) or `limit` of virtual time passes;
    /// returns whether it held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            let step = self.next_event().min(end);
            self.advance(step);
        }
        done(self)
    }

    /// The earliest moment anything in the world is due.
    fn next_event(&mut self) -> Instant {
        let mut next = self.now + Duration::from_secs(1);
        if let Some(first) = self.in_flight.front() {
            next = next.min(first.at);
        }
        if let Some((at, _, _)) = self.signals.front() {
            next = next.min(*at);
        }
        if let Some((at, _)) = self.node.poll_timeout() {
            next = next.min(at);
        }
        for client in &mut self.clients {
            for peer in [&mut client.publish, &mut client.subscribe] {
                if let Some(at) = peer.pc.poll_timeout() {
                    next = next.min(at);
                }
            }
        }
        // Never stand still: a deadline that is already due moves time on a little.
        next.max(self.now + Duration::from_micros(100))
    }

    /// Moves virtual time to `to`, handling every deadline and delivery on the way in order.
    pub fn advance(&mut self, to: Instant) {
        loop {
            let next = self.next_event();
            if next > to {
                break;
            }
            self.now = next;
            self.tick();
        }
        if to > self.now {
            self.now = to;
            self.tick();
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        self.node.handle_timeout(now);
        for client in &mut self.clients {
            for peer in [&mut client.publish, &mut client.subscribe] {
                let _ = peer.pc.handle_timeout(now);
            }
        }
        self.pump();
    }

    /// Moves everything that can move at `now`, until nothing does.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            let now = self.now;
            while let Some(transmit) = self.node.poll_transmit() {
                debug_assert_eq!(transmit.carrier, Carrier::Udp);
                self.transmit(Datagram {
                    from: self.relay_addr,
                    to: transmit.to,
                    bytes: transmit.bytes,
                });
                moved = true;
            }
            while let Some(event) = self.node.poll_event() {
                self.deliver(event);
                moved = true;
            }
            for i in 0..self.clients.len() {
                moved |= self.drain_client(i);
            }
            while self.signals.front().is_some_and(|(at, _, _)| *at <= now) {
                let Some((_, session, message)) = self.signals.pop_front() else {
                    break;
                };
                self.node
                    .handle_command(NodeCommand::Message { session, message }, now);
                moved = true;
            }
            while self.in_flight.front().is_some_and(|f| f.at <= now) {
                let Some(InFlight { datagram, .. }) = self.in_flight.pop_front() else {
                    break;
                };
                self.arrive(datagram);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn transmit(&mut self, datagram: Datagram) {
        if let Some(filter) = &mut self.filter
            && filter(&datagram)
        {
            self.dropped += 1;
            return;
        }
        // One delay for everything: the queue stays in delivery order.
        self.in_flight.push_back(InFlight {
            at: self.now + self.latency,
            datagram,
        });
    }

    fn arrive(&mut self, datagram: Datagram) {
        let now = self.now;
        if datagram.to == self.relay_addr {
            self.node
                .handle_datagram(datagram.from, datagram.bytes, now);
            return;
        }
        for client in &mut self.clients {
            for peer in [&mut client.publish, &mut client.subscribe] {
                if peer.addr == datagram.to {
                    let message =
                        super::pair::datagram(now, datagram.from, datagram.to, &datagram.bytes);
                    let _ = peer.pc.handle_read(message);
                    return;
                }
            }
        }
    }

    fn deliver(&mut self, event: NodeEvent) {
        let (session, event) = match event {
            NodeEvent::Session { session, event } => (session, event),
            NodeEvent::SessionEnded(session) => {
                if let Some(client) = self.clients.iter_mut().find(|c| c.session == Some(session)) {
                    client.session = None;
                }
                return;
            }
            _ => return,
        };
        let now = self.now;
        let Some(client) = self.clients.iter_mut().find(|c| c.session == Some(session)) else {
            return;
        };
        match event {
            SessionEvent::Message(message) => {
                client.handle_signal(message, now, &mut self.next_port)
            }
            SessionEvent::Close(reason) => client.closed = Some(reason),
        }
        if let Some(session) = client.session {
            let at = now + self.signaling_delay;
            for message in std::mem::take(&mut client.outbox) {
                self.signals.push_back((at, session, message));
            }
        }
    }

    /// Sends what a client's peer connections wrote and takes what they received. Returns
    /// whether anything moved.
    fn drain_client(&mut self, i: usize) -> bool {
        let mut out = Vec::new();
        let client = &mut self.clients[i];
        for peer in [&mut client.publish, &mut client.subscribe] {
            while let Some(write) = peer.pc.poll_write() {
                out.push(Datagram {
                    from: peer.addr,
                    to: write.transport.peer_addr,
                    bytes: write.message,
                });
            }
            while let Some(event) = peer.pc.poll_event() {
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                        peer.state = state
                    }
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        peer.receivers.push((init.ssrc, init.receiver_id));
                    }
                    _ => {}
                }
            }
        }
        while let Some(message) = client.subscribe.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = message.message {
                let tag = packet
                    .payload
                    .iter()
                    .position(|b| *b == b'#')
                    .map(|at| String::from_utf8_lossy(&packet.payload[at + 1..]).into_owned())
                    .unwrap_or_default();
                client.received.push(Received {
                    ssrc: packet.header.ssrc,
                    sequence_number: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    tag,
                });
            }
        }
        while let Some(message) = client.publish.pc.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = message.message {
                for packet in &packets {
                    let any = packet.as_any();
                    if any.is::<PictureLossIndication>() {
                        client.plis += 1;
                    } else if any.is::<TransportLayerNack>() {
                        client.nacks += 1;
                    }
                }
            }
        }
        let moved = !out.is_empty();
        for datagram in out {
            self.transmit(datagram);
        }
        moved
    }
}

/// How publishers send media during [`Sim::run`].
#[derive(Debug, Clone, Copy)]
pub struct Media {
    pub every: Duration,
    pub keyframe_every: Option<u32>,
}

impl Media {
    /// A round every 10 ms (100 packets a second per kind), a keyframe every 30 rounds.
    pub const STEADY: Media = Media {
        every: Duration::from_millis(10),
        keyframe_every: Some(30),
    };
}
