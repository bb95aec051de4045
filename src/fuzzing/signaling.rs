//! The signaling input paths: client messages, join tokens and origins as text, and SDP through
//! the worker's real publish-offer and subscribe-answer handling.

use crate::metrics::Metrics;
use crate::node::control::Command;
use crate::node::pair::client_peer_connection;
use crate::node::relay::{Node, NodeConfig};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::auth::{Grants, KeySet};
use tern_signaling::control::{Admission, JoinRequest, SessionEvent, SessionKey};
use tern_signaling::origin::OriginPolicy;
use tern_signaling::protocol::{
    ClientMessage, ServerMessage, TrackAnnouncement, TrackSource, decode_client_message,
};
use tokio::sync::{mpsc, oneshot};

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

/// A media worker driven by hand (no socket loop), kept across inputs.
struct Harness {
    runtime: tokio::runtime::Runtime,
    worker: Node,
    joins: u64,
}

fn harness() -> Option<Harness> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let socket = runtime
        .block_on(tokio::net::UdpSocket::bind("127.0.0.1:0"))
        .ok()?;
    let addr = socket.local_addr().ok()?;
    // The worker is driven through `handle`; its command channel stays empty.
    let (_commands, commands_rx) = mpsc::channel(1);
    let config = NodeConfig {
        advertised: vec![addr],
        ..NodeConfig::default()
    };
    let worker = {
        let _entered = runtime.enter();
        Node::new(config, socket, commands_rx, Metrics::new().media.clone()).ok()?
    };
    Some(Harness {
        runtime,
        worker,
        joins: 0,
    })
}

impl Harness {
    fn join(&mut self, now: Instant) -> Option<Admission> {
        self.joins += 1;
        let (reply, mut answer) = oneshot::channel();
        let request = JoinRequest {
            room: "fuzz".to_owned(),
            identity: format!("p{}", self.joins),
            name: String::new(),
            grants: Grants::participant(),
            resume_token: None,
        };
        self.worker.handle(Command::Join { request, reply }, now);
        answer.try_recv().ok()?.ok()
    }

    fn send(&mut self, session: SessionKey, message: ClientMessage, now: Instant) {
        self.worker
            .handle(Command::Message { session, message }, now);
    }

    /// Participants and legs the worker holds.
    fn population(&mut self, now: Instant) -> (u64, u64) {
        let (reply, mut answer) = oneshot::channel();
        self.worker.handle(Command::Stats { reply }, now);
        answer
            .try_recv()
            .map(|s| (s.participants, s.legs))
            .unwrap_or((u64::MAX, u64::MAX))
    }
}

fn drain(events: &mut mpsc::Receiver<SessionEvent>) {
    while events.try_recv().is_ok() {}
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
        let runtime = h.runtime.handle().clone();
        let _entered = runtime.enter();
        let now = Instant::now();
        let Some(Admission {
            session,
            mut events,
        }) = h.join(now)
        else {
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
        drain(&mut events);
        h.send(session, ClientMessage::Leave {}, now);
        drain(&mut events);
        assert_eq!(
            h.population(now),
            (0, 0),
            "a participant or leg outlived its leave"
        );
    });
}

fn track(kind: RtpCodecKind, mime: &str, ssrc: u32, clock_rate: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "seed".into(),
        format!("seed-{ssrc}"),
        "seed".into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime.into(),
                clock_rate,
                channels: if kind == RtpCodecKind::Audio { 2 } else { 0 },
                ..Default::default()
            },
            ..Default::default()
        }],
    )
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
                track(RtpCodecKind::Audio, "audio/opus", 1, 48_000),
                track(RtpCodecKind::Video, "video/VP8", 2, 90_000),
            ],
        ),
        (0, vec![track(RtpCodecKind::Video, "video/VP8", 3, 90_000)]),
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
    let runtime = h.runtime.handle().clone();
    let _entered = runtime.enter();
    let mut admission = h.join(now)?;
    let mut offer = None;
    while let Ok(event) = admission.events.try_recv() {
        if let SessionEvent::Message(ServerMessage::SubscribeOffer { sdp, .. }) = event {
            offer = Some(sdp);
        }
    }
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
        let runtime = h.runtime.handle().clone();
        let _entered = runtime.enter();
        let now = Instant::now();
        let mut admission = h.join(now).expect("joined");
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
        h.send(admission.session, message, now);
        let mut told = Vec::new();
        while let Ok(event) = admission.events.try_recv() {
            if let SessionEvent::Message(message) = event {
                told.push(message);
            }
        }
        told
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
