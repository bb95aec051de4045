//! WHIP ingest (RFC 9725): broadcast tools (OBS, GStreamer, ffmpeg, encoders) publish into a
//! room over plain HTTP, without the WebSocket protocol.
//!
//! A WHIP session is a participant like any other, made through the same [`RoomControl`]: the
//! `POST` joins with the token's identity and the publish grant only (no subscribe leg, no data
//! channel), hands the offer to the relay as a `publish_offer` and answers with the relay's
//! `publish_answer`. A task per session then reads the relay's events for it, as a WebSocket
//! session would, until the participant leaves: `DELETE`, or the relay ending it (its media
//! stopped: no ICE consent). `PATCH` carries trickled candidates and ICE restarts.
//!
//! Hostile-input order: join rate per address, then the token (401/403), then the content type
//! (415) and size (413), then the SDP (400), and only then anything is made.

use crate::auth::TokenError;
use crate::control::{
    Admission, Disconnect, JoinRefusal, JoinRequest, RoomControl, SessionEvent, SessionKey,
};
use crate::http::{PeerAddr, Signaling, error_response};
use crate::limits::Limit;
use crate::protocol::{
    ClientMessage, ClientMessageKind, ErrorCode, IceCandidate, IceServer, Leg, ServerMessage,
};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span};

/// Largest `PATCH` body (candidates and ICE credentials), bytes.
const MAX_PATCH_BYTES: usize = 16 * 1024;
/// `PATCH`es one session may send a second (bursts of twice as many): a client trickles a few
/// candidates, and each one becomes work for the relay.
const PATCHES_PER_S: u32 = 10;
/// How long the relay may take to answer an offer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// The WHIP sessions of this relay, by resource id.
#[derive(Default)]
pub struct WhipSessions {
    resources: Mutex<HashMap<String, Resource>>,
}

struct Resource {
    session: SessionKey,
    room: String,
    identity: String,
    etag: String,
    /// The last offer: an ICE restart is that offer with the new credentials.
    offer: String,
    /// Where the session's task delivers the relay's next answer (or refusal).
    answers: mpsc::Sender<oneshot::Sender<AnswerResult>>,
    patches: crate::limits::TokenBucket,
    /// An ICE restart is waiting for the relay's answer (a second one is refused meanwhile).
    restarting: bool,
}

type AnswerResult = Result<String, (ErrorCode, String)>;

impl WhipSessions {
    fn resources(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resource>> {
        self.resources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open WHIP sessions.
    pub fn len(&self) -> usize {
        self.resources().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut response = error_response(status, code, message);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn token_refusal(err: TokenError) -> Response {
    refuse(StatusCode::UNAUTHORIZED, err.code(), err.to_string())
}

/// Reads a body of at most `limit` bytes (413 beyond).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    })
}

/// `POST /whip/{room}`: an offer in, a session and its answer out.
pub async fn post<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Path(room): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    // To the end even if the client goes away meanwhile: a join cut off half-way would leave a
    // participant behind, or a session nobody reads.
    let task = {
        let signaling = signaling.clone();
        tokio::spawn(async move { create(&signaling, peer, room, &parts.headers, body).await })
    };
    let response = task.await.unwrap_or_else(|_| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the session could not be made",
        )
    });
    signaling
        .metrics
        .whip_request("post", response.status().as_u16());
    response
}

async fn create<C: RoomControl>(
    signaling: &Signaling<C>,
    peer: std::net::SocketAddr,
    room: String,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let client = signaling.trusted_proxies.client(peer.ip(), headers).ip;
    if let Err(wait) = signaling.join_limiter.attempt(client, Instant::now()) {
        signaling.metrics.limits.breached(Limit::JoinRate);
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_joins",
            "too many join attempts from this address; retry after the time in Retry-After",
        );
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let claims = match signaling.keys.verify(bearer(headers), SystemTime::now()) {
        Ok(claims) => claims,
        Err(err) => {
            signaling.metrics.token_rejected(err);
            return token_refusal(err);
        }
    };
    if claims.room != room {
        return refuse(
            StatusCode::FORBIDDEN,
            "wrong_room",
            "the token is for another room than the one in the URL",
        );
    }
    if !claims.grants.publish {
        return refuse(
            StatusCode::FORBIDDEN,
            "not_allowed",
            "the token does not grant publish; WHIP needs it",
        );
    }
    if !content_type_is(headers, SDP) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a WHIP offer is Content-Type: application/sdp",
        );
    }
    let body = match read_body(body, signaling.whip.max_sdp_bytes).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Some(offer) = plausible_offer(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
            "the body is not an SDP offer with at least one audio or video section",
        );
    };
    if signaling
        .draining
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this relay node is draining and takes no new sessions; publish through another node",
        );
    }
    let request = JoinRequest {
        room: room.clone(),
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        // A publisher only: no subscribe leg (WHIP has no way to receive), no data channel.
        grants: crate::auth::Grants {
            publish: true,
            ..Default::default()
        },
        resume_token: None,
        e2ee: false,
        via: crate::control::JoinVia::Whip,
    };
    let admission = match signaling.control.join(request).await {
        Ok(admission) => admission,
        Err(refusal) => return join_refusal(refusal),
    };
    start(signaling, admission, room, claims.sub, offer).await
}

/// The relay admitted the participant: offer, answer, and a task for the session's life.
async fn start<C: RoomControl>(
    signaling: &Signaling<C>,
    admission: Admission,
    room: String,
    identity: String,
    offer: String,
) -> Response {
    let Admission {
        session,
        mut events,
    } = admission;
    // The first event is always `joined`: the ICE servers for the Link headers.
    let ice_servers = match events.recv().await {
        Some(SessionEvent::Message(ServerMessage::Joined { ice_servers, .. })) => ice_servers,
        _ => Vec::new(),
    };
    let (answers, pending) = mpsc::channel(1);
    let id = random_hex(16);
    let etag = format!("\"{}\"", random_hex(8));
    // In the map before the session's task runs, so that its end always finds it to remove.
    signaling.whip.sessions.resources().insert(
        id.clone(),
        Resource {
            session,
            room: room.clone(),
            identity: identity.clone(),
            etag: etag.clone(),
            offer: offer.clone(),
            answers: answers.clone(),
            patches: crate::limits::TokenBucket::new(
                PATCHES_PER_S,
                2 * PATCHES_PER_S,
                Instant::now(),
            ),
            restarting: false,
        },
    );
    let span = info_span!("whip", room = %room, identity = %identity, resource = %id);
    tokio::spawn(
        drive(
            signaling.control.clone(),
            signaling.whip.clone(),
            id.clone(),
            session,
            events,
            pending,
        )
        .instrument(span),
    );
    let answered = ask(&signaling.control, session, &answers, &offer).await;
    let alive = signaling.whip.sessions.resources().contains_key(&id);
    let answer = match answered {
        Ok(answer) if alive => answer,
        failed => {
            // Nothing stays behind: the participant leaves, and its task ends with it.
            signaling.whip.sessions.resources().remove(&id);
            signaling
                .control
                .message(session, ClientMessage::Leave {})
                .await;
            return failed.err().unwrap_or_else(|| {
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "session_ended",
                    "the relay ended the session as it started",
                )
            });
        }
    };
    info!(resource = %id, "WHIP session started");
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(location) = HeaderValue::from_str(&format!("/whip/resource/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    for link in ice_server_links(&ice_servers) {
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.append(header::LINK, value);
        }
    }
    response
}

/// Hands `offer` to the relay and waits for its answer; a refusal comes back as the response.
async fn ask<C: RoomControl>(
    control: &C,
    session: SessionKey,
    answers: &mpsc::Sender<oneshot::Sender<AnswerResult>>,
    offer: &str,
) -> Result<String, Response> {
    let (tx, rx) = oneshot::channel();
    let gone = || {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_ended",
            "the relay ended the session",
        )
    };
    let asked = async {
        answers.send(tx).await.map_err(|_| ())?;
        control
            .message(
                session,
                ClientMessage::PublishOffer {
                    sdp: offer.to_owned(),
                    tracks: Vec::new(),
                },
            )
            .await;
        rx.await.map_err(|_| ())
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, asked).await {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err((code, message)))) => Err(offer_refusal(code, message)),
        Ok(Err(())) => Err(gone()),
        Err(_) => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "relay_busy",
            "the relay did not answer in time; retry",
        )),
    }
}

/// The relay's events for one WHIP session, read until the participant is gone.
async fn drive<C: RoomControl>(
    control: C,
    whip: Arc<WhipState>,
    id: String,
    session: SessionKey,
    mut events: mpsc::Receiver<SessionEvent>,
    mut pending: mpsc::Receiver<oneshot::Sender<AnswerResult>>,
) {
    let mut waiting: Option<oneshot::Sender<AnswerResult>> = None;
    // Closed once the resource is gone (deleted); the relay's events still end the session.
    let mut asking = true;
    whip.metrics_sessions(1);
    loop {
        tokio::select! {
            // Asked first: `ask` queues its reply slot before it sends the offer, so by the time
            // the relay's answer is here the slot is too, and must be taken before the answer.
            biased;
            asked = pending.recv(), if asking && waiting.is_none() => match asked {
                Some(tx) => waiting = Some(tx),
                None => asking = false,
            },
            // The asker gave up (timed out): its slot must not hold up the next request.
            () = async { waiting.as_mut().expect("guarded").closed().await }, if waiting.is_some() => {
                waiting = None;
            }
            event = events.recv() => match event {
                Some(SessionEvent::Message(ServerMessage::PublishAnswer { sdp, .. })) => {
                    if let Some(tx) = waiting.take() {
                        let _ = tx.send(Ok(sdp));
                    }
                }
                Some(SessionEvent::Message(ServerMessage::Error {
                    code,
                    message,
                    request: Some(ClientMessageKind::PublishOffer),
                    ..
                })) => {
                    if let Some(tx) = waiting.take() {
                        let _ = tx.send(Err((code, message)));
                    }
                }
                Some(SessionEvent::Close(reason)) => {
                    debug!(?reason, "the relay ended the WHIP session");
                    break;
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    whip.sessions.resources().remove(&id);
    whip.metrics_sessions(-1);
    control.disconnected(session, Disconnect::Dropped).await;
    info!("WHIP session ended");
}

/// `PATCH /whip/resource/{id}`: trickled candidates, or an ICE restart.
pub async fn patch<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let response = update(&signaling, &id, &parts.headers, body).await;
    signaling
        .metrics
        .whip_request("patch", response.status().as_u16());
    response
}

/// What a request on a resource needs of it.
struct Owned {
    session: SessionKey,
    etag: String,
    offer: String,
    answers: mpsc::Sender<oneshot::Sender<AnswerResult>>,
}

/// The resource `id` if the bearer owns it (401 without a valid token, 404 for no such
/// resource or another's: a resource id is not proof of anything).
// The refusal is the response itself, made once per request.
#[allow(clippy::result_large_err)]
fn owned<C>(signaling: &Signaling<C>, id: &str, headers: &HeaderMap) -> Result<Owned, Response> {
    // The token that opened the session still acts on it after it expires (RFC 9725 clients
    // end a stream hours later with the token they started it with).
    let claims = signaling
        .keys
        .verify_signed(bearer(headers))
        .map_err(token_refusal)?;
    let resources = signaling.whip.sessions.resources();
    match resources.get(id) {
        Some(r) if r.identity == claims.sub && r.room == claims.room => Ok(Owned {
            session: r.session,
            etag: r.etag.clone(),
            offer: r.offer.clone(),
            answers: r.answers.clone(),
        }),
        _ => Err(refuse(
            StatusCode::NOT_FOUND,
            "unknown_resource",
            "no WHIP session of yours at this address",
        )),
    }
}

async fn update<C: RoomControl>(
    signaling: &Signaling<C>,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Owned {
        session,
        etag,
        offer,
        answers,
    } = match owned(signaling, id, headers) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let allowed = signaling
        .whip
        .sessions
        .resources()
        .get_mut(id)
        .is_some_and(|r| r.patches.take(Instant::now()));
    if !allowed {
        signaling.metrics.limits.breached(Limit::MessageRate);
        let mut response = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("at most {PATCHES_PER_S} PATCHes a second on one session"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    if !content_type_is(headers, SDPFRAG) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a WHIP PATCH is Content-Type: application/trickle-ice-sdpfrag",
        );
    }
    if let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && wanted.trim() != "*"
        && wanted.trim() != etag
    {
        return refuse(
            StatusCode::PRECONDITION_FAILED,
            "etag_mismatch",
            "If-Match does not name this session's current ETag",
        );
    }
    let body = match read_body(body, MAX_PATCH_BYTES).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_sdpfrag", "not UTF-8 text");
    };
    let frag = SdpFrag::parse(text);
    let restart = frag
        .credentials
        .as_ref()
        .is_some_and(|(ufrag, _)| ice_credentials(&offer).is_none_or(|(old, _)| old != *ufrag));
    if restart {
        let started = signaling
            .whip
            .sessions
            .resources()
            .get_mut(id)
            .is_some_and(|r| !std::mem::replace(&mut r.restarting, true));
        if !started {
            return refuse(
                StatusCode::CONFLICT,
                "restart_in_progress",
                "an ICE restart of this session is waiting for the relay; send one at a time",
            );
        }
        let (ufrag, pwd) = frag.credentials.clone().expect("checked above");
        let new_offer = with_credentials(&offer, &ufrag, &pwd);
        let asked = ask(&signaling.control, session, &answers, &new_offer).await;
        let new_etag = format!("\"{}\"", random_hex(8));
        if let Some(r) = signaling.whip.sessions.resources().get_mut(id) {
            r.restarting = false;
            if asked.is_ok() {
                r.offer = new_offer;
                r.etag = new_etag.clone();
            }
        }
        let answer = match asked {
            Ok(answer) => answer,
            Err(response) => return response,
        };
        let mut response = (StatusCode::OK, answer_fragment(&answer)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
        if let Ok(etag) = HeaderValue::from_str(&new_etag) {
            headers.insert(header::ETAG, etag);
        }
        return response;
    }
    // Trickled candidates. The relay is ICE-lite and learns addresses from the checks
    // themselves, so these are passed on for the record and change nothing if they fail.
    for candidate in frag.candidates {
        signaling
            .control
            .message(
                session,
                ClientMessage::Trickle {
                    leg: Leg::Publish,
                    candidate: IceCandidate {
                        candidate,
                        sdp_mid: frag.mid.clone(),
                        sdp_mline_index: None,
                        username_fragment: None,
                    },
                },
            )
            .await;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /whip/resource/{id}`: the publisher leaves, for everyone.
pub async fn delete<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = match owned(&signaling, &id, &headers) {
        Ok(Owned { session, .. }) => {
            signaling.whip.sessions.resources().remove(&id);
            signaling
                .control
                .message(session, ClientMessage::Leave {})
                .await;
            info!(resource = %id, "WHIP session deleted");
            StatusCode::OK.into_response()
        }
        Err(response) => response,
    };
    signaling
        .metrics
        .whip_request("delete", response.status().as_u16());
    response
}

/// `OPTIONS /whip/{room}` without CORS: what the endpoint takes.
pub async fn options() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("accept-post", HeaderValue::from_static(SDP));
    headers.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    response
}

/// `OPTIONS /whip/resource/{id}` without CORS.
pub async fn resource_options() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    headers.insert(
        header::ALLOW,
        HeaderValue::from_static("PATCH, DELETE, OPTIONS"),
    );
    response
}

fn join_refusal(refusal: JoinRefusal) -> Response {
    let (status, text) = match refusal {
        JoinRefusal::RoomFull => (StatusCode::SERVICE_UNAVAILABLE, "the room is full"),
        JoinRefusal::TooManyRooms => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay holds its maximum number of rooms; publish through another node",
        ),
        JoinRefusal::Unavailable | JoinRefusal::ResumeFailed => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay takes no sessions right now; retry later",
        ),
        JoinRefusal::E2eeRequired => (
            StatusCode::FORBIDDEN,
            "this room admits only end-to-end encrypted participants, which WHIP clients are not",
        ),
    };
    refuse(status, refusal.code().as_str(), text)
}

fn offer_refusal(code: ErrorCode, message: String) -> Response {
    let status = match code {
        ErrorCode::InvalidSdp
        | ErrorCode::UnsupportedCodec
        | ErrorCode::LimitExceeded
        | ErrorCode::NotAllowed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    refuse(status, code.as_str(), message)
}

/// The offer as text, if it looks like one at all: UTF-8, `v=0` first, and an audio or video
/// section. Whether the relay can take it is the relay's to say (422).
fn plausible_offer(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let trimmed = text.trim_start();
    if !trimmed.starts_with("v=0") {
        return None;
    }
    text.lines()
        .any(|l| l.starts_with("m=audio ") || l.starts_with("m=video "))
        .then(|| text.to_owned())
}

/// The first `a=ice-ufrag` and `a=ice-pwd` of an SDP.
fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let find = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix).map(str::to_owned))
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// `sdp` with every ICE username fragment and password replaced (an ICE restart's offer).
fn with_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}"));
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}"));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The parts of an `application/trickle-ice-sdpfrag` body (RFC 8840) the relay uses.
#[derive(Debug, Default, PartialEq)]
struct SdpFrag {
    credentials: Option<(String, String)>,
    mid: Option<String>,
    candidates: Vec<String>,
}

impl SdpFrag {
    fn parse(text: &str) -> SdpFrag {
        let mut frag = SdpFrag::default();
        let (mut ufrag, mut pwd) = (None, None);
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                ufrag.get_or_insert_with(|| v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                pwd.get_or_insert_with(|| v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=mid:") {
                frag.mid.get_or_insert_with(|| v.to_owned());
            } else if let Some(v) = line.strip_prefix("a=")
                && v.starts_with("candidate:")
                && frag.candidates.len() < 64
            {
                frag.candidates.push(v.to_owned());
            }
        }
        frag.credentials = ufrag.zip(pwd);
        frag
    }
}

/// What answers an ICE restart: the relay's new credentials and its candidates (RFC 9725
/// section 4.3.2), from its new answer.
fn answer_fragment(answer: &str) -> String {
    let mut out = String::new();
    let mut in_media = false;
    let mut first_media_done = false;
    for line in answer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("m=") {
            if in_media {
                first_media_done = true;
            }
            in_media = true;
        }
        let session_level = line.starts_with("a=ice-lite")
            || line.starts_with("a=ice-ufrag:")
            || line.starts_with("a=ice-pwd:");
        let first_media =
            in_media && !first_media_done && (line.starts_with("m=") || line.starts_with("a=mid:"));
        let candidate = line.starts_with("a=candidate:") || line == "a=end-of-candidates";
        if (session_level && !out.contains(line)) || first_media || (candidate && !first_media_done)
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// RFC 9725 section 4.4: one `Link` header per ICE server URL, with TURN credentials.
pub fn ice_server_links(servers: &[IceServer]) -> Vec<String> {
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            if url.contains(['<', '>', '"', '\r', '\n']) {
                continue;
            }
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(username), Some(credential)) = (&server.username, &server.credential)
                && !format!("{username}{credential}").contains(['"', '\\', '\r', '\n'])
            {
                link.push_str(&format!(
                    "; username=\"{username}\"; credential=\"{credential}\"; credential-type=\"password\""
                ));
            }
            links.push(link);
        }
    }
    links
}

/// The WHIP endpoint's state in [`Signaling`].
pub struct WhipState {
    pub sessions: WhipSessions,
    /// Largest offer taken, bytes (413 beyond).
    pub max_sdp_bytes: usize,
    pub sessions_gauge: prometheus::IntGauge,
}

impl WhipState {
    pub fn new(max_sdp_bytes: usize, sessions_gauge: prometheus::IntGauge) -> Self {
        WhipState {
            sessions: WhipSessions::default(),
            max_sdp_bytes,
            sessions_gauge,
        }
    }

    fn metrics_sessions(&self, delta: i64) {
        self.sessions_gauge.add(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\na=sendonly\r\n";

    #[test]
    fn offers_are_recognised_before_anything_is_made() {
        assert!(plausible_offer(OFFER.as_bytes()).is_some());
        assert!(plausible_offer(b"hello").is_none());
        assert!(plausible_offer(b"v=0\r\ns=-\r\n").is_none(), "no media");
        assert!(plausible_offer(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn an_ice_restart_replaces_every_credential() {
        assert_eq!(
            ice_credentials(OFFER),
            Some(("abcd".into(), "0123456789abcdefghijkl".into()))
        );
        let restarted = with_credentials(OFFER, "wxyz", "pppppppppppppppppppppp");
        assert_eq!(
            ice_credentials(&restarted),
            Some(("wxyz".into(), "pppppppppppppppppppppp".into()))
        );
        assert!(restarted.contains("a=sendonly\r\n"));
        assert!(!restarted.contains("abcd"));
    }

    #[test]
    fn sdpfrags_give_credentials_mid_and_candidates() {
        let frag = SdpFrag::parse(
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\n\
             a=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host\r\n\
             a=end-of-candidates\r\n",
        );
        assert_eq!(
            frag.credentials,
            Some(("EsAw".into(), "P2uYro0UCOQ4zxjKXaWCBui1".into()))
        );
        assert_eq!(frag.mid.as_deref(), Some("0"));
        assert_eq!(
            frag.candidates,
            ["candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host"]
        );
        assert_eq!(SdpFrag::parse("junk\u{0}\r\n"), SdpFrag::default());
    }

    #[test]
    fn a_restart_answer_fragment_carries_the_relay_credentials_and_candidates() {
        let answer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:RELAY\r\na=ice-pwd:SECRET\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ice-ufrag:RELAY\r\na=ice-pwd:SECRET\r\n";
        let frag = answer_fragment(answer);
        assert_eq!(
            frag,
            "a=ice-lite\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:RELAY\r\n\
             a=ice-pwd:SECRET\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n\
             a=end-of-candidates\r\n"
        );
    }

    #[test]
    fn ice_servers_become_link_headers_with_turn_credentials() {
        let links = ice_server_links(&[
            IceServer {
                urls: vec!["stun:stun.example.net".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.net?transport=udp".into()],
                username: Some("1700000000:alice".into()),
                credential: Some("c2VjcmV0".into()),
            },
            IceServer {
                urls: vec!["turn:evil>\"x".into()],
                username: None,
                credential: None,
            },
        ]);
        assert_eq!(
            links,
            [
                "<stun:stun.example.net>; rel=\"ice-server\"".to_owned(),
                "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; \
                 username=\"1700000000:alice\"; credential=\"c2VjcmV0\"; \
                 credential-type=\"password\""
                    .to_owned(),
            ]
        );
    }
}
