//! One configuration tree: defaults < TOML file < `TERN_*` environment < command-line flags.
//!
//! Every option is listed with its default in deploy/tern.example.toml; keep the two in step.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tern_signaling::client_addr::TrustedProxies;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub auth: AuthConfig,
    pub session: SessionConfig,
    pub room: RoomConfig,
    pub ice: IceConfig,
    pub drain: DrainConfig,
    pub webhooks: WebhookConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IceConfig {
    /// STUN servers handed to clients at join (`stun:host:port`).
    pub stun_urls: Vec<String>,
    /// TURN servers handed to clients at join (`turn:host:3478?transport=udp`, `turns:...`),
    /// with credentials minted per participant from `turn_secret`.
    pub turn_urls: Vec<String>,
    /// Shared secret of the TURN server (coturn `static-auth-secret` with `use-auth-secret`).
    pub turn_secret: String,
    /// Lifetime of the TURN credentials given at join, seconds.
    pub turn_credential_ttl_s: u64,
}

impl Default for IceConfig {
    fn default() -> Self {
        IceConfig {
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: String::new(),
            turn_credential_ttl_s: 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receivers (http:// or https://) of room, participant and track events.
    pub urls: Vec<String>,
    /// Key id whose secret signs the events; empty: the only configured key.
    pub key: String,
    /// Events waiting per receiver before new ones are dropped (and counted).
    pub queue: usize,
    /// Tries per event (the first plus retries with backoff from 0.5 s, doubling up to 8 s).
    pub attempts: u32,
    /// Seconds one try may take.
    pub timeout_s: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            key: String::new(),
            queue: 1024,
            attempts: 5,
            timeout_s: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// After SIGTERM, seconds to let calls in progress finish before exiting anyway.
    pub timeout_s: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig { timeout_s: 1800 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the plain HTTP/WebSocket listener (signaling, admin API, health, metrics, web
    /// client). With TLS configured, keep it on loopback or behind a TLS-terminating proxy.
    pub listen: SocketAddr,
    /// Address of the HTTPS/WSS listener; needs `tls_cert_file` and `tls_key_file`.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for `tls_listen`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_listen`.
    pub tls_key_file: Option<PathBuf>,
    /// Web origins (`https://app.example.com`) allowed to open the WebSocket and call the API
    /// from a browser, besides the relay's own. `"*"` allows any. Dev mode also allows loopback
    /// origins.
    pub allowed_origins: Vec<String>,
    /// Join attempts (`/rtc` requests) one client address may make per minute; 0: no limit.
    /// IPv6 clients are counted per /64.
    pub max_joins_per_ip_per_minute: u32,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names the client, for
    /// join limits and the dev-token loopback check. Empty: the header is ignored and the TCP
    /// peer is the client.
    pub trusted_proxies: Vec<String>,
    /// HTTP connections (plain and TLS, WebSockets included) open at once; more are closed on
    /// accept. Kept below the process's file limit, which the relay raises to its hard maximum.
    pub max_connections: usize,
    /// HTTP connections open at once from one client address (IPv6: one /64); trusted proxies
    /// count only against `max_connections`.
    pub max_connections_per_client: usize,
    /// Seconds a connection has to send a whole request head: after it opens, and between
    /// requests on a kept-alive connection.
    pub request_head_timeout_s: u64,
    /// Seconds a write to a client may make no progress (it stopped reading) before the
    /// connection is closed.
    pub write_timeout_s: u64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A separate listener for `/metrics`, `/healthz` and `/readyz` (e.g. on a private
    /// address). Set, `/metrics` is no longer served on the public HTTP port.
    pub listen: Option<SocketAddr>,
    /// Bearer token `/metrics` requires (`Authorization: Bearer <token>`); empty: none.
    pub token: String,
}

/// More workers than this is a configuration mistake (participant ids route by worker, and
/// each worker costs a thread and a port).
pub const MAX_WORKERS: usize = 1024;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Media workers, each with its own thread, rooms and UDP port; 0: one per core.
    pub workers: usize,
    /// The first worker's UDP socket; worker i listens on this port plus i.
    pub listen: SocketAddr,
    /// Addresses put in the relay's ICE candidates. Empty: the listen address (which must then
    /// not be a wildcard such as 0.0.0.0).
    pub advertised_ips: Vec<IpAddr>,
    /// Also accept AES_CM_128_HMAC_SHA1_80 from clients that do not offer AES-GCM (about 6x
    /// the crypto cost). The relay prefers AES-GCM whenever a client offers it.
    pub allow_srtp_sha1_80: bool,
    /// Seconds without ICE consent before a leg is `disconnected`.
    pub ice_disconnected_timeout_s: u64,
    /// Further seconds before it is `failed` and its participant removed.
    pub ice_failed_timeout_s: u64,
    /// Seconds a new peer connection has to complete ICE and DTLS; one that has not is counted
    /// in `tern_leg_failures_total` and its participant removed (`transport_failed`).
    pub connect_timeout_s: u64,
    /// Packets of send history kept per forwarded video stream for NACKs.
    pub nack_history: u16,
    /// Datagrams per second one peer connection may send the relay (bursts of half that);
    /// more are dropped as a flood. A 1080p screen share needs under 1,000.
    pub max_packets_per_second_per_leg: u32,
    /// Kernel receive and send buffer of the media socket, bytes. Large, so that bursts and
    /// floods are dropped by the relay (per leg) rather than by the kernel (for everyone).
    /// Capped by net.core.rmem_max/wmem_max unless the relay has CAP_NET_ADMIN.
    pub socket_buffer_bytes: usize,
    /// ICE-TCP port for clients whose UDP is blocked (passive candidates on the advertised
    /// addresses). Unset: no ICE-TCP.
    pub tcp_listen: Option<SocketAddr>,
    /// ICE-TCP connections open at once; more are closed on accept.
    pub tcp_max_connections: usize,
    /// Seconds a new ICE-TCP connection has to send an integrity-checked STUN request naming a
    /// leg before it is closed.
    pub tcp_stun_deadline_s: u64,
    /// Estimate each subscriber's downlink (transport-cc, probes, pacing) and choose layers from
    /// it; off, layers follow the room budgets alone.
    pub bandwidth_estimation: bool,
    /// Negotiate RTX with publishers (retransmissions on a stream of their own); off, they
    /// retransmit on the media stream.
    pub publish_rtx: bool,
    /// A media worker whose thread was busy (not waiting for input) more than this share of the
    /// time (percent, averaged over about 2 s) takes no new participants: their joins are
    /// refused with `unavailable` (WHIP and WHEP: 503) rather than left to time out, and new
    /// rooms go to other workers. Resumes are always taken. 0: no limit.
    pub max_worker_load_percent: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Key id -> shared secret for HS256 join tokens. Empty: dev mode (a generated secret, and
    /// the relay mints tokens for loopback callers at /dev/token).
    pub keys: BTreeMap<String, String>,
    /// Lifetime of dev-mode tokens, seconds.
    pub dev_token_ttl_s: u64,
    /// Dev mode refuses a non-loopback HTTP address unless this is set.
    pub allow_dev_mode_on_public_address: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Seconds a participant whose signaling dropped may take to resume.
    pub resume_grace_s: u64,
    /// Largest signaling message accepted, bytes.
    pub max_message_bytes: usize,
    /// Seconds without any client message (clients ping every 10 s) before a connection is
    /// treated as dropped.
    pub idle_timeout_s: u64,
    /// Events queued for one connection before it counts as too slow and is closed.
    pub event_queue: usize,
    /// Messages per second one connection may send (bursts of as many); more are dropped with
    /// `rate_limited`.
    pub max_messages_per_s: u32,
    /// Seconds one write to a client may take; a client that stops reading is dropped then
    /// (it may resume).
    pub write_timeout_s: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoomConfig {
    /// Seconds a room created through the admin API waits for its first participant.
    pub empty_timeout_s: u32,
    /// Seconds a room lingers after its last participant left.
    pub departure_timeout_s: u32,
    /// Participants per room (the admin API can set a room's own limit).
    pub max_participants: u32,
    /// Rooms one node holds at once.
    pub max_rooms: usize,
    pub max_tracks_per_participant: usize,
    /// Largest SDP accepted in an offer or answer, bytes.
    pub max_sdp_bytes: usize,
    /// Track changes within this many milliseconds share one subscribe offer.
    pub renegotiation_debounce_ms: u64,
    /// Least milliseconds between two subscribe offers to one participant: however fast others
    /// publish and unpublish, nobody renegotiates more often than this.
    pub renegotiation_interval_ms: u64,
    /// Media sections (m-lines, of any direction) an offer or answer may have.
    pub max_media_sections: usize,
    /// Publish offers one participant may send per second (bursts of three times as many).
    pub max_offers_per_s: u32,
    /// Minimum milliseconds between keyframe requests to one publisher track.
    pub keyframe_interval_ms: u64,
    /// Video budgets of a room, kbit/s (0: none): all its subscribers together, one
    /// subscriber, one publisher.
    pub max_egress_kbps: u32,
    pub max_subscriber_kbps: u32,
    pub max_publisher_kbps: u32,
    /// Rooms admit only participants that encrypt their media end to end (`e2ee=1` at join).
    pub e2ee_required: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` env-filter directives, e.g. `info` or `tern=debug,rtc=warn`.
    pub filter: String,
    pub format: LogFormat,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_listen: None,
            tls_cert_file: None,
            tls_key_file: None,
            allowed_origins: Vec::new(),
            max_joins_per_ip_per_minute: 120,
            trusted_proxies: Vec::new(),
            max_connections: 10_000,
            max_connections_per_client: 256,
            request_head_timeout_s: 10,
            write_timeout_s: 10,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            workers: 0,
            listen: SocketAddr::from(([127, 0, 0, 1], 50000)),
            advertised_ips: Vec::new(),
            allow_srtp_sha1_80: true,
            ice_disconnected_timeout_s: 7,
            ice_failed_timeout_s: 5,
            connect_timeout_s: 15,
            nack_history: 512,
            max_packets_per_second_per_leg: 5_000,
            socket_buffer_bytes: 8 * 1024 * 1024,
            tcp_listen: None,
            tcp_max_connections: 1000,
            tcp_stun_deadline_s: 5,
            bandwidth_estimation: true,
            publish_rtx: true,
            max_worker_load_percent: 95,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            keys: BTreeMap::new(),
            dev_token_ttl_s: 24 * 3600,
            allow_dev_mode_on_public_address: false,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            resume_grace_s: 10,
            max_message_bytes: 64 * 1024,
            idle_timeout_s: 30,
            event_queue: 256,
            max_messages_per_s: 50,
            write_timeout_s: 10,
        }
    }
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            empty_timeout_s: 300,
            departure_timeout_s: 20,
            max_participants: 100,
            max_rooms: 1_000,
            max_tracks_per_participant: 8,
            max_sdp_bytes: 32 * 1024,
            renegotiation_debounce_ms: 20,
            renegotiation_interval_ms: 300,
            max_media_sections: 32,
            max_offers_per_s: 2,
            keyframe_interval_ms: 500,
            max_egress_kbps: 0,
            max_subscriber_kbps: 0,
            max_publisher_kbps: 0,
            e2ee_required: false,
        }
    }
}

/// The default `log.filter`.
pub const DEFAULT_LOG_FILTER: &str = "warn,tern=info,tern_signaling=info,rtc_dtls=error";

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            // Tern's own lines at info (a join, a leave, a failure: one line each); the WebRTC
            // stack's only from warn, since it logs ten state changes per peer connection at
            // info. rtc_dtls warns about every current browser's ClientHello (its DTLS 1.3
            // extensions) and about a server name it never uses; failed handshakes are logged
            // and counted by Tern itself.
            filter: DEFAULT_LOG_FILTER.to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration that cannot be used, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("{key}: {message}")]
    Setting { key: String, message: String },
    #[error(
        "{name} names no setting (did you mean {hint}?); `tern --help` lists every setting and its variable"
    )]
    UnknownVariable { name: String, hint: String },
}

/// Room timeouts, here and in the admin API: a room never closes the instant it empties (a
/// participant reloading its page would find it gone), nor lingers for more than a week.
pub const MIN_ROOM_TIMEOUT_S: u32 = 1;
pub const MAX_ROOM_TIMEOUT_S: u32 = 7 * 24 * 3600;

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

impl Config {
    /// Reads a TOML file over the defaults. Unknown keys are errors naming the key.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn dev_mode(&self) -> bool {
        self.auth.keys.is_empty()
    }

    /// Checks what serde cannot: combinations and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.media.listen.ip().is_unspecified() && self.media.advertised_ips.is_empty() {
            return Err(invalid(
                "media.advertised_ips",
                format!(
                    "media.listen is {} (all interfaces); set media.advertised_ips (or \
                     --advertise-ip) to the address(es) clients reach this host on",
                    self.media.listen
                ),
            ));
        }
        let public = [Some(self.http.listen), self.http.tls_listen]
            .into_iter()
            .flatten()
            .find(|addr| !addr.ip().is_loopback());
        if self.dev_mode()
            && let Some(public) = public
            && !self.auth.allow_dev_mode_on_public_address
        {
            return Err(invalid(
                "auth.keys",
                format!(
                    "dev mode (no API keys configured) would hand out tokens on {public}; \
                     configure auth.keys (or TERN_API_KEY/TERN_API_SECRET), listen on \
                     127.0.0.1, or set auth.allow_dev_mode_on_public_address = true"
                ),
            ));
        }
        let tls = [
            self.http.tls_listen.is_some(),
            self.http.tls_cert_file.is_some(),
            self.http.tls_key_file.is_some(),
        ];
        if tls.iter().any(|set| *set) && !tls.iter().all(|set| *set) {
            return Err(invalid(
                "http.tls_listen",
                "TLS needs all three of http.tls_listen, http.tls_cert_file and \
                 http.tls_key_file",
            ));
        }
        for (kid, secret) in &self.auth.keys {
            if kid.is_empty() {
                return Err(invalid("auth.keys", "a key id is empty"));
            }
            if secret.len() < 32 {
                return Err(invalid(
                    "auth.keys",
                    format!("the secret of key {kid:?} is shorter than 32 bytes"),
                ));
            }
        }
        if self.media.ice_disconnected_timeout_s == 0 || self.media.ice_failed_timeout_s == 0 {
            return Err(invalid(
                "media.ice_disconnected_timeout_s",
                "ICE timeouts must be at least 1 second",
            ));
        }
        if self.media.connect_timeout_s == 0 {
            return Err(invalid("media.connect_timeout_s", "must be at least 1"));
        }
        if self.session.max_message_bytes < 1024 {
            return Err(invalid(
                "session.max_message_bytes",
                "must be at least 1024 (an SDP offer does not fit otherwise)",
            ));
        }
        if self.media.max_packets_per_second_per_leg < 100 {
            return Err(invalid(
                "media.max_packets_per_second_per_leg",
                "must be at least 100 (audio alone needs 50)",
            ));
        }
        if self.session.event_queue == 0 {
            return Err(invalid("session.event_queue", "must be at least 1"));
        }
        if let Err(err) = TrustedProxies::parse(&self.http.trusted_proxies) {
            return Err(invalid("http.trusted_proxies", err));
        }
        if self.http.max_connections == 0 || self.http.max_connections_per_client == 0 {
            return Err(invalid(
                "http.max_connections",
                "http.max_connections and http.max_connections_per_client must be at least 1",
            ));
        }
        if self.http.request_head_timeout_s == 0 || self.http.write_timeout_s == 0 {
            return Err(invalid(
                "http.request_head_timeout_s",
                "http.request_head_timeout_s and http.write_timeout_s must be at least 1",
            ));
        }
        if self.session.write_timeout_s == 0 {
            return Err(invalid("session.write_timeout_s", "must be at least 1"));
        }
        if self.room.max_participants == 0 {
            return Err(invalid("room.max_participants", "must be at least 1"));
        }
        if let Some(bad) = self
            .ice
            .stun_urls
            .iter()
            .find(|u| !u.starts_with("stun:") && !u.starts_with("stuns:"))
        {
            return Err(invalid(
                "ice.stun_urls",
                format!("{bad:?} is not a stun: or stuns: URL"),
            ));
        }
        if let Some(bad) = self
            .ice
            .turn_urls
            .iter()
            .find(|u| !u.starts_with("turn:") && !u.starts_with("turns:"))
        {
            return Err(invalid(
                "ice.turn_urls",
                format!("{bad:?} is not a turn: or turns: URL"),
            ));
        }
        if !self.ice.turn_urls.is_empty() && self.ice.turn_secret.len() < 16 {
            return Err(invalid(
                "ice.turn_secret",
                "TURN servers need their shared secret (at least 16 bytes; the TURN server's \
                 static-auth-secret), e.g. in TERN_TURN_SECRET",
            ));
        }
        if !self.ice.turn_urls.is_empty() && self.ice.turn_credential_ttl_s == 0 {
            return Err(invalid("ice.turn_credential_ttl_s", "must be at least 1"));
        }
        if !self.webhooks.urls.is_empty() {
            if self.dev_mode() {
                return Err(invalid(
                    "webhooks.urls",
                    "webhooks are signed with an API key; configure auth.keys (or \
                     TERN_API_KEY/TERN_API_SECRET)",
                ));
            }
            self.webhook_key()?;
            if let Some(bad) = self
                .webhooks
                .urls
                .iter()
                .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
            {
                return Err(invalid(
                    "webhooks.urls",
                    format!("{bad:?} is not an http:// or https:// URL"),
                ));
            }
            if self.webhooks.attempts == 0 || self.webhooks.timeout_s == 0 {
                return Err(invalid(
                    "webhooks.attempts",
                    "webhooks.attempts and webhooks.timeout_s must be at least 1",
                ));
            }
        }
        if self.media.tcp_listen.is_some()
            && (self.media.tcp_max_connections == 0 || self.media.tcp_stun_deadline_s == 0)
        {
            return Err(invalid(
                "media.tcp_max_connections",
                "media.tcp_max_connections and media.tcp_stun_deadline_s must be at least 1",
            ));
        }
        if let Some(tcp) = self.media.tcp_listen
            && tcp.ip().is_unspecified()
            && self.media.advertised_ips.is_empty()
        {
            return Err(invalid(
                "media.advertised_ips",
                format!(
                    "media.tcp_listen is {tcp} (all interfaces); set media.advertised_ips to the \
                     address(es) clients reach this host on"
                ),
            ));
        }
        if self.room.max_media_sections < 4 || self.room.max_offers_per_s == 0 {
            return Err(invalid(
                "room.max_media_sections",
                "room.max_media_sections must be at least 4 and room.max_offers_per_s at least 1",
            ));
        }
        let workers = self.media_workers();
        if workers > MAX_WORKERS {
            return Err(invalid(
                "media.workers",
                format!("{workers} workers; at most {MAX_WORKERS}"),
            ));
        }
        for (key, addr) in [
            ("media.listen", Some(self.media.listen)),
            ("media.tcp_listen", self.media.tcp_listen),
        ] {
            if let Some(addr) = addr
                && addr.port() != 0
                && usize::from(addr.port()) + workers - 1 > usize::from(u16::MAX)
            {
                return Err(invalid(
                    key,
                    format!(
                        "{workers} workers need ports {} to {}; choose a lower port",
                        addr.port(),
                        usize::from(addr.port()) + workers - 1
                    ),
                ));
            }
        }
        if self.room.max_rooms == 0 {
            return Err(invalid("room.max_rooms", "must be at least 1"));
        }
        if self.media.max_worker_load_percent > 100 {
            return Err(invalid(
                "media.max_worker_load_percent",
                "a worker is one thread, at most 100 % of a core; 0 turns the limit off",
            ));
        }
        if self.session.max_messages_per_s < 5 {
            return Err(invalid(
                "session.max_messages_per_s",
                "must be at least 5 (a join trickles several candidates at once)",
            ));
        }
        for (key, timeout) in [
            ("room.empty_timeout_s", self.room.empty_timeout_s),
            ("room.departure_timeout_s", self.room.departure_timeout_s),
        ] {
            if !(MIN_ROOM_TIMEOUT_S..=MAX_ROOM_TIMEOUT_S).contains(&timeout) {
                return Err(invalid(
                    key,
                    format!("must be {MIN_ROOM_TIMEOUT_S} to {MAX_ROOM_TIMEOUT_S} s (a week)"),
                ));
            }
        }
        Ok(())
    }

    /// The load limit of each media worker as the busy share of its time, `None` when off.
    pub fn max_worker_load(&self) -> Option<f64> {
        let percent = self.media.max_worker_load_percent;
        (percent > 0).then(|| f64::from(percent) / 100.0)
    }

    /// The key (id, secret) that signs webhooks.
    pub fn webhook_key(&self) -> Result<(String, String), ConfigError> {
        let chosen = if self.webhooks.key.is_empty() {
            if self.auth.keys.len() != 1 {
                return Err(invalid(
                    "webhooks.key",
                    "several API keys are configured; name the one that signs webhooks",
                ));
            }
            self.auth.keys.iter().next()
        } else {
            self.auth.keys.get_key_value(&self.webhooks.key)
        };
        chosen
            .map(|(k, s)| (k.clone(), s.clone()))
            .ok_or_else(|| invalid("webhooks.key", "names no key in auth.keys"))
    }

    /// How many media workers run: `media.workers`, or one per core the relay may use.
    pub fn media_workers(&self) -> usize {
        match self.media.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    pub fn resume_grace(&self) -> Duration {
        Duration::from_secs(self.session.resume_grace_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_valid_dev_setup_on_loopback() {
        let config = Config::default();
        assert!(config.dev_mode());
        config.validate().unwrap();
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let config = Config::from_toml("[media]\nlisten = \"127.0.0.1:40000\"\n").unwrap();
        assert_eq!(config.media.listen.port(), 40000);
        assert_eq!(config.http, HttpConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Config::from_toml("[media]\nlissten = \"x\"\n").unwrap_err();
        assert!(err.contains("lissten"), "{err}");
        let err = Config::from_toml("[http]\nlisten = \"nope\"\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn wildcard_media_address_needs_advertised_ips() {
        let mut config = Config::default();
        config.media.listen = "0.0.0.0:50000".parse().unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("media.advertised_ips"), "{err}");
        config.media.advertised_ips = vec!["192.0.2.1".parse().unwrap()];
        config.validate().unwrap();
    }

    #[test]
    fn tls_needs_all_three_settings() {
        let mut config = Config::default();
        config.http.tls_listen = Some("127.0.0.1:8443".parse().unwrap());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("http.tls_listen"), "{err}");
        config.http.tls_cert_file = Some("cert.pem".into());
        config.http.tls_key_file = Some("key.pem".into());
        config.validate().unwrap();
        // A public TLS address counts as public for dev mode.
        config.http.tls_listen = Some("0.0.0.0:8443".parse().unwrap());
        assert!(config.validate().is_err());
    }

    #[test]
    fn dev_mode_refuses_a_public_http_address() {
        let mut config = Config::default();
        config.http.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(config.validate().is_err());
        config
            .auth
            .keys
            .insert("k".into(), "0123456789abcdef0123456789abcdef".into());
        config.validate().unwrap();
    }
}
