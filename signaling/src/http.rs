//! The HTTP side of signaling: the `/rtc` WebSocket (token checked before the upgrade), health,
//! the dev-mode token endpoint and the bundled web client.

use crate::auth::{Grants, KeySet, TokenError, check_claim_text, claims_for};
use crate::client_addr::TrustedProxies;
use crate::control::{JoinRequest, RoomControl};
use crate::limits::{JoinLimiter, Limit};
use crate::metrics::SignalingMetrics;
use crate::protocol::PROTOCOL_VERSION;
use crate::session::{self, SessionLimits};
use axum::extract::connect_info::Connected;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info, info_span};

/// Dev mode: the relay mints its own tokens for loopback callers.
#[derive(Debug, Clone)]
pub struct DevMinting {
    pub kid: String,
    pub ttl: Duration,
}

/// Everything the signaling routes need.
pub struct Signaling<C> {
    pub control: C,
    pub keys: KeySet,
    pub dev_minting: Option<DevMinting>,
    pub limits: SessionLimits,
    pub join_limiter: Arc<JoinLimiter>,
    /// Whose `X-Forwarded-For` names the client (join limits, dev-token loopback check).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Set while the node drains: new joins are refused before the upgrade (resumes still pass,
    /// so calls in progress survive a dropped connection).
    pub draining: Arc<AtomicBool>,
    pub metrics: Arc<SignalingMetrics>,
    /// WHIP and WHEP sessions (`whip.rs`).
    pub whip: Arc<crate::whip::WhipState>,
    pub whep: Arc<crate::whip::WhipState>,
}

/// The address of the client at the other end of an HTTP connection (plain or TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<axum::serve::IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl<C: Clone> Clone for Signaling<C> {
    fn clone(&self) -> Self {
        Signaling {
            control: self.control.clone(),
            keys: self.keys.clone(),
            dev_minting: self.dev_minting.clone(),
            limits: self.limits,
            join_limiter: self.join_limiter.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            draining: self.draining.clone(),
            metrics: self.metrics.clone(),
            whip: self.whip.clone(),
            whep: self.whep.clone(),
        }
    }
}

/// A JSON error body with a stable code.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// An error answer with the JSON body every HTTP refusal of the relay uses.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            code: code.to_owned(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// The signaling routes. The caller serves them with
/// `into_make_service_with_connect_info::<PeerAddr>()` (join limits and the dev token endpoint
/// need the client's address).
pub fn router<C: RoomControl>(signaling: Signaling<C>) -> Router {
    Router::new()
        .route("/rtc", get(rtc::<C>))
        .route(
            "/whip/{room}",
            axum::routing::post(crate::whip::post::<C>).options(crate::whip::options),
        )
        .route(
            "/whip/resource/{id}",
            axum::routing::patch(crate::whip::patch::<C>)
                .delete(crate::whip::delete::<C>)
                .options(crate::whip::resource_options),
        )
        .route(
            "/whep/{room}",
            axum::routing::post(crate::whip::whep_post::<C>).options(crate::whip::options),
        )
        .route(
            "/whep/resource/{id}",
            axum::routing::patch(crate::whip::whep_patch::<C>)
                .delete(crate::whip::whep_delete::<C>)
                .options(crate::whip::resource_options),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/dev/token", get(dev_token::<C>))
        .route("/", get(web_page))
        .route("/tern.js", get(web_library))
        .route("/e2ee.js", get(web_e2ee))
        .route("/e2ee-worker.js", get(web_e2ee_worker))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .with_state(signaling)
}

#[derive(Debug, Deserialize)]
struct RtcParams {
    access_token: Option<String>,
    resume_token: Option<String>,
    protocol: Option<u32>,
    /// Added in 1.4: `1` (or `true`) when the client encrypts its media end to end.
    e2ee: Option<String>,
}

async fn rtc<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Query(params): Query<RtcParams>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let client = signaling.trusted_proxies.client(peer.ip(), &headers).ip;
    // Counted before the token is looked at: guessing tokens is as limited as joining. A resume
    // of a session the relay holds is never refused (resume tokens are long random secrets, so
    // this is no way around the limit).
    let resuming_known = params
        .resume_token
        .as_deref()
        .is_some_and(|t| !t.is_empty() && signaling.control.knows_resume_token(t));
    if !resuming_known && let Err(wait) = signaling.join_limiter.attempt(client, Instant::now()) {
        signaling.metrics.limits.breached(Limit::JoinRate);
        info!(%client, %peer, "join refused: too many attempts from this address");
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_joins",
            "too many join attempts from this address; retry after the time in Retry-After",
        );
        let seconds = wait.as_secs().max(1).to_string();
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = params.access_token.as_deref().or(bearer).unwrap_or("");
    let claims = match signaling.keys.verify(token, SystemTime::now()) {
        Ok(claims) => claims,
        Err(err) => {
            signaling.metrics.token_rejected(err);
            // The token itself is never logged.
            info!(reason = err.code(), "join refused before upgrade");
            return error_response(StatusCode::UNAUTHORIZED, err.code(), err.to_string());
        }
    };
    if let Some(version) = params.protocol
        && version != PROTOCOL_VERSION
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "unsupported_protocol",
            format!("this relay speaks protocol {PROTOCOL_VERSION}, not {version}"),
        );
    }
    let e2ee = match params.e2ee.as_deref() {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_parameter",
                "e2ee is 1 (the client encrypts its media end to end) or 0",
            );
        }
    };
    let resuming = params
        .resume_token
        .as_deref()
        .is_some_and(|t| !t.is_empty());
    if signaling.draining.load(Ordering::Relaxed) && !resuming {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this relay node is draining and takes no new joins; join through another node",
        );
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "websocket_required",
                format!("/rtc is a WebSocket endpoint: {rejection}"),
            );
        }
    };
    let request = JoinRequest {
        room: claims.room,
        identity: claims.sub,
        name: claims.name,
        grants: claims.grants,
        resume_token: params.resume_token.filter(|t| !t.is_empty()),
        e2ee,
        via: crate::control::JoinVia::WebSocket,
    };
    let limits = signaling.limits;
    // Frames up to 4x the message limit are read and refused with `message_too_large`; anything
    // larger is cut off by the WebSocket layer itself, bounding memory per connection.
    upgrade
        .max_message_size(limits.max_message_bytes.saturating_mul(4))
        .max_frame_size(limits.max_message_bytes.saturating_mul(4))
        .on_upgrade(move |socket| {
            // The participant id is known once the relay admits the join (session::run).
            let span = info_span!(
                "session",
                room = %request.room,
                identity = %request.identity,
                participant = tracing::field::Empty
            );
            let (sink, stream) = socket.split();
            session::run(
                signaling.control,
                request,
                limits,
                signaling.metrics,
                sink,
                stream,
            )
            .instrument(span)
        })
}

#[derive(Debug, Deserialize)]
struct DevTokenParams {
    room: Option<String>,
    identity: Option<String>,
    name: Option<String>,
}

/// The dev token endpoint's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct DevToken {
    pub token: String,
    pub room: String,
    pub identity: String,
}

async fn dev_token<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Query(params): Query<DevTokenParams>,
    headers: HeaderMap,
) -> Response {
    let Some(dev) = &signaling.dev_minting else {
        return error_response(
            StatusCode::NOT_FOUND,
            "dev_mode_off",
            "token minting is only available in dev mode; mint tokens with `tern token`",
        );
    };
    // Behind a trusted proxy the proxy must name a loopback client: a request it forwarded
    // without naming anyone comes from who knows where.
    let client = signaling.trusted_proxies.client(peer.ip(), &headers);
    if !(client.named && client.ip.is_loopback()) {
        return error_response(
            StatusCode::FORBIDDEN,
            "loopback_only",
            "dev tokens are only handed to loopback callers",
        );
    }
    let room = params.room.unwrap_or_else(|| "dev".to_owned());
    let identity = params
        .identity
        .unwrap_or_else(|| format!("guest-{:06x}", rand::random::<u32>() & 0xff_ffff));
    let name = params.name.unwrap_or_else(|| identity.clone());
    // Refuse what the relay would refuse at join: a token that cannot be used is no token.
    if let Err(err) = check_claim_text(&identity, &name, &room) {
        return error_response(StatusCode::BAD_REQUEST, err.code(), err.to_string());
    }
    let claims = claims_for(
        &room,
        &identity,
        &name,
        Grants::participant(),
        SystemTime::now(),
        dev.ttl,
    );
    match signaling.keys.mint(&dev.kid, &claims) {
        Ok(token) => Json(DevToken {
            token,
            room,
            identity,
        })
        .into_response(),
        Err(TokenError::UnknownKey) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "dev_key_missing",
            "dev key is not configured",
        ),
        Err(err) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            err.code(),
            err.to_string(),
        ),
    }
}

async fn web_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../web/index.html"),
    )
}

async fn web_library() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../web/tern.js"),
    )
}

/// The end-to-end encryption of the bundled client: frame format and key exchange.
async fn web_e2ee() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../web/e2ee.js"),
    )
}

/// The worker that encrypts and decrypts frames (Encoded Transforms) with `e2ee.js`.
async fn web_e2ee_worker() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../web/e2ee-worker.js"),
    )
}

/// Middleware for dev mode: only requests whose `Host` is a loopback name or address are
/// answered. A web page elsewhere can point a name of its own at 127.0.0.1 (DNS rebinding); its
/// requests then carry that name as `Host` (and `Origin`), and dev mode would otherwise hand it
/// tokens and let it join.
pub async fn loopback_host_only(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !is_loopback_host(host) {
        return error_response(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "dev mode answers only requests to a loopback host (localhost, 127.0.0.1, [::1]); \
             configure an API key (auth.keys) to serve other hosts",
        );
    }
    next.run(request).await
}

/// `localhost`, `*.localhost`, or a loopback IP literal, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Middleware: one debug line per request. The query string is left out on purpose: it carries
/// join tokens (`?access_token=`), which must never reach a log.
pub async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    debug!(%method, path = %path, status = response.status().as_u16(), "http request");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_names_and_literals_of_loopback_only() {
        for host in [
            "localhost",
            "localhost:8080",
            "app.localhost:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::2]:80",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
