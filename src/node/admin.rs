//! The node's side of the admin API: room policies, summaries, and operator actions on
//! participants and tracks. Requests arrive as [`NodeCommand::Admin`](super::command::NodeCommand).

use super::command::{AdminReply, AdminRequest};
use super::participants::{RoomRefused, track_kind, wire_source};
use super::relay::Node;
use super::state::RoomEntry;
use super::state::RoomKey;
use crate::config::{MAX_ROOM_TIMEOUT_S, MIN_ROOM_TIMEOUT_S};
use crate::media::allocator::Target;
use crate::media::codec::MediaKind;
use crate::media::ids::{ParticipantId, RoomId, TrackId};
use crate::media::room::MemberState;
use crate::media::room::Publication;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tern_signaling::admin::{
    AdminError, CreateRoom, MuteTrack, ParticipantSummary, RoomBandwidthSummary, RoomPolicy,
    RoomSummary, SubscriptionSummary, TrackSummary,
};
use tern_signaling::protocol::{LeaveReason, ParticipantState, ServerMessage};
use tracing::info;

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A policy the relay can run a room with.
fn checked(policy: RoomPolicy) -> Result<RoomPolicy, AdminError> {
    if policy.max_participants == 0 {
        return Err(AdminError::Invalid("max_participants must be at least 1"));
    }
    let timeouts = MIN_ROOM_TIMEOUT_S..=MAX_ROOM_TIMEOUT_S;
    if !timeouts.contains(&policy.empty_timeout_s)
        || !timeouts.contains(&policy.departure_timeout_s)
    {
        return Err(AdminError::Invalid(
            "room timeouts are 1 to 604800 s (a week)",
        ));
    }
    Ok(policy)
}

impl Node {
    pub(super) fn admin(
        &mut self,
        request: AdminRequest,
        now: Instant,
    ) -> Result<AdminReply, AdminError> {
        match request {
            AdminRequest::List => {
                let mut rooms: Vec<RoomSummary> = self
                    .rooms
                    .keys()
                    .filter_map(|key| self.room_summary(*key, now))
                    .collect();
                rooms.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(AdminReply::Rooms(rooms))
            }
            AdminRequest::Get(name) => {
                let key = self.room_named(&name)?;
                self.summary_reply(key, now)
            }
            AdminRequest::Create(create) => self.create_room_by_api(create, now),
            AdminRequest::Patch(name, patch) => {
                let key = self.room_named(&name)?;
                let entry = self.rooms.get_mut(&key).ok_or(AdminError::NoSuchRoom)?;
                let policy = checked(patch.over(&entry.policy))?;
                let cap_changed = policy.max_publisher_kbps != entry.policy.max_publisher_kbps;
                entry.set_policy(policy, now);
                info!(room = %name, policy = ?entry.policy, "room policy changed");
                if cap_changed {
                    self.tell_publish_limits(key);
                }
                self.process_room_outputs(key, now);
                self.arm_room_timer(key, now);
                self.summary_reply(key, now)
            }
            AdminRequest::Delete(name) => {
                let key = self.room_named(&name)?;
                self.delete_room(key, now);
                info!(room = %name, "room deleted by an operator");
                Ok(AdminReply::Done)
            }
            AdminRequest::Remove { room, identity } => {
                let key = self.room_named(&room)?;
                let id = self.member_named(key, &identity)?;
                info!(%room, %identity, "participant removed by an operator");
                self.remove_participant(id, LeaveReason::Removed, now);
                Ok(AdminReply::Done)
            }
            AdminRequest::Mute {
                room,
                identity,
                mute,
            } => {
                let key = self.room_named(&room)?;
                let id = self.member_named(key, &identity)?;
                self.admin_mute(key, id, &mute, now)?;
                info!(%room, %identity, track = %mute.track_id, muted = mute.muted, "track muted by an operator");
                Ok(AdminReply::Done)
            }
        }
    }

    fn room_named(&self, name: &str) -> Result<RoomKey, AdminError> {
        self.room_keys
            .get(&RoomId(name.to_owned()))
            .copied()
            .ok_or(AdminError::NoSuchRoom)
    }

    fn member_named(&self, room: RoomKey, identity: &str) -> Result<ParticipantId, AdminError> {
        self.members_of(room)
            .find(|p| p.identity == identity)
            .map(|p| p.id)
            .ok_or(AdminError::NoSuchParticipant)
    }

    fn summary_reply(&self, key: RoomKey, now: Instant) -> Result<AdminReply, AdminError> {
        self.room_summary(key, now)
            .map(AdminReply::Room)
            .ok_or(AdminError::NoSuchRoom)
    }

    fn create_room_by_api(
        &mut self,
        create: CreateRoom,
        now: Instant,
    ) -> Result<AdminReply, AdminError> {
        let name = RoomId(create.name.clone());
        if self.room_keys.contains_key(&name) {
            return Err(AdminError::RoomExists);
        }
        let policy = checked(create.policy().over(&self.config.room_defaults))?;
        let key = self
            .create_room(name, policy, now)
            .map_err(|refused| match refused {
                RoomRefused::NodeFull => AdminError::TooManyRooms,
                RoomRefused::ElsewhereNow => AdminError::RoomExists,
            })?;
        if let Some(entry) = self.rooms.get_mut(&key) {
            entry.created_by_api = true;
        }
        self.summary_reply(key, now)
    }

    /// Everybody leaves with `room_deleted`, then the room is gone.
    fn delete_room(&mut self, key: RoomKey, now: Instant) {
        let members: Vec<ParticipantId> = self.members_of(key).map(|p| p.id).collect();
        for id in members {
            self.remove_participant(id, LeaveReason::RoomDeleted, now);
        }
        self.close_room(key, now);
    }

    fn admin_mute(
        &mut self,
        room: RoomKey,
        owner: ParticipantId,
        mute: &MuteTrack,
        now: Instant,
    ) -> Result<(), AdminError> {
        let track = TrackId::parse(&mute.track_id).ok_or(AdminError::NoSuchTrack)?;
        let entry = self.rooms.get_mut(&room).ok_or(AdminError::NoSuchRoom)?;
        if entry.room.publication(track).map(|p| p.info.owner) != Some(owner) {
            return Err(AdminError::NoSuchTrack);
        }
        entry
            .room
            .set_admin_muted(track, mute.muted, now)
            .map_err(|_| AdminError::NoSuchTrack)?;
        // An operator's unmute leaves a publisher's own mute in place.
        let muted = entry.room.publication(track).is_some_and(|p| p.muted());
        // The publisher hears it too: its client shows the track as muted.
        self.broadcast(
            room,
            None,
            ServerMessage::TrackMuted {
                track_id: track.to_string(),
                participant_id: owner.to_string(),
                muted,
                admin_muted: mute.muted,
            },
        );
        self.process_room_outputs(room, now);
        Ok(())
    }

    fn room_summary(&self, key: RoomKey, now: Instant) -> Option<RoomSummary> {
        let entry = self.rooms.get(&key)?;
        let mut participants: Vec<ParticipantSummary> = self
            .members_of(key)
            .filter_map(|p| {
                let member = entry.room.member(p.id)?;
                let mut tracks: Vec<TrackSummary> = entry
                    .room
                    .publications_of(p.id)
                    .map(|publication| TrackSummary {
                        id: publication.id.to_string(),
                        kind: track_kind(publication.kind()),
                        source: wire_source(publication.info.source),
                        codec: publication.info.codec.mime_type().to_owned(),
                        muted: publication.muted(),
                        admin_muted: publication.admin_muted,
                        bitrate_bps: publication.bitrate_bps(now),
                    })
                    .collect();
                tracks.sort_by(|a, b| a.id.cmp(&b.id));
                let mut subscriptions: Vec<SubscriptionSummary> = entry
                    .room
                    .publications()
                    .filter(|publication| publication.kind() == MediaKind::Video)
                    .filter(|publication| {
                        publication
                            .subscriptions()
                            .iter()
                            .any(|s| s.subscriber == p.id && s.sink().is_some())
                    })
                    .map(|publication| subscription_summary(entry, publication, p.id))
                    .collect();
                subscriptions.sort_by(|a, b| a.track_id.cmp(&b.track_id));
                Some(ParticipantSummary {
                    id: p.id.to_string(),
                    identity: p.identity.clone(),
                    name: p.name.clone(),
                    state: match member.state {
                        MemberState::Active => ParticipantState::Active,
                        MemberState::Reconnecting { .. } => ParticipantState::Reconnecting,
                    },
                    joined_at: unix_seconds(p.joined_at),
                    tracks,
                    estimate_bps: entry.room.bandwidth().estimate_bps(p.id),
                    subscriptions,
                    e2ee: p.e2ee,
                    via: p.via.as_str().to_owned(),
                })
            })
            .collect();
        participants.sort_by(|a, b| a.identity.cmp(&b.identity));
        Some(RoomSummary {
            name: entry.room.id().0.clone(),
            policy: entry.policy.clone(),
            created_at: unix_seconds(entry.created_at),
            created_by_api: entry.created_by_api,
            worker: self.place.index,
            participants,
            bandwidth: RoomBandwidthSummary {
                video_bps: entry.room.bandwidth().room_video_bps(),
                held_at_budget: entry.room.bandwidth().held_at_budget(),
            },
        })
    }
}

/// What bandwidth control decided for one subscription.
fn subscription_summary(
    entry: &RoomEntry,
    publication: &Publication,
    subscriber: ParticipantId,
) -> SubscriptionSummary {
    let mut summary = SubscriptionSummary {
        track_id: publication.id.to_string(),
        paused: false,
        reason: None,
        layer: None,
        width: None,
        height: None,
    };
    match entry.room.bandwidth().target(publication.id, subscriber) {
        Some(Target::Layer(rank)) => {
            // The allocator's rank may be a temporal step of a layer: the summary names the layer.
            let slot = publication.step(rank).map(|(slot, _)| slot);
            summary.layer = slot.and_then(|slot| publication.layers.rank_of(slot));
            let size = slot
                .and_then(|slot| publication.layers.layer(slot))
                .and_then(|layer| layer.resolution);
            summary.width = size.map(|s| u32::from(s.0));
            summary.height = size.map(|s| u32::from(s.1));
        }
        Some(Target::Paused(reason)) => {
            summary.paused = true;
            summary.reason = super::relay::wire_pause_reason(reason);
        }
        None => {}
    }
    summary
}
