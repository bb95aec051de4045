//! The signaling input paths: client messages, join tokens and origins as text, and SDP through
//! the worker's real publish-offer and subscribe-answer handling.

use crate::metrics::Metrics;
use crate::node::command::{CommandReply, NodeCommand};
use crate::node::output::NodeEvent;
use crate::node::pair::{client_peer_connection, synthetic_track};
use crate::node::placement::WorkerPlace;
use crate::node::relay::{Node, NodeConfig, NodeShared};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::auth::{Grants, KeySet};
use tern_signaling::control::{JoinRequest, SessionEvent, SessionKey};
use tern_signaling::origin::OriginPolicy;
use tern_signaling::protocol::{
    ClientMessage, ServerMessage, TrackAnnouncement, TrackSource, decode_client_message,
};

/// A WebSocket text frame, an `access_token`, an `Origin` header: all untrusted text.
pub fn signaling_input(data: &[u8]) {
    // WebSocket text frames are UTF-8 by the time the session sees them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = decode_client_message(text) {
        // What decodes must encode and decode to the same message (nothing lost or invented).
        let again = serde_json::to_string(&message).expect("a decoded message encodes");
        assert_eq!(decode_client_message(&again).ok(), Some(message));
    }
    let keys = KeySet::new([("k".to_owned(), b"0123456789abcdef0123456789abcdef".to_vec())]);
    let _ = keys.verify(
        text,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    );
    let policy = OriginPolicy::from_list(&["https://app.example".to_owned()], true);
    let _ = policy.allows(text, Some("relay.example:443"));
}

/// A media node driven by hand, kept across inputs: no socket, no runtime.
struct Harness {
    node: Node,
    joins: u64,
}

fn harness() -> Option<Harness> {
    let config = NodeConfig {
        advertised: vec![SocketAddr::from(([127, 0, 0, 1], 3478))],
        ..NodeConfig::default()
    };
    let shared = NodeShared {
        metrics: Metrics::new().media.clone(),
        snapshot: Default::default(),
        place: WorkerPlace::single(config.max_rooms),
    };
    Some(Harness {
        node: Node::new(config, shared, Instant::now(), SystemTime::now()),
        joins: 0,
    })
}

impl Harness {
    fn join(&mut self, now: Instant) -> Option<SessionKey> {
        self.joins += 1;
        let request = JoinRequest {
            room: "fuzz".to_owned(),
            identity: format!("p{}", self.joins),
            name: String::new(),
            grants: Grants::participant(),
            resume_token: None,
            e2ee: false,
            via: Default::default(),
        };
        let joined = match self.node.handle_command(NodeCommand::Join(request), now) {
            CommandReply::Joined(joined) => joined.ok(),
            _ => None,
        };
        // The subscribe offer the join scheduled goes out.
        self.node.handle_timeout(now);
        joined
    }

    fn send(&mut self, session: SessionKey, message: ClientMessage, now: Instant) {
        self.node
            .handle_command(NodeCommand::Message { session, message }, now);
        // What the node does next on its own (the debounced subscribe offer, leg timers).
        self.node.handle_timeout(now + Duration::from_millis(50));
    }

    /// What the node told `session` since last asked (everything else it queued is dropped).
    fn told(&mut self, session: SessionKey) -> Vec<ServerMessage> {
        while self.node.poll_transmit().is_some() {}
        std::iter::from_fn(|| self.node.poll_event())
            .filter_map(|event| match event {
                NodeEvent::Session {
                    session: to,
                    event: SessionEvent::Message(message),
                } if to == session => Some(message),
                _ => None,
            })
            .collect()
    }

    /// Participants and legs the node holds.
    fn population(&mut self, now: Instant) -> (u64, u64) {
        match self.node.handle_command(NodeCommand::Stats, now) {
            CommandReply::Stats(s) => (s.participants, s.legs),
            _ => (u64::MAX, u64::MAX),
        }
    }
}

/// Which announcements accompany a fuzzed publish offer.
fn announcements(selector: u8) -> Vec<TrackAnnouncement> {
    let camera = |mid: &str| TrackAnnouncement {
        mid: mid.to_owned(),
        source: TrackSource::Camera,
    };
    let microphone = |mid: &str| TrackAnnouncement {
        mid: mid.to_owned(),
        source: TrackSource::Microphone,
    };
    match selector % 4 {
        0 => Vec::new(),
        1 => vec![microphone("0"), camera("1")],
        2 => vec![camera("0"), microphone("1")],
        _ => vec![camera("0"), camera("0")],
    }
}

/// The first byte picks the path (even: a publish offer, odd: the answer to the relay's
/// subscribe offer) and the announcements; the rest is the SDP. Each input joins a new
/// participant, sends the message, and leaves; nothing may outlive the participant.
pub fn sdp_offer_and_answer(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let sdp = String::from_utf8_lossy(rest).into_owned();
    HARNESS.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = harness();
        }
        let Some(h) = slot.as_mut() else {
            return;
        };
        let now = Instant::now();
        let Some(session) = h.join(now) else {
            return;
        };
        let message = if selector.is_multiple_of(2) {
            ClientMessage::PublishOffer {
                sdp,
                tracks: announcements(selector >> 1),
            }
        } else {
            // The join scheduled the subscribe leg's first offer; this answers it.
            ClientMessage::SubscribeAnswer { sdp }
        };
        h.send(session, message, now);
        h.told(session);
        h.send(session, ClientMessage::Leave {}, now);
        h.told(session);
        assert_eq!(
            h.population(now),
            (0, 0),
            "a participant or leg outlived its leave"
        );
    });
}

/// Well-formed inputs for [`sdp_offer_and_answer`] made by a real WebRTC stack: publish offers
/// (audio and video; video only) and an answer to the relay's subscribe offer. Fuzzing starts
/// from these, and the corpus replay checks the relay accepts them.
pub fn sdp_seeds() -> Vec<Vec<u8>> {
    let now = Instant::now();
    let mut seeds = Vec::new();
    // Selector 2: announcing microphone "0" and camera "1"; 0: no announcements.
    for (selector, tracks) in [
        (
            2,
            vec![
                synthetic_track(RtpCodecKind::Audio, 1, "audio/opus", 48_000, 2),
                synthetic_track(RtpCodecKind::Video, 2, "video/VP8", 90_000, 0),
            ],
        ),
        (
            0,
            vec![synthetic_track(
                RtpCodecKind::Video,
                3,
                "video/VP8",
                90_000,
                0,
            )],
        ),
    ] {
        let Ok(mut client) = client_peer_connection(now) else {
            continue;
        };
        if tracks.into_iter().any(|t| client.add_track(t).is_err()) {
            continue;
        }
        if let Ok(offer) = client.create_offer(None) {
            let mut seed = vec![selector];
            seed.extend_from_slice(offer.sdp.as_bytes());
            seeds.push(seed);
        }
    }
    if let Some(answer) = subscribe_answer_seed(now) {
        let mut seed = vec![1];
        seed.extend_from_slice(answer.as_bytes());
        seeds.push(seed);
    }
    seeds
}

/// A client's answer to the subscribe offer the relay sends at join.
fn subscribe_answer_seed(now: Instant) -> Option<String> {
    let mut h = harness()?;
    let session = h.join(now)?;
    let offer = h.told(session).into_iter().find_map(|m| match m {
        ServerMessage::SubscribeOffer { sdp, .. } => Some(sdp),
        _ => None,
    });
    let mut client = client_peer_connection(now).ok()?;
    client
        .set_remote_description(now, RTCSessionDescription::offer(offer?).ok()?)
        .ok()?;
    let answer = client.create_answer(None).ok()?;
    Some(answer.sdp)
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_signaling::protocol::ErrorCode;

    /// Runs one input through the harness and returns what the participant was told.
    fn outcome(selector: u8, sdp: &str) -> Vec<ServerMessage> {
        let mut h = harness().expect("harness");
        let now = Instant::now();
        let session = h.join(now).expect("joined");
        h.told(session);
        let message = if selector.is_multiple_of(2) {
            ClientMessage::PublishOffer {
                sdp: sdp.to_owned(),
                tracks: announcements(selector >> 1),
            }
        } else {
            ClientMessage::SubscribeAnswer {
                sdp: sdp.to_owned(),
            }
        };
        h.send(session, message, now);
        h.told(session)
    }

    #[test]
    fn the_sdp_seeds_are_accepted_and_garbage_is_refused() {
        let seeds = sdp_seeds();
        assert_eq!(seeds.len(), 3, "every seed was made");
        for seed in &seeds[..2] {
            let told = outcome(seed[0], std::str::from_utf8(&seed[1..]).unwrap());
            assert!(
                told.iter()
                    .any(|m| matches!(m, ServerMessage::PublishAnswer { .. })),
                "{told:?}"
            );
        }
        let answer = &seeds[2];
        let told = outcome(answer[0], std::str::from_utf8(&answer[1..]).unwrap());
        assert!(
            !told
                .iter()
                .any(|m| matches!(m, ServerMessage::Error { .. })),
            "{told:?}"
        );
        let told = outcome(0, "v=0");
        assert!(
            told.iter().any(|m| matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::InvalidSdp,
                    ..
                }
            )),
            "{told:?}"
        );
    }
}
