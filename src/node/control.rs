//! The relay's side of [`RoomControl`]: signaling sessions talk to the media node's driver
//! through one bounded command channel; the node answers on each session's own bounded event
//! channel.

#[cfg(feature = "fault-injection")]
use super::command::LegReport;
use super::command::{AdminReply, AdminRequest};
use super::resume::KnownResumeTokens;
use crate::metrics::NodeStats;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tern_signaling::admin::{AdminError, CreateRoom, MuteTrack, PatchRoom, RoomAdmin, RoomSummary};
use tern_signaling::control::{
    Admission, Disconnect, JoinRefusal, JoinRequest, RoomControl, SessionKey,
};
use tern_signaling::protocol::ClientMessage;
use tokio::sync::{mpsc, oneshot};

pub enum Command {
    Join {
        request: JoinRequest,
        reply: oneshot::Sender<Result<Admission, JoinRefusal>>,
    },
    Message {
        session: SessionKey,
        message: ClientMessage,
    },
    Disconnected {
        session: SessionKey,
        how: Disconnect,
    },
    Stats {
        reply: oneshot::Sender<NodeStats>,
    },
    Admin {
        request: AdminRequest,
        reply: oneshot::Sender<Result<AdminReply, AdminError>>,
    },
    /// Test hook: the transport state of every leg.
    #[cfg(feature = "fault-injection")]
    LegReports {
        reply: oneshot::Sender<Vec<LegReport>>,
    },
}

/// A cheap handle to the worker, cloned into every signaling session.
#[derive(Clone)]
pub struct RelayControl {
    commands: mpsc::Sender<Command>,
    draining: Arc<AtomicBool>,
    resume_tokens: KnownResumeTokens,
}

impl RelayControl {
    /// `draining`: while set, joins other than resumes are refused with `unavailable`.
    pub fn new(
        commands: mpsc::Sender<Command>,
        draining: Arc<AtomicBool>,
        resume_tokens: KnownResumeTokens,
    ) -> Self {
        RelayControl {
            commands,
            draining,
            resume_tokens,
        }
    }

    /// The worker's state, for the metrics gauges; `None` when the worker is gone.
    pub async fn stats(&self) -> Option<NodeStats> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Stats { reply }).await.ok()?;
        answer.await.ok()
    }

    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Test hook: the transport state of every leg.
    #[cfg(feature = "fault-injection")]
    pub async fn leg_reports(&self) -> Vec<LegReport> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::LegReports { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

impl RoomControl for RelayControl {
    async fn join(&self, request: JoinRequest) -> Result<Admission, JoinRefusal> {
        if self.draining.load(Ordering::Relaxed) && request.resume_token.is_none() {
            return Err(JoinRefusal::Unavailable);
        }
        let (reply, answer) = oneshot::channel();
        // Waiting for queue space throttles joins when the worker is saturated; the worker
        // itself never waits on a session.
        if self
            .commands
            .send(Command::Join { request, reply })
            .await
            .is_err()
        {
            return Err(JoinRefusal::Unavailable);
        }
        answer.await.unwrap_or(Err(JoinRefusal::Unavailable))
    }

    async fn message(&self, session: SessionKey, message: ClientMessage) {
        let _ = self
            .commands
            .send(Command::Message { session, message })
            .await;
    }

    async fn disconnected(&self, session: SessionKey, how: Disconnect) {
        let _ = self
            .commands
            .send(Command::Disconnected { session, how })
            .await;
    }

    fn knows_resume_token(&self, resume_token: &str) -> bool {
        self.resume_tokens.contains(resume_token)
    }
}

impl RelayControl {
    async fn admin(&self, request: AdminRequest) -> Result<AdminReply, AdminError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Admin { request, reply })
            .await
            .map_err(|_| AdminError::Unavailable)?;
        answer.await.unwrap_or(Err(AdminError::Unavailable))
    }

    async fn admin_room(&self, request: AdminRequest) -> Result<RoomSummary, AdminError> {
        match self.admin(request).await? {
            AdminReply::Room(room) => Ok(room),
            _ => Err(AdminError::Unavailable),
        }
    }

    async fn admin_done(&self, request: AdminRequest) -> Result<(), AdminError> {
        self.admin(request).await.map(|_| ())
    }
}

impl RoomAdmin for RelayControl {
    async fn list_rooms(&self) -> Result<Vec<RoomSummary>, AdminError> {
        match self.admin(AdminRequest::List).await? {
            AdminReply::Rooms(rooms) => Ok(rooms),
            _ => Err(AdminError::Unavailable),
        }
    }

    async fn get_room(&self, name: String) -> Result<RoomSummary, AdminError> {
        self.admin_room(AdminRequest::Get(name)).await
    }

    async fn create_room(&self, room: CreateRoom) -> Result<RoomSummary, AdminError> {
        self.admin_room(AdminRequest::Create(room)).await
    }

    async fn patch_room(&self, name: String, patch: PatchRoom) -> Result<RoomSummary, AdminError> {
        self.admin_room(AdminRequest::Patch(name, patch)).await
    }

    async fn delete_room(&self, name: String) -> Result<(), AdminError> {
        self.admin_done(AdminRequest::Delete(name)).await
    }

    async fn remove_participant(&self, room: String, identity: String) -> Result<(), AdminError> {
        self.admin_done(AdminRequest::Remove { room, identity })
            .await
    }

    async fn mute_track(
        &self,
        room: String,
        identity: String,
        mute: MuteTrack,
    ) -> Result<(), AdminError> {
        self.admin_done(AdminRequest::Mute {
            room,
            identity,
            mute,
        })
        .await
    }
}
