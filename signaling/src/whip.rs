//! WHIP ingest (RFC 9725) and WHEP playback: broadcast tools (OBS, GStreamer, ffmpeg, encoders)
//! publish into a room, and players watch one, over plain HTTP, without the WebSocket protocol.
//!
//! A session is a participant like any other, made through the same [`RoomControl`]: the `POST`
//! joins with the token's identity and one grant only. WHIP: publish (no subscribe leg, no data
//! channel); the offer goes to the relay as a `publish_offer` and is answered with its
//! `publish_answer`. WHEP: subscribe; the viewer's receive-only offer goes to
//! [`RoomControl::view`], which answers it and keeps the m-lines pointed at the followed
//! publisher's tracks (`?participant=<identity>` or `?track=<id>`; by default the room's
//! longest-present publisher). A task per session then reads the relay's events for it, as a
//! WebSocket session would, until the participant leaves: `DELETE`, or the relay ending it (its
//! media stopped: no ICE consent). `PATCH` carries trickled candidates and ICE restarts.
//!
//! Hostile-input order: join rate per address, then the token (401/403), then WHEP's query
//! (400), the content type (415), `Accept` (406) and size (413), then the SDP (400), and only
//! then anything is made.

use crate::auth::TokenError;
use crate::control::{
    Admission, Disconnect, JoinRefusal, JoinRequest, JoinVia, RoomControl, SessionEvent,
    SessionKey, ViewFollow,
};
use crate::http::{PeerAddr, Signaling, error_response};
use crate::limits::Limit;
use crate::protocol::{
    ClientMessage, ClientMessageKind, ErrorCode, IceCandidate, IceServer, Leg, ServerMessage,
};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::Uri;
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

/// Which of the two protocols an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Ingest: the client publishes.
    Whip,
    /// Playback: the client views.
    Whep,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Whip => "WHIP",
            Endpoint::Whep => "WHEP",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Endpoint::Whip => "whip",
            Endpoint::Whep => "whep",
        }
    }

    fn state<C>(self, signaling: &Signaling<C>) -> &Arc<WhipState> {
        match self {
            Endpoint::Whip => &signaling.whip,
            Endpoint::Whep => &signaling.whep,
        }
    }

    fn count<C>(self, signaling: &Signaling<C>, method: &'static str, response: &Response) {
        signaling.metrics.http_media_request(
            self == Endpoint::Whep,
            method,
            response.status().as_u16(),
        );
    }
}

/// The sessions of one endpoint of this relay, by resource id.
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
    /// WHEP: whom the viewer follows (given again with an ICE restart's offer).
    follow: ViewFollow,
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

/// Whether the client takes an SDP answer: no `Accept`, or one that names `application/sdp`,
/// `application/*` or `*/*` (RFC 9110 section 12.5.1) without `q=0`.
fn accepts_sdp(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q == 0.0))
        });
        !refused && matches!(media.as_str(), SDP | "application/*" | "*/*")
    })
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

/// `POST /whip/{room}`: an offer in, a publishing session and its answer out.
pub async fn post<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Path(room): Path<String>,
    request: Request,
) -> Response {
    post_on(Endpoint::Whip, signaling, peer, room, request).await
}

/// `POST /whep/{room}[?participant=<identity>|?track=<id>]`: a receive-only offer in, a viewing
/// session and its answer out.
pub async fn whep_post<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Path(room): Path<String>,
    request: Request,
) -> Response {
    post_on(Endpoint::Whep, signaling, peer, room, request).await
}

async fn post_on<C: RoomControl>(
    endpoint: Endpoint,
    signaling: Signaling<C>,
    peer: std::net::SocketAddr,
    room: String,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    // To the end even if the client goes away meanwhile: a join cut off half-way would leave a
    // participant behind, or a session nobody reads.
    let task = {
        let signaling = signaling.clone();
        tokio::spawn(async move {
            let asked = Asked {
                endpoint,
                peer,
                room,
                uri: &parts.uri,
                headers: &parts.headers,
            };
            create(&signaling, asked, body).await
        })
    };
    let response = task.await.unwrap_or_else(|_| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the session could not be made",
        )
    });
    endpoint.count(&signaling, "post", &response);
    response
}

/// A `POST` as received.
struct Asked<'a> {
    endpoint: Endpoint,
    peer: std::net::SocketAddr,
    room: String,
    uri: &'a Uri,
    headers: &'a HeaderMap,
}

/// Whom a WHEP viewer follows, from the query: `participant=<identity>` or `track=<id>`
/// (other parameters, such as a player's cache-buster, are ignored); `None` for a value that
/// cannot name anything.
fn follow_of(uri: &Uri) -> Option<ViewFollow> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    let mut follow = ViewFollow::Room;
    for (name, value) in pairs {
        let valid = !value.is_empty() && value.len() <= 256 && !value.chars().any(char::is_control);
        follow = match name.as_str() {
            "participant" if valid => ViewFollow::Identity(value),
            "track" if valid => ViewFollow::Track(value),
            "participant" | "track" => return None,
            _ => follow,
        };
    }
    Some(follow)
}

async fn create<C: RoomControl>(
    signaling: &Signaling<C>,
    asked: Asked<'_>,
    body: Body,
) -> Response {
    let Asked {
        endpoint,
        peer,
        room,
        uri,
        headers,
    } = asked;
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
    let granted = match endpoint {
        Endpoint::Whip => claims.grants.publish,
        Endpoint::Whep => claims.grants.subscribe,
    };
    if !granted {
        let grant = match endpoint {
            Endpoint::Whip => "publish",
            Endpoint::Whep => "subscribe",
        };
        return refuse(
            StatusCode::FORBIDDEN,
            "not_allowed",
            format!(
                "the token does not grant {grant}; {} needs it",
                endpoint.name()
            ),
        );
    }
    let follow = match endpoint {
        Endpoint::Whep => match follow_of(uri) {
            Some(follow) => follow,
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_parameter",
                    "the query may name `participant` (an identity) or `track` (a track id), up \
                     to 256 characters",
                );
            }
        },
        Endpoint::Whip => ViewFollow::Room,
    };
    if !content_type_is(headers, SDP) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "a {} offer is Content-Type: application/sdp",
                endpoint.name()
            ),
        );
    }
    if !accepts_sdp(headers) {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "the answer is application/sdp, which the Accept header refuses",
        );
    }
    let body = match read_body(body, endpoint.state(signaling).max_sdp_bytes).await {
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
            "this relay node is draining and takes no new sessions; connect to another node",
        );
    }
    // One grant each: a WHIP publisher has no way to receive (no subscribe leg, no data
    // channel), a WHEP viewer none to send.
    let (grants, via) = match endpoint {
        Endpoint::Whip => (
            crate::auth::Grants {
                publish: true,
                ..Default::default()
            },
            JoinVia::Whip,
        ),
        Endpoint::Whep => (
            crate::auth::Grants {
                subscribe: true,
                ..Default::default()
            },
            JoinVia::Whep,
        ),
    };
    let request = JoinRequest {
        room: room.clone(),
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        grants,
        resume_token: None,
        e2ee: false,
        via,
    };
    let admission = match signaling.control.join(request).await {
        Ok(admission) => admission,
        Err(refusal) => return join_refusal(endpoint, refusal),
    };
    let session = Session {
        endpoint,
        room,
        identity: claims.sub,
        offer,
        follow,
    };
    start(signaling, admission, session).await
}

/// What a new session is made of.
struct Session {
    endpoint: Endpoint,
    room: String,
    identity: String,
    offer: String,
    follow: ViewFollow,
}

/// The relay admitted the participant: offer, answer, and a task for the session's life.
async fn start<C: RoomControl>(
    signaling: &Signaling<C>,
    admission: Admission,
    new: Session,
) -> Response {
    let Session {
        endpoint,
        room,
        identity,
        offer,
        follow,
    } = new;
    let state = endpoint.state(signaling);
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
    state.sessions.resources().insert(
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
            follow: follow.clone(),
        },
    );
    let span = info_span!("http_media", protocol = endpoint.path(), room = %room, identity = %identity, resource = %id);
    tokio::spawn(
        drive(
            signaling.control.clone(),
            state.clone(),
            id.clone(),
            session,
            events,
            pending,
        )
        .instrument(span),
    );
    let asking = Ask {
        endpoint,
        session,
        answers: &answers,
        offer: &offer,
        follow: &follow,
    };
    let answered = ask(&signaling.control, asking).await;
    let alive = state.sessions.resources().contains_key(&id);
    let answer = match answered {
        Ok(answer) if alive => answer,
        failed => {
            // Nothing stays behind: the participant leaves, and its task ends with it.
            state.sessions.resources().remove(&id);
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
    info!(resource = %id, protocol = endpoint.name(), "session started");
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(location) = HeaderValue::from_str(&format!("/{}/resource/{id}", endpoint.path())) {
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

/// An offer for the relay.
struct Ask<'a> {
    endpoint: Endpoint,
    session: SessionKey,
    answers: &'a mpsc::Sender<oneshot::Sender<AnswerResult>>,
    offer: &'a str,
    follow: &'a ViewFollow,
}

/// Hands an offer to the relay and waits for its answer; a refusal comes back as the response.
async fn ask<C: RoomControl>(control: &C, asking: Ask<'_>) -> Result<String, Response> {
    let Ask {
        endpoint,
        session,
        answers,
        offer,
        follow,
    } = asking;
    if endpoint == Endpoint::Whep {
        let viewed = control.view(session, offer.to_owned(), follow.clone());
        return match tokio::time::timeout(ANSWER_TIMEOUT, viewed).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err((code, message))) => Err(offer_refusal(code, message)),
            Err(_) => Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "relay_busy",
                "the relay did not answer in time; retry",
            )),
        };
    }
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
    info!("session ended");
}

/// `PATCH /whip/resource/{id}`: trickled candidates, or an ICE restart.
pub async fn patch<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    patch_on(Endpoint::Whip, signaling, id, request).await
}

/// `PATCH /whep/resource/{id}`: trickled candidates, or an ICE restart.
pub async fn whep_patch<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    patch_on(Endpoint::Whep, signaling, id, request).await
}

async fn patch_on<C: RoomControl>(
    endpoint: Endpoint,
    signaling: Signaling<C>,
    id: String,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let response = update(&signaling, endpoint, &id, &parts.headers, body).await;
    endpoint.count(&signaling, "patch", &response);
    response
}

/// What a request on a resource needs of it.
struct Owned {
    session: SessionKey,
    etag: String,
    offer: String,
    answers: mpsc::Sender<oneshot::Sender<AnswerResult>>,
    follow: ViewFollow,
}

/// The resource `id` if the bearer owns it (401 without a valid token, 404 for no such
/// resource or another's: a resource id is not proof of anything).
// The refusal is the response itself, made once per request.
#[allow(clippy::result_large_err)]
fn owned<C>(
    signaling: &Signaling<C>,
    endpoint: Endpoint,
    id: &str,
    headers: &HeaderMap,
) -> Result<Owned, Response> {
    // The token that opened the session still acts on it after it expires (RFC 9725 clients
    // end a stream hours later with the token they started it with).
    let claims = signaling
        .keys
        .verify_signed(bearer(headers))
        .map_err(token_refusal)?;
    let resources = endpoint.state(signaling).sessions.resources();
    match resources.get(id) {
        Some(r) if r.identity == claims.sub && r.room == claims.room => Ok(Owned {
            session: r.session,
            etag: r.etag.clone(),
            offer: r.offer.clone(),
            answers: r.answers.clone(),
            follow: r.follow.clone(),
        }),
        _ => Err(refuse(
            StatusCode::NOT_FOUND,
            "unknown_resource",
            format!("no {} session of yours at this address", endpoint.name()),
        )),
    }
}

async fn update<C: RoomControl>(
    signaling: &Signaling<C>,
    endpoint: Endpoint,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Owned {
        session,
        etag,
        offer,
        answers,
        follow,
    } = match owned(signaling, endpoint, id, headers) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let state = endpoint.state(signaling);
    let allowed = state
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
            format!(
                "a {} PATCH is Content-Type: application/trickle-ice-sdpfrag",
                endpoint.name()
            ),
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
        let started = state
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
        let asking = Ask {
            endpoint,
            session,
            answers: &answers,
            offer: &new_offer,
            follow: &follow,
        };
        let asked = ask(&signaling.control, asking).await;
        let new_etag = format!("\"{}\"", random_hex(8));
        if let Some(r) = state.sessions.resources().get_mut(id) {
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
                    leg: match endpoint {
                        Endpoint::Whip => Leg::Publish,
                        Endpoint::Whep => Leg::Subscribe,
                    },
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
    delete_on(Endpoint::Whip, signaling, id, headers).await
}

/// `DELETE /whep/resource/{id}`: the viewer leaves.
pub async fn whep_delete<C: RoomControl>(
    State(signaling): State<Signaling<C>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    delete_on(Endpoint::Whep, signaling, id, headers).await
}

async fn delete_on<C: RoomControl>(
    endpoint: Endpoint,
    signaling: Signaling<C>,
    id: String,
    headers: HeaderMap,
) -> Response {
    let response = match owned(&signaling, endpoint, &id, &headers) {
        Ok(Owned { session, .. }) => {
            endpoint.state(&signaling).sessions.resources().remove(&id);
            signaling
                .control
                .message(session, ClientMessage::Leave {})
                .await;
            info!(resource = %id, protocol = endpoint.name(), "session deleted");
            StatusCode::OK.into_response()
        }
        Err(response) => response,
    };
    endpoint.count(&signaling, "delete", &response);
    response
}

/// `OPTIONS /whip/{room}` and `/whep/{room}` without CORS: what the endpoint takes.
pub async fn options() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("accept-post", HeaderValue::from_static(SDP));
    headers.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    response
}

/// `OPTIONS /whip/resource/{id}` and `/whep/resource/{id}` without CORS.
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

fn join_refusal(endpoint: Endpoint, refusal: JoinRefusal) -> Response {
    if refusal == JoinRefusal::Overloaded {
        let mut response = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            refusal.code().as_str(),
            "the relay's media worker for this room is at its load limit; retry after the time in \
             Retry-After or use another node",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    }
    let (status, text) = match refusal {
        JoinRefusal::RoomFull => (StatusCode::SERVICE_UNAVAILABLE, "the room is full".into()),
        JoinRefusal::TooManyRooms => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay holds its maximum number of rooms; connect to another node".into(),
        ),
        JoinRefusal::Unavailable | JoinRefusal::ResumeFailed | JoinRefusal::Overloaded => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay takes no sessions right now; retry later".into(),
        ),
        JoinRefusal::E2eeRequired => (
            StatusCode::FORBIDDEN,
            format!(
                "this room admits only end-to-end encrypted participants, which {} clients are not",
                endpoint.name()
            ),
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

/// The state of one endpoint (WHIP or WHEP) in [`Signaling`].
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
    fn an_accept_header_must_allow_sdp() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            accepts_sdp(&headers)
        };
        assert!(accepts_sdp(&HeaderMap::new()));
        assert!(with("application/sdp"));
        assert!(with("text/html, */*;q=0.1"));
        assert!(with("application/*"));
        assert!(!with("application/json"));
        assert!(!with("application/sdp;q=0, application/json"));
    }

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
