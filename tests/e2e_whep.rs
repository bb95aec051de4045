//! WHEP playback over real HTTP and real UDP: a player built on `rtc` (receive-only audio and
//! video m-lines) watches publishers of the in-process test client, follows the next one when
//! the first leaves (one continuous stream per m-line), follows a named participant, restarts
//! ICE, and leaves on DELETE; and every refusal, with nothing left behind. Chromium's and
//! aiortc's players are in tests/browser/whep.mjs.

mod common;

use common::http_media::*;
use common::*;
use tern_signaling::auth::Grants;

fn viewer(relay: &tern::app::Running, room: &str, identity: &str) -> String {
    let grants = Grants {
        subscribe: true,
        ..Grants::default()
    };
    token(relay, room, identity, grants)
}

async fn publishing(relay: &tern::app::Running, room: &str, name: &str) -> (Client, MediaPump) {
    let mut client = Client::connect(relay, room, name).await;
    client.send(Command::Publish {
        audio: true,
        video: true,
    });
    let pump = MediaPump::start(&client);
    client
        .wait_until(&format!("{name} publishes"), |events| {
            events.iter().any(|e| {
                matches!(
                    e,
                    Event::Signal(tern_signaling::protocol::ServerMessage::PublishAnswer { .. })
                )
            })
        })
        .await;
    (client, pump)
}

/// The sequence numbers of what arrived on one m-line, in arrival order.
fn numbers_on(player: &Player, mid: &str) -> Vec<u16> {
    player
        .received()
        .into_iter()
        .filter(|(m, _)| m == mid)
        .map(|(_, r)| r.sequence_number)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_watches_the_room_and_follows_the_next_publisher_on_one_stream() {
    let relay = start_relay(|_| {}).await;
    let (alice, alice_pump) = publishing(&relay, "stage", "alice").await;
    let mut bob = Client::connect(&relay, "stage", "bob").await;
    let player = Player::start(&relay, "stage", &viewer(&relay, "stage", "viewer-1")).await;
    assert_eq!(player.reply.status, 201, "{}", player.reply.body);
    assert!(player.location().starts_with("/whep/resource/"));
    assert!(player.reply.header("etag").is_some());
    assert!(
        player.reply.body.contains("a=sendonly"),
        "{}",
        player.reply.body
    );

    // Alice, the only publisher: audio and video, video from a keyframe.
    player
        .wait("the player receives alice's audio and video", |p| {
            p.from("alice", "video").len() >= 20 && p.from("alice", "audio").len() >= 20
        })
        .await;
    let first = &player.from("alice", "video")[0];
    assert!(is_keyframe(&first.payload), "video starts at a keyframe");
    let ssrcs: std::collections::HashSet<u32> =
        player.received().iter().map(|(_, r)| r.ssrc).collect();
    assert_eq!(ssrcs.len(), 2, "one stream per m-line");

    // The others see the viewer come, as a WHEP participant.
    bob.wait_for("the viewer joins", |e| match e {
        Event::Signal(tern_signaling::protocol::ServerMessage::ParticipantJoined {
            participant,
        }) => (participant.identity == "viewer-1").then_some(()),
        _ => None,
    })
    .await;
    let admin = admin_token(&relay, "stage");
    let (status, room) = api(&relay, "GET", "/api/rooms/stage", Some(&admin), None).await;
    assert_eq!(status, 200);
    let vias: Vec<&str> = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["via"].as_str())
        .collect();
    assert!(vias.contains(&"whep"), "{room}");

    // Bob publishes too, later: the viewer stays on alice.
    bob.send(Command::Publish {
        audio: true,
        video: true,
    });
    // Keyframes only when asked (PLI), so that the relay passes on a viewer's request (it
    // ignores one right after a keyframe).
    let _bob_pump = MediaPump::start_with(&bob, None);
    wait_more(&mut bob, "alice", "video", 10).await;
    let seen_of_bob = player.from("bob", "video").len();
    assert_eq!(
        seen_of_bob, 0,
        "the viewer follows alice, who was there first"
    );

    // Alice leaves: the same m-lines go on with bob, with no jump in numbering.
    let video_mid = player
        .received()
        .iter()
        .find(|(_, r)| tag(&r.payload).starts_with("alice/video/"))
        .map(|(m, _)| m.clone())
        .unwrap();
    drop(alice_pump);
    alice.send(Command::Leave);
    player
        .wait("the player receives bob's video", |p| {
            p.from("bob", "video").len() >= 20
        })
        .await;
    let on_video = numbers_on(&player, &video_mid);
    for pair in on_video.windows(2) {
        let step = pair[1].wrapping_sub(pair[0]);
        assert!(
            (1..=3).contains(&step) || step > u16::MAX - 64,
            "the video m-line's numbering jumps from {} to {}",
            pair[0],
            pair[1]
        );
    }
    let bob_first = &player.from("bob", "video")[0];
    assert!(
        is_keyframe(&bob_first.payload),
        "bob's video starts at a keyframe"
    );

    // The player's keyframe requests reach the publisher it watches now.
    let plis = |c: &Client| c.log.iter().filter(|e| matches!(e, Event::Pli)).count();
    bob.pump();
    let before = plis(&bob);
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        player.request_keyframe();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        bob.pump();
        if plis(&bob) > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the player's PLI never reached bob"
        );
    }
    let video_ssrcs: std::collections::HashSet<u32> = player
        .received()
        .iter()
        .filter(|(m, _)| *m == video_mid)
        .map(|(_, r)| r.ssrc)
        .collect();
    assert_eq!(video_ssrcs.len(), 1, "one SSRC across publishers");

    // DELETE: the viewer leaves for everyone, and nothing stays.
    let auth = format!("Bearer {}", viewer(&relay, "stage", "viewer-1"));
    let deleted = request(
        &relay,
        "DELETE",
        &player.location(),
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(deleted.status, 200);
    bob.wait_for("the viewer leaves", |e| match e {
        Event::Signal(tern_signaling::protocol::ServerMessage::ParticipantLeft { .. }) => Some(()),
        _ => None,
    })
    .await;
    wait_metric(&relay, "tern_whep_sessions", "no WHEP session", |v| {
        v == 0.0
    })
    .await;
    assert_eq!(
        metric(
            &relay,
            "tern_whep_requests_total{method=\"post\",status=\"201\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_follows_a_named_participant_and_restarts_ice() {
    let relay = start_relay(|_| {}).await;
    let (_alice, _alice_pump) = publishing(&relay, "two", "alice").await;
    let (_bob, _bob_pump) = publishing(&relay, "two", "bob").await;
    let token = viewer(&relay, "two", "fan");
    let player = Player::start(&relay, "two?participant=bob", &token).await;
    assert_eq!(player.reply.status, 201, "{}", player.reply.body);
    player
        .wait("the fan receives bob", |p| {
            p.from("bob", "video").len() >= 20 && p.from("bob", "audio").len() >= 20
        })
        .await;
    assert!(
        player.from("alice", "video").is_empty(),
        "only bob is followed"
    );

    // An ICE restart: new credentials in, the relay's new ones out, with a new ETag.
    let auth = format!("Bearer {token}");
    let etag = player.reply.header("etag").unwrap();
    let frag = "a=ice-ufrag:newufrag\r\na=ice-pwd:newpasswordnewpassword12\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/trickle-ice-sdpfrag"),
        ("If-Match", etag.as_str()),
    ];
    let restarted = request(
        &relay,
        "PATCH",
        &player.location(),
        &headers,
        frag.as_bytes(),
    )
    .await;
    assert_eq!(restarted.status, 200, "{}", restarted.body);
    assert!(
        restarted.body.contains("a=ice-ufrag:"),
        "{}",
        restarted.body
    );
    assert_ne!(restarted.header("etag"), Some(etag));

    // A trickled candidate is taken (204).
    let trickle = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/trickle-ice-sdpfrag"),
    ];
    let trickled = request(
        &relay,
        "PATCH",
        &player.location(),
        &headers,
        trickle.as_bytes(),
    )
    .await;
    assert_eq!(trickled.status, 204, "{}", trickled.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_nothing_behind() {
    let relay = start_relay(|_| {}).await;
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
        a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
        a=setup:actpass\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n";
    let good = viewer(&relay, "r", "v");
    let publisher = token(
        &relay,
        "r",
        "p",
        Grants {
            publish: true,
            ..Grants::default()
        },
    );
    let post =
        |token: Option<String>, kind: &'static str, path: &'static str, body: &'static str| {
            let relay = &relay;
            async move {
                let auth = token.map(|t| format!("Bearer {t}"));
                let mut headers = vec![("Content-Type", kind)];
                if let Some(auth) = &auth {
                    headers.push(("Authorization", auth.as_str()));
                }
                request(relay, "POST", path, &headers, body.as_bytes()).await
            }
        };
    let sdp = "application/sdp";
    let cases = [
        (post(None, sdp, "/whep/r", offer).await, 401, "missing"),
        (
            post(Some("x.y.z".into()), sdp, "/whep/r", offer).await,
            401,
            "malformed",
        ),
        (
            post(Some(publisher), sdp, "/whep/r", offer).await,
            403,
            "not_allowed",
        ),
        (
            post(Some(good.clone()), sdp, "/whep/other", offer).await,
            403,
            "wrong_room",
        ),
        (
            post(Some(good.clone()), "text/plain", "/whep/r", offer).await,
            415,
            "unsupported_media_type",
        ),
        (
            post(Some(good.clone()), sdp, "/whep/r", "hello").await,
            400,
            "invalid_sdp",
        ),
        (
            post(Some(good.clone()), sdp, "/whep/r?participant=", offer).await,
            400,
            "bad_parameter",
        ),
        // PCMU only: nothing the relay could send on it.
        (
            post(Some(good.clone()), sdp, "/whep/r", offer).await,
            422,
            "unsupported_codec",
        ),
    ];
    let auth = format!("Bearer {good}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", sdp),
        ("Accept", "application/json"),
    ];
    let not_acceptable = request(&relay, "POST", "/whep/r", &headers, offer.as_bytes()).await;
    assert_eq!(
        (not_acceptable.status, not_acceptable.code().as_str()),
        (406, "not_acceptable")
    );
    for (reply, status, code) in &cases {
        assert_eq!(reply.status, *status, "{code}: {}", reply.body);
        if !["missing", "malformed"].contains(code) {
            assert_eq!(reply.code(), *code, "{}", reply.body);
        }
    }
    let unknown = request(
        &relay,
        "DELETE",
        "/whep/resource/nope",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(unknown.status, 404);
    let options = request(&relay, "OPTIONS", "/whep/r", &[], b"").await;
    assert_eq!(
        options.header("accept-post").as_deref(),
        Some("application/sdp")
    );
    let get = request(&relay, "GET", "/whep/r", &[], b"").await;
    assert_eq!(get.status, 405);
    wait_metric(&relay, "tern_participants", "nobody", |v| v == 0.0).await;
    // A refused session's task ends just after the refusal is answered.
    wait_metric(&relay, "tern_whep_sessions", "no WHEP session", |v| {
        v == 0.0
    })
    .await;

    // A viewer that offers only to send (nothing to answer), and one with more m-lines than
    // `room.max_media_sections` (32): both 422, nothing made.
    let vp8 = offer
        .replace("SAVPF 0", "SAVPF 96")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:96 VP8/90000");
    let sending = vp8.replace("a=recvonly", "a=sendonly");
    let media = vp8.find("m=video").unwrap();
    let many = format!("{}{}", &vp8[..media], vp8[media..].repeat(33));
    let headers = [("Authorization", auth.as_str()), ("Content-Type", sdp)];
    for (body, code) in [(sending, "unsupported_codec"), (many, "limit_exceeded")] {
        let reply = request(&relay, "POST", "/whep/r", &headers, body.as_bytes()).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (422, code),
            "{}",
            reply.body
        );
    }
    wait_metric(&relay, "tern_participants", "nobody", |v| v == 0.0).await;
    // A refused session's task ends just after the refusal is answered.
    wait_metric(&relay, "tern_whep_sessions", "no WHEP session", |v| {
        v == 0.0
    })
    .await;

    // A full room: 503 before any leg is made.
    let small = start_relay(|c| c.room.max_participants = 1).await;
    let _inside = Client::connect(&small, "full", "inside").await;
    let player = Player::start(&small, "full", &viewer(&small, "full", "late")).await;
    assert_eq!(
        (player.reply.status, player.reply.code().as_str()),
        (503, "room_full")
    );
    assert_eq!(metric(&small, "tern_participants").await, 1.0);
    assert_eq!(
        metric(
            &relay,
            "tern_whep_requests_total{method=\"post\",status=\"422\"}"
        )
        .await,
        3.0
    );
}
