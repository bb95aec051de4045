//! The relay's side of [`RoomControl`]: signaling sessions talk to each media worker's driver
//! through that worker's bounded command channel, routed by room (see `placement`) or by the
//! session's participant id; the worker answers on each session's own bounded event channel.

#[cfg(feature = "fault-injection")]
use super::command::LegReport;
use super::command::{AdminReply, AdminRequest};
use super::load::over_limit;
use super::placement::Placement;
use super::placement::WorkerPlace;
use super::resume::KnownResumeTokens;
use crate::metrics::{NodeSnapshots, NodeStats};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tern_signaling::admin::{AdminError, CreateRoom, MuteTrack, PatchRoom, RoomAdmin, RoomSummary};
use tern_signaling::control::{
    Admission, Disconnect, JoinRefusal, JoinRequest, RoomControl, SessionKey, ViewFollow,
};
use tern_signaling::limits::{Limit, LimitCounters};
use tern_signaling::protocol::{ClientMessage, ErrorCode};
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
    /// A WHEP viewer's offer, answered on `reply`.
    View {
        session: SessionKey,
        offer: String,
        follow: ViewFollow,
        reply: oneshot::Sender<Result<String, (ErrorCode, String)>>,
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

/// A cheap handle to the media workers, cloned into every signaling session: it routes each
/// command to the worker that holds its room or session.
#[derive(Clone)]
pub struct RelayControl {
    workers: Arc<[mpsc::Sender<Command>]>,
    placement: Arc<Placement>,
    /// Each worker's published state: participants are the load new rooms are placed by.
    snapshots: NodeSnapshots,
    draining: Arc<AtomicBool>,
    resume_tokens: Arc<[KnownResumeTokens]>,
    limits: LimitCounters,
    /// A worker over this load (the busy share of its time, `media.max_worker_load_percent`) takes no
    /// new participants; `None`: no limit.
    max_worker_load: Option<f64>,
}

/// How often a join is routed again after its worker found the room had moved (it closed there
/// and was placed elsewhere while the join was queued): more than once means a room that keeps
/// closing and reopening under the join, which then fails as `unavailable`.
const JOIN_ROUTES: usize = 3;

/// What the relay's control needs of each worker.
pub struct WorkerHandle {
    pub commands: mpsc::Sender<Command>,
    pub resume_tokens: KnownResumeTokens,
}

impl RelayControl {
    /// `draining`: while set, joins other than resumes are refused with `unavailable`;
    /// `max_worker_load`: joins other than resumes to a worker over it are refused too.
    pub fn new(
        workers: Vec<WorkerHandle>,
        placement: Arc<Placement>,
        snapshots: NodeSnapshots,
        draining: Arc<AtomicBool>,
        limits: LimitCounters,
        max_worker_load: Option<f64>,
    ) -> Self {
        RelayControl {
            resume_tokens: workers.iter().map(|w| w.resume_tokens.clone()).collect(),
            workers: workers.into_iter().map(|w| w.commands).collect(),
            placement,
            snapshots,
            draining,
            limits,
            max_worker_load,
        }
    }

    /// The whole relay's state, summed over workers; `None` when a worker is gone.
    pub async fn stats(&self) -> Option<NodeStats> {
        let mut sum = NodeStats::default();
        for worker in self.workers.iter() {
            let (reply, answer) = oneshot::channel();
            worker.send(Command::Stats { reply }).await.ok()?;
            sum = sum + answer.await.ok()?;
        }
        Some(sum)
    }

    /// Every worker is running.
    pub fn is_running(&self) -> bool {
        self.workers.iter().all(|worker| !worker.is_closed())
    }

    /// The worker holding `room`, if any.
    pub fn worker_of_room(&self, room: &str) -> Option<usize> {
        self.placement.find(room)
    }

    fn worker_of_session(&self, session: SessionKey) -> &mpsc::Sender<Command> {
        &self.workers[WorkerPlace::worker_of(session.participant, self.workers.len())]
    }

    /// Test hook: the transport state of every leg.
    #[cfg(feature = "fault-injection")]
    pub async fn leg_reports(&self) -> Vec<LegReport> {
        let mut reports = Vec::new();
        for worker in self.workers.iter() {
            let (reply, answer) = oneshot::channel();
            if worker.send(Command::LegReports { reply }).await.is_ok() {
                reports.extend(answer.await.unwrap_or_default());
            }
        }
        reports
    }

    fn load(&self) -> Vec<u64> {
        self.snapshots
            .per_worker()
            .map(|s| s.participants)
            .collect()
    }

    /// Which workers are over their load limit (all false without one).
    fn busy(&self) -> Vec<bool> {
        self.snapshots
            .loads()
            .map(|load| over_limit(load, self.max_worker_load))
            .collect()
    }
}

impl RoomControl for RelayControl {
    async fn join(&self, request: JoinRequest) -> Result<Admission, JoinRefusal> {
        if self.draining.load(Ordering::Relaxed) && request.resume_token.is_none() {
            return Err(JoinRefusal::Unavailable);
        }
        let resume = request.resume_token.is_some();
        for _ in 0..JOIN_ROUTES {
            let busy = self.busy();
            let Ok(worker) = self.placement.route(&request.room, &self.load(), &busy) else {
                self.limits.breached(Limit::NodeRooms);
                return Err(JoinRefusal::TooManyRooms);
            };
            // A saturated worker would take the join and then fail it (its socket overflows,
            // ICE and DTLS time out): refused now, the client can retry or go elsewhere. A
            // resume is a participant the worker already carries.
            if busy.get(worker).copied().unwrap_or(false) && !resume {
                self.placement.forget_unclaimed(&request.room, worker);
                self.limits.breached(Limit::WorkerLoad);
                return Err(JoinRefusal::Overloaded);
            }
            let (reply, answer) = oneshot::channel();
            let command = Command::Join {
                request: request.clone(),
                reply,
            };
            // Waiting for queue space throttles joins when the worker is saturated; the worker
            // itself never waits on a session.
            if self.workers[worker].send(command).await.is_err() {
                self.placement.forget_unclaimed(&request.room, worker);
                return Err(JoinRefusal::Unavailable);
            }
            match answer.await.unwrap_or(Err(JoinRefusal::Unavailable)) {
                Ok(admission) => return Ok(admission),
                Err(JoinRefusal::Unavailable)
                    if self
                        .placement
                        .find(&request.room)
                        .is_some_and(|now| now != worker) =>
                {
                    continue;
                }
                Err(refusal) => {
                    self.placement.forget_unclaimed(&request.room, worker);
                    return Err(refusal);
                }
            }
        }
        Err(JoinRefusal::Unavailable)
    }

    async fn message(&self, session: SessionKey, message: ClientMessage) {
        let _ = self
            .worker_of_session(session)
            .send(Command::Message { session, message })
            .await;
    }

    async fn view(
        &self,
        session: SessionKey,
        offer: String,
        follow: ViewFollow,
    ) -> Result<String, (ErrorCode, String)> {
        let (reply, answer) = oneshot::channel();
        let command = Command::View {
            session,
            offer,
            follow,
            reply,
        };
        let gone = || {
            (
                ErrorCode::Unavailable,
                "the relay is not running".to_owned(),
            )
        };
        self.worker_of_session(session)
            .send(command)
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn disconnected(&self, session: SessionKey, how: Disconnect) {
        let _ = self
            .worker_of_session(session)
            .send(Command::Disconnected { session, how })
            .await;
    }

    fn knows_resume_token(&self, resume_token: &str) -> bool {
        self.resume_tokens
            .iter()
            .any(|tokens| tokens.contains(resume_token))
    }
}

impl RelayControl {
    async fn admin_on(
        &self,
        worker: usize,
        request: AdminRequest,
    ) -> Result<AdminReply, AdminError> {
        let (reply, answer) = oneshot::channel();
        self.workers[worker]
            .send(Command::Admin { request, reply })
            .await
            .map_err(|_| AdminError::Unavailable)?;
        answer.await.unwrap_or(Err(AdminError::Unavailable))
    }

    /// A request about an existing room, sent to the worker holding it.
    async fn admin(&self, room: &str, request: AdminRequest) -> Result<AdminReply, AdminError> {
        let worker = self.placement.find(room).ok_or(AdminError::NoSuchRoom)?;
        self.admin_on(worker, request).await
    }

    async fn admin_room(
        &self,
        room: &str,
        request: AdminRequest,
    ) -> Result<RoomSummary, AdminError> {
        match self.admin(room, request).await? {
            AdminReply::Room(room) => Ok(room),
            _ => Err(AdminError::Unavailable),
        }
    }

    async fn admin_done(&self, room: &str, request: AdminRequest) -> Result<(), AdminError> {
        self.admin(room, request).await.map(|_| ())
    }
}

impl RoomAdmin for RelayControl {
    async fn list_rooms(&self) -> Result<Vec<RoomSummary>, AdminError> {
        let mut all = Vec::new();
        for worker in 0..self.workers.len() {
            match self.admin_on(worker, AdminRequest::List).await? {
                AdminReply::Rooms(rooms) => all.extend(rooms),
                _ => return Err(AdminError::Unavailable),
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn get_room(&self, name: String) -> Result<RoomSummary, AdminError> {
        self.admin_room(&name.clone(), AdminRequest::Get(name))
            .await
    }

    async fn create_room(&self, room: CreateRoom) -> Result<RoomSummary, AdminError> {
        let name = room.name.clone();
        // An empty room costs no worker anything: placed by participants alone.
        let Ok(worker) = self.placement.route(&name, &self.load(), &[]) else {
            self.limits.breached(Limit::NodeRooms);
            return Err(AdminError::TooManyRooms);
        };
        let created = self.admin_on(worker, AdminRequest::Create(room)).await;
        match created {
            Ok(AdminReply::Room(summary)) => Ok(summary),
            Ok(_) => Err(AdminError::Unavailable),
            Err(err) => {
                self.placement.forget_unclaimed(&name, worker);
                Err(err)
            }
        }
    }

    async fn patch_room(&self, name: String, patch: PatchRoom) -> Result<RoomSummary, AdminError> {
        self.admin_room(&name.clone(), AdminRequest::Patch(name, patch))
            .await
    }

    async fn delete_room(&self, name: String) -> Result<(), AdminError> {
        self.admin_done(&name.clone(), AdminRequest::Delete(name))
            .await
    }

    async fn remove_participant(&self, room: String, identity: String) -> Result<(), AdminError> {
        self.admin_done(&room.clone(), AdminRequest::Remove { room, identity })
            .await
    }

    async fn mute_track(
        &self,
        room: String,
        identity: String,
        mute: MuteTrack,
    ) -> Result<(), AdminError> {
        self.admin_done(
            &room.clone(),
            AdminRequest::Mute {
                room,
                identity,
                mute,
            },
        )
        .await
    }
}
