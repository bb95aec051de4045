//! The relay's side of [`RoomControl`]: signaling sessions talk to the media worker through one
//! bounded command channel; the worker answers on each session's own bounded event channel.

use crate::metrics::NodeStats;
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
}

/// A cheap handle to the worker, cloned into every signaling session.
#[derive(Clone)]
pub struct RelayControl {
    commands: mpsc::Sender<Command>,
}

impl RelayControl {
    pub fn new(commands: mpsc::Sender<Command>) -> Self {
        RelayControl { commands }
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
}

impl RoomControl for RelayControl {
    async fn join(&self, request: JoinRequest) -> Result<Admission, JoinRefusal> {
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
}
