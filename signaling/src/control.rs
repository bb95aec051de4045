//! The seam between signaling and the relay.
//!
//! Signaling authenticates a connection and then only pumps messages: every decision about rooms,
//! participants and media is the relay's, reached through [`RoomControl`]. Tests drive the service
//! with a fake implementation, and the relay can be tested without a WebSocket.

use crate::auth::Grants;
use crate::protocol::{ClientMessage, ErrorCode, LeaveReason, ServerMessage};
use std::future::Future;
use tokio::sync::mpsc;

/// Names one signaling connection of one participant. A resumed participant gets a new key, so
/// messages from a connection that was replaced are recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub participant: u64,
    pub connection: u64,
}

/// An authenticated request to enter a room.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub grants: Grants,
    /// Set when the client asks to resume an earlier session.
    pub resume_token: Option<String>,
    /// The client encrypts its media end to end (`e2ee=1`).
    pub e2ee: bool,
    /// How the client came: the WebSocket protocol, WHIP or WHEP.
    pub via: JoinVia,
}

/// How a participant reached the relay (shown in the admin API and webhooks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JoinVia {
    /// The WebSocket protocol of PROTOCOL.md (browsers, SDKs).
    #[default]
    WebSocket,
    /// WHIP (RFC 9725): a publisher over plain HTTP.
    Whip,
    /// WHEP: a viewer over plain HTTP. Its subscribe leg is negotiated once, from the viewer's
    /// offer ([`RoomControl::view`]), and never by the relay's offers.
    Whep,
}

impl JoinVia {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinVia::WebSocket => "websocket",
            JoinVia::Whip => "whip",
            JoinVia::Whep => "whep",
        }
    }
}

/// Whom a WHEP viewer watches (`POST /whep/{room}?participant=` or `?track=`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ViewFollow {
    /// The room's longest-present publisher, then the next one.
    #[default]
    Room,
    /// The participant with this identity, whenever it is in the room.
    Identity(String),
    /// This track (and its publisher's track of the other kind).
    Track(String),
}

/// What the relay sends down one connection.
// Events are moved through a bounded channel once each; boxing the message would add an
// allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    Message(ServerMessage),
    /// Send `closed` with this reason, then close the WebSocket.
    Close(LeaveReason),
}

/// A join the relay accepted. The first event is always `joined`.
#[derive(Debug)]
pub struct Admission {
    pub session: SessionKey,
    pub events: mpsc::Receiver<SessionEvent>,
}

/// A join the relay refused, with a stable code for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The resume token is unknown or its grace period is over: join afresh.
    ResumeFailed,
    RoomFull,
    /// The room does not exist and the node holds its maximum number of rooms.
    TooManyRooms,
    /// The relay is draining.
    Unavailable,
    /// The media worker that holds (or would hold) the room is over its load limit.
    Overloaded,
    /// The room admits only end-to-end encrypted participants, and this join did not say `e2ee`.
    E2eeRequired,
}

impl JoinRefusal {
    pub fn code(self) -> ErrorCode {
        match self {
            JoinRefusal::ResumeFailed => ErrorCode::ResumeFailed,
            JoinRefusal::RoomFull => ErrorCode::RoomFull,
            JoinRefusal::TooManyRooms => ErrorCode::LimitExceeded,
            JoinRefusal::Unavailable | JoinRefusal::Overloaded => ErrorCode::Unavailable,
            JoinRefusal::E2eeRequired => ErrorCode::E2eeRequired,
        }
    }
}

/// How a connection ended, as seen by signaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The socket closed or failed without a `leave`: the participant may resume.
    Dropped,
    /// The client broke the protocol badly enough that signaling closed it; it may resume.
    ProtocolViolation,
}

/// The relay as signaling sees it.
pub trait RoomControl: Clone + Send + Sync + 'static {
    fn join(
        &self,
        request: JoinRequest,
    ) -> impl Future<Output = Result<Admission, JoinRefusal>> + Send;

    /// Delivers one client message. Ping is answered by signaling itself and never arrives here.
    /// Answers, errors included, come back as [`SessionEvent`]s on the admission's channel.
    fn message(
        &self,
        session: SessionKey,
        message: ClientMessage,
    ) -> impl Future<Output = ()> + Send;

    /// A WHEP viewer's offer (receive-only m-lines): answered with the relay's answer, or
    /// refused with a code. A second offer on the same session is an ICE restart.
    fn view(
        &self,
        session: SessionKey,
        offer: String,
        follow: ViewFollow,
    ) -> impl Future<Output = Result<String, (ErrorCode, String)>> + Send;

    /// The connection is gone. Must be called exactly once per admission, after the last
    /// `message`.
    fn disconnected(&self, session: SessionKey, how: Disconnect)
    -> impl Future<Output = ()> + Send;

    /// Whether `resume_token` names a session the relay holds now. Join limits never refuse
    /// those: a participant coming back after a network change must get back in.
    fn knows_resume_token(&self, resume_token: &str) -> bool;
}
