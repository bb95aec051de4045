//! The admin API against a running relay with real participants: who may call it, room
//! policies and timers, removing participants, deleting rooms, and operator mutes that really
//! stop the media.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};
use tern_signaling::auth::{Grants, claims_for};
use tern_signaling::protocol::{ClientMessage, ErrorCode, LeaveReason, ServerMessage, TrackKind};

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("")
}

async fn closed_with(client: &mut Client, reason: LeaveReason) {
    client
        .wait_for(&format!("closed {reason:?}"), |e| match e {
            Event::Signal(ServerMessage::Closed { reason: r }) if *r == reason => Some(()),
            _ => None,
        })
        .await;
}

async fn room_names(relay: &tern::app::Running, bearer: &str) -> Vec<String> {
    let (status, body) = api(relay, "GET", "/api/rooms", Some(bearer), None).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_a_valid_token_with_the_admin_grant_for_the_room() {
    let relay = start_relay(|_| {}).await;
    let _alice = Client::connect(&relay, "a", "alice").await;
    let _bob = Client::connect(&relay, "b", "bob").await;

    let (status, body) = api(&relay, "GET", "/api/rooms", None, None).await;
    assert_eq!((status, code(&body)), (401, "token_missing"));
    let (status, body) = api(&relay, "GET", "/api/rooms", Some("not.a.jwt"), None).await;
    assert_eq!((status, code(&body)), (401, "token_malformed"));
    let expired = relay
        .keys
        .mint(
            tern::app::DEV_KID,
            &claims_for(
                "*",
                "ops",
                "ops",
                Grants {
                    admin: true,
                    ..Grants::default()
                },
                SystemTime::now() - Duration::from_secs(7200),
                Duration::from_secs(60),
            ),
        )
        .unwrap();
    let (status, body) = api(&relay, "DELETE", "/api/rooms/a", Some(&expired), None).await;
    assert_eq!((status, code(&body)), (401, "token_expired"));

    // A participant's token is valid but grants no admin.
    let participant = token(&relay, "a", "alice", Grants::participant());
    let (status, body) = api(&relay, "GET", "/api/rooms", Some(&participant), None).await;
    assert_eq!((status, code(&body)), (403, "admin_grant_missing"));
    let (status, body) = api(&relay, "DELETE", "/api/rooms/a", Some(&participant), None).await;
    assert_eq!((status, code(&body)), (403, "admin_grant_missing"));

    // Admin over room "a" only: sees and acts on "a", nothing else.
    let scoped = admin_token(&relay, "a");
    assert_eq!(room_names(&relay, &scoped).await, ["a"]);
    let (status, _) = api(&relay, "GET", "/api/rooms/a", Some(&scoped), None).await;
    assert_eq!(status, 200);
    let (status, body) = api(&relay, "GET", "/api/rooms/b", Some(&scoped), None).await;
    assert_eq!((status, code(&body)), (403, "room_not_in_scope"));
    let (status, body) = api(
        &relay,
        "DELETE",
        "/api/rooms/b/participants/bob",
        Some(&scoped),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (403, "room_not_in_scope"));
    let (status, body) = api(
        &relay,
        "POST",
        "/api/rooms",
        Some(&scoped),
        Some(r#"{"name":"c"}"#),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "room_not_in_scope"));

    let all = admin_token(&relay, "*");
    assert_eq!(room_names(&relay, &all).await, ["a", "b"]);
    assert!(
        metric(
            &relay,
            "tern_signaling_token_rejections_total{reason=\"token_missing\"}"
        )
        .await
            >= 1.0
    );
    // The document describing all this is public.
    let (status, body) = http_get(relay.http_addr, "/api/openapi.json").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"/api/rooms/{name}\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_created_limited_changed_listed_and_deleted() {
    let relay = start_relay(|_| {}).await;
    let ops = admin_token(&relay, "*");
    let create =
        r#"{"name":"standup","max_participants":2,"empty_timeout_s":600,"max_egress_kbps":5000}"#;
    let (status, room) = api(&relay, "POST", "/api/rooms", Some(&ops), Some(create)).await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["name"], "standup");
    assert_eq!(room["created_by_api"], true);
    assert_eq!(
        room["policy"],
        json!({"max_participants": 2, "empty_timeout_s": 600, "departure_timeout_s": 20,
               "max_egress_kbps": 5000, "max_subscriber_kbps": 0, "max_publisher_kbps": 0,
               "e2ee_required": false})
    );
    assert_eq!(room["participants"], json!([]));

    // Refusals, each with its code.
    let cases = [
        (create, 409, "room_exists"),
        (r#"{"name":""}"#, 422, "invalid_value"),
        (r#"{"nam":"x"}"#, 422, "invalid_body"),
        (r#"{"name":"x","max_participants":0}"#, 422, "invalid_value"),
        (
            r#"{"name":"x","empty_timeout_s":99999999}"#,
            422,
            "invalid_value",
        ),
        (r#"{"name":"x","max_participants":-1}"#, 422, "invalid_body"),
        ("[]", 422, "invalid_body"),
    ];
    for (body, want_status, want_code) in cases {
        let (status, reply) = api(&relay, "POST", "/api/rooms", Some(&ops), Some(body)).await;
        assert_eq!((status, code(&reply)), (want_status, want_code), "{body}");
    }
    let (status, body) = api(&relay, "GET", "/api/rooms/nope", Some(&ops), None).await;
    assert_eq!((status, code(&body)), (404, "room_not_found"));

    // The room's own participant limit holds; the third is refused.
    let mut alice = Client::connect(&relay, "standup", "alice").await;
    let mut bob = Client::connect(&relay, "standup", "bob").await;
    match first_message(&relay, "standup", "carol").await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::RoomFull),
        other => panic!("carol was not refused: {other:?}"),
    }
    assert!(
        metric(
            &relay,
            "tern_limit_breaches_total{limit=\"room_participants\"}"
        )
        .await
            >= 1.0
    );

    // Raised: carol gets in.
    let (status, room) = api(
        &relay,
        "PATCH",
        "/api/rooms/standup",
        Some(&ops),
        Some(r#"{"max_participants":3,"max_subscriber_kbps":800}"#),
    )
    .await;
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["policy"]["max_participants"], 3);
    assert_eq!(room["policy"]["max_subscriber_kbps"], 800);
    assert_eq!(
        room["policy"]["max_egress_kbps"], 5000,
        "untouched fields stay"
    );
    let (status, body) = api(
        &relay,
        "PATCH",
        "/api/rooms/standup",
        Some(&ops),
        Some(r#"{"name":"renamed"}"#),
    )
    .await;
    assert_eq!((status, code(&body)), (422, "invalid_body"));
    let mut carol = Client::connect(&relay, "standup", "carol").await;

    // The listing shows who is there and what they send, with its bitrate.
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 120).await;
    let (status, room) = api(&relay, "GET", "/api/rooms/standup", Some(&ops), None).await;
    assert_eq!(status, 200);
    let identities: Vec<&str> = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(identities, ["alice", "bob", "carol"]);
    let alice_summary = &room["participants"][0];
    assert_eq!(alice_summary["state"], "active");
    let tracks = alice_summary["tracks"].as_array().unwrap();
    assert_eq!(tracks.len(), 2, "{room}");
    for track in tracks {
        // The test client sends 100 packets (about 13.6 kbit/s of payload) a second of each
        // kind; a loaded machine may send fewer within the meter's one-second window.
        let bps = track["bitrate_bps"].as_u64().unwrap();
        assert!(bps > 4_000, "{track}");
        assert_eq!(track["admin_muted"], false);
    }
    // What bandwidth control gives each subscriber, and the room's video against its budget.
    let video_id = tracks
        .iter()
        .find(|t| t["kind"] == "video")
        .map(|t| t["id"].clone())
        .unwrap();
    let bob_summary = &room["participants"][1];
    let subscriptions = bob_summary["subscriptions"].as_array().unwrap();
    assert_eq!(subscriptions.len(), 1, "{bob_summary}");
    assert_eq!(subscriptions[0]["track_id"], video_id);
    assert_eq!(subscriptions[0]["paused"], false, "{bob_summary}");
    assert_eq!(subscriptions[0]["layer"], 0, "{bob_summary}");
    assert!(subscriptions[0]["reason"].is_null());
    assert!(
        bob_summary["estimate_bps"]
            .as_u64()
            .is_some_and(|bps| bps > 0),
        "bob's client sends transport-cc: {bob_summary}"
    );
    assert!(
        room["bandwidth"]["video_bps"].as_u64().unwrap() > 0,
        "{room}"
    );
    assert_eq!(room["bandwidth"]["held_at_budget"], false);

    // Removing a participant: it is told why, and so is everyone else.
    let (status, body) = api(
        &relay,
        "DELETE",
        "/api/rooms/standup/participants/carol",
        Some(&ops),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    closed_with(&mut carol, LeaveReason::Removed).await;
    let carol_id = carol.participant_id.clone().unwrap();
    bob.wait_for("carol left", |e| match e {
        Event::Signal(ServerMessage::ParticipantLeft {
            participant_id,
            reason: LeaveReason::Removed,
        }) if *participant_id == carol_id => Some(()),
        _ => None,
    })
    .await;
    let (status, body) = api(
        &relay,
        "DELETE",
        "/api/rooms/standup/participants/carol",
        Some(&ops),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (404, "participant_not_found"));

    // Deleting the room ends everyone's session.
    let (status, _) = api(&relay, "DELETE", "/api/rooms/standup", Some(&ops), None).await;
    assert_eq!(status, 204);
    closed_with(&mut alice, LeaveReason::RoomDeleted).await;
    closed_with(&mut bob, LeaveReason::RoomDeleted).await;
    let (status, _) = api(&relay, "GET", "/api/rooms/standup", Some(&ops), None).await;
    assert_eq!(status, 404);
    assert!(room_names(&relay, &ops).await.is_empty());
    assert_eq!(metric(&relay, "tern_participants").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_departure_timeouts_close_rooms_per_room() {
    let relay = start_relay(|_| {}).await;
    let ops = admin_token(&relay, "*");
    for body in [
        r#"{"name":"never-used","empty_timeout_s":1}"#,
        r#"{"name":"waiting","empty_timeout_s":600,"departure_timeout_s":1}"#,
        r#"{"name":"lingering","empty_timeout_s":1,"departure_timeout_s":600}"#,
    ] {
        let (status, _) = api(&relay, "POST", "/api/rooms", Some(&ops), Some(body)).await;
        assert_eq!(status, 201);
    }
    let alice = Client::connect(&relay, "waiting", "alice").await;
    let bob = Client::connect(&relay, "lingering", "bob").await;
    // "never-used" closes after its empty timeout although "waiting" is still empty-waiting too
    // (600 s): the timer is per room.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let names = room_names(&relay, &ops).await;
        if !names.contains(&"never-used".to_owned()) {
            assert_eq!(names, ["lingering", "waiting"]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never-used stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alice.send(Command::Leave);
    bob.send(Command::Leave);
    // "waiting" goes 1 s after alice left; "lingering" keeps its 600 s departure timeout even
    // though its empty timeout was 1 s (someone joined, so the departure timeout applies).
    loop {
        let names = room_names(&relay, &ops).await;
        if !names.contains(&"waiting".to_owned()) {
            assert_eq!(names, ["lingering"]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "waiting stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, room) = api(&relay, "GET", "/api/rooms/lingering", Some(&ops), None).await;
    assert_eq!((status, room["participants"].clone()), (200, json!([])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_mute_stops_the_media_until_the_operator_unmutes() {
    let relay = start_relay(|_| {}).await;
    let ops = admin_token(&relay, "*");
    let mut alice = Client::connect(&relay, "town-hall", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "town-hall", "bob").await;
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 10).await;
    let video = bob
        .signals()
        .find_map(|s| match s {
            ServerMessage::SubscribeOffer { tracks, .. } => tracks
                .iter()
                .find(|t| t.kind == TrackKind::Video)
                .map(|t| t.id.clone()),
            _ => None,
        })
        .unwrap();
    let mute = |muted: bool| json!({"track_id": video, "muted": muted}).to_string();
    let path = "/api/rooms/town-hall/participants/alice/mute";

    let (status, body) = api(
        &relay,
        "POST",
        path,
        Some(&ops),
        Some(&json!({"track_id": "TR_00000000000000ff", "muted": true}).to_string()),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "track_not_found"));
    let (status, body) = api(&relay, "POST", path, Some(&ops), Some(&mute(true))).await;
    assert_eq!(status, 204, "{body}");
    // Everybody, the publisher included, learns that it is an operator's mute.
    for client in [&mut alice, &mut bob] {
        let id = video.clone();
        client
            .wait_for("track muted by an operator", |e| match e {
                Event::Signal(ServerMessage::TrackMuted {
                    track_id,
                    muted: true,
                    admin_muted: true,
                    ..
                }) if *track_id == id => Some(()),
                _ => None,
            })
            .await;
    }
    // The relay drops the track's packets: once it has dropped some, bob's count stops moving
    // while the relay keeps dropping (and audio keeps flowing).
    let dropped = "tern_packets_dropped_total{reason=\"admin_muted\"}";
    wait_metric(&relay, dropped, "drops", |v| v >= 10.0).await;
    bob.pump();
    let video_before = received_from(&bob, "alice", "video").len();
    let base = metric(&relay, dropped).await;
    wait_metric(&relay, dropped, "drops to go on", |v| v >= base + 30.0).await;
    wait_more(&mut bob, "alice", "audio", 30).await;
    assert_eq!(
        received_from(&bob, "alice", "video").len(),
        video_before,
        "video reached bob while muted by an operator"
    );

    // The publisher cannot lift an operator's mute.
    alice.send(Command::Raw(ClientMessage::SetMuted {
        track_id: video.clone(),
        muted: false,
    }));
    alice
        .wait_for("not_allowed", |e| match e {
            Event::Signal(ServerMessage::Error {
                code: ErrorCode::NotAllowed,
                ..
            }) => Some(()),
            _ => None,
        })
        .await;
    let (_, room) = api(&relay, "GET", "/api/rooms/town-hall", Some(&ops), None).await;
    let track = room["participants"][0]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == video.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (track["muted"].clone(), track["admin_muted"].clone()),
        (json!(true), json!(true))
    );

    // The operator can: video resumes at a keyframe, with no gap in bob's sequence numbers.
    let (status, _) = api(&relay, "POST", path, Some(&ops), Some(&mute(false))).await;
    assert_eq!(status, 204);
    wait_more(&mut bob, "alice", "video", 10).await;
    let got = received_from(&bob, "alice", "video");
    let resumed = got[video_before];
    assert!(is_keyframe(&resumed.payload), "video resumed mid-frame");
    assert_eq!(
        resumed.sequence_number,
        got[video_before - 1].sequence_number.wrapping_add(1),
        "sequence numbers continue across the mute"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_json_with_a_code_and_a_bounded_message() {
    let relay = start_relay(|_| {}).await;
    let ops = admin_token(&relay, "*");
    // What axum refuses before the API's own code runs. `api` insists on a JSON body.
    let oversized = format!(r#"{{"name":"{}"}}"#, "x".repeat(20 * 1024));
    let cases = [
        (
            "POST",
            "/api/rooms",
            Some(oversized.as_str()),
            413,
            "payload_too_large",
        ),
        ("PUT", "/api/rooms", None, 405, "method_not_allowed"),
        ("GET", "/api/rooms/a/b/c/d", None, 404, "not_found"),
        ("GET", "/api/rooms/%FF", None, 400, "bad_request"),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let (status, reply) = api(&relay, method, path, Some(&ops), body).await;
        assert_eq!(
            (status, code(&reply)),
            (want_status, want_code),
            "{method} {path}"
        );
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Refusals that quote the request quote at most a few hundred bytes of it.
    let long = "9".repeat(12_000);
    for body in [
        format!(r#"{{"name":"r","max_participants":"{long}"}}"#),
        format!(r#"{{"name":"r","{long}":1}}"#),
    ] {
        let (status, reply) = api(&relay, "POST", "/api/rooms", Some(&ops), Some(&body)).await;
        assert_eq!((status, code(&reply)), (422, "invalid_body"));
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.len() <= tern_signaling::protocol::MAX_ERROR_TEXT_BYTES,
            "{} bytes",
            message.len()
        );
    }
}
