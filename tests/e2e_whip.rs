//! WHIP (RFC 9725) over real HTTP: every refusal with its status and code, in the order that
//! keeps work away from the unauthenticated (join rate, token, content type, size, SDP), and
//! nothing left behind by any of them: no participant, no session. Publishing itself, trickle,
//! ICE restart and DELETE with real clients (Chromium, GStreamer, aiortc) are in
//! tests/browser/whip.mjs.

mod common;

use common::http_media::*;
use common::*;
use tern_signaling::auth::Grants;

/// A syntactically complete offer the relay cannot take: PCMU is not forwarded.
const PCMU_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\na=ssrc:1 cname:whip\r\n";

/// An offer the relay takes: Opus, send only. Nobody answers its checks, which is fine for
/// everything but media.
fn opus_offer() -> String {
    PCMU_OFFER
        .replace("SAVPF 0", "SAVPF 111")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:111 opus/48000/2")
}

async fn post(
    relay: &tern::app::Running,
    room: &str,
    token: Option<&str>,
    kind: &str,
    body: &[u8],
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", kind)];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    request(relay, "POST", &format!("/whip/{room}"), &headers, body).await
}

fn publisher(relay: &tern::app::Running, room: &str, identity: &str) -> String {
    let grants = Grants {
        publish: true,
        ..Grants::default()
    };
    token(relay, room, identity, grants)
}

/// Nobody is in any room and no WHIP session is open. A refused session's task ends just after
/// the refusal is answered (a full test run once read the gauge while it was still 1), so the
/// gauges are waited for, within the deadline.
async fn nothing_left(relay: &tern::app::Running) {
    wait_metric(relay, "tern_participants", "nobody in any room", |v| {
        v == 0.0
    })
    .await;
    wait_metric(relay, "tern_whip_sessions", "no WHIP session open", |v| {
        v == 0.0
    })
    .await;
}

#[tokio::test]
async fn refusals_come_before_any_work_and_leave_nothing_behind() {
    let relay = start_relay(|_| {}).await;
    let garbage = b"\x00\xffnot sdp";
    let good = publisher(&relay, "stage", "obs");

    // The token first: nothing about the body is looked at without one.
    let r = post(&relay, "stage", None, "application/sdp", garbage).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "token_missing"),
        "{}",
        r.body
    );
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let r = post(
        &relay,
        "stage",
        Some("not.a.jwt"),
        "application/sdp",
        garbage,
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (401, "token_malformed"));
    let viewer = token(
        &relay,
        "stage",
        "viewer",
        Grants {
            subscribe: true,
            ..Grants::default()
        },
    );
    let r = post(&relay, "stage", Some(&viewer), "application/sdp", garbage).await;
    assert_eq!((r.status, r.code().as_str()), (403, "not_allowed"));
    let elsewhere = publisher(&relay, "backstage", "obs");
    let r = post(
        &relay,
        "stage",
        Some(&elsewhere),
        "application/sdp",
        garbage,
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (403, "wrong_room"));

    // Then the content type and size, then whether it is an offer at all.
    let r = post(
        &relay,
        "stage",
        Some(&good),
        "text/plain",
        PCMU_OFFER.as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (415, "unsupported_media_type")
    );
    let huge = format!("{PCMU_OFFER}{}", "a=x-filler\r\n".repeat(4_000));
    let r = post(
        &relay,
        "stage",
        Some(&good),
        "application/sdp",
        huge.as_bytes(),
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    let r = post(&relay, "stage", Some(&good), "application/sdp", garbage).await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_sdp"));
    nothing_left(&relay).await;

    // An offer the relay cannot take: the participant it made for it is gone again.
    let r = post(
        &relay,
        "stage",
        Some(&good),
        "application/sdp; charset=utf-8",
        PCMU_OFFER.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        ["unsupported_codec", "invalid_sdp"].contains(&r.code().as_str()),
        "{}",
        r.body
    );
    eventually("the refused publisher gone", || {
        (relay.snapshot.read().participants == 0).then_some(())
    })
    .await;
    nothing_left(&relay).await;

    // Counted by method and status.
    let counted = metric(
        &relay,
        "tern_whip_requests_total{method=\"post\",status=\"401\"}",
    )
    .await;
    assert_eq!(counted, 2.0);
    assert_eq!(
        metric(
            &relay,
            "tern_whip_requests_total{method=\"post\",status=\"422\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn resources_methods_and_cors() {
    let relay = start_relay(|_| {}).await;
    let good = publisher(&relay, "stage", "obs");
    let auth = format!("Bearer {good}");
    let frag = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/trickle-ice-sdpfrag"),
    ];
    // Unknown resources, with or without a token.
    let r = request(
        &relay,
        "PATCH",
        "/whip/resource/0123",
        &frag,
        b"a=end-of-candidates\r\n",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_resource"));
    let r = request(&relay, "DELETE", "/whip/resource/0123", &frag[..1], b"").await;
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_resource"));
    let r = request(&relay, "DELETE", "/whip/resource/0123", &[], b"").await;
    assert_eq!(r.status, 401);
    // What each address takes.
    let r = request(&relay, "GET", "/whip/stage", &[], b"").await;
    assert_eq!(r.status, 405);
    assert!(
        r.header("allow").is_some_and(|a| a.contains("POST")),
        "{}",
        r.head
    );
    let r = request(&relay, "OPTIONS", "/whip/stage", &[], b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("accept-post").as_deref(), Some("application/sdp"));
    let r = request(&relay, "OPTIONS", "/whip/resource/0123", &[], b"").await;
    assert_eq!(
        r.header("accept-patch").as_deref(),
        Some("application/trickle-ice-sdpfrag")
    );
    // A browser-based client on the relay's own origin: a preflight, then what it may read.
    let origin = format!("http://{}", relay.http_addr);
    let r = request(
        &relay,
        "OPTIONS",
        "/whip/stage",
        &[
            ("Origin", origin.as_str()),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin.clone())
    );
    assert!(
        r.header("access-control-allow-headers")
            .is_some_and(|h| h.contains("if-match"))
    );
    let r = post(&relay, "stage", None, "application/sdp", b"").await;
    assert_eq!(r.status, 401);
    let r = request(
        &relay,
        "POST",
        "/whip/stage",
        &[
            ("Origin", origin.as_str()),
            ("Content-Type", "application/sdp"),
        ],
        b"",
    )
    .await;
    assert!(
        r.header("access-control-expose-headers")
            .is_some_and(|h| h.contains("location") && h.contains("link")),
        "{}",
        r.head
    );
    // Another site is refused, as on the WebSocket.
    let r = request(
        &relay,
        "POST",
        "/whip/stage",
        &[("Origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (403, "origin_not_allowed"));
}

/// One trickle PATCH (a candidate, the offer's own credentials) with `If-Match`.
async fn trickle(relay: &tern::app::Running, location: &str, auth: &str, if_match: &str) -> Reply {
    let headers = [
        ("Authorization", auth),
        ("Content-Type", "application/trickle-ice-sdpfrag"),
        ("If-Match", if_match),
    ];
    let frag = b"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=mid:0\r\n\
        a=candidate:1 1 udp 2130706431 192.0.2.7 5000 typ host\r\n";
    request(relay, "PATCH", location, &headers, frag).await
}

#[tokio::test]
async fn a_session_is_patched_only_by_its_owner_at_a_bounded_rate_and_deleted() {
    let relay = start_relay(|_| {}).await;
    let good = publisher(&relay, "stage", "obs");
    let r = post(
        &relay,
        "stage",
        Some(&good),
        "application/sdp",
        opus_offer().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.starts_with("v=0"), "{}", r.body);
    let location = r.header("location").unwrap();
    let etag = r.header("etag").unwrap();
    assert!(location.starts_with("/whip/resource/"), "{location}");
    assert_eq!(metric(&relay, "tern_whip_sessions").await, 1.0);
    assert_eq!(metric(&relay, "tern_participants").await, 1.0);
    let auth = format!("Bearer {good}");
    assert_eq!(trickle(&relay, &location, &auth, "*").await.status, 204);
    let stale = trickle(&relay, &location, &auth, "\"0000\"").await;
    assert_eq!(
        (stale.status, stale.code().as_str()),
        (412, "etag_mismatch")
    );
    assert_eq!(trickle(&relay, &location, &auth, &etag).await.status, 204);
    // Somebody else's token: no such session for them.
    let other = format!("Bearer {}", publisher(&relay, "stage", "mallory"));
    let r = request(
        &relay,
        "DELETE",
        &location,
        &[("Authorization", other.as_str())],
        b"",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_resource"));
    // A flood of PATCHes: the bucket runs dry.
    let mut limited = 0;
    for _ in 0..40 {
        let r = trickle(&relay, &location, &auth, "*").await;
        if r.status == 429 {
            assert_eq!(r.code(), "rate_limited");
            assert_eq!(r.header("retry-after").as_deref(), Some("1"));
            limited += 1;
        }
    }
    assert!(limited > 0, "40 PATCHes at once, none refused");
    // DELETE: the participant leaves, the resource is gone.
    let r = request(
        &relay,
        "DELETE",
        &location,
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    eventually("the WHIP participant gone", || {
        (relay.snapshot.read().participants == 0).then_some(())
    })
    .await;
    let r = request(
        &relay,
        "DELETE",
        &location,
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    wait_metric(
        &relay,
        "tern_whip_sessions",
        "the session's task to end",
        |v| v == 0.0,
    )
    .await;
}

#[tokio::test]
async fn a_room_that_requires_e2ee_refuses_whip() {
    let relay = start_relay(|config| config.room.e2ee_required = true).await;
    let good = publisher(&relay, "secret", "obs");
    let r = post(
        &relay,
        "secret",
        Some(&good),
        "application/sdp",
        PCMU_OFFER.as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "e2ee_required"),
        "{}",
        r.body
    );
    nothing_left(&relay).await;
}

#[tokio::test]
async fn the_limits_of_websocket_joins_hold() {
    let relay = start_relay(|config| {
        config.http.max_joins_per_ip_per_minute = 3;
        config.room.max_participants = 1;
    })
    .await;
    // The room is full: the one place goes to a WebSocket participant.
    let _alice = Client::connect(&relay, "stage", "alice").await;
    let good = publisher(&relay, "stage", "obs");
    let r = post(
        &relay,
        "stage",
        Some(&good),
        "application/sdp",
        PCMU_OFFER.as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "room_full"),
        "{}",
        r.body
    );
    // Join attempts per address count WHIP too (alice's join was the first).
    let r = post(&relay, "stage", Some(&good), "application/sdp", b"").await;
    assert_eq!(r.status, 400);
    let r = post(&relay, "stage", Some(&good), "application/sdp", b"").await;
    assert_eq!((r.status, r.code().as_str()), (429, "too_many_joins"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(metric(&relay, "tern_whip_sessions").await, 0.0);
    assert_eq!(metric(&relay, "tern_participants").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_its_load_limit_answers_503_with_retry_after() {
    // 3 %: a fast stream keeps the only worker busy well over that (see e2e_workers.rs).
    let relay = start_relay(|config| {
        config.media.max_worker_load_percent = 3;
        config.media.max_packets_per_second_per_leg = 100_000;
    })
    .await;
    let alice = Client::connect(&relay, "stage", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "stage", "bob").await;
    let pump = MediaPump::start_fast(&alice, 10);
    wait_more(&mut bob, "alice", "video", 50).await;
    wait_metric(
        &relay,
        "tern_media_worker_load{worker=\"0\"}",
        "the worker busy over 3 % of the time",
        |load| load > 0.03,
    )
    .await;
    let r = post(
        &relay,
        "stage",
        Some(&publisher(&relay, "stage", "obs")),
        "application/sdp",
        opus_offer().as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "unavailable"),
        "{}",
        r.body
    );
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    assert!(r.body.contains("load limit"), "{}", r.body);
    assert_eq!(metric(&relay, "tern_whip_sessions").await, 0.0);
    assert_eq!(metric(&relay, "tern_participants").await, 2.0);
    drop(pump);
}
