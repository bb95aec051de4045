//! Wires the relay together: the media worker on its UDP socket, the signaling routes, metrics.

use crate::config::Config;
use crate::ice_servers::IceServerConfig;
use crate::metrics::{Metrics, NodeSnapshot, NodeSnapshots};
use crate::node::control::{RelayControl, WorkerHandle};
use crate::node::driver::{self, DriverIo, NodeThread};
use crate::node::engine::{EngineSettings, random_token};
use crate::node::placement::{Placement, WorkerPlace};
use crate::node::relay::{Node, NodeConfig, NodeShared};
use crate::node::socket::bind_std_media_socket;
use crate::node::tcp::{self, TcpSettings};
use crate::webhooks::{self, WebhookSettings, Webhooks};
use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::admin::{self, AdminApi, RoomPolicy};
use tern_signaling::auth::KeySet;
use tern_signaling::client_addr::TrustedProxies;
use tern_signaling::http::{
    DevMinting, Signaling, error_response, log_request, loopback_host_only, router,
};
use tern_signaling::http_errors::json_errors;
use tern_signaling::limits::JoinLimiter;
use tern_signaling::origin::{self, OriginCheck, OriginPolicy};
use tern_signaling::serve::{self, ConnectionGate, ConnectionLimits};
use tern_signaling::session::SessionLimits;
use tern_signaling::tls;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::info;

/// Key id of the generated dev-mode secret.
pub const DEV_KID: &str = "dev";

/// A running relay.
pub struct Running {
    pub http_addr: SocketAddr,
    /// The HTTPS/WSS listener, when TLS is configured.
    pub https_addr: Option<SocketAddr>,
    /// The first worker's ICE-TCP listener, when configured.
    pub tcp_addr: Option<SocketAddr>,
    /// The separate listener for health, readiness and metrics, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// The first media worker's UDP address.
    pub media_addr: SocketAddr,
    /// Every media worker's UDP address, in worker order.
    pub media_addrs: Vec<SocketAddr>,
    /// Every media worker's ICE-TCP address, when ICE-TCP is on.
    pub tcp_addrs: Vec<SocketAddr>,
    pub keys: KeySet,
    pub dev_mode: bool,
    pub metrics: Arc<Metrics>,
    pub control: RelayControl,
    pub snapshot: NodeSnapshots,
    draining: Arc<AtomicBool>,
    http: JoinHandle<()>,
    https: Option<JoinHandle<()>>,
    metrics_listener: Option<JoinHandle<()>>,
    nodes: Vec<NodeThread>,
}

impl Running {
    /// Stops serving at once (tests); dropping a `Running` does the same.
    pub fn stop(&self) {
        self.http.abort();
        for task in [&self.https, &self.metrics_listener].into_iter().flatten() {
            task.abort();
        }
        for node in &self.nodes {
            node.stop();
        }
    }

    /// Stops taking joins: `/readyz` answers 503 and new joins are refused with `draining`
    /// (before the upgrade) or `unavailable`; calls in progress go on, and their participants
    /// may still resume.
    pub fn drain(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            info!("draining: no new joins; calls in progress continue");
        }
    }

    /// Participants still on the node (`None` when the worker is gone).
    pub fn participants(&self) -> Option<u64> {
        self.control
            .is_running()
            .then(|| self.snapshot.read().participants)
    }

    /// Waits until the HTTP server or any media worker ends, whichever is first.
    pub async fn wait(&mut self) {
        let workers = futures_util::future::select_all(
            self.nodes.iter_mut().map(|node| Box::pin(node.stopped())),
        );
        tokio::select! {
            _ = &mut self.http => {}
            _ = workers => {}
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The addresses clients reach a socket bound to `bound` at: the advertised IPs on its port, or
/// the bound address itself.
fn advertised(config: &Config, bound: SocketAddr) -> Vec<SocketAddr> {
    if config.media.advertised_ips.is_empty() {
        return vec![bound];
    }
    config
        .media
        .advertised_ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, bound.port()))
        .collect()
}

/// Worker `index`'s address: the configured one's port plus `index` (port 0 stays 0: the
/// system picks each worker's).
fn worker_port(addr: SocketAddr, index: usize) -> SocketAddr {
    if addr.port() == 0 {
        return addr;
    }
    // `Config::validate` keeps the range under 65,536.
    let port = u16::try_from(usize::from(addr.port()) + index).unwrap_or(u16::MAX);
    SocketAddr::new(addr.ip(), port)
}

fn worker_config(config: &Config, media_addr: SocketAddr) -> NodeConfig {
    let mut srtp_profiles = vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm];
    if config.media.allow_srtp_sha1_80 {
        srtp_profiles.push(SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80);
    }
    let advertised = advertised(config, media_addr);
    NodeConfig {
        engine: EngineSettings {
            srtp_profiles,
            ice_disconnected_timeout: Duration::from_secs(config.media.ice_disconnected_timeout_s),
            ice_failed_timeout: Duration::from_secs(config.media.ice_failed_timeout_s),
            nack_history: config.media.nack_history,
            subscriber_feedback: config.media.bandwidth_estimation,
            publish_rtx: config.media.publish_rtx,
        },
        local_addr: media_addr,
        advertised,
        tcp_candidates: Vec::new(),
        webhooks: false,
        ice_servers: IceServerConfig {
            stun_urls: config.ice.stun_urls.clone(),
            turn_urls: config.ice.turn_urls.clone(),
            turn_secret: config.ice.turn_secret.clone(),
            turn_credential_ttl: Duration::from_secs(config.ice.turn_credential_ttl_s),
        },
        resume_grace: config.resume_grace(),
        room_defaults: RoomPolicy {
            max_participants: config.room.max_participants,
            empty_timeout_s: config.room.empty_timeout_s,
            departure_timeout_s: config.room.departure_timeout_s,
            max_egress_kbps: config.room.max_egress_kbps,
            max_subscriber_kbps: config.room.max_subscriber_kbps,
            max_publisher_kbps: config.room.max_publisher_kbps,
            e2ee_required: config.room.e2ee_required,
        },
        bandwidth_estimation: config.media.bandwidth_estimation,
        max_rooms: config.room.max_rooms,
        renegotiation_debounce: Duration::from_millis(config.room.renegotiation_debounce_ms),
        renegotiation_interval: Duration::from_millis(config.room.renegotiation_interval_ms),
        max_media_sections: config.room.max_media_sections,
        max_offers_per_s: config.room.max_offers_per_s,
        keyframe_interval: Duration::from_millis(config.room.keyframe_interval_ms),
        max_tracks_per_participant: config.room.max_tracks_per_participant,
        max_sdp_bytes: config.room.max_sdp_bytes,
        max_packets_per_leg_per_s: config.media.max_packets_per_second_per_leg,
        connect_timeout: Duration::from_secs(config.media.connect_timeout_s),
    }
}

/// Kernel send buffer of each HTTP/WebSocket connection (Linux doubles it to 128 KiB for its
/// bookkeeping). Signaling messages are small; a bounded buffer bounds what a client that stopped
/// reading holds, and lets the session's write timeout notice it after kilobytes rather than
/// megabytes of events (Linux would otherwise grow it up to 4 MiB).
const HTTP_SEND_BUFFER_BYTES: u32 = 64 * 1024;

fn bind_http_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    // Accepted connections inherit it.
    socket.set_send_buffer_size(HTTP_SEND_BUFFER_BYTES)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds the sockets and starts serving. Ports may be 0 (tests); the bound addresses are in the
/// result.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate()?;
    let workers = config.media_workers();
    let mut sockets = Vec::with_capacity(workers);
    for index in 0..workers {
        let addr = worker_port(config.media.listen, index);
        let socket = bind_std_media_socket(addr, config.media.socket_buffer_bytes)
            .with_context(|| format!("cannot bind media UDP socket on {addr} (worker {index})"))?;
        sockets.push(socket);
    }
    let media_addrs = sockets
        .iter()
        .map(|socket| socket.local_addr())
        .collect::<Result<Vec<_>, _>>()?;
    let media_addr = media_addrs[0];
    let listener = bind_http_listener(config.http.listen)
        .with_context(|| format!("cannot bind HTTP listener on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let tls = match (
        config.http.tls_listen,
        &config.http.tls_cert_file,
        &config.http.tls_key_file,
    ) {
        (Some(addr), Some(cert), Some(key)) => {
            let tls = TlsAcceptor::from(Arc::new(tls::server_config(cert, key)?));
            let tcp = bind_http_listener(addr)
                .with_context(|| format!("cannot bind HTTPS listener on {addr}"))?;
            Some((tcp, tls))
        }
        _ => None,
    };
    let https_addr = match &tls {
        Some((listener, _)) => Some(listener.local_addr()?),
        None => None,
    };
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(
            bind_http_listener(addr)
                .with_context(|| format!("cannot bind metrics listener on {addr}"))?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };

    let dev_mode = config.dev_mode();
    let keys = if dev_mode {
        KeySet::new([(DEV_KID.to_owned(), random_token(48).into_bytes())])
    } else {
        KeySet::new(
            config
                .auth
                .keys
                .iter()
                .map(|(kid, secret)| (kid.clone(), secret.clone().into_bytes())),
        )
    };

    let metrics = Arc::new(Metrics::with_workers(workers));
    let webhooks = if config.webhooks.urls.is_empty() {
        Webhooks::default()
    } else {
        let (key_id, secret) = config.webhook_key()?;
        webhooks::start(
            WebhookSettings {
                urls: config.webhooks.urls.clone(),
                key_id,
                secret: secret.into_bytes(),
                queue: config.webhooks.queue,
                attempts: config.webhooks.attempts,
                timeout: Duration::from_secs(config.webhooks.timeout_s),
                backoff: Duration::from_millis(500),
            },
            metrics.webhooks.clone(),
        )
    };
    let placement = Arc::new(Placement::new(config.room.max_rooms));
    let mut handles = Vec::with_capacity(workers);
    let mut snapshots = Vec::with_capacity(workers);
    let mut nodes = Vec::with_capacity(workers);
    let mut tcp_addrs = Vec::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let (commands_tx, commands_rx) = mpsc::channel(1024);
        let mut node_config = worker_config(&config, media_addrs[index]);
        let mut tcp_events = None;
        if let Some(addr) = config.media.tcp_listen {
            let addr = worker_port(addr, index);
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!("cannot bind ICE-TCP listener on {addr} (worker {index})")
            })?;
            let bound = listener.local_addr()?;
            node_config.tcp_candidates = advertised(&config, bound);
            let (events_tx, events_rx) = mpsc::channel(4096);
            tcp_events = Some(events_rx);
            tokio::spawn(tcp::serve(
                listener,
                events_tx,
                TcpSettings {
                    // One cap for the node, shared by the workers' listeners.
                    max_connections: config.media.tcp_max_connections,
                    stun_deadline: Duration::from_secs(config.media.tcp_stun_deadline_s),
                    send_queue: 256,
                },
                metrics.tcp.clone(),
            ));
            tcp_addrs.push(bound);
        }
        node_config.webhooks = webhooks.is_enabled();
        let snapshot = Arc::new(NodeSnapshot::default());
        let node = Node::new(
            node_config,
            NodeShared {
                metrics: metrics.worker(index),
                snapshot: snapshot.clone(),
                place: WorkerPlace {
                    placement: placement.clone(),
                    index,
                    workers,
                },
            },
            Instant::now(),
            SystemTime::now(),
        );
        handles.push(WorkerHandle {
            commands: commands_tx,
            resume_tokens: node.known_resume_tokens(),
        });
        snapshots.push(snapshot);
        nodes.push(
            driver::spawn(
                node,
                DriverIo {
                    index,
                    socket,
                    commands: commands_rx,
                    tcp_events,
                    webhooks: webhooks.clone(),
                    session_queue: config.session.event_queue,
                },
                metrics.worker(index),
            )
            .with_context(|| format!("cannot start media worker {index}'s thread"))?,
        );
    }
    let tcp_addr = tcp_addrs.first().copied();
    let snapshot = NodeSnapshots::new(snapshots);
    let draining = Arc::new(AtomicBool::new(false));
    let control = RelayControl::new(
        handles,
        placement,
        snapshot.clone(),
        draining.clone(),
        metrics.signaling.limits.clone(),
        config.max_worker_load(),
    );

    // Checked by `validate`.
    let trusted_proxies =
        Arc::new(TrustedProxies::parse(&config.http.trusted_proxies).map_err(anyhow::Error::msg)?);
    let signaling = Signaling {
        control: control.clone(),
        keys: keys.clone(),
        dev_minting: dev_mode.then(|| DevMinting {
            kid: DEV_KID.to_owned(),
            ttl: Duration::from_secs(config.auth.dev_token_ttl_s),
        }),
        limits: SessionLimits {
            max_message_bytes: config.session.max_message_bytes,
            idle_timeout: Duration::from_secs(config.session.idle_timeout_s),
            max_messages_per_s: config.session.max_messages_per_s,
            write_timeout: Duration::from_secs(config.session.write_timeout_s),
        },
        join_limiter: Arc::new(JoinLimiter::new(config.http.max_joins_per_ip_per_minute)),
        trusted_proxies: trusted_proxies.clone(),
        draining: draining.clone(),
        metrics: metrics.signaling.clone(),
        whip: Arc::new(tern_signaling::whip::WhipState::new(
            config.room.max_sdp_bytes,
            metrics.signaling.whip_sessions.clone(),
        )),
        whep: Arc::new(tern_signaling::whip::WhipState::new(
            config.room.max_sdp_bytes,
            metrics.signaling.whep_sessions.clone(),
        )),
    };
    let admin = AdminApi {
        admin: control.clone(),
        keys: keys.clone(),
        metrics: metrics.signaling.clone(),
    };
    let origins = OriginCheck {
        policy: Arc::new(OriginPolicy::from_list(
            &config.http.allowed_origins,
            dev_mode,
        )),
        metrics: metrics.signaling.clone(),
    };
    let operations = Operations {
        metrics: metrics.clone(),
        snapshot: snapshot.clone(),
        control: control.clone(),
        draining: draining.clone(),
        token: (!config.metrics.token.is_empty()).then(|| config.metrics.token.clone()),
    };
    let mut app = router(signaling)
        .merge(admin::router(admin))
        .merge(operations.readiness_router());
    // With a listener of their own, metrics stay off the public port.
    if metrics_listener.is_none() {
        app = app.merge(operations.metrics_router());
    }
    let mut app = app
        .layer(axum::middleware::from_fn_with_state(origins, origin::check))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(log_request));
    if dev_mode {
        app = app.layer(axum::middleware::from_fn(loopback_host_only));
    }

    let file_limit = raise_file_limit();
    let limits = connection_limits(&config, file_limit);
    info!(
        file_limit,
        max_connections = limits.max_connections,
        max_per_client = limits.max_per_client,
        "HTTP connection limits"
    );
    let gate = ConnectionGate::new(limits, trusted_proxies, metrics.signaling.clone());
    let https = tls.map(|(listener, acceptor)| {
        tokio::spawn(serve::serve(
            listener,
            Some(acceptor),
            app.clone(),
            gate.clone(),
        ))
    });
    let http = tokio::spawn(serve::serve(listener, None, app, gate));
    let metrics_listener = metrics_listener.map(|listener| {
        // Its own small gate: a flood on the public port does not reach it.
        let gate = ConnectionGate::new(
            ConnectionLimits {
                max_connections: 64,
                max_per_client: 16,
                ..limits
            },
            Arc::default(),
            metrics.signaling.clone(),
        );
        let router = operations
            .metrics_router()
            .merge(operations.readiness_router())
            .route("/healthz", get(|| async { "ok\n" }))
            .layer(axum::middleware::from_fn(json_errors));
        tokio::spawn(serve::serve(listener, None, router, gate))
    });
    info!(%http_addr, ?https_addr, ?metrics_addr, ?media_addrs, workers, dev_mode, "relay started");
    Ok(Running {
        http_addr,
        https_addr,
        tcp_addr,
        metrics_addr,
        media_addr,
        media_addrs,
        tcp_addrs,
        keys,
        dev_mode,
        metrics,
        control,
        snapshot,
        draining,
        http,
        https,
        metrics_listener,
        nodes,
    })
}

/// File descriptors the relay keeps for everything but HTTP connections (media sockets,
/// listeners, webhook deliveries, files).
const RESERVED_FILES: u64 = 256;

/// The HTTP connection caps, kept below the file limit so that `accept` never fails for lack of
/// descriptors: a flood is refused by the gate, which costs one descriptor for a moment.
fn connection_limits(config: &Config, file_limit: u64) -> ConnectionLimits {
    let tcp = if config.media.tcp_listen.is_some() {
        config.media.tcp_max_connections as u64
    } else {
        0
    };
    let room = file_limit.saturating_sub(RESERVED_FILES + tcp).max(16) as usize;
    ConnectionLimits {
        max_connections: config.http.max_connections.min(room),
        max_per_client: config.http.max_connections_per_client,
        request_head_timeout: Duration::from_secs(config.http.request_head_timeout_s),
        write_stall_timeout: Duration::from_secs(config.http.write_timeout_s),
    }
}

/// Raises the soft limit on open files to the hard limit (systemd and most shells start
/// services at 1,024) and returns the limit in force.
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the duration of both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Health, readiness and metrics.
#[derive(Clone)]
struct Operations {
    metrics: Arc<Metrics>,
    snapshot: NodeSnapshots,
    control: RelayControl,
    draining: Arc<AtomicBool>,
    /// Bearer token `/metrics` requires, if any.
    token: Option<String>,
}

impl Operations {
    fn metrics_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_text))
            .with_state(self.clone())
    }

    fn readiness_router(&self) -> Router {
        Router::new()
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }
}

/// The exposition text, from the worker's last snapshot: a scrape never waits for the worker.
async fn metrics_text(State(ops): State<Operations>, headers: HeaderMap) -> Response {
    if let Some(token) = &ops.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "metrics_token_required",
                "/metrics needs Authorization: Bearer <metrics.token>",
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.metrics.render(ops.snapshot.read()),
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Ready means: taking joins. Not while draining, nor once the media worker has stopped.
async fn readyz(State(ops): State<Operations>) -> impl IntoResponse {
    if ops.draining.load(Ordering::Relaxed) {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !ops.control.is_running() {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "media worker stopped\n",
        )
    } else {
        (axum::http::StatusCode::OK, "ready\n")
    }
}
