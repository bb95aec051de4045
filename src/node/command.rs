//! What signaling and operators ask of a node, as plain data: the node answers each command at
//! once (`Node::handle_command`), and everything that follows comes out as events.

use crate::metrics::{CommandKind, NodeStats};
use tern_signaling::admin::{AdminError, CreateRoom, MuteTrack, PatchRoom, RoomSummary};
use tern_signaling::control::{Disconnect, JoinRefusal, JoinRequest, SessionKey, ViewFollow};
use tern_signaling::protocol::{ClientMessage, ErrorCode};

#[derive(Debug)]
pub enum NodeCommand {
    /// A client asks to join (or, with a resume token, to resume). Answered with the key of
    /// its new session; the `joined` message follows as an event.
    Join(JoinRequest),
    Message {
        session: SessionKey,
        message: ClientMessage,
    },
    /// A WHEP viewer's offer; answered with the relay's answer SDP.
    View {
        session: SessionKey,
        offer: String,
        follow: ViewFollow,
    },
    Disconnected {
        session: SessionKey,
        how: Disconnect,
    },
    /// The session could not take an event (it stopped reading, or is gone): the participant
    /// is reconnecting from now on.
    SessionLost(SessionKey),
    Admin(AdminRequest),
    Stats,
    /// Test hook: the transport state of every leg.
    #[cfg(feature = "fault-injection")]
    LegReports,
}

impl NodeCommand {
    /// What kind of work this is, for `tern_worker_command_seconds`.
    pub fn kind(&self) -> CommandKind {
        match self {
            NodeCommand::Join(_) => CommandKind::Join,
            NodeCommand::Message { message, .. } => match message {
                ClientMessage::PublishOffer { .. } => CommandKind::PublishOffer,
                ClientMessage::SubscribeAnswer { .. } => CommandKind::SubscribeAnswer,
                ClientMessage::Trickle { .. } => CommandKind::Trickle,
                _ => CommandKind::OtherMessage,
            },
            NodeCommand::View { .. } => CommandKind::ViewOffer,
            NodeCommand::Disconnected { .. } | NodeCommand::SessionLost(_) => {
                CommandKind::Disconnected
            }
            _ => CommandKind::Admin,
        }
    }
}

#[derive(Debug)]
pub enum CommandReply {
    Joined(Result<SessionKey, JoinRefusal>),
    Admin(Result<AdminReply, AdminError>),
    Stats(NodeStats),
    Viewed(Result<String, (ErrorCode, String)>),
    #[cfg(feature = "fault-injection")]
    LegReports(Vec<LegReport>),
    /// Nothing to answer (messages and disconnects answer through session events).
    Done,
}

/// One admin API call.
#[derive(Debug)]
pub enum AdminRequest {
    List,
    Get(String),
    Create(CreateRoom),
    Patch(String, PatchRoom),
    Delete(String),
    Remove {
        room: String,
        identity: String,
    },
    Mute {
        room: String,
        identity: String,
        mute: MuteTrack,
    },
}

#[derive(Debug)]
pub enum AdminReply {
    Rooms(Vec<RoomSummary>),
    Room(RoomSummary),
    Done,
}

/// What a test can learn about one leg's transport.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone)]
pub struct LegReport {
    pub participant: String,
    pub role: &'static str,
    /// `controlled` or `controlling`.
    pub ice_role: String,
    pub selected_pair_changes: u32,
    pub srtp_cipher: String,
}
