//! Test support: a relay started in-process on ephemeral ports, and a WebRTC test client built
//! on webrtc-rs's `rtc` that speaks Tern's signaling protocol over a real WebSocket and real UDP.
//!
//! The client publishes synthetic Opus and VP8 RTP whose payloads name their sender and number,
//! so a test can check exactly what arrived where.

#![allow(dead_code)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tern::app::{DEV_KID, Running};
use tern::config::Config;
use tern::node::engine::host_candidate;
use tern::node::pair::{client_peer_connection, datagram};
use tern_signaling::auth::{Grants, claims_for};
use tern_signaling::protocol::{
    ClientMessage, IceCandidate, Leg, ServerMessage, TrackAnnouncement, TrackSource,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A relay on ephemeral loopback ports, in dev mode.
pub async fn start_relay(adjust: impl FnOnce(&mut Config)) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TERN_TEST_LOG"))
        .with_test_writer()
        .try_init();
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.media.listen = "127.0.0.1:0".parse().unwrap();
    adjust(&mut config);
    tern::app::start(config).await.expect("relay starts")
}

pub fn token(relay: &Running, room: &str, identity: &str, grants: Grants) -> String {
    let claims = claims_for(
        room,
        identity,
        identity,
        grants,
        SystemTime::now(),
        Duration::from_secs(600),
    );
    relay.keys.mint(DEV_KID, &claims).unwrap()
}

pub fn ws_url(relay: &Running, token: &str) -> String {
    format!("ws://{}/rtc?access_token={token}", relay.http_addr)
}

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fetches a metric value (first sample whose line starts with `series`) from /metrics.
pub async fn metric(relay: &Running, series: &str) -> f64 {
    let body = http_get(relay.http_addr, "/metrics").await.1;
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {series} not found"))
}

/// A minimal HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

pub async fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    // Chunked bodies: good enough for our small JSON/text responses.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.lines()
            .collect::<Vec<_>>()
            .chunks(2)
            .filter_map(|c| c.get(1).copied())
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        body
    };
    (status, body)
}

/// One RTP packet as a test client received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The msid track id on the subscriber leg (the relay's track id).
    pub track: String,
    pub ssrc: u32,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub payload: Bytes,
    pub payload_type: u8,
    pub extension_ids: Vec<u8>,
}

/// What a test client reports.
#[derive(Debug)]
pub enum Event {
    Signal(ServerMessage),
    Rtp(Received),
    PublishState(RTCPeerConnectionState),
    SubscribeState(RTCPeerConnectionState),
    /// The relay asked this client (as publisher) for a keyframe.
    Pli,
    /// The WebSocket closed.
    Closed,
}

pub enum Command {
    Publish {
        audio: bool,
        video: bool,
    },
    /// Sends one synthetic packet of each published kind now; video is a keyframe if asked
    /// (or if a PLI is pending).
    SendMedia {
        keyframe: bool,
    },
    Raw(ClientMessage),
    RawText(String),
    /// Sends an offer whose SDP is replaced by `sdp` (for hostile-input tests).
    Leave,
    Close,
}

pub struct Client {
    pub name: String,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Everything seen so far, in arrival order.
    pub log: Vec<Event>,
    pub participant_id: Option<String>,
}

/// The payload tag of a synthetic packet: `<name>/<kind>/<n>`.
pub fn tag(payload: &[u8]) -> String {
    let start = payload
        .iter()
        .position(|b| *b == b'#')
        .map(|i| i + 1)
        .unwrap_or(0);
    String::from_utf8_lossy(&payload[start..]).to_string()
}

impl Client {
    pub async fn connect(relay: &Running, room: &str, name: &str) -> Client {
        Self::connect_with(relay, room, name, Grants::participant()).await
    }

    pub async fn connect_with(relay: &Running, room: &str, name: &str, grants: Grants) -> Client {
        let url = ws_url(relay, &token(relay, room, name, grants));
        Self::connect_url(&url, name).await
    }

    pub async fn connect_url(url: &str, name: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let driver = Driver::new(name.to_owned(), events_tx).await;
        tokio::spawn(driver.run(ws, commands_rx));
        let mut client = Client {
            name: name.to_owned(),
            commands,
            events,
            log: Vec::new(),
            participant_id: None,
        };
        let joined = client
            .wait_for("joined", |e| match e {
                Event::Signal(ServerMessage::Joined { participant, .. }) => {
                    Some(participant.id.clone())
                }
                _ => None,
            })
            .await;
        client.participant_id = Some(joined);
        client
    }

    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Moves pending events into the log.
    pub fn pump(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.log.push(event);
        }
    }

    /// Waits until an event (new or already logged) matches.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut matcher: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let end = Instant::now() + DEADLINE;
        let mut checked = 0;
        loop {
            self.pump();
            for event in &self.log[checked..] {
                if let Some(v) = matcher(event) {
                    return v;
                }
            }
            checked = self.log.len();
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: timed out waiting for {what}; saw:\n{}",
                self.name,
                self.describe()
            );
            if let Ok(Some(event)) =
                tokio::time::timeout(left.min(Duration::from_millis(50)), self.events.recv()).await
            {
                self.log.push(event);
            }
        }
    }

    /// Waits until `check` holds over the whole log.
    pub async fn wait_until(&mut self, what: &str, check: impl Fn(&[Event]) -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            self.pump();
            if check(&self.log) {
                return;
            }
            assert!(
                Instant::now() < end,
                "{}: timed out waiting for {what}; saw:\n{}",
                self.name,
                self.describe()
            );
            let _ = tokio::time::timeout(Duration::from_millis(20), self.events.recv())
                .await
                .map(|e| e.map(|e| self.log.push(e)));
        }
    }

    /// A summary of the log for failure messages.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        let mut rtp = 0;
        for e in &self.log {
            match e {
                Event::Rtp(_) => rtp += 1,
                Event::Signal(s) => {
                    let text = serde_json::to_string(s).unwrap_or_default();
                    lines.push(format!(
                        "  signal {}",
                        &text[..text.len().min(if std::env::var("TERN_TEST_FULL").is_ok() {
                            100000
                        } else {
                            160
                        })]
                    ));
                }
                other => lines.push(format!("  {other:?}")),
            }
        }
        lines.push(format!("  {rtp} RTP packets"));
        lines.join("\n")
    }

    pub fn rtp(&self) -> impl Iterator<Item = &Received> {
        self.log.iter().filter_map(|e| match e {
            Event::Rtp(r) => Some(r),
            _ => None,
        })
    }

    pub fn signals(&self) -> impl Iterator<Item = &ServerMessage> {
        self.log.iter().filter_map(|e| match e {
            Event::Signal(s) => Some(s),
            _ => None,
        })
    }

    /// Errors received, as (code, request) pairs.
    pub fn errors(&self) -> Vec<String> {
        self.signals()
            .filter_map(|s| match s {
                ServerMessage::Error { code, .. } => Some(code.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }

    /// The tracks of the latest subscribe offer: track id -> (participant id, kind).
    pub fn offered_tracks(&self) -> HashMap<String, String> {
        self.signals()
            .filter_map(|s| match s {
                ServerMessage::SubscribeOffer { tracks, .. } => Some(tracks),
                _ => None,
            })
            .last()
            .map(|tracks| {
                tracks
                    .iter()
                    .map(|t| (t.id.clone(), t.participant_id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn subscribe_connected(&self) -> bool {
        self.log
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::SubscribeState(s) => Some(*s == RTCPeerConnectionState::Connected),
                _ => None,
            })
            .unwrap_or(false)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

struct Peer {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    addr: SocketAddr,
}

impl Peer {
    async fn new() -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut pc = client_peer_connection(Instant::now()).unwrap();
        pc.add_local_candidate(host_candidate(addr).unwrap())
            .unwrap();
        Peer { pc, socket, addr }
    }
}

/// The client's own task: one WebSocket, a publish and a subscribe peer connection, each on its
/// own UDP socket (a 4-tuple belongs to one leg).
struct Driver {
    name: String,
    events: mpsc::UnboundedSender<Event>,
    publish: Peer,
    subscribe: Peer,
    audio: Option<(RTCRtpSenderId, u32)>,
    video: Option<(RTCRtpSenderId, u32)>,
    audio_n: u32,
    video_n: u32,
    pli_pending: bool,
    outgoing: Vec<ClientMessage>,
}

const AUDIO_SSRC_BASE: u32 = 0x1000_0000;
const VIDEO_SSRC_BASE: u32 = 0x2000_0000;

fn track(
    kind: RtpCodecKind,
    ssrc: u32,
    mime: &str,
    clock_rate: u32,
    channels: u16,
) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "client-stream".into(),
        format!("client-{ssrc:x}"),
        "synthetic".into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime.into(),
                clock_rate,
                channels,
                ..Default::default()
            },
            ..Default::default()
        }],
    )
}

impl Driver {
    async fn new(name: String, events: mpsc::UnboundedSender<Event>) -> Driver {
        Driver {
            name,
            events,
            publish: Peer::new().await,
            subscribe: Peer::new().await,
            audio: None,
            video: None,
            audio_n: 0,
            video_n: 0,
            pli_pending: false,
            outgoing: Vec::new(),
        }
    }

    async fn run(
        mut self,
        ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let (mut ws_tx, mut ws_rx) = ws.split();
        let mut buf_pub = vec![0u8; 2048];
        let mut buf_sub = vec![0u8; 2048];
        loop {
            self.drain().await;
            for message in std::mem::take(&mut self.outgoing) {
                let text = serde_json::to_string(&message).unwrap();
                if ws_tx.send(Message::Text(text.into())).await.is_err() {
                    let _ = self.events.send(Event::Closed);
                    return;
                }
            }
            let now = Instant::now();
            let next = [
                self.publish.pc.poll_timeout(),
                self.subscribe.pc.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_millis(100))
            .max(now);
            tokio::select! {
                frame = ws_rx.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<ServerMessage>(&text) {
                            Ok(message) => self.on_signal(message),
                            Err(err) => panic!("{}: relay sent undecodable message {text}: {err}", self.name),
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        let _ = self.events.send(Event::Closed);
                        return;
                    }
                    _ => {}
                },
                command = commands.recv() => match command {
                    None | Some(Command::Close) => return,
                    Some(Command::Publish { audio, video }) => self.publish_tracks(audio, video),
                    Some(Command::SendMedia { keyframe }) => self.send_media(keyframe),
                    Some(Command::Raw(message)) => self.outgoing.push(message),
                    Some(Command::RawText(text)) => {
                        if ws_tx.send(Message::Text(text.into())).await.is_err() {
                            let _ = self.events.send(Event::Closed);
                            return;
                        }
                    }
                    Some(Command::Leave) => self.outgoing.push(ClientMessage::Leave {}),
                },
                r = self.publish.socket.recv_from(&mut buf_pub) => {
                    if let Ok((n, from)) = r {
                        let _ = self.publish.pc.handle_read(datagram(Instant::now(), from, self.publish.addr, &buf_pub[..n]));
                    }
                }
                r = self.subscribe.socket.recv_from(&mut buf_sub) => {
                    if let Ok((n, from)) = r {
                        let _ = self.subscribe.pc.handle_read(datagram(Instant::now(), from, self.subscribe.addr, &buf_sub[..n]));
                    }
                }
                _ = tokio::time::sleep_until(next.into()) => {
                    let now = Instant::now();
                    let _ = self.publish.pc.handle_timeout(now);
                    let _ = self.subscribe.pc.handle_timeout(now);
                }
            }
        }
    }

    async fn drain(&mut self) {
        for publish in [true, false] {
            let peer = if publish {
                &mut self.publish
            } else {
                &mut self.subscribe
            };
            while let Some(event) = peer.pc.poll_event() {
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                        let _ = self.events.send(if publish {
                            Event::PublishState(state)
                        } else {
                            Event::SubscribeState(state)
                        });
                    }
                    RTCPeerConnectionEvent::OnIceCandidateEvent(_) => {}
                    _ => {}
                }
            }
            while let Some(message) = peer.pc.poll_read() {
                match message.message {
                    RTCMessage::RtpPacket(track, packet) if !publish => {
                        let _ = self.events.send(Event::Rtp(Received {
                            track,
                            ssrc: packet.header.ssrc,
                            sequence_number: packet.header.sequence_number,
                            timestamp: packet.header.timestamp,
                            payload_type: packet.header.payload_type,
                            extension_ids: packet.header.extensions.iter().map(|e| e.id).collect(),
                            payload: packet.payload,
                        }));
                    }
                    RTCMessage::RtcpPacket(_, packets)
                        if publish
                            && packets
                                .iter()
                                .any(|p| p.as_any().is::<PictureLossIndication>()) =>
                    {
                        self.pli_pending = true;
                        let _ = self.events.send(Event::Pli);
                    }
                    _ => {}
                }
            }
            while let Some(out) = peer.pc.poll_write() {
                let _ = peer
                    .socket
                    .send_to(&out.message, out.transport.peer_addr)
                    .await;
            }
        }
    }

    fn on_signal(&mut self, message: ServerMessage) {
        match &message {
            ServerMessage::PublishAnswer { sdp, .. } => {
                let answer = RTCSessionDescription::answer(sdp.clone()).unwrap();
                self.publish
                    .pc
                    .set_remote_description(Instant::now(), answer)
                    .unwrap();
            }
            ServerMessage::SubscribeOffer { sdp, .. } => {
                let offer = RTCSessionDescription::offer(sdp.clone()).unwrap();
                let now = Instant::now();
                self.subscribe
                    .pc
                    .set_remote_description(now, offer)
                    .unwrap();
                let answer = self.subscribe.pc.create_answer(None).unwrap();
                self.subscribe
                    .pc
                    .set_local_description(now, answer.clone())
                    .unwrap();
                self.outgoing
                    .push(ClientMessage::SubscribeAnswer { sdp: answer.sdp });
                // Trickle our candidate too (the relay is ICE-lite and does not need it, but
                // the protocol allows it and the relay must accept it).
                self.outgoing.push(ClientMessage::Trickle {
                    leg: Leg::Subscribe,
                    candidate: IceCandidate {
                        candidate: host_candidate(self.subscribe.addr).unwrap().candidate,
                        sdp_mid: Some("0".into()),
                        sdp_mline_index: Some(0),
                        username_fragment: None,
                    },
                });
            }
            _ => {}
        }
        let _ = self.events.send(Event::Signal(message));
    }

    fn publish_tracks(&mut self, audio: bool, video: bool) {
        let salt = self
            .name
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
            & 0xffff;
        if audio && self.audio.is_none() {
            let ssrc = AUDIO_SSRC_BASE + salt;
            let sender = self
                .publish
                .pc
                .add_track(track(RtpCodecKind::Audio, ssrc, "audio/opus", 48_000, 2))
                .unwrap();
            self.audio = Some((sender, ssrc));
        }
        if video && self.video.is_none() {
            let ssrc = VIDEO_SSRC_BASE + salt;
            let sender = self
                .publish
                .pc
                .add_track(track(RtpCodecKind::Video, ssrc, "video/VP8", 90_000, 0))
                .unwrap();
            self.video = Some((sender, ssrc));
        }
        let now = Instant::now();
        let offer = self.publish.pc.create_offer(None).unwrap();
        self.publish
            .pc
            .set_local_description(now, offer.clone())
            .unwrap();
        let mut tracks = Vec::new();
        for (sender, source) in [
            (self.audio, TrackSource::Microphone),
            (self.video, TrackSource::Camera),
        ] {
            if let Some((sender, _)) = sender {
                let transceiver = rtc::rtp_transceiver::RTCRtpTransceiverId::from(sender);
                let mid = self
                    .publish
                    .pc
                    .rtp_transceiver(transceiver)
                    .and_then(|t| t.mid().clone())
                    .unwrap();
                tracks.push(TrackAnnouncement { mid, source });
            }
        }
        self.outgoing.push(ClientMessage::PublishOffer {
            sdp: offer.sdp,
            tracks,
        });
    }

    fn payload_type(&mut self, sender: RTCRtpSenderId, mime: &str) -> u8 {
        self.publish
            .pc
            .rtp_sender(sender)
            .unwrap()
            .get_parameters()
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .map(|c| c.payload_type)
            .unwrap_or(0)
    }

    fn send_media(&mut self, keyframe: bool) {
        let now = Instant::now();
        if let Some((sender, ssrc)) = self.audio {
            let pt = self.payload_type(sender, "audio/opus");
            let n = self.audio_n;
            self.audio_n += 1;
            let payload = format!("\u{fc}#{}/audio/{n}", self.name).into_bytes();
            let packet = Packet {
                header: Header {
                    version: 2,
                    payload_type: pt,
                    sequence_number: (n as u16).wrapping_add(40_000),
                    timestamp: n.wrapping_mul(960),
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            let _ = self
                .publish
                .pc
                .rtp_sender(sender)
                .unwrap()
                .write_rtp(now, packet);
        }
        if let Some((sender, ssrc)) = self.video {
            let pt = self.payload_type(sender, "video/VP8");
            let n = self.video_n;
            self.video_n += 1;
            let key = keyframe || self.pli_pending;
            self.pli_pending = false;
            // VP8 descriptor S=1 PID=0, then the payload header: P=0 keyframe, P=1 delta.
            let mut payload = vec![0x10, if key { 0x00 } else { 0x01 }];
            payload.extend_from_slice(format!("#{}/video/{n}", self.name).as_bytes());
            let packet = Packet {
                header: Header {
                    version: 2,
                    marker: true,
                    payload_type: pt,
                    sequence_number: (n as u16).wrapping_add(65_500),
                    timestamp: n.wrapping_mul(3000),
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            let _ = self
                .publish
                .pc
                .rtp_sender(sender)
                .unwrap()
                .write_rtp(now, packet);
        }
    }
}

/// Whether a received video payload is the start of a keyframe (as the test client writes them).
pub fn is_keyframe(payload: &[u8]) -> bool {
    payload.len() >= 2 && payload[0] & 0x10 != 0 && payload[1] & 0x01 == 0
}
