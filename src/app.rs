//! Wires the relay together: the media worker on its UDP socket, the signaling routes, metrics.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::node::control::RelayControl;
use crate::node::engine::{EngineSettings, random_token};
use crate::node::socket::bind_media_socket;
use crate::node::worker::{Worker, WorkerConfig};
use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tern_signaling::auth::KeySet;
use tern_signaling::http::{DevMinting, Signaling, router};
use tern_signaling::session::SessionLimits;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::info;

/// Key id of the generated dev-mode secret.
pub const DEV_KID: &str = "dev";

/// A running relay.
pub struct Running {
    pub http_addr: SocketAddr,
    pub media_addr: SocketAddr,
    pub keys: KeySet,
    pub dev_mode: bool,
    pub metrics: Arc<Metrics>,
    pub control: RelayControl,
    http: JoinHandle<()>,
    worker: JoinHandle<()>,
}

impl Running {
    /// Stops serving at once (tests); dropping a `Running` does the same.
    pub fn stop(&self) {
        self.http.abort();
        self.worker.abort();
    }

    /// Waits until the HTTP server or the worker ends, whichever is first.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = &mut self.http => {}
            _ = &mut self.worker => {}
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker_config(config: &Config, media_addr: SocketAddr) -> WorkerConfig {
    let mut srtp_profiles = vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm];
    if config.media.allow_srtp_sha1_80 {
        srtp_profiles.push(SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80);
    }
    let advertised = if config.media.advertised_ips.is_empty() {
        vec![media_addr]
    } else {
        config
            .media
            .advertised_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, media_addr.port()))
            .collect()
    };
    WorkerConfig {
        engine: EngineSettings {
            srtp_profiles,
            ice_disconnected_timeout: Duration::from_secs(config.media.ice_disconnected_timeout_s),
            ice_failed_timeout: Duration::from_secs(config.media.ice_failed_timeout_s),
            nack_history: config.media.nack_history,
        },
        advertised,
        ice_servers: Vec::new(),
        resume_grace: config.resume_grace(),
        empty_room_timeout: Duration::from_secs(config.room.empty_timeout_s),
        renegotiation_debounce: Duration::from_millis(config.room.renegotiation_debounce_ms),
        keyframe_interval: Duration::from_millis(config.room.keyframe_interval_ms),
        max_tracks_per_participant: config.room.max_tracks_per_participant,
        max_participants_per_room: config.room.max_participants,
        max_sdp_bytes: config.room.max_sdp_bytes,
        session_queue: config.session.event_queue,
        max_packets_per_leg_per_s: config.media.max_packets_per_second_per_leg,
    }
}

/// Binds the sockets and starts serving. Ports may be 0 (tests); the bound addresses are in the
/// result.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate()?;
    let socket = bind_media_socket(config.media.listen, config.media.socket_buffer_bytes)
        .with_context(|| format!("cannot bind media UDP socket on {}", config.media.listen))?;
    let media_addr = socket.local_addr()?;
    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot bind HTTP listener on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;

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

    let metrics = Arc::new(Metrics::new());
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let worker = Worker::new(
        worker_config(&config, media_addr),
        socket,
        commands_rx,
        metrics.media.clone(),
    )?;
    let worker = tokio::spawn(worker.run());
    let control = RelayControl::new(commands_tx);

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
        },
        metrics: metrics.signaling.clone(),
    };
    let app = router(signaling).merge(
        Router::new()
            .route("/metrics", get(metrics_text))
            .with_state((metrics.clone(), control.clone())),
    );
    let http = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(err) = axum::serve(listener, service).await {
            tracing::error!("HTTP server stopped: {err}");
        }
    });
    info!(%http_addr, %media_addr, dev_mode, "relay started");
    Ok(Running {
        http_addr,
        media_addr,
        keys,
        dev_mode,
        metrics,
        control,
        http,
        worker,
    })
}

async fn metrics_text(
    State((metrics, control)): State<(Arc<Metrics>, RelayControl)>,
) -> impl IntoResponse {
    let stats = control.stats().await.unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(stats),
    )
}
