//! The admin API (JSON over HTTP under `/api`): list, create, change and delete rooms, remove
//! participants, mute their tracks. Every request carries `Authorization: Bearer <JWT>` whose
//! grants include `admin`. Described by `openapi.json` (served at `/api/openapi.json`); keep the
//! two in step (a test compares them).

use crate::auth::KeySet;
use crate::metrics::SignalingMetrics;
use crate::protocol::{ParticipantState, TrackKind, TrackSource, bounded_error_text};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

/// A room's policy. Bandwidth fields are stored now and enforced by the bandwidth controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomPolicy {
    pub max_participants: u32,
    /// Seconds a room created through the API waits for its first participant.
    pub empty_timeout_s: u32,
    /// Seconds a room lingers after its last participant left.
    pub departure_timeout_s: u32,
    /// Total bitrate the relay may send to the whole room (0: no limit).
    pub max_egress_kbps: u32,
    /// Bitrate one participant may receive (0: no limit).
    pub max_subscriber_kbps: u32,
    /// Bitrate one participant may publish (0: no limit).
    pub max_publisher_kbps: u32,
    /// Only participants that join with `e2ee=1` (end-to-end encrypted media) are admitted.
    #[serde(default)]
    pub e2ee_required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackSummary {
    pub id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    /// MIME type, e.g. `video/VP8`.
    pub codec: String,
    /// Muted by its publisher or by an operator.
    pub muted: bool,
    /// Muted by an operator: the relay drops its media, and the publisher cannot unmute it.
    pub admin_muted: bool,
    /// Bitrate the relay receives on this track, bits per second, over the last second or so.
    pub bitrate_bps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantSummary {
    pub id: String,
    pub identity: String,
    pub name: String,
    pub state: ParticipantState,
    /// Seconds since the Unix epoch.
    pub joined_at: u64,
    pub tracks: Vec<TrackSummary>,
    /// The relay's estimate of this participant's downlink, bits per second (null until its
    /// subscribe connection sends transport-cc feedback, and for clients without it).
    pub estimate_bps: Option<u64>,
    /// What the participant receives of each video track.
    pub subscriptions: Vec<SubscriptionSummary>,
    /// The participant joined with `e2ee=1`: its media is end-to-end encrypted.
    pub e2ee: bool,
    /// How it came: `websocket`, `whip` or `whep`.
    pub via: String,
}

/// One video subscription as bandwidth control left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSummary {
    pub track_id: String,
    pub paused: bool,
    /// Why it is paused; null while it is not.
    pub reason: Option<crate::protocol::PauseReason>,
    /// The layer forwarded (0 = the publisher's lowest quality), or chosen and awaiting its
    /// keyframe; null while paused. Width and height are null when the relay does not know
    /// them (H.264 and VP9 do not say them where the relay looks).
    pub layer: Option<u8>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// A room's video egress against its budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomBandwidthSummary {
    /// Video the last allocation gave the room's subscribers together, bits per second.
    pub video_bps: u64,
    /// Whether `max_egress_kbps` held a subscriber below what its own bandwidth allowed.
    pub held_at_budget: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    pub name: String,
    pub policy: RoomPolicy,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Created through this API (rather than by a first join).
    pub created_by_api: bool,
    /// The media worker holding the room (0 .. `media.workers`).
    pub worker: usize,
    pub participants: Vec<ParticipantSummary>,
    pub bandwidth: RoomBandwidthSummary,
}

/// `POST /api/rooms`. Omitted policy fields take the relay's defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    pub name: String,
    pub max_participants: Option<u32>,
    pub empty_timeout_s: Option<u32>,
    pub departure_timeout_s: Option<u32>,
    pub max_egress_kbps: Option<u32>,
    pub max_subscriber_kbps: Option<u32>,
    pub max_publisher_kbps: Option<u32>,
    pub e2ee_required: Option<bool>,
}

/// `PATCH /api/rooms/{name}`: the policy fields to change.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRoom {
    pub max_participants: Option<u32>,
    pub empty_timeout_s: Option<u32>,
    pub departure_timeout_s: Option<u32>,
    pub max_egress_kbps: Option<u32>,
    pub max_subscriber_kbps: Option<u32>,
    pub max_publisher_kbps: Option<u32>,
    pub e2ee_required: Option<bool>,
}

impl CreateRoom {
    /// The policy fields of the request, as a change over the relay's defaults.
    pub fn policy(&self) -> PatchRoom {
        PatchRoom {
            max_participants: self.max_participants,
            empty_timeout_s: self.empty_timeout_s,
            departure_timeout_s: self.departure_timeout_s,
            max_egress_kbps: self.max_egress_kbps,
            max_subscriber_kbps: self.max_subscriber_kbps,
            max_publisher_kbps: self.max_publisher_kbps,
            e2ee_required: self.e2ee_required,
        }
    }
}

impl PatchRoom {
    /// `base` with the fields this change sets.
    pub fn over(&self, base: &RoomPolicy) -> RoomPolicy {
        RoomPolicy {
            max_participants: self.max_participants.unwrap_or(base.max_participants),
            empty_timeout_s: self.empty_timeout_s.unwrap_or(base.empty_timeout_s),
            departure_timeout_s: self.departure_timeout_s.unwrap_or(base.departure_timeout_s),
            max_egress_kbps: self.max_egress_kbps.unwrap_or(base.max_egress_kbps),
            max_subscriber_kbps: self.max_subscriber_kbps.unwrap_or(base.max_subscriber_kbps),
            max_publisher_kbps: self.max_publisher_kbps.unwrap_or(base.max_publisher_kbps),
            e2ee_required: self.e2ee_required.unwrap_or(base.e2ee_required),
        }
    }
}

/// `POST /api/rooms/{name}/participants/{identity}/mute`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MuteTrack {
    pub track_id: String,
    pub muted: bool,
}

/// Why an admin request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminError {
    NoSuchRoom,
    NoSuchParticipant,
    NoSuchTrack,
    RoomExists,
    /// A value out of range (the message says which).
    Invalid(&'static str),
    TooManyRooms,
    Unavailable,
}

impl AdminError {
    fn refusal(self) -> Refusal {
        let (status, code, message) = match self {
            AdminError::NoSuchRoom => (StatusCode::NOT_FOUND, "room_not_found", "no such room"),
            AdminError::NoSuchParticipant => (
                StatusCode::NOT_FOUND,
                "participant_not_found",
                "no such participant in the room",
            ),
            AdminError::NoSuchTrack => (
                StatusCode::NOT_FOUND,
                "track_not_found",
                "the participant has no such track",
            ),
            AdminError::RoomExists => (
                StatusCode::CONFLICT,
                "room_exists",
                "a room with this name exists",
            ),
            AdminError::Invalid(what) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", what),
            AdminError::TooManyRooms => (
                StatusCode::TOO_MANY_REQUESTS,
                "room_limit",
                "the relay holds its maximum number of rooms",
            ),
            AdminError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the relay is not answering",
            ),
        };
        Refusal::new(status, code, message)
    }
}

impl From<AdminError> for Refusal {
    fn from(err: AdminError) -> Self {
        err.refusal()
    }
}

/// An error answer: status, stable code and a message, as the JSON body `{code, message}`.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    /// 401s say how to authenticate.
    bearer_challenge: bool,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
            bearer_challenge: false,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // Messages may quote the request (serde names the field or value it refused).
        let message = bounded_error_text(self.message.into_owned());
        let mut response = crate::http::error_response(self.status, self.code, message);
        if self.bearer_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The relay as the admin API sees it.
pub trait RoomAdmin: Clone + Send + Sync + 'static {
    fn list_rooms(&self) -> impl Future<Output = Result<Vec<RoomSummary>, AdminError>> + Send;
    fn get_room(
        &self,
        name: String,
    ) -> impl Future<Output = Result<RoomSummary, AdminError>> + Send;
    fn create_room(
        &self,
        room: CreateRoom,
    ) -> impl Future<Output = Result<RoomSummary, AdminError>> + Send;
    fn patch_room(
        &self,
        name: String,
        patch: PatchRoom,
    ) -> impl Future<Output = Result<RoomSummary, AdminError>> + Send;
    fn delete_room(&self, name: String) -> impl Future<Output = Result<(), AdminError>> + Send;
    fn remove_participant(
        &self,
        room: String,
        identity: String,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
    fn mute_track(
        &self,
        room: String,
        identity: String,
        mute: MuteTrack,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
}

pub struct AdminApi<A> {
    pub admin: A,
    pub keys: KeySet,
    pub metrics: Arc<SignalingMetrics>,
}

impl<A: Clone> Clone for AdminApi<A> {
    fn clone(&self) -> Self {
        AdminApi {
            admin: self.admin.clone(),
            keys: self.keys.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Admin requests are small; anything larger is refused before it is read in full.
const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn router<A: RoomAdmin>(api: AdminApi<A>) -> Router {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/rooms", get(list::<A>).post(create::<A>))
        .route(
            "/api/rooms/{name}",
            get(room::<A>).patch(patch::<A>).delete(delete::<A>),
        )
        .route(
            "/api/rooms/{name}/participants/{identity}",
            axum::routing::delete(remove::<A>),
        )
        .route(
            "/api/rooms/{name}/participants/{identity}/mute",
            post(mute::<A>),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The rooms an admin token may act on: every room when its `room` claim is `*`, otherwise the
/// one room it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminScope {
    room: Option<String>,
}

/// The `room` claim that grants admin over every room.
pub const ALL_ROOMS: &str = "*";

impl AdminScope {
    fn allows(&self, room: &str) -> bool {
        self.room.as_deref().is_none_or(|r| r == room)
    }

    fn check(&self, room: &str) -> Result<(), Refusal> {
        if self.allows(room) {
            return Ok(());
        }
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "room_not_in_scope",
            "the token grants admin over another room only; mint one with room \"*\" for every \
             room",
        ))
    }
}

/// 401 without a valid token, 403 without the admin grant.
fn authorize<A>(api: &AdminApi<A>, headers: &HeaderMap) -> Result<AdminScope, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    match api.keys.verify(token, SystemTime::now()) {
        Ok(claims) if claims.grants.admin => Ok(AdminScope {
            room: (claims.room != ALL_ROOMS).then_some(claims.room),
        }),
        Ok(_) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "admin_grant_missing",
            "the token is valid but does not grant admin",
        )),
        Err(err) => {
            api.metrics.token_rejected(err);
            Err(Refusal {
                bearer_challenge: true,
                ..Refusal::new(StatusCode::UNAUTHORIZED, err.code(), err.to_string())
            })
        }
    }
}

/// Authorizes a request about one room.
fn authorize_room<A>(api: &AdminApi<A>, headers: &HeaderMap, room: &str) -> Result<(), Refusal> {
    authorize(api, headers)?.check(room)
}

/// JSON bodies are parsed here rather than by an extractor so that every refusal has the API's
/// error shape and a stable code.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("invalid JSON body: {e}"),
        )
    })
}

/// Room names an API caller may create: what a join token can name (1 to 256 characters),
/// without control characters.
fn valid_room_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= crate::auth::MAX_CLAIM_CHARS
        && !name.chars().any(char::is_control)
}

type Answer = Result<Response, Refusal>;

fn json<T: Serialize>(status: StatusCode, value: T) -> Answer {
    Ok((status, Json(value)).into_response())
}

fn no_content() -> Answer {
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list<A: RoomAdmin>(State(api): State<AdminApi<A>>, headers: HeaderMap) -> Answer {
    let scope = authorize(&api, &headers)?;
    let mut rooms = api.admin.list_rooms().await?;
    rooms.retain(|r| scope.allows(&r.name));
    json(StatusCode::OK, rooms)
}

async fn room<A: RoomAdmin>(
    State(api): State<AdminApi<A>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    authorize_room(&api, &headers, &name)?;
    json(StatusCode::OK, api.admin.get_room(name).await?)
}

async fn create<A: RoomAdmin>(
    State(api): State<AdminApi<A>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    let scope = authorize(&api, &headers)?;
    let request: CreateRoom = parse_body(&body)?;
    if !valid_room_name(&request.name) {
        return Err(AdminError::Invalid(
            "name must be 1 to 256 characters, none of them control characters",
        )
        .into());
    }
    scope.check(&request.name)?;
    json(StatusCode::CREATED, api.admin.create_room(request).await?)
}

async fn patch<A: RoomAdmin>(
    State(api): State<AdminApi<A>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    authorize_room(&api, &headers, &name)?;
    let request: PatchRoom = parse_body(&body)?;
    json(StatusCode::OK, api.admin.patch_room(name, request).await?)
}

async fn delete<A: RoomAdmin>(
    State(api): State<AdminApi<A>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    authorize_room(&api, &headers, &name)?;
    api.admin.delete_room(name).await?;
    no_content()
}

async fn remove<A: RoomAdmin>(
    State(api): State<AdminApi<A>>,
    headers: HeaderMap,
    Path((name, identity)): Path<(String, String)>,
) -> Answer {
    authorize_room(&api, &headers, &name)?;
    api.admin.remove_participant(name, identity).await?;
    no_content()
}

async fn mute<A: RoomAdmin>(
    State(api): State<AdminApi<A>>,
    headers: HeaderMap,
    Path((name, identity)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Answer {
    authorize_room(&api, &headers, &name)?;
    let request: MuteTrack = parse_body(&body)?;
    api.admin.mute_track(name, identity, request).await?;
    no_content()
}

#[cfg(test)]
mod tests {
    //! Keeps `openapi.json` true to the code: every documented operation is routed (and
    //! authenticated), nothing undocumented is, and the schemas name exactly the fields the
    //! types serialize.
    use super::*;
    use crate::auth::{Grants, claims_for};
    use crate::metrics::SignalingMetrics;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use serde_json::Value;
    use std::collections::BTreeSet;
    use std::time::Duration;
    use tower::ServiceExt;

    #[derive(Clone)]
    struct NoRooms;

    impl RoomAdmin for NoRooms {
        async fn list_rooms(&self) -> Result<Vec<RoomSummary>, AdminError> {
            Ok(Vec::new())
        }
        async fn get_room(&self, _: String) -> Result<RoomSummary, AdminError> {
            Err(AdminError::NoSuchRoom)
        }
        async fn create_room(&self, _: CreateRoom) -> Result<RoomSummary, AdminError> {
            Err(AdminError::TooManyRooms)
        }
        async fn patch_room(&self, _: String, _: PatchRoom) -> Result<RoomSummary, AdminError> {
            Err(AdminError::NoSuchRoom)
        }
        async fn delete_room(&self, _: String) -> Result<(), AdminError> {
            Err(AdminError::NoSuchRoom)
        }
        async fn remove_participant(&self, _: String, _: String) -> Result<(), AdminError> {
            Err(AdminError::NoSuchRoom)
        }
        async fn mute_track(&self, _: String, _: String, _: MuteTrack) -> Result<(), AdminError> {
            Err(AdminError::NoSuchRoom)
        }
    }

    fn api() -> (Router, KeySet) {
        let keys = KeySet::new([("k".to_owned(), b"0123456789abcdef0123456789abcdef".to_vec())]);
        let metrics = SignalingMetrics::register(&prometheus::Registry::new()).unwrap();
        let router = router(AdminApi {
            admin: NoRooms,
            keys: keys.clone(),
            metrics: Arc::new(metrics),
        });
        (router, keys)
    }

    fn document() -> Value {
        serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
    }

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    async fn status(router: &Router, method: &str, path: &str, bearer: Option<&str>) -> u16 {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
            .uri(path)
            .header("content-type", "application/json");
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = if method == "get" || method == "delete" {
            Body::empty()
        } else {
            Body::from(r#"{"name":"r","track_id":"TR_1","muted":true}"#)
        };
        let response = router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        response.status().as_u16()
    }

    #[tokio::test]
    async fn every_documented_operation_exists_and_nothing_else_does() {
        let (router, keys) = api();
        let admin = keys
            .mint(
                "k",
                &claims_for(
                    "*",
                    "ops",
                    "ops",
                    Grants {
                        admin: true,
                        ..Grants::default()
                    },
                    SystemTime::now(),
                    Duration::from_secs(60),
                ),
            )
            .unwrap();
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 5);
        for (template, item) in paths {
            let path = template
                .replace("{name}", "r")
                .replace("{identity}", "alice");
            for method in METHODS {
                let documented = item.get(method).is_some();
                let anonymous = status(&router, method, &path, None).await;
                if !documented {
                    assert_eq!(
                        anonymous, 405,
                        "{method} {template} is routed but undocumented"
                    );
                    continue;
                }
                let operation = &item[method];
                let public = operation["security"] == serde_json::json!([]);
                if public {
                    assert_eq!(anonymous, 200, "{method} {template}");
                    continue;
                }
                assert_eq!(anonymous, 401, "{method} {template} without a token");
                assert!(operation["responses"].get("401").is_some());
                // With a token, whatever the fake relay answers must be documented.
                let answered = status(&router, method, &path, Some(&admin)).await;
                assert!(
                    operation["responses"].get(answered.to_string()).is_some(),
                    "{method} {template} answered {answered}, which is undocumented"
                );
            }
        }
    }

    async fn body_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).expect("a JSON body")
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_as_documented() {
        // As the relay serves it: behind the layer that gives axum's refusals the JSON shape.
        let (router, _) = api();
        let router = router.layer(axum::middleware::from_fn(crate::http_errors::json_errors));
        let body = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let doc = document();
        let mut checked = 0;
        for (template, item) in doc["paths"].as_object().unwrap() {
            let path = template
                .replace("{name}", "r")
                .replace("{identity}", "alice");
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                if operation.get("requestBody").is_none() {
                    continue;
                }
                let request = Request::builder()
                    .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                    .uri(&path)
                    .header("content-type", "application/json")
                    .body(Body::from(body.clone()))
                    .unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "{method} {template}"
                );
                assert!(
                    operation["responses"].get("413").is_some(),
                    "{method} {template}: 413 undocumented"
                );
                assert_eq!(body_of(response).await["code"], "payload_too_large");
                checked += 1;
            }
        }
        assert_eq!(checked, 3, "three operations take a body");
    }

    #[tokio::test]
    async fn refusals_never_quote_the_request_whole() {
        let long = "7".repeat(12_000);
        for body in [
            format!(r#"{{"name":"r","max_participants":"{long}"}}"#),
            format!(r#"{{"name":"r","{long}":1}}"#),
            format!(r#"{{"name":"r","max_participants":{long}}}"#),
        ] {
            let refusal = parse_body::<CreateRoom>(body.as_bytes()).unwrap_err();
            assert_eq!(refusal.code, "invalid_body");
            let json = body_of(refusal.into_response()).await;
            let message = json["message"].as_str().unwrap();
            assert!(
                message.len() <= crate::protocol::MAX_ERROR_TEXT_BYTES,
                "{} bytes",
                message.len()
            );
            assert!(message.starts_with("invalid JSON body: "), "{message}");
        }
    }

    /// The property names of a schema, resolved from `#/components/schemas`.
    fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
        doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {schema}"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn schemas_name_exactly_the_serialized_fields() {
        let doc = document();
        let policy = RoomPolicy {
            max_participants: 1,
            empty_timeout_s: 2,
            departure_timeout_s: 3,
            max_egress_kbps: 4,
            max_subscriber_kbps: 5,
            max_publisher_kbps: 6,
            e2ee_required: true,
        };
        let room = RoomSummary {
            name: "r".into(),
            policy: policy.clone(),
            created_at: 1,
            created_by_api: true,
            worker: 0,
            participants: vec![ParticipantSummary {
                id: "PA_1".into(),
                identity: "alice".into(),
                name: "Alice".into(),
                state: ParticipantState::Active,
                joined_at: 2,
                tracks: vec![TrackSummary {
                    id: "TR_1".into(),
                    kind: TrackKind::Video,
                    source: TrackSource::Camera,
                    codec: "video/VP8".into(),
                    muted: false,
                    admin_muted: false,
                    bitrate_bps: 1,
                }],
                estimate_bps: Some(2_000_000),
                subscriptions: vec![SubscriptionSummary {
                    track_id: "TR_2".into(),
                    paused: true,
                    reason: Some(crate::protocol::PauseReason::RoomBudget),
                    layer: Some(1),
                    width: Some(640),
                    height: Some(360),
                }],
                e2ee: true,
                via: "whip".into(),
            }],
            bandwidth: RoomBandwidthSummary {
                video_bps: 3,
                held_at_budget: true,
            },
        };
        let json = serde_json::to_value(&room).unwrap();
        let participant = &json["participants"][0];
        let track = &participant["tracks"][0];
        for (schema, value) in [
            ("RoomSummary", &json),
            ("RoomPolicy", &json["policy"]),
            ("ParticipantSummary", participant),
            ("TrackSummary", track),
            ("SubscriptionSummary", &participant["subscriptions"][0]),
            ("RoomBandwidthSummary", &json["bandwidth"]),
        ] {
            assert_eq!(properties(&doc, schema), keys(value), "{schema}");
            let required: BTreeSet<String> = doc["components"]["schemas"][schema]["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(
                required,
                keys(value),
                "{schema}: every field is always present"
            );
        }
        let mut create_fields = keys(&serde_json::to_value(CreateRoom::default()).unwrap());
        assert_eq!(properties(&doc, "CreateRoom"), create_fields);
        create_fields.remove("name");
        assert_eq!(
            properties(&doc, "PatchRoom"),
            keys(&serde_json::to_value(PatchRoom::default()).unwrap())
        );
        assert_eq!(properties(&doc, "PatchRoom"), create_fields);
        assert_eq!(properties(&doc, "RoomPolicy"), create_fields);
        let mute = MuteTrack {
            track_id: "TR_1".into(),
            muted: true,
        };
        assert_eq!(
            properties(&doc, "MuteTrack"),
            keys(&serde_json::to_value(mute).unwrap())
        );
    }

    #[test]
    fn every_error_code_is_documented() {
        let codes = [
            AdminError::NoSuchRoom,
            AdminError::NoSuchParticipant,
            AdminError::NoSuchTrack,
            AdminError::RoomExists,
            AdminError::Invalid("x"),
            AdminError::TooManyRooms,
            AdminError::Unavailable,
        ]
        .map(|e| e.refusal().code);
        for code in codes.iter().chain(&[
            "invalid_body",
            "admin_grant_missing",
            "room_not_in_scope",
            "payload_too_large",
            "bad_request",
            "not_found",
            "method_not_allowed",
        ]) {
            assert!(
                OPENAPI.contains(&format!("`{code}`")),
                "{code} undocumented"
            );
        }
    }
}
