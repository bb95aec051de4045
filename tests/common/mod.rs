//! Test support: a relay started in-process on ephemeral ports, and a WebRTC test client built
//! on webrtc-rs's `rtc` that speaks Tern's signaling protocol over a real WebSocket and real UDP.
//!
//! The client publishes synthetic Opus and VP8 RTP whose payloads name their sender and number,
//! so a test can check exactly what arrived where.

#![allow(dead_code)]

pub mod call;
pub mod http_media;
pub mod stun;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
pub use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::statistics::StatsSelector;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tern::app::{DEV_KID, Running};
use tern::config::Config;
use tern::node::engine::host_candidate;
use tern::node::pair::{ClientSettings, datagram, synthetic_track};
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

/// A metric value (first sample whose line starts with `series`), from the text `/metrics`
/// serves (rendered here, so it works whichever listener serves `/metrics`).
pub async fn metric(relay: &Running, series: &str) -> f64 {
    let body = relay.metrics.render(relay.snapshot.read());
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {series} not found"))
}

/// Waits until a metric satisfies `ok` (within [`DEADLINE`]); returns its value then.
pub async fn wait_metric(
    relay: &Running,
    series: &str,
    what: &str,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let value = metric(relay, series).await;
        if ok(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({series} = {value})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends a raw HTTP/1.1 request and reads one response; returns (status, body). Handles
/// content-length and chunked bodies, and does not wait for the server to close.
pub async fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&response).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let body = &text[end + 4..];
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                if body.len() >= len {
                    return (status, body[..len].to_string());
                }
            } else if head.contains("transfer-encoding: chunked") {
                if body.contains("\r\n0\r\n\r\n") || body.starts_with("0\r\n") {
                    return (status, dechunk(body));
                }
            } else if status == 101 || status == 204 || status == 304 {
                return (status, String::new());
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => {
                let text = String::from_utf8_lossy(&response).to_string();
                let status = text
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
                return (status, body);
            }
            Ok(Ok(n)) => response.extend_from_slice(&chunk[..n]),
        }
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some(line_end) = body.find("\r\n") {
        let size = usize::from_str_radix(body[..line_end].trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.push_str(&body[start..(start + size).min(body.len())]);
        body = &body[(start + size + 2).min(body.len())..];
    }
    out
}

/// The WebSocket upgrade request for `/rtc` with the given query.
pub async fn upgrade_request(relay: &Running, query: &str, extra_headers: &str) -> (u16, String) {
    let request = format!(
        "GET /rtc{query} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra_headers}\r\n"
    );
    http_request(relay.http_addr, &request).await
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
    /// The relay NACKed these (publisher) sequence numbers.
    Nack(Vec<u16>),
    /// A sender report arrived on the subscribe leg.
    SenderReport {
        ssrc: u32,
        ntp_time: u64,
        rtp_time: u32,
    },
    /// A leg connected with this SRTP profile (its IANA name, e.g. `SRTP_AEAD_AES_128_GCM`).
    SrtpCipher {
        publish: bool,
        cipher: String,
        /// This client's DTLS role on that leg (`client` when the relay is the server).
        dtls_role: String,
    },
    /// The client set this local description (its publish offer or subscribe answer).
    LocalSdp {
        publish: bool,
        sdp: String,
    },
    /// The WebSocket closed.
    Closed,
    /// The relay started a new subscribe connection; the client replaced its peer connection.
    NewSubscribeConnection,
    /// The relay's data channel opened.
    DataOpen,
    /// A text message arrived on the relay's data channel.
    Data(String),
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
    /// `rounds` of `SendMedia` at once (a keyframe every `keyframe_every` video packets), for
    /// load: the datagrams leave back to back.
    SendMediaBurst {
        rounds: u32,
        keyframe_every: u32,
    },
    Raw(ClientMessage),
    RawText(String),
    Binary(Vec<u8>),
    Leave,
    /// Cuts the WebSocket without a close frame; media keeps flowing.
    DropSignaling,
    /// Opens a new WebSocket (e.g. with `resume_token`).
    Reconnect(String),
    /// Stops all UDP and timers, as if the client's network died (signaling stays).
    FreezeMedia,
    /// Pads synthetic payloads to about this many bytes (for load runs).
    PayloadSize(usize),
    /// Keeps the next video packet back until the relay NACKs it, then sends it.
    WithholdNextVideo,
    /// Drops the packet with this tag when it arrives and NACKs it on the subscribe leg.
    DiscardAndNack(String),
    /// Sends a PLI for this (relay) track id on the subscribe leg.
    SendPli(String),
    /// Sends these bytes as one datagram from the publish (or subscribe) leg's socket to `to`.
    RawUdp {
        subscribe_leg: bool,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Sends an SRTCP packet whose content is not valid RTCP once decrypted.
    GarbageRtcp,
    /// Gives the video track a new SSRC and numbering and renegotiates, like a restarted sender.
    RestartVideoSsrc,
    /// Restarts ICE on the publish leg (new credentials in a new offer).
    RestartPublishIce,
    /// Sends text on the relay's data channel.
    SendData(String),
    /// Ends the client: socket and media gone at once, like a killed process.
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
        Self::connect_url_with(url, name, &ClientCodecs::default()).await
    }

    /// A client restricted to some codecs (see [`ClientCodecs`]).
    pub async fn connect_codecs(
        relay: &Running,
        room: &str,
        name: &str,
        codecs: &ClientCodecs,
    ) -> Client {
        let url = ws_url(relay, &token(relay, room, name, Grants::participant()));
        Self::connect_url_with(&url, name, codecs).await
    }

    pub async fn connect_url_with(url: &str, name: &str, codecs: &ClientCodecs) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let driver = Driver::new(name.to_owned(), events_tx, codecs).await;
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

    /// A handle for sending commands from another task (e.g. a media pump).
    pub fn sender(&self) -> mpsc::UnboundedSender<Command> {
        self.commands.clone()
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

    /// The resume token of the latest `joined`.
    pub fn resume_token(&self) -> String {
        self.signals()
            .filter_map(|s| match s {
                ServerMessage::Joined { resume_token, .. } => Some(resume_token.clone()),
                _ => None,
            })
            .last()
            .expect("joined")
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
        subscribe_connected(&self.log)
    }

    /// Waits until the relay's first subscribe offer is answered and the leg is up, so that no
    /// offer is outstanding and the client's own automatic messages are done.
    pub async fn wait_subscribed(&mut self) {
        self.wait_until("subscribe leg connected", subscribe_connected)
            .await;
    }
}

fn subscribe_connected(log: &[Event]) -> bool {
    log.iter()
        .rev()
        .find_map(|e| match e {
            Event::SubscribeState(s) => Some(*s == RTCPeerConnectionState::Connected),
            _ => None,
        })
        .unwrap_or(false)
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// Which codecs a test client supports. Default: everything webrtc-rs registers by default.
#[derive(Debug, Clone, Default)]
pub struct ClientCodecs {
    /// Only these video MIME types (and Opus with `opus_fmtp`).
    pub video: Option<Vec<&'static str>>,
    pub opus_fmtp: String,
    /// The video codec the client publishes (default VP8).
    pub publish_video: Option<&'static str>,
    /// Never NACK (so retransmissions it gets are the relay's own doing).
    pub no_nack: bool,
    /// Use IPv6 loopback (::1) for media.
    pub ipv6: bool,
    /// SRTP profiles offered, in this order (default: webrtc-rs's, AES-GCM first).
    pub srtp_profiles: Option<Vec<SrtpProtectionProfile>>,
}

struct Peer {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    addr: SocketAddr,
}

impl Peer {
    async fn new(codecs: &ClientCodecs) -> Peer {
        let bind = if codecs.ipv6 {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        // Large buffers, as the relay's: a loaded test machine must not drop what a fast test
        // sends before the client gets to read it.
        let socket =
            tern::node::socket::bind_media_socket(bind.parse().unwrap(), 4 * 1024 * 1024).unwrap();
        let addr = socket.local_addr().unwrap();
        let opus_fmtp = if codecs.opus_fmtp.is_empty() {
            "minptime=10;useinbandfec=1"
        } else {
            &codecs.opus_fmtp
        };
        let mut pc = tern::node::pair::client_peer_connection_with(
            Instant::now(),
            &ClientSettings {
                video_mime_types: codecs.video.as_deref(),
                opus_fmtp,
                nack: !codecs.no_nack,
                srtp_profiles: codecs.srtp_profiles.clone(),
            },
        )
        .unwrap();
        pc.add_local_candidate(host_candidate(addr).unwrap())
            .unwrap();
        Peer { pc, socket, addr }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type WsTx = futures_util::stream::SplitSink<Ws, Message>;
type WsRx = futures_util::stream::SplitStream<Ws>;

async fn next_frame(
    rx: &mut Option<WsRx>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match rx.as_mut() {
        Some(rx) => rx.next().await,
        None => std::future::pending().await,
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
    withhold_next_video: bool,
    data_channel: Option<rtc::data_channel::RTCDataChannelId>,
    withheld: Option<Packet>,
    discard: Option<String>,
    video_seq_base: u16,
    video_ts_base: u32,
    codecs: ClientCodecs,
    video_mime: &'static str,
    payload_bytes: usize,
    outgoing: Vec<ClientMessage>,
}

const AUDIO_SSRC_BASE: u32 = 0x1000_0000;
const VIDEO_SSRC_BASE: u32 = 0x2000_0000;

impl Driver {
    async fn new(
        name: String,
        events: mpsc::UnboundedSender<Event>,
        codecs: &ClientCodecs,
    ) -> Driver {
        Driver {
            name,
            events,
            publish: Peer::new(codecs).await,
            subscribe: Peer::new(codecs).await,
            video_mime: codecs.publish_video.unwrap_or("video/VP8"),
            codecs: codecs.clone(),
            audio: None,
            video: None,
            audio_n: 0,
            video_n: 0,
            pli_pending: false,
            withhold_next_video: false,
            data_channel: None,
            withheld: None,
            discard: None,
            video_seq_base: 65_500,
            video_ts_base: 0,
            payload_bytes: 0,
            outgoing: Vec::new(),
        }
    }

    async fn run(self, ws: Ws, commands: mpsc::UnboundedReceiver<Command>) {
        let name = self.name.clone();
        // A panic in the driver would otherwise go unnoticed until a test times out.
        if let Err(panic) = tokio::spawn(self.run_inner(ws, commands)).await {
            eprintln!("{name}: test client driver failed: {panic}");
        }
    }

    async fn run_inner(mut self, ws: Ws, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = ws.split();
        let mut ws_tx = Some(tx);
        let mut ws_rx = Some(rx);
        let mut buf_pub = vec![0u8; 2048];
        let mut buf_sub = vec![0u8; 2048];
        let mut media_frozen = false;
        // Like real clients: a session silent for `session.idle_timeout_s` (30 s) counts as
        // dropped, and a slow machine can make a test run that long. Timestamp 0 keeps these
        // pongs apart from the ones tests ask for.
        let period = Duration::from_secs(10);
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            if !media_frozen {
                self.drain().await;
            }
            for message in std::mem::take(&mut self.outgoing) {
                let text = serde_json::to_string(&message).unwrap();
                self.send_text(&mut ws_tx, &mut ws_rx, text).await;
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
                frame = next_frame(&mut ws_rx) => match frame {
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<ServerMessage>(&text) {
                            Ok(message) => self.on_signal(message).await,
                            Err(err) => panic!("{}: relay sent undecodable message {text}: {err}", self.name),
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        ws_tx = None;
                        ws_rx = None;
                        let _ = self.events.send(Event::Closed);
                    }
                    _ => {}
                },
                _ = keepalive.tick() => self.outgoing.push(ClientMessage::Ping { timestamp: 0 }),
                command = commands.recv() => match command {
                    None | Some(Command::Close) => return,
                    Some(Command::Publish { audio, video }) => self.publish_tracks(audio, video),
                    Some(Command::SendMedia { keyframe }) => self.send_media(keyframe),
                    Some(Command::SendMediaBurst { rounds, keyframe_every }) => {
                        for _ in 0..rounds {
                            let keyframe = self.video_n.is_multiple_of(keyframe_every);
                            self.send_media(keyframe);
                        }
                    }
                    Some(Command::Raw(message)) => self.outgoing.push(message),
                    Some(Command::RawText(text)) => self.send_text(&mut ws_tx, &mut ws_rx, text).await,
                    Some(Command::Binary(bytes)) => {
                        if let Some(tx) = ws_tx.as_mut() {
                            let _ = tx.send(Message::Binary(bytes.into())).await;
                        }
                    }
                    Some(Command::Leave) => self.outgoing.push(ClientMessage::Leave {}),
                    Some(Command::DropSignaling) => {
                        // No close frame: the TCP connection just goes away, as on a network cut.
                        ws_tx = None;
                        ws_rx = None;
                    }
                    Some(Command::Reconnect(url)) => {
                        match tokio_tungstenite::connect_async(url.as_str()).await {
                            Ok((ws, _)) => {
                                let (tx, rx) = ws.split();
                                ws_tx = Some(tx);
                                ws_rx = Some(rx);
                            }
                            Err(err) => panic!("{}: reconnect failed: {err}", self.name),
                        }
                    }
                    Some(Command::FreezeMedia) => media_frozen = true,
                    Some(Command::PayloadSize(n)) => self.payload_bytes = n,
                    Some(Command::WithholdNextVideo) => self.withhold_next_video = true,
                    Some(Command::DiscardAndNack(tag)) => self.discard = Some(tag),
                    Some(Command::SendPli(track)) => self.send_pli(&track),
                    Some(Command::RawUdp { subscribe_leg, to, bytes }) => {
                        let socket = if subscribe_leg { &self.subscribe.socket } else { &self.publish.socket };
                        let _ = socket.send_to(&bytes, to).await;
                    }
                    Some(Command::GarbageRtcp) => self.send_garbage_rtcp(),
                    Some(Command::RestartVideoSsrc) => self.restart_video_ssrc(),
                    Some(Command::SendData(text)) => {
                        if let Some(id) = self.data_channel
                            && let Some(mut channel) = self.subscribe.pc.data_channel(id)
                        {
                            let _ = channel.send_text(Instant::now(), text);
                        }
                    }
                    Some(Command::RestartPublishIce) => {
                        self.publish.pc.restart_ice();
                        self.send_publish_offer();
                    }
                },
                r = self.publish.socket.recv_from(&mut buf_pub), if !media_frozen => {
                    if let Ok((n, from)) = r {
                        let _ = self.publish.pc.handle_read(datagram(Instant::now(), from, self.publish.addr, &buf_pub[..n]));
                    }
                }
                r = self.subscribe.socket.recv_from(&mut buf_sub), if !media_frozen => {
                    if let Ok((n, from)) = r {
                        let _ = self.subscribe.pc.handle_read(datagram(Instant::now(), from, self.subscribe.addr, &buf_sub[..n]));
                    }
                }
                _ = tokio::time::sleep_until(next.into()), if !media_frozen => {
                    let now = Instant::now();
                    let _ = self.publish.pc.handle_timeout(now);
                    let _ = self.subscribe.pc.handle_timeout(now);
                }
            }
        }
    }

    async fn send_text(
        &mut self,
        ws_tx: &mut Option<WsTx>,
        ws_rx: &mut Option<WsRx>,
        text: String,
    ) {
        let Some(tx) = ws_tx.as_mut() else {
            return; // signaling is down; the test decided so
        };
        if tx.send(Message::Text(text.into())).await.is_err() {
            *ws_tx = None;
            *ws_rx = None;
            let _ = self.events.send(Event::Closed);
        }
    }

    async fn drain(&mut self) {
        // Announced only once this pass's writes are out: the relay counts the channel open when
        // our DCEP ACK arrives, so a test that sends the moment it sees DataOpen must not beat it.
        let mut data_opened = false;
        for publish in [true, false] {
            let peer = if publish {
                &mut self.publish
            } else {
                &mut self.subscribe
            };
            while let Some(event) = peer.pc.poll_event() {
                match event {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                        if state == RTCPeerConnectionState::Connected {
                            let stats = peer.pc.get_stats(Instant::now(), StatsSelector::None);
                            if let Some(transport) = stats.transport() {
                                let _ = self.events.send(Event::SrtpCipher {
                                    publish,
                                    cipher: transport.srtp_cipher.clone(),
                                    dtls_role: transport.dtls_role.to_string(),
                                });
                            }
                        }
                        let _ = self.events.send(if publish {
                            Event::PublishState(state)
                        } else {
                            Event::SubscribeState(state)
                        });
                    }
                    RTCPeerConnectionEvent::OnDataChannel(
                        rtc::peer_connection::event::RTCDataChannelEvent::OnOpen(id),
                    ) if !publish => {
                        self.data_channel = Some(id);
                        data_opened = true;
                    }
                    RTCPeerConnectionEvent::OnIceCandidateEvent(_) => {}
                    _ => {}
                }
            }
            while let Some(message) = peer.pc.poll_read() {
                match message.message {
                    RTCMessage::RtpPacket(track, packet) if !publish => {
                        if self
                            .discard
                            .as_deref()
                            .is_some_and(|t| tag(&packet.payload) == t)
                        {
                            self.discard = None;
                            let nack = TransportLayerNack {
                                sender_ssrc: 0,
                                media_ssrc: packet.header.ssrc,
                                nacks: vec![NackPair {
                                    packet_id: packet.header.sequence_number,
                                    lost_packets: 0,
                                }],
                            };
                            let receivers: Vec<_> = peer.pc.get_receivers().collect();
                            for id in receivers {
                                if let Some(mut r) = peer.pc.rtp_receiver(id)
                                    && r.track().ssrcs().any(|s| s == packet.header.ssrc)
                                {
                                    let _ =
                                        r.write_rtcp(Instant::now(), vec![Box::new(nack.clone())]);
                                }
                            }
                            continue;
                        }
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
                    RTCMessage::RtcpPacket(_, packets) if publish => {
                        for p in &packets {
                            if p.as_any().is::<PictureLossIndication>() {
                                self.pli_pending = true;
                                let _ = self.events.send(Event::Pli);
                            }
                            if let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() {
                                let lost: Vec<u16> = nack
                                    .nacks
                                    .iter()
                                    .flat_map(|pair| {
                                        let mut seqs = vec![pair.packet_id];
                                        for bit in 0..16u16 {
                                            if pair.lost_packets & (1 << bit) != 0 {
                                                seqs.push(pair.packet_id.wrapping_add(bit + 1));
                                            }
                                        }
                                        seqs
                                    })
                                    .collect();
                                if let Some(withheld) = &self.withheld
                                    && lost.contains(&withheld.header.sequence_number)
                                    && let Some((sender, _)) = self.video
                                    && let Some(packet) = self.withheld.take()
                                {
                                    let _ = peer
                                        .pc
                                        .rtp_sender(sender)
                                        .map(|mut s| s.write_rtp(Instant::now(), packet));
                                }
                                let _ = self.events.send(Event::Nack(lost));
                            }
                        }
                    }
                    RTCMessage::DataChannelMessage(_, message) if !publish => {
                        let text = String::from_utf8_lossy(&message.data).to_string();
                        let _ = self.events.send(Event::Data(text));
                    }
                    RTCMessage::RtcpPacket(_, packets) if !publish => {
                        for p in &packets {
                            if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                                let _ = self.events.send(Event::SenderReport {
                                    ssrc: sr.ssrc,
                                    ntp_time: sr.ntp_time,
                                    rtp_time: sr.rtp_time,
                                });
                            }
                        }
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
        if data_opened {
            let _ = self.events.send(Event::DataOpen);
        }
    }

    async fn on_signal(&mut self, message: ServerMessage) {
        match &message {
            ServerMessage::PublishAnswer { sdp, .. } => {
                let answer = RTCSessionDescription::answer(sdp.clone()).unwrap();
                // An answer to an offer a test sent raw (not through this connection) does not
                // apply; the test is playing a client that lies.
                let _ = self
                    .publish
                    .pc
                    .set_remote_description(Instant::now(), answer);
            }
            ServerMessage::SubscribeOffer {
                sdp,
                new_connection,
                ..
            } => {
                if *new_connection && self.subscribe.pc.remote_description().is_some() {
                    let _ = self.events.send(Event::NewSubscribeConnection);
                    self.subscribe = Peer::new(&self.codecs).await;
                }
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
                let _ = self.events.send(Event::LocalSdp {
                    publish: false,
                    sdp: answer.sdp.clone(),
                });
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
                .add_track(synthetic_track(
                    RtpCodecKind::Audio,
                    ssrc,
                    "audio/opus",
                    48_000,
                    2,
                ))
                .unwrap();
            self.audio = Some((sender, ssrc));
        }
        if video && self.video.is_none() {
            let ssrc = VIDEO_SSRC_BASE + salt;
            let sender = self
                .publish
                .pc
                .add_track(synthetic_track(
                    RtpCodecKind::Video,
                    ssrc,
                    self.video_mime,
                    90_000,
                    0,
                ))
                .unwrap();
            self.video = Some((sender, ssrc));
        }
        self.send_publish_offer();
    }

    fn send_publish_offer(&mut self) {
        let now = Instant::now();
        let offer = self.publish.pc.create_offer(None).unwrap();
        self.publish
            .pc
            .set_local_description(now, offer.clone())
            .unwrap();
        let _ = self.events.send(Event::LocalSdp {
            publish: true,
            sdp: offer.sdp.clone(),
        });
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
            let mut payload = vec![0xfc];
            payload.resize(self.payload_bytes.saturating_sub(32).max(1), 0xaa);
            payload.extend_from_slice(format!("#{}/audio/{n}", self.name).as_bytes());
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
            let pt = self.payload_type(sender, self.video_mime);
            let n = self.video_n;
            self.video_n += 1;
            let key = keyframe || self.pli_pending;
            self.pli_pending = false;
            let mut payload = match self.video_mime {
                // VP9 descriptor: B=1, P=0 on keyframes, P=1 otherwise.
                "video/VP9" => vec![if key { 0x08 } else { 0x48 }],
                // H.264: an SPS NAL unit starts a keyframe, a non-IDR slice otherwise.
                "video/H264" => vec![if key { 0x67 } else { 0x41 }],
                // VP8 descriptor S=1 PID=0, then the payload header: P=0 keyframe, P=1 delta.
                _ => vec![0x10, if key { 0x00 } else { 0x01 }],
            };
            payload.resize(
                self.payload_bytes.saturating_sub(32).max(payload.len()),
                0xaa,
            );
            payload.extend_from_slice(format!("#{}/video/{n}", self.name).as_bytes());
            let packet = Packet {
                header: Header {
                    version: 2,
                    marker: true,
                    payload_type: pt,
                    sequence_number: (n as u16).wrapping_add(self.video_seq_base),
                    timestamp: n.wrapping_mul(3000).wrapping_add(self.video_ts_base),
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            if std::mem::take(&mut self.withhold_next_video) {
                self.withheld = Some(packet);
                return;
            }
            let _ = self
                .publish
                .pc
                .rtp_sender(sender)
                .unwrap()
                .write_rtp(now, packet);
        }
    }

    fn send_pli(&mut self, track: &str) {
        let receivers: Vec<_> = self.subscribe.pc.get_receivers().collect();
        for id in receivers {
            let Some(mut r) = self.subscribe.pc.rtp_receiver(id) else {
                continue;
            };
            let ssrc = r.track().ssrcs().next();
            if r.track().track_id() == track
                && let Some(ssrc) = ssrc
            {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc: ssrc,
                };
                let _ = r.write_rtcp(Instant::now(), vec![Box::new(pli)]);
            }
        }
    }

    fn send_garbage_rtcp(&mut self) {
        let Some((sender, ssrc)) = self.video else {
            return;
        };
        // A receiver report header (cleartext in SRTCP and consistent), then a second packet
        // claiming 256 KiB: only decryption reveals it is garbage.
        let mut bytes = vec![0x80, 201, 0x00, 0x01];
        bytes.extend_from_slice(&ssrc.to_be_bytes());
        bytes.extend_from_slice(&[0x80, 205, 0xff, 0xff, 1, 2, 3, 4]);
        let raw = rtc::rtcp::raw_packet::RawPacket(Bytes::from(bytes));
        let _ = self
            .publish
            .pc
            .rtp_sender(sender)
            .map(|mut s| s.write_rtcp(Instant::now(), vec![Box::new(raw)]));
    }

    fn restart_video_ssrc(&mut self) {
        let Some((sender, ssrc)) = self.video else {
            return;
        };
        let new_ssrc = ssrc.wrapping_add(0x100);
        // A new sender on the same m-line (the transceiver is reused): same mid, new SSRC.
        self.publish.pc.remove_track(sender).unwrap();
        let sender = self
            .publish
            .pc
            .add_track(synthetic_track(
                RtpCodecKind::Video,
                new_ssrc,
                self.video_mime,
                90_000,
                0,
            ))
            .unwrap();
        self.video = Some((sender, new_ssrc));
        self.video_seq_base = self.video_seq_base.wrapping_add(20_000);
        self.video_ts_base = self.video_ts_base.wrapping_add(0x4000_0000);
        self.send_publish_offer();
    }
}

/// Whether a received VP8 payload is the start of a keyframe (as the test client writes them).
pub fn is_keyframe(payload: &[u8]) -> bool {
    payload.len() >= 2 && payload[0] & 0x10 != 0 && payload[1] & 0x01 == 0
}

/// The same for any video codec the test client publishes.
pub fn is_keyframe_of(mime: &str, payload: &[u8]) -> bool {
    match mime {
        "video/VP9" => payload.first() == Some(&0x08),
        "video/H264" => payload.first() == Some(&0x67),
        _ => is_keyframe(payload),
    }
}

/// Sends media from `client` every 10 ms (a keyframe every 30 rounds) until dropped.
pub struct MediaPump {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MediaPump {
    pub fn start(client: &Client) -> MediaPump {
        Self::start_with(client, Some(30))
    }

    /// A keyframe every `keyframe_every` rounds, or only when the relay asks (PLI) with `None`.
    pub fn start_with(client: &Client, keyframe_every: Option<u32>) -> MediaPump {
        let tx = client.sender();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut i = 0u32;
            // An interval catches up after a stall on a loaded machine; a sleep per round would
            // lower the rate for good.
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                let keyframe = keyframe_every.is_some_and(|k| i.is_multiple_of(k));
                if tx.send(Command::SendMedia { keyframe }).is_err() {
                    return;
                }
                i += 1;
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {}
                }
            }
        });
        MediaPump { stop: Some(stop) }
    }
}

impl MediaPump {
    /// `rounds` rounds of media every 10 ms (`rounds * 100` packets per second per track), until
    /// dropped.
    pub fn start_fast(client: &Client, rounds: u32) -> MediaPump {
        let tx = client.sender();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let burst = Command::SendMediaBurst {
                    rounds,
                    keyframe_every: 100,
                };
                if tx.send(burst).is_err() {
                    return;
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {}
                }
            }
        });
        MediaPump { stop: Some(stop) }
    }
}

impl Drop for MediaPump {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Packets `subscriber` received from `publisher`'s `kind` track, in arrival order.
pub fn received_from<'a>(subscriber: &'a Client, publisher: &str, kind: &str) -> Vec<&'a Received> {
    let prefix = format!("{publisher}/{kind}/");
    subscriber
        .rtp()
        .filter(|r| tag(&r.payload).starts_with(&prefix))
        .collect()
}

/// The number a synthetic packet carries in its tag.
pub fn number(r: &Received) -> u32 {
    tag(&r.payload).rsplit('/').next().unwrap().parse().unwrap()
}

/// Asserts that `subscriber` got `publisher`'s `kind` stream without a single gap since its
/// first packet (consecutive tags and rewritten sequence numbers), and at least `min` packets.
pub fn assert_no_gap(subscriber: &Client, publisher: &str, kind: &str, min: usize) {
    let got = received_from(subscriber, publisher, kind);
    assert!(
        got.len() >= min,
        "{}: only {} {kind} packets from {publisher}, expected at least {min}",
        subscriber.name,
        got.len()
    );
    for pair in got.windows(2) {
        assert_eq!(
            number(pair[1]),
            number(pair[0]) + 1,
            "{}: gap in {publisher}'s {kind} stream",
            subscriber.name
        );
        assert_eq!(
            pair[1].sequence_number,
            pair[0].sequence_number.wrapping_add(1),
            "{}: sequence gap in {publisher}'s {kind} stream",
            subscriber.name
        );
    }
}

/// Waits until `subscriber` has received at least `count` more packets of `publisher`'s `kind`
/// than it had when called.
pub async fn wait_more(subscriber: &mut Client, publisher: &str, kind: &str, count: usize) {
    subscriber.pump();
    let have = received_from(subscriber, publisher, kind).len();
    let prefix = format!("{publisher}/{kind}/");
    subscriber
        .wait_until(
            &format!("{count} more {kind} packets from {publisher}"),
            |log| {
                log.iter()
                    .filter(|e| matches!(e, Event::Rtp(r) if tag(&r.payload).starts_with(&prefix)))
                    .count()
                    >= have + count
            },
        )
        .await;
}

/// A token with the admin grant over `room` (`*`: every room).
pub fn admin_token(relay: &Running, room: &str) -> String {
    let grants = Grants {
        admin: true,
        ..Grants::default()
    };
    token(relay, room, "operator", grants)
}

/// One admin API call: (status, JSON body or `null` when empty).
pub async fn api(
    relay: &Running,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = http_request(relay.http_addr, &request).await;
    let json = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"))
    };
    (status, json)
}

/// Waits for an `error` with `code` on `client`.
pub async fn expect_error(client: &mut Client, code: tern_signaling::protocol::ErrorCode) {
    client
        .wait_for(&format!("error {code:?}"), |e| match e {
            Event::Signal(ServerMessage::Error { code: c, .. }) if *c == code => Some(()),
            _ => None,
        })
        .await;
}

/// Opens `/rtc` with a token and returns the relay's first message (for refused joins, whose
/// first message is an error).
pub async fn first_message(relay: &Running, room: &str, identity: &str) -> ServerMessage {
    let url = ws_url(relay, &token(relay, room, identity, Grants::participant()));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str(&text).expect("server message");
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no first message: {other:?}"),
        }
    }
}

/// Sends a raw HTTP/1.1 request and returns the response head (status line and headers).
pub async fn response_head(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&response).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            return text[..end].to_owned();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => response.extend_from_slice(&chunk[..n]),
            _ => return text,
        }
    }
}

/// A child process (prometheus, coturn, the relay binary) killed when the test ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
