//! The signaling wire protocol: versioned JSON messages over one WebSocket.
//!
//! Every message is a JSON object whose `type` field names it. The protocol version is chosen
//! once per connection (`?protocol=1` on the WebSocket URL, echoed in [`ServerMessage::Joined`]),
//! so individual messages carry no version. PROTOCOL.md documents every message with examples;
//! keep the two in step.

use serde::{Deserialize, Serialize};

/// The only protocol version this relay speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Which of a participant's two peer connections a message refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// Client offers, relay answers; carries the participant's own media to the relay.
    Publish,
    /// Relay offers, client answers; carries everybody else's media to the participant.
    Subscribe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a published track shows, as declared by its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
}

impl TrackSource {
    /// The kind of media a source produces; a publish offer that pairs a source with an m-line
    /// of the other kind is refused.
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Microphone => TrackKind::Audio,
            TrackSource::Camera | TrackSource::Screen => TrackKind::Video,
        }
    }
}

/// A publisher's description of one m-line of its publish offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackAnnouncement {
    /// The `a=mid` of the m-line in the accompanying offer.
    pub mid: String,
    pub source: TrackSource,
}

/// A published track as other participants see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: String,
    pub participant_id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub muted: bool,
    /// An operator muted the track (admin API): the relay forwards none of it, and only an
    /// operator can unmute it. Omitted when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub admin_muted: bool,
    /// Codec MIME type once known, e.g. `video/VP8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// In `subscribe_offer`: the m-line of the subscriber's leg that carries this track; in
    /// `publish_answer`: the publisher's own m-line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Only in `subscribe_offer`: the `a=msid` stream id (one per publishing participant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    pub identity: String,
    pub name: String,
    /// `active`, or `reconnecting` while the participant's signaling connection is being resumed.
    pub state: ParticipantState,
    pub tracks: Vec<TrackInfo>,
    /// Added in 1.4: the participant joined with `e2ee=1` (it encrypts its media end to end and
    /// takes part in the key exchange).
    #[serde(default)]
    pub e2ee: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantState {
    Active,
    Reconnecting,
}

/// An ICE server a client may use (STUN/TURN), as in `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A trickled ICE candidate, as in `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, rename = "sdpMid", skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        default,
        rename = "sdpMLineIndex",
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(
        default,
        rename = "usernameFragment",
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
}

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Offer (or re-offer) for the publish leg, with the source of every sending m-line.
    PublishOffer {
        sdp: String,
        tracks: Vec<TrackAnnouncement>,
    },
    /// Answer to the relay's latest `subscribe_offer`.
    SubscribeAnswer { sdp: String },
    /// One ICE candidate of the client for one leg. An empty `candidate` string ends gathering.
    Trickle { leg: Leg, candidate: IceCandidate },
    /// Mute or unmute one of the participant's own published tracks.
    SetMuted { track_id: String, muted: bool },
    /// Leave the room for good (no resume).
    Leave {},
    /// Keepalive; answered with `pong` carrying the same `timestamp`.
    Ping { timestamp: u64 },
    /// Added in 1.2. What the client wants of one video track it receives: nothing while
    /// `paused`, otherwise no layer larger than `max_width` x `max_height` (the tile it is shown
    /// in, in device pixels; absent = no limit). Each message replaces the last for the track.
    UpdateSubscription {
        track_id: String,
        #[serde(default)]
        paused: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_height: Option<u32>,
    },
    /// Added in 1.4: an end-to-end encryption message (public key announcement, wrapped media
    /// key), opaque to the relay. Delivered as `e2ee` to participant `to`, or to every other
    /// participant of the room that joined with `e2ee` when `to` is absent. Only a participant
    /// that joined with `e2ee` may send it; `data` is at most [`MAX_E2EE_DATA_BYTES`].
    E2ee {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        data: String,
    },
}

/// Largest `data` of an `e2ee` message, bytes.
pub const MAX_E2EE_DATA_BYTES: usize = 4096;

impl ClientMessage {
    /// The wire name of this message, for error replies.
    pub fn kind(&self) -> ClientMessageKind {
        match self {
            ClientMessage::PublishOffer { .. } => ClientMessageKind::PublishOffer,
            ClientMessage::SubscribeAnswer { .. } => ClientMessageKind::SubscribeAnswer,
            ClientMessage::Trickle { .. } => ClientMessageKind::Trickle,
            ClientMessage::SetMuted { .. } => ClientMessageKind::SetMuted,
            ClientMessage::Leave {} => ClientMessageKind::Leave,
            ClientMessage::Ping { .. } => ClientMessageKind::Ping,
            ClientMessage::UpdateSubscription { .. } => ClientMessageKind::UpdateSubscription,
            ClientMessage::E2ee { .. } => ClientMessageKind::E2ee,
        }
    }
}

/// The closed set of client message names: used as a metric label and in error replies, so that
/// nothing a client writes ever becomes a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMessageKind {
    PublishOffer,
    SubscribeAnswer,
    Trickle,
    SetMuted,
    Leave,
    Ping,
    UpdateSubscription,
    E2ee,
}

impl ClientMessageKind {
    pub const ALL: [ClientMessageKind; 8] = [
        ClientMessageKind::PublishOffer,
        ClientMessageKind::SubscribeAnswer,
        ClientMessageKind::Trickle,
        ClientMessageKind::SetMuted,
        ClientMessageKind::Leave,
        ClientMessageKind::Ping,
        ClientMessageKind::UpdateSubscription,
        ClientMessageKind::E2ee,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientMessageKind::PublishOffer => "publish_offer",
            ClientMessageKind::SubscribeAnswer => "subscribe_answer",
            ClientMessageKind::Trickle => "trickle",
            ClientMessageKind::SetMuted => "set_muted",
            ClientMessageKind::Leave => "leave",
            ClientMessageKind::Ping => "ping",
            ClientMessageKind::UpdateSubscription => "update_subscription",
            ClientMessageKind::E2ee => "e2ee",
        }
    }
}

/// Why a participant left, as told to the others and to the participant itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The participant sent `leave`.
    Left,
    /// The signaling connection dropped and was not resumed within the grace period.
    Timeout,
    /// The media transport died (no ICE consent) and did not come back.
    TransportFailed,
    /// Another connection joined with the same identity in the same room.
    Replaced,
    /// The session could not keep up with the relay's events and was closed.
    SlowConsumer,
    /// The relay is shutting down.
    Shutdown,
    /// An operator removed the participant through the admin API.
    Removed,
    /// An operator deleted the room through the admin API.
    RoomDeleted,
}

/// Messages the relay sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message of every connection: the participant is in the room.
    Joined {
        protocol: u32,
        room: String,
        participant: ParticipantInfo,
        /// Present this as `resume_token` on a new WebSocket to resume this session.
        resume_token: String,
        /// Seconds a dropped connection may take to resume before the participant has left.
        resume_grace_s: u64,
        /// `true` when this connection resumed an earlier session of the same participant.
        resumed: bool,
        /// Everybody else in the room, with their tracks.
        participants: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
    },
    /// The relay's answer on the publish leg, and the ids it gave the announced tracks.
    PublishAnswer {
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    /// A (re)offer for the subscribe leg listing every track it carries.
    SubscribeOffer {
        sdp: String,
        tracks: Vec<TrackInfo>,
        /// The first offer of a new subscribe connection: answer it on a new peer connection
        /// (closing any previous subscribe connection).
        #[serde(default, skip_serializing_if = "is_false")]
        new_connection: bool,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: String,
        reason: LeaveReason,
    },
    ParticipantReconnecting {
        participant_id: String,
    },
    ParticipantResumed {
        participant_id: String,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        track_id: String,
        participant_id: String,
    },
    TrackMuted {
        track_id: String,
        participant_id: String,
        muted: bool,
        /// The mute is an operator's (see `TrackInfo::admin_muted`). Omitted when false.
        #[serde(default, skip_serializing_if = "is_false")]
        admin_muted: bool,
    },
    Pong {
        timestamp: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// The client message this error answers, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<ClientMessageKind>,
        /// The track the error is about, when there is one (e.g. `codec_not_receivable`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        track_id: Option<String>,
    },
    /// Sent right before the relay closes the connection for good.
    Closed {
        reason: LeaveReason,
    },
    /// Added in 1.1. What the relay now forwards of one of the subscriber's video tracks: sent
    /// when the subscription pauses or resumes and when its layer changes, at most once a second
    /// per track. Each message is the whole state, not a change.
    SubscriptionState {
        track_id: String,
        paused: bool,
        /// Why the subscription is paused; absent while it is not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<PauseReason>,
        /// The layer forwarded, 0 being the publisher's lowest quality (a track without
        /// simulcast is layer 0); absent while paused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer: Option<u8>,
        /// The forwarded layer's frame size in pixels, when the relay knows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
    },
    /// Added in 1.1. The room's cap on what one publisher sends of video (its
    /// `max_publisher_kbps`), for the sum of all its video encodings; absent means no cap. Sent
    /// right after every `joined` (resumes included) while the room has a cap, and again
    /// whenever the cap changes: a client forgets its cap on `joined`.
    PublishLimits {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_video_kbps: Option<u32>,
    },
    /// Added in 1.2. Who is speaking now, loudest first (at most three; empty: nobody), from
    /// the audio level of their packets; sent to everyone in the room when it changes.
    ActiveSpeakers {
        participant_ids: Vec<String>,
    },
    /// Added in 1.3. Participants' connection quality (`good`, `poor`: loss, delay or too little
    /// bandwidth for their video; `lost`: their connection is down), judged every 2 s from what
    /// the relay measures; worse is told at once, better once it held for 4 s. Sent to everyone
    /// in the room for the participants whose quality changed, yourself included, and with
    /// everybody's quality once after `joined` (a client starts from `good` for all).
    ConnectionQuality {
        updates: Vec<ParticipantQuality>,
    },
    /// Added in 1.2. How many of one of your video tracks' layers, lowest quality first, anybody
    /// may receive now (`layers` absent: all; 0: none), so that the client stops encoding the
    /// others (dynacast). Fewer are told once they have been enough for a few seconds, more at
    /// once. A client forgets it on `joined`; after a resume the relay repeats what still holds.
    VideoDemand {
        track_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layers: Option<u32>,
    },
    /// Added in 1.4. An end-to-end encryption message another participant sent you (to you
    /// alone or to everyone who joined with `e2ee`), passed on unchanged: the relay cannot read
    /// it.
    E2ee {
        from: String,
        data: String,
    },
}

/// One participant's connection quality (`connection_quality`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantQuality {
    pub participant_id: String,
    /// `good`, `poor` or `lost`.
    pub quality: String,
}

/// Why the relay forwards nothing of a subscription (`subscription_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// The subscriber's estimated downlink cannot carry even the track's lowest layer.
    Bandwidth,
    /// The room's `max_subscriber_kbps` leaves nothing for this track.
    SubscriberBudget,
    /// The room's `max_egress_kbps` leaves nothing for this track.
    RoomBudget,
    /// The publisher sends no layer the relay can forward (none arrives, e.g. its encoder
    /// turned every layer off).
    NoLayer,
    /// Added in 1.2: the subscriber asked for it (`update_subscription` with `paused`).
    Requested,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Stable error codes. Clients branch on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, or a field has the wrong type.
    MalformedMessage,
    /// A JSON object whose `type` this relay does not know.
    UnknownMessageType,
    /// Larger than the configured message limit; the connection is closed.
    MessageTooLarge,
    /// Valid message at the wrong time (an answer with no offer outstanding, trickle before an
    /// offer).
    InvalidState,
    /// The SDP could not be parsed or applied.
    InvalidSdp,
    /// No codec of an m-line is one the relay forwards.
    UnsupportedCodec,
    /// The join token's grants do not allow this.
    NotAllowed,
    /// A track id that is not one of the participant's own tracks (or, for
    /// `update_subscription`, not a video track it receives).
    UnknownTrack,
    /// A limit was reached (tracks per participant, SDP size).
    LimitExceeded,
    /// The relay is overloaded; retry later.
    RelayBusy,
    /// A bug or internal failure on the relay; the message was not applied.
    Internal,
    /// The `resume_token` is unknown or its grace period is over: join afresh without it.
    ResumeFailed,
    /// The room has reached its participant limit.
    RoomFull,
    /// The relay is draining or overloaded and takes no joins; try another node or later.
    Unavailable,
    /// Your subscribe answer cannot receive this track's codec; it is not forwarded to you.
    CodecNotReceivable,
    /// More messages per second than the relay accepts from one session; this one was dropped.
    RateLimited,
    /// Added in 1.4: the room admits only participants that join with `e2ee=1`.
    E2eeRequired,
    /// Added in 1.4: `to` of an `e2ee` message names nobody in your room who joined with
    /// `e2ee` (they may just have left).
    UnknownParticipant,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::MalformedMessage,
        ErrorCode::UnknownMessageType,
        ErrorCode::MessageTooLarge,
        ErrorCode::InvalidState,
        ErrorCode::InvalidSdp,
        ErrorCode::UnsupportedCodec,
        ErrorCode::NotAllowed,
        ErrorCode::UnknownTrack,
        ErrorCode::LimitExceeded,
        ErrorCode::RelayBusy,
        ErrorCode::Internal,
        ErrorCode::ResumeFailed,
        ErrorCode::RoomFull,
        ErrorCode::Unavailable,
        ErrorCode::CodecNotReceivable,
        ErrorCode::RateLimited,
        ErrorCode::E2eeRequired,
        ErrorCode::UnknownParticipant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnknownMessageType => "unknown_message_type",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::UnsupportedCodec => "unsupported_codec",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::UnknownTrack => "unknown_track",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::RelayBusy => "relay_busy",
            ErrorCode::Internal => "internal",
            ErrorCode::ResumeFailed => "resume_failed",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::CodecNotReceivable => "codec_not_receivable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::E2eeRequired => "e2ee_required",
            ErrorCode::UnknownParticipant => "unknown_participant",
        }
    }
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: bounded_error_text(message.into()),
            request: None,
            track_id: None,
        }
    }

    pub fn error_for(
        code: ErrorCode,
        request: ClientMessageKind,
        message: impl Into<String>,
    ) -> Self {
        ServerMessage::Error {
            code,
            message: bounded_error_text(message.into()),
            request: Some(request),
            track_id: None,
        }
    }
}

/// Longest error text the relay sends (WebSocket `error` messages, HTTP error bodies), in bytes.
pub const MAX_ERROR_TEXT_BYTES: usize = 256;

/// `text` cut to at most [`MAX_ERROR_TEXT_BYTES`] at a char boundary, ending in `…` if cut.
/// Error texts often quote the input they refuse (serde names the unknown variant, an SDP parser
/// the bad line); unbounded, a client could make the relay send back all it sent.
pub fn bounded_error_text(mut text: String) -> String {
    const ELLIPSIS: char = '…';
    if text.len() <= MAX_ERROR_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_ERROR_TEXT_BYTES - ELLIPSIS.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push(ELLIPSIS);
    text
}

/// Why a text frame is not a usable [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
}

/// Parses one client text frame, telling an unknown `type` apart from a malformed message so the
/// client gets the precise code.
pub fn decode_client_message(text: &str) -> Result<ClientMessage, DecodeError> {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(message) => Ok(message),
        Err(err) => {
            // Second look only on failure: was it an object with a `type` we do not know?
            let unknown_type = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|value| {
                    let name = value.get("type")?.as_str()?.to_owned();
                    let known = ClientMessageKind::ALL.iter().any(|k| k.as_str() == name);
                    (!known).then_some(name)
                });
            let (code, message) = match unknown_type {
                Some(name) => (
                    ErrorCode::UnknownMessageType,
                    format!("unknown message type {:?}", truncate(&name, 40)),
                ),
                None => (
                    ErrorCode::MalformedMessage,
                    format!("malformed message: {err}"),
                ),
            };
            Err(DecodeError {
                code,
                message: bounded_error_text(message),
            })
        }
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_round_trip_with_type_tags() {
        let msg = decode_client_message(
            r#"{"type":"publish_offer","sdp":"v=0","tracks":[{"mid":"0","source":"camera"}]}"#,
        )
        .unwrap();
        assert_eq!(
            msg,
            ClientMessage::PublishOffer {
                sdp: "v=0".into(),
                tracks: vec![TrackAnnouncement {
                    mid: "0".into(),
                    source: TrackSource::Camera
                }]
            }
        );
        let leave = decode_client_message(r#"{"type":"leave"}"#).unwrap();
        assert_eq!(leave, ClientMessage::Leave {});
        let trickle = decode_client_message(
            r#"{"type":"trickle","leg":"publish","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        )
        .unwrap();
        assert!(matches!(
            trickle,
            ClientMessage::Trickle {
                leg: Leg::Publish,
                ..
            }
        ));
    }

    #[test]
    fn unknown_type_and_malformed_json_get_distinct_codes() {
        let unknown = decode_client_message(r#"{"type":"teleport","to":"mars"}"#).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::UnknownMessageType);
        for bad in [
            "not json",
            "[]",
            "{}",
            r#"{"type":"ping"}"#,
            r#"{"type":"ping","timestamp":"soon"}"#,
            r#"{"type":7}"#,
        ] {
            let err = decode_client_message(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::MalformedMessage, "{bad}");
        }
    }

    #[test]
    fn decode_errors_never_quote_the_input_whole() {
        let huge = "é".repeat(30_000);
        for text in [
            format!(r#"{{"type":"{huge}"}}"#),
            format!(
                r#"{{"type":"publish_offer","sdp":"","tracks":[{{"mid":"0","source":"{huge}"}}]}}"#
            ),
            format!(r#"{{"type":"trickle","leg":"{huge}","candidate":{{"candidate":""}}}}"#),
            format!(r#"{{"type":"ping","timestamp":"{huge}"}}"#),
            format!(r#"{{"type":"ping","timestamp":1,"{huge}"#),
        ] {
            let err = decode_client_message(&text).unwrap_err();
            assert!(err.message.len() <= MAX_ERROR_TEXT_BYTES, "{}", err.message);
            assert!(
                err.message.len() > 40,
                "still says what is wrong: {}",
                err.message
            );
        }
    }

    #[test]
    fn error_texts_are_cut_at_a_char_boundary() {
        assert_eq!(bounded_error_text("short".into()), "short");
        let exact = "x".repeat(MAX_ERROR_TEXT_BYTES);
        assert_eq!(bounded_error_text(exact.clone()), exact);
        for filler in ["x", "é", "€", "🦀"] {
            let cut = bounded_error_text(filler.repeat(MAX_ERROR_TEXT_BYTES + 1));
            assert!(cut.len() <= MAX_ERROR_TEXT_BYTES && cut.len() > MAX_ERROR_TEXT_BYTES - 8);
            assert!(cut.ends_with('…'), "{cut}");
        }
        let ServerMessage::Error { message, .. } =
            ServerMessage::error(ErrorCode::InvalidSdp, "v".repeat(100_000))
        else {
            unreachable!()
        };
        assert!(message.len() <= MAX_ERROR_TEXT_BYTES);
    }

    #[test]
    fn server_messages_serialize_with_snake_case_tags() {
        let text = serde_json::to_string(&ServerMessage::error_for(
            ErrorCode::InvalidState,
            ClientMessageKind::SubscribeAnswer,
            "no offer outstanding",
        ))
        .unwrap();
        assert_eq!(
            text,
            r#"{"type":"error","code":"invalid_state","message":"no offer outstanding","request":"subscribe_answer"}"#
        );
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json.as_str(), Some(code.as_str()));
        }
        for kind in ClientMessageKind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json.as_str(), Some(kind.as_str()));
        }
    }

    /// Serializes `message`, checks it is exactly `json`, and parses `json` back into `message`.
    fn assert_server_wire(message: ServerMessage, json: &str) {
        assert_eq!(serde_json::to_string(&message).unwrap(), json);
        assert_eq!(
            serde_json::from_str::<ServerMessage>(json).unwrap(),
            message
        );
    }

    #[test]
    fn update_subscription_parses_with_its_optional_fields() {
        let full: ClientMessage = serde_json::from_str(
            r#"{"type":"update_subscription","track_id":"TR_1","paused":false,"max_width":320,"max_height":180}"#,
        )
        .unwrap();
        assert_eq!(
            full,
            ClientMessage::UpdateSubscription {
                track_id: "TR_1".into(),
                paused: false,
                max_width: Some(320),
                max_height: Some(180),
            }
        );
        let bare: ClientMessage =
            serde_json::from_str(r#"{"type":"update_subscription","track_id":"TR_1"}"#).unwrap();
        assert_eq!(
            bare,
            ClientMessage::UpdateSubscription {
                track_id: "TR_1".into(),
                paused: false,
                max_width: None,
                max_height: None,
            }
        );
        assert_eq!(bare.kind().as_str(), "update_subscription");
    }

    #[test]
    fn active_speakers_round_trips() {
        assert_server_wire(
            ServerMessage::ActiveSpeakers {
                participant_ids: vec!["PA_1".into(), "PA_2".into()],
            },
            r#"{"type":"active_speakers","participant_ids":["PA_1","PA_2"]}"#,
        );
    }

    #[test]
    fn connection_quality_round_trips() {
        assert_server_wire(
            ServerMessage::ConnectionQuality {
                updates: vec![ParticipantQuality {
                    participant_id: "PA_1".into(),
                    quality: "poor".into(),
                }],
            },
            r#"{"type":"connection_quality","updates":[{"participant_id":"PA_1","quality":"poor"}]}"#,
        );
    }

    #[test]
    fn e2ee_messages_round_trip() {
        assert_server_wire(
            ServerMessage::E2ee {
                from: "PA_1".into(),
                data: "{\"v\":1}".into(),
            },
            r#"{"type":"e2ee","from":"PA_1","data":"{\"v\":1}"}"#,
        );
        let to_all: ClientMessage = serde_json::from_str(r#"{"type":"e2ee","data":"x"}"#).unwrap();
        assert_eq!(
            to_all,
            ClientMessage::E2ee {
                to: None,
                data: "x".into()
            }
        );
        let to_one: ClientMessage =
            serde_json::from_str(r#"{"type":"e2ee","to":"PA_2","data":"x"}"#).unwrap();
        assert_eq!(to_one.kind().as_str(), "e2ee");
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"e2ee","to":"PA_2"}"#).is_err());
    }

    #[test]
    fn video_demand_round_trips() {
        assert_server_wire(
            ServerMessage::VideoDemand {
                track_id: "TR_11".into(),
                layers: Some(0),
            },
            r#"{"type":"video_demand","track_id":"TR_11","layers":0}"#,
        );
        assert_server_wire(
            ServerMessage::VideoDemand {
                track_id: "TR_11".into(),
                layers: None,
            },
            r#"{"type":"video_demand","track_id":"TR_11"}"#,
        );
    }

    #[test]
    fn subscription_state_round_trips() {
        assert_server_wire(
            ServerMessage::SubscriptionState {
                track_id: "TR_11".into(),
                paused: false,
                reason: None,
                layer: Some(2),
                width: Some(1280),
                height: Some(720),
            },
            r#"{"type":"subscription_state","track_id":"TR_11","paused":false,"layer":2,"width":1280,"height":720}"#,
        );
        assert_server_wire(
            ServerMessage::SubscriptionState {
                track_id: "TR_11".into(),
                paused: false,
                reason: None,
                layer: None,
                width: None,
                height: None,
            },
            r#"{"type":"subscription_state","track_id":"TR_11","paused":false}"#,
        );
        for (reason, name) in [
            (PauseReason::Bandwidth, "bandwidth"),
            (PauseReason::SubscriberBudget, "subscriber_budget"),
            (PauseReason::Requested, "requested"),
            (PauseReason::RoomBudget, "room_budget"),
            (PauseReason::NoLayer, "no_layer"),
        ] {
            assert_server_wire(
                ServerMessage::SubscriptionState {
                    track_id: "TR_11".into(),
                    paused: true,
                    reason: Some(reason),
                    layer: None,
                    width: None,
                    height: None,
                },
                &format!(
                    r#"{{"type":"subscription_state","track_id":"TR_11","paused":true,"reason":"{name}"}}"#
                ),
            );
        }
        // Explicit nulls, as another relay implementation may write them, mean absent.
        let nulls: ServerMessage = serde_json::from_str(
            r#"{"type":"subscription_state","track_id":"TR_11","paused":false,"reason":null,"layer":null,"width":null,"height":null}"#,
        )
        .unwrap();
        assert_eq!(
            nulls,
            ServerMessage::SubscriptionState {
                track_id: "TR_11".into(),
                paused: false,
                reason: None,
                layer: None,
                width: None,
                height: None,
            }
        );
    }

    #[test]
    fn publish_limits_round_trip() {
        assert_server_wire(
            ServerMessage::PublishLimits {
                max_video_kbps: Some(800),
            },
            r#"{"type":"publish_limits","max_video_kbps":800}"#,
        );
        assert_server_wire(
            ServerMessage::PublishLimits {
                max_video_kbps: None,
            },
            r#"{"type":"publish_limits"}"#,
        );
        let null: ServerMessage =
            serde_json::from_str(r#"{"type":"publish_limits","max_video_kbps":null}"#).unwrap();
        assert_eq!(
            null,
            ServerMessage::PublishLimits {
                max_video_kbps: None
            }
        );
    }
}
