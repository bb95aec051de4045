//! Signaling over the real WebSocket: tokens checked before the upgrade, every kind of hostile
//! message answered with its stable code while a healthy call in the same room shows no gap,
//! and the session rules (resume, grace expiry, replacement).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, SystemTime};
use tern_signaling::auth::{Grants, KeySet, claims_for};
use tern_signaling::protocol::{
    ClientMessage, ErrorCode, IceCandidate, LeaveReason, Leg, MAX_ERROR_TEXT_BYTES, ServerMessage,
};
use tokio_tungstenite::tungstenite::Message as Frame;

/// Alice publishes, Bob receives; returns once Bob gets Alice's media.
async fn healthy_call(relay: &tern::app::Running, room: &str) -> (Client, Client, MediaPump) {
    let alice = Client::connect(relay, room, "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(relay, room, "bob").await;
    let pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 5).await;
    wait_more(&mut bob, "alice", "audio", 5).await;
    (alice, bob, pump)
}

async fn expect_error(client: &mut Client, code: &str) {
    let code = code.to_owned();
    client
        .wait_for(&format!("error {code}"), |e| match e {
            Event::Signal(ServerMessage::Error { code: c, .. }) if c.as_str() == code => Some(()),
            _ => None,
        })
        .await;
}

/// The session still answers: a ping gets its pong.
async fn expect_usable(client: &mut Client, stamp: u64) {
    client.send(Command::Raw(ClientMessage::Ping { timestamp: stamp }));
    client
        .wait_for("pong", |e| match e {
            Event::Signal(ServerMessage::Pong { timestamp }) if *timestamp == stamp => Some(()),
            _ => None,
        })
        .await;
}

const H265_ONLY_OFFER: &str = "v=0\r\n\
o=- 1 1 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\n\
a=rtcp-mux\r\n\
a=rtpmap:102 H265/90000\r\n";

/// After the hostile message, the session is still usable or was closed cleanly.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    Usable,
    Closed,
}

/// One hostile-input case: while Alice streams to Bob, Mallory (in the same room) sends
/// `messages`; she must get an error with `code` and then be usable or closed as `then` says,
/// and Bob's stream from Alice must show no gap before, during or after.
async fn hostile_case(messages: Vec<Command>, code: &str, then: Then) {
    let relay = start_relay(|c| c.session.max_message_bytes = 4096).await;
    let (_alice, mut bob, _pump) = healthy_call(&relay, "hostile").await;
    let mut mallory = Client::connect(&relay, "hostile", "mallory").await;
    // Otherwise the relay's subscribe offer at join races the hostile message (an answer before
    // any offer would then meet a real one).
    mallory.wait_subscribed().await;
    for message in messages {
        mallory.send(message);
    }
    expect_error(&mut mallory, code).await;
    match then {
        Then::Usable => expect_usable(&mut mallory, 42).await,
        Then::Closed => {
            mallory
                .wait_for("connection closed", |e| {
                    matches!(e, Event::Closed).then_some(())
                })
                .await
        }
    }
    wait_more(&mut bob, "alice", "video", 20).await;
    wait_more(&mut bob, "alice", "audio", 20).await;
    assert_no_gap(&bob, "alice", "video", 25);
    assert_no_gap(&bob, "alice", "audio", 25);
    assert!(
        bob.errors().is_empty(),
        "bob saw errors: {:?}",
        bob.errors()
    );
    let counted = metric(
        &relay,
        &format!("tern_signaling_errors_total{{code=\"{code}\"}}"),
    )
    .await;
    assert!(counted >= 1.0, "error {code} counted in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_malformed_json() {
    hostile_case(
        vec![Command::RawText("{not json".into())],
        "malformed_message",
        Then::Usable,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_wrongly_typed_field() {
    let text = r#"{"type":"publish_offer","sdp":7}"#.to_owned();
    hostile_case(
        vec![Command::RawText(text)],
        "malformed_message",
        Then::Usable,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_binary_frame() {
    hostile_case(
        vec![Command::Binary(vec![0, 1, 2, 3])],
        "malformed_message",
        Then::Usable,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_unknown_message_type() {
    let text = r#"{"type":"launch_missiles","target":"moon"}"#.to_owned();
    hostile_case(
        vec![Command::RawText(text)],
        "unknown_message_type",
        Then::Usable,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_oversized_message_closes_only_that_connection() {
    let text = format!(
        r#"{{"type":"ping","timestamp":1,"pad":"{}"}}"#,
        "x".repeat(8000)
    );
    hostile_case(
        vec![Command::RawText(text)],
        "message_too_large",
        Then::Closed,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answer_before_any_offer() {
    let answer = ClientMessage::SubscribeAnswer {
        sdp: "v=0\r\n".into(),
    };
    hostile_case(vec![Command::Raw(answer)], "invalid_state", Then::Usable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_trickle_before_any_offer() {
    let trickle = ClientMessage::Trickle {
        leg: Leg::Publish,
        candidate: IceCandidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        },
    };
    hostile_case(vec![Command::Raw(trickle)], "invalid_state", Then::Usable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_invalid_sdp() {
    let offer = ClientMessage::PublishOffer {
        sdp: "this is not sdp".into(),
        tracks: vec![],
    };
    hostile_case(vec![Command::Raw(offer)], "invalid_sdp", Then::Usable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_unsupported_codec() {
    let offer = ClientMessage::PublishOffer {
        sdp: H265_ONLY_OFFER.into(),
        tracks: vec![],
    };
    hostile_case(vec![Command::Raw(offer)], "unsupported_codec", Then::Usable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_announcement_that_does_not_match_the_offer() {
    let offer = ClientMessage::PublishOffer {
        sdp: H265_ONLY_OFFER.replace("H265", "VP8"),
        tracks: vec![tern_signaling::protocol::TrackAnnouncement {
            mid: "0".into(),
            source: tern_signaling::protocol::TrackSource::Microphone,
        }],
    };
    hostile_case(vec![Command::Raw(offer)], "invalid_sdp", Then::Usable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mute_of_someone_elses_track() {
    let mute = ClientMessage::SetMuted {
        track_id: "TR_1".into(),
        muted: true,
    };
    hostile_case(vec![Command::Raw(mute)], "unknown_track", Then::Usable).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_before_the_upgrade_with_a_reason_code() {
    let relay = start_relay(|_| {}).await;
    let now = SystemTime::now();
    let good = token(&relay, "r", "alice", Grants::participant());
    let foreign = KeySet::new([("dev".to_owned(), b"some other secret entirely".to_vec())])
        .mint(
            "dev",
            &claims_for(
                "r",
                "a",
                "a",
                Grants::participant(),
                now,
                Duration::from_secs(60),
            ),
        )
        .unwrap();
    let unknown_kid = KeySet::new([("nope".to_owned(), b"x".to_vec())])
        .mint(
            "nope",
            &claims_for(
                "r",
                "a",
                "a",
                Grants::participant(),
                now,
                Duration::from_secs(60),
            ),
        )
        .unwrap();
    let expired = relay
        .keys
        .mint(
            "dev",
            &claims_for(
                "r",
                "a",
                "a",
                Grants::participant(),
                now - Duration::from_secs(7200),
                Duration::from_secs(60),
            ),
        )
        .unwrap();
    let mut future = claims_for(
        "r",
        "a",
        "a",
        Grants::participant(),
        now,
        Duration::from_secs(7200),
    );
    future.nbf += 3600;
    let not_yet = relay.keys.mint("dev", &future).unwrap();
    let no_room = relay
        .keys
        .mint(
            "dev",
            &claims_for(
                "",
                "a",
                "a",
                Grants::participant(),
                now,
                Duration::from_secs(60),
            ),
        )
        .unwrap();
    let cases = [
        ("", "token_missing"),
        ("?access_token=", "token_missing"),
        ("?access_token=garbage", "token_malformed"),
        (&*format!("?access_token={foreign}"), "token_bad_signature"),
        (
            &*format!("?access_token={unknown_kid}"),
            "token_unknown_key",
        ),
        (&*format!("?access_token={expired}"), "token_expired"),
        (&*format!("?access_token={not_yet}"), "token_not_yet_valid"),
        (&*format!("?access_token={no_room}"), "token_invalid_claims"),
    ];
    for (query, code) in cases {
        let (status, body) = upgrade_request(&relay, query, "").await;
        assert_eq!(status, 401, "{query}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["code"], code, "{query}");
        assert!(!body.contains(&good), "never echo tokens");
    }
    // The same token as a Bearer header is accepted.
    let (status, _) =
        upgrade_request(&relay, "", &format!("Authorization: Bearer {good}\r\n")).await;
    assert_eq!(status, 101);
    let (status, _) = upgrade_request(&relay, &format!("?access_token={good}"), "").await;
    assert_eq!(status, 101);
    let (status, body) =
        upgrade_request(&relay, &format!("?access_token={good}&protocol=9"), "").await;
    assert_eq!(status, 400);
    assert!(body.contains("unsupported_protocol"));
    // A plain GET with a good token is told to upgrade.
    let (status, body) = http_get(relay.http_addr, &format!("/rtc?access_token={good}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        metric(
            &relay,
            "tern_signaling_token_rejections_total{reason=\"token_expired\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_dev_tokens() {
    let relay = start_relay(|_| {}).await;
    let (status, body) = http_get(relay.http_addr, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = http_get(relay.http_addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "tern_rooms ",
        "tern_participants ",
        "tern_publications{kind=\"audio\"}",
        "tern_subscriptions{kind=\"video\"}",
        "tern_rtp_packets_received_total{kind=\"audio\"}",
        "tern_rtp_packets_sent_total{kind=\"video\"}",
        "tern_udp_bytes_received_total ",
        "tern_udp_bytes_sent_total ",
        "tern_packets_dropped_total{reason=\"unknown_source\"}",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}");
    }
    let (status, body) = http_get(
        relay.http_addr,
        "/dev/token?room=lobby&identity=zed&name=Zed",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let claims = relay
        .keys
        .verify(json["token"].as_str().unwrap(), SystemTime::now())
        .unwrap();
    assert_eq!(
        (
            claims.room.as_str(),
            claims.sub.as_str(),
            claims.name.as_str()
        ),
        ("lobby", "zed", "Zed")
    );
    assert!(claims.grants.publish && claims.grants.subscribe && !claims.grants.admin);

    // Behind a proxy on loopback (this test, from 127.0.0.1), the dev endpoint answers only
    // loopback clients the proxy names, never a request that names nobody.
    let proxied = start_relay(|c| c.http.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let from = |client: &str| {
        format!(
            "GET /dev/token HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: {client}\r\n\
             Connection: close\r\n\r\n"
        )
    };
    let (status, body) = http_request(proxied.http_addr, &from("198.51.100.1")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("loopback_only"), "{body}");
    for nobody in ["", "not-an-address"] {
        let (status, body) = http_request(proxied.http_addr, &from(nobody)).await;
        assert_eq!(status, 403, "{nobody:?}: {body}");
    }
    let (status, body) = http_request(proxied.http_addr, &from("::1")).await;
    assert_eq!(status, 200, "{body}");

    // With API keys configured there is no dev endpoint.
    let keyed = start_relay(|c| {
        c.auth
            .keys
            .insert("k1".into(), "0123456789abcdef0123456789abcdef".into());
    })
    .await;
    let (status, body) = http_get(keyed.http_addr, "/dev/token").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("dev_mode_off"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_with_the_same_participant_id() {
    let relay = start_relay(|c| c.session.resume_grace_s = 10).await;
    let (mut alice, mut bob, _pump) = healthy_call(&relay, "resume").await;
    let alice_id = alice.participant_id.clone().unwrap();
    let resume = alice.resume_token();

    alice.send(Command::DropSignaling);
    let id = alice_id.clone();
    bob.wait_for("alice reconnecting", |e| match e {
        Event::Signal(ServerMessage::ParticipantReconnecting { participant_id })
            if *participant_id == id =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    // Media is unaffected while signaling is down.
    wait_more(&mut bob, "alice", "video", 10).await;

    let url = format!(
        "{}&resume_token={resume}",
        ws_url(
            &relay,
            &token(&relay, "resume", "alice", Grants::participant())
        )
    );
    alice.send(Command::Reconnect(url));
    let resumed = alice
        .wait_for("joined again", |e| match e {
            Event::Signal(ServerMessage::Joined {
                participant,
                resumed,
                participants,
                ..
            }) if *resumed => Some((participant.id.clone(), participants.len())),
            _ => None,
        })
        .await;
    assert_eq!(
        resumed,
        (alice_id.clone(), 1),
        "same participant id, bob still there"
    );
    let id = alice_id.clone();
    bob.wait_for("alice resumed", |e| match e {
        Event::Signal(ServerMessage::ParticipantResumed { participant_id })
            if *participant_id == id =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    wait_more(&mut bob, "alice", "video", 10).await;
    assert_no_gap(&bob, "alice", "video", 20);
    assert!(
        !bob.signals().any(|s| matches!(
            s,
            ServerMessage::ParticipantLeft { .. } | ServerMessage::ParticipantJoined { .. }
        )),
        "bob never saw alice leave or join"
    );
    // The resumed session is fully usable.
    expect_usable(&mut alice, 77).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resume_the_participant_leaves_after_the_grace_period() {
    let relay = start_relay(|c| c.session.resume_grace_s = 1).await;
    let (mut alice, mut bob, _pump) = healthy_call(&relay, "grace").await;
    let alice_id = alice.participant_id.clone().unwrap();
    let resume = alice.resume_token();
    alice.send(Command::DropSignaling);
    let id = alice_id.clone();
    let reason = bob
        .wait_for("alice left", |e| match e {
            Event::Signal(ServerMessage::ParticipantLeft {
                participant_id,
                reason,
            }) if *participant_id == id => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, LeaveReason::Timeout);
    bob.wait_until("alice's tracks gone from the subscribe offer", |log| {
        log.iter()
            .filter_map(|e| match e {
                Event::Signal(ServerMessage::SubscribeOffer { tracks, .. }) => Some(tracks.len()),
                _ => None,
            })
            .last()
            == Some(0)
    })
    .await;
    // Too late to resume.
    let url = format!(
        "{}&resume_token={resume}",
        ws_url(
            &relay,
            &token(&relay, "grace", "alice", Grants::participant())
        )
    );
    alice.send(Command::Reconnect(url));
    expect_error(&mut alice, "resume_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_join_with_the_same_identity_replaces_the_first() {
    let relay = start_relay(|_| {}).await;
    let (mut alice, mut bob, _pump) = healthy_call(&relay, "dup").await;
    let old_id = alice.participant_id.clone().unwrap();
    let alice2 = Client::connect(&relay, "dup", "alice").await;
    let new_id = alice2.participant_id.clone().unwrap();
    assert_ne!(old_id, new_id);
    alice
        .wait_for("closed as replaced", |e| match e {
            Event::Signal(ServerMessage::Closed {
                reason: LeaveReason::Replaced,
            }) => Some(()),
            _ => None,
        })
        .await;
    let id = old_id.clone();
    bob.wait_for("old alice left as replaced", |e| match e {
        Event::Signal(ServerMessage::ParticipantLeft {
            participant_id,
            reason: LeaveReason::Replaced,
        }) if *participant_id == id => Some(()),
        _ => None,
    })
    .await;
    let id = new_id.clone();
    bob.wait_for("new alice joined", |e| match e {
        Event::Signal(ServerMessage::ParticipantJoined { participant }) if participant.id == id => {
            Some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(metric(&relay, "tern_participants").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_is_announced_and_listeners_without_media_still_receive() {
    let relay = start_relay(|_| {}).await;
    let (alice, mut bob, _pump) = healthy_call(&relay, "mute").await;
    // A listener: no camera, no microphone, no publish grant at all.
    let listener_grants = Grants {
        publish: false,
        ..Grants::participant()
    };
    let mut carol = Client::connect_with(&relay, "mute", "carol", listener_grants).await;
    wait_more(&mut carol, "alice", "video", 5).await;
    carol.send(Command::Publish {
        audio: true,
        video: false,
    });
    expect_error(&mut carol, "not_allowed").await;

    let video_track = bob
        .signals()
        .find_map(|s| match s {
            ServerMessage::SubscribeOffer { tracks, .. } => tracks
                .iter()
                .find(|t| t.source == tern_signaling::protocol::TrackSource::Camera)
                .map(|t| t.id.clone()),
            _ => None,
        })
        .unwrap();
    alice.send(Command::Raw(ClientMessage::SetMuted {
        track_id: video_track.clone(),
        muted: true,
    }));
    for client in [&mut bob, &mut carol] {
        let id = video_track.clone();
        client
            .wait_for("track muted", |e| match e {
                Event::Signal(ServerMessage::TrackMuted {
                    track_id,
                    muted: true,
                    ..
                }) if *track_id == id => Some(()),
                _ => None,
            })
            .await;
    }
}

/// A bare WebSocket session, without WebRTC, for what only the signaling sees.
type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Joins `room` as `identity` and reads up to the relay's first subscribe offer.
async fn bare_session(relay: &tern::app::Running, room: &str, identity: &str) -> Socket {
    let url = ws_url(relay, &token(relay, room, identity, Grants::participant()));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    next_signal(&mut ws, "the first subscribe offer", |m| {
        matches!(m, ServerMessage::SubscribeOffer { .. }).then_some(())
    })
    .await;
    ws
}

/// Reads until `pick` takes a relay message; other messages and frames are skipped.
async fn next_signal<T>(
    ws: &mut Socket,
    what: &str,
    pick: impl Fn(&ServerMessage) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        match frame {
            Some(Ok(Frame::Text(text))) => {
                let message = serde_json::from_str(&text).expect("a server message");
                if let Some(value) = pick(&message) {
                    return value;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended waiting for {what}: {other:?}"),
        }
    }
}

async fn next_error(ws: &mut Socket) -> (ErrorCode, String) {
    next_signal(ws, "an error", |m| match m {
        ServerMessage::Error { code, message, .. } => Some((*code, message.clone())),
        _ => None,
    })
    .await
}

async fn send_text(ws: &mut Socket, text: String) {
    ws.send(Frame::Text(text.into())).await.expect("sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_control_characters_or_a_crit_header_are_refused_before_the_upgrade() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let relay = start_relay(|c| {
        c.auth.keys.insert("k1".into(), SECRET.into());
    })
    .await;
    let now = SystemTime::now();
    let claims = |room: &str, identity: &str, name: &str| {
        claims_for(
            room,
            identity,
            name,
            Grants::participant(),
            now,
            Duration::from_secs(60),
        )
    };
    let refused = |token: String, code: &'static str| {
        let relay = &relay;
        async move {
            let (status, body) =
                upgrade_request(relay, &format!("?access_token={token}"), "").await;
            assert_eq!(status, 401, "{body}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["code"], code, "{body}");
        }
    };
    for (room, identity, name) in [
        ("r", "ali\u{1b}[2Jce", "Alice"),
        ("r", "alice", "Alice\r\nmallory joined"),
        ("r\u{7f}", "alice", "Alice"),
        ("r", "alice", "\u{9b}31m"),
    ] {
        let token = relay
            .keys
            .mint("k1", &claims(room, identity, name))
            .unwrap();
        refused(token, "token_invalid_claims").await;
    }
    // A header naming a critical extension (RFC 7515 §4.1.11), correctly signed.
    let sign = |header: &str| {
        let body = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("r", "alice", "Alice")).unwrap())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let signature = ring::hmac::sign(&key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    };
    refused(
        sign(r#"{"alg":"HS256","typ":"JWT","kid":"k1","crit":["exp"]}"#),
        "token_malformed",
    )
    .await;
    // The same token without `crit` gets in.
    let plain = sign(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#);
    let (status, body) = upgrade_request(&relay, &format!("?access_token={plain}"), "").await;
    assert_eq!(status, 101, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pings_spend_the_message_budget() {
    // A budget high enough that the flood's backlog drains in seconds, the pongs still far
    // fewer than the pings while it lasts.
    const PER_S: u32 = 250;
    const PINGS: usize = 5_000;
    let relay = start_relay(|c| c.session.max_messages_per_s = PER_S).await;
    let ws = bare_session(&relay, "pings", "mallory").await;
    let (mut sink, mut stream) = ws.split();
    for _ in 0..PINGS {
        sink.feed(Frame::Ping(Vec::new().into())).await.unwrap();
    }
    sink.flush().await.unwrap();
    // Without the budget every ping is answered within a fraction of a second.
    let mut pongs = 0;
    let window = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(frame)) = tokio::time::timeout_at(window, stream.next()).await {
        if let Frame::Pong(_) = frame.expect("the connection stays open") {
            pongs += 1;
        }
    }
    assert!(
        pongs < PINGS / 5,
        "{pongs} pongs to {PINGS} pings within 0.5 s at {PER_S} messages/s"
    );
    let breaches = "tern_limit_breaches_total{limit=\"message_rate\"}";
    assert!(
        metric(&relay, breaches).await >= 1.0,
        "the flood is counted"
    );
    // Once the backlog has been read, a normal message gets through again (the first tries may
    // meet an empty bucket: dropped, with at most one rate_limited a second).
    let reader = tokio::spawn(async move {
        let mut rate_limited = 0;
        while let Some(Ok(frame)) = stream.next().await {
            let Frame::Text(text) = frame else {
                continue;
            };
            match serde_json::from_str(&text).expect("a server message") {
                ServerMessage::Pong { timestamp: 7 } => return rate_limited,
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                } => rate_limited += 1,
                _ => {}
            }
        }
        panic!("the connection closed");
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !reader.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pong to a normal ping"
        );
        let ping = serde_json::to_string(&ClientMessage::Ping { timestamp: 7 }).unwrap();
        sink.send(Frame::Text(ping.into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rate_limited = reader.await.unwrap();
    assert!(
        rate_limited >= 1,
        "the client was told it is over the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_texts_never_quote_a_message_whole() {
    let relay = start_relay(|_| {}).await;
    let mut ws = bare_session(&relay, "echo", "mallory").await;
    let huge = "\u{1F980}".repeat(15_000); // 60,000 bytes
    let garbage_sdp = format!("{}\r\n", "x".repeat(30_000));
    let cases = [
        (
            format!(r#"{{"type":"{huge}"}}"#),
            ErrorCode::UnknownMessageType,
        ),
        (
            format!(
                r#"{{"type":"publish_offer","sdp":"v=0","tracks":[{{"mid":"0","source":"{huge}"}}]}}"#
            ),
            ErrorCode::MalformedMessage,
        ),
        (
            format!(r#"{{"type":"set_muted","track_id":"TR_1","muted":"{huge}"}}"#),
            ErrorCode::MalformedMessage,
        ),
        // Refused by the relay rather than the decoder: its SDP parser quotes the bad line.
        (
            serde_json::to_string(&ClientMessage::PublishOffer {
                sdp: garbage_sdp,
                tracks: vec![],
            })
            .unwrap(),
            ErrorCode::InvalidSdp,
        ),
    ];
    for (text, code) in cases {
        send_text(&mut ws, text).await;
        let (got, message) = next_error(&mut ws).await;
        assert_eq!(got, code, "{message:.300}");
        assert!(
            message.len() <= MAX_ERROR_TEXT_BYTES,
            "{code:?}: {} bytes: {message:.300}",
            message.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_answer_after_a_refused_one_is_invalid_state() {
    let relay = start_relay(|_| {}).await;
    let mut ws = bare_session(&relay, "answers", "alice").await;
    // Parses, but the peer connection refuses it (no ICE credentials), after it has already
    // taken it as the answer to its offer.
    let answer = serde_json::to_string(&ClientMessage::SubscribeAnswer {
        sdp: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n".into(),
    })
    .unwrap();
    send_text(&mut ws, answer.clone()).await;
    assert_eq!(next_error(&mut ws).await.0, ErrorCode::InvalidSdp);
    // No offer is outstanding now: PROTOCOL.md says invalid_state, whatever the SDP.
    send_text(&mut ws, answer).await;
    let (code, message) = next_error(&mut ws).await;
    assert_eq!(code, ErrorCode::InvalidState, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_json_with_a_stable_code() {
    let relay = start_relay(|_| {}).await;
    let good = token(&relay, "r", "alice", Grants::participant());
    for (request, status, code) in [
        ("GET /nowhere", 404, "not_found"),
        ("POST /healthz", 405, "method_not_allowed"),
        (
            &*format!("GET /rtc?access_token={good}&protocol=one"),
            400,
            "bad_request",
        ),
    ] {
        let (got, body) = http_request(
            relay.http_addr,
            &format!(
                "{request} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(got, status, "{request}: {body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{request}: not JSON: {body:?}"));
        assert_eq!(json["code"], code, "{request}: {body}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(!body.contains(&good), "never echo tokens");
    }
}
