//! Every limit a client can run into, each refused with its code and counted, without harm to
//! anyone else; grants; allowed origins; and built-in TLS with a certificate made here.

mod common;

use common::*;
use futures_util::StreamExt;
use std::sync::Arc;
use tern_signaling::auth::{Grants, claims_for};
use tern_signaling::protocol::{ClientMessage, ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

async fn breaches(relay: &tern::app::Running, limit: &str) -> f64 {
    metric(
        relay,
        &format!("tern_limit_breaches_total{{limit=\"{limit}\"}}"),
    )
    .await
}

/// Alice publishes to Bob in `room`; returns once media flows.
async fn call(relay: &tern::app::Running, room: &str) -> (Client, Client, MediaPump) {
    let alice = Client::connect(relay, room, "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(relay, room, "bob").await;
    let pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "audio", 5).await;
    (alice, bob, pump)
}

async fn unharmed(bob: &mut Client) {
    wait_more(bob, "alice", "audio", 30).await;
    assert_no_gap(bob, "alice", "audio", 30);
    assert!(bob.errors().is_empty(), "bob saw {:?}", bob.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flood_is_dropped_with_rate_limited_and_nobody_else_notices() {
    let relay = start_relay(|c| c.session.max_messages_per_s = 10).await;
    let (_alice, mut bob, _pump) = call(&relay, "flood").await;
    let mut mallory = Client::connect(&relay, "flood", "mallory").await;
    // Her client's own answer and candidates spend tokens too; let them pass first.
    mallory.wait_subscribed().await;
    // From 1: the client's own keepalive pings carry 0.
    for timestamp in 1..=200 {
        mallory.send(Command::Raw(ClientMessage::Ping { timestamp }));
    }
    expect_error(&mut mallory, ErrorCode::RateLimited).await;
    mallory
        .wait_for("an accepted pong", |e| match e {
            Event::Signal(ServerMessage::Pong { timestamp }) if *timestamp > 0 => Some(()),
            _ => None,
        })
        .await;
    let rate = "tern_limit_breaches_total{limit=\"message_rate\"}";
    wait_metric(&relay, rate, "the flood counted", |v| v >= 150.0).await;
    mallory.pump();
    let pongs = mallory
        .signals()
        .filter(|s| matches!(s, ServerMessage::Pong { timestamp } if *timestamp > 0))
        .count();
    assert!(pongs < 50, "{pongs} of 200 pings answered at 10/s");
    let rate_errors = mallory
        .errors()
        .iter()
        .filter(|c| *c == "rate_limited")
        .count();
    assert!(
        rate_errors <= 3,
        "one rate_limited reply per second, got {rate_errors}"
    );
    unharmed(&mut bob).await;
    // The bucket refills: mallory's session still works.
    let mut answered = false;
    for stamp in 1_000..1_050u64 {
        mallory.send(Command::Raw(ClientMessage::Ping { timestamp: stamp }));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        mallory.pump();
        if mallory
            .signals()
            .any(|s| matches!(s, ServerMessage::Pong { timestamp } if *timestamp >= 1_000))
        {
            answered = true;
            break;
        }
    }
    assert!(answered, "mallory's session recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_attempts_per_address_are_limited_before_the_token_is_checked() {
    let relay = start_relay(|c| c.http.max_joins_per_ip_per_minute = 3).await;
    for _ in 0..3 {
        let (status, _) = upgrade_request(&relay, "?access_token=guess", "").await;
        assert_eq!(status, 401);
    }
    let good = token(&relay, "r", "alice", Grants::participant());
    let request = format!(
        "GET /rtc?access_token={good} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let head = response_head(relay.http_addr, &request).await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    let retry_after: u64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, body) = upgrade_request(&relay, &format!("?access_token={good}"), "").await;
    assert_eq!(status, 429);
    assert!(body.contains("too_many_joins"), "{body}");
    assert!(breaches(&relay, "join_rate").await >= 2.0);
    // Other endpoints are not join attempts.
    assert_eq!(http_get(relay.http_addr, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_join_limit() {
    async fn status(relay: &tern::app::Running, forwarded_for: &str) -> u16 {
        let header = format!("X-Forwarded-For: {forwarded_for}\r\n");
        upgrade_request(relay, "?access_token=guess", &header)
            .await
            .0
    }
    // The test's connections come from 127.0.0.1: the proxy.
    let relay = start_relay(|c| {
        c.http.max_joins_per_ip_per_minute = 2;
        c.http.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    assert_eq!(status(&relay, "198.51.100.1").await, 401);
    assert_eq!(status(&relay, "198.51.100.1").await, 401);
    assert_eq!(status(&relay, "198.51.100.1").await, 429);
    // Another client behind the same proxy is not held back by the first.
    assert_eq!(status(&relay, "198.51.100.2").await, 401);
    // A client cannot escape its limit by writing the header itself: the proxy appends the
    // address it saw, and that one counts.
    assert_eq!(status(&relay, "203.0.113.77, 198.51.100.1").await, 429);

    // Without trusted proxies the header is ignored: all of these are one client.
    let relay = start_relay(|c| c.http.max_joins_per_ip_per_minute = 2).await;
    assert_eq!(status(&relay, "198.51.100.1").await, 401);
    assert_eq!(status(&relay, "198.51.100.2").await, 401);
    assert_eq!(status(&relay, "198.51.100.3").await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_per_node_are_limited_for_joins_and_the_api() {
    let relay = start_relay(|c| c.room.max_rooms = 1).await;
    let (_alice, mut bob, _pump) = call(&relay, "only").await;
    match first_message(&relay, "second", "carol").await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::LimitExceeded),
        other => panic!("a second room was opened: {other:?}"),
    }
    let ops = admin_token(&relay, "*");
    let (status, body) = api(
        &relay,
        "POST",
        "/api/rooms",
        Some(&ops),
        Some(r#"{"name":"third"}"#),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (429, Some("room_limit")));
    assert!(breaches(&relay, "node_rooms").await >= 2.0);
    unharmed(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_tracks_and_oversized_sdp_are_refused() {
    let relay = start_relay(|c| c.room.max_tracks_per_participant = 1).await;
    let mut alice = Client::connect(&relay, "tracks", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    expect_error(&mut alice, ErrorCode::LimitExceeded).await;
    assert!(breaches(&relay, "participant_tracks").await >= 1.0);

    let relay = start_relay(|c| c.room.max_sdp_bytes = 300).await;
    let mut alice = Client::connect(&relay, "sdp", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: false,
    });
    expect_error(&mut alice, ErrorCode::LimitExceeded).await;
    assert!(breaches(&relay, "sdp_size").await >= 1.0);
    // Limits are per message: the session goes on.
    alice.send(Command::Raw(ClientMessage::Ping { timestamp: 7 }));
    alice
        .wait_for("pong", |e| {
            matches!(e, Event::Signal(ServerMessage::Pong { timestamp: 7 })).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_and_counted() {
    let relay = start_relay(|c| c.session.idle_timeout_s = 1).await;
    // The test client never pings.
    let mut quiet = Client::connect(&relay, "idle", "quiet").await;
    quiet
        .wait_for("closed", |e| matches!(e, Event::Closed).then_some(()))
        .await;
    assert!(breaches(&relay, "idle_session").await >= 1.0);
}

/// A client that joins and then stops reading: the relay must neither queue for it without bound
/// nor hold its task and socket buffers forever, and the others must not notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_may_resume() {
    let relay = start_relay(|c| {
        c.session.write_timeout_s = 1;
        c.session.max_messages_per_s = 1000;
        // Room enough that only the write timeout can drop Mallory (and Bob, who reads, never
        // falls that far behind).
        c.session.event_queue = 8192;
    })
    .await;
    let (alice, mut bob, _pump) = call(&relay, "stalled").await;
    let audio = bob
        .signals()
        .find_map(|s| match s {
            ServerMessage::SubscribeOffer { tracks, .. } => tracks
                .iter()
                .find(|t| t.kind == tern_signaling::protocol::TrackKind::Audio)
                .map(|t| t.id.clone()),
            _ => None,
        })
        .expect("alice's audio track");

    // Mallory's socket takes a few kilobytes at most; after `joined` she reads nothing.
    let url = ws_url(
        &relay,
        &token(&relay, "stalled", "mallory", Grants::participant()),
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(relay.http_addr).await.unwrap();
    let (mut mallory, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .unwrap();
    let (mallory_id, resume) = loop {
        match mallory.next().await {
            Some(Ok(Message::Text(text))) => {
                if let Ok(ServerMessage::Joined {
                    participant,
                    resume_token,
                    ..
                }) = serde_json::from_str(&text)
                {
                    break (participant.id, resume_token);
                }
            }
            other => panic!("no joined for mallory: {other:?}"),
        }
    };

    // Alice's mute toggles become events for everybody, until the relay gives up on Mallory.
    let mut toggles = 0usize;
    let deadline = std::time::Instant::now() + DEADLINE;
    while breaches(&relay, "slow_session").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "mallory was never dropped"
        );
        for _ in 0..40 {
            toggles += 1;
            alice.send(Command::Raw(ClientMessage::SetMuted {
                track_id: audio.clone(),
                muted: toggles % 2 == 1,
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let id = mallory_id.clone();
    bob.wait_for("mallory reconnecting", |e| match e {
        Event::Signal(ServerMessage::ParticipantReconnecting { participant_id })
            if *participant_id == id =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    // The relay let go of the connection itself while Mallory still reads nothing: no task or
    // socket is left waiting on her.
    let open = "tern_signaling_connections";
    wait_metric(&relay, open, "the stalled connection closed", |v| v <= 2.0).await;
    assert_eq!(
        breaches(&relay, "slow_session").await,
        1.0,
        "one stalled client, counted once"
    );
    // Bob heard every toggle, in order, and his media never stalled.
    let track = audio.clone();
    bob.wait_until("every toggle reached bob", |events| {
        events
            .iter()
            .filter(|e| {
                matches!(e, Event::Signal(ServerMessage::TrackMuted { track_id, .. }) if *track_id == track)
            })
            .count()
            == toggles
    })
    .await;
    wait_more(&mut bob, "alice", "video", 30).await;
    assert_no_gap(&bob, "alice", "video", 30);
    assert!(bob.errors().is_empty(), "bob saw {:?}", bob.errors());
    assert!(alice.errors().is_empty(), "alice saw {:?}", alice.errors());
    drop(mallory);

    // Mallory resumes as herself and gets the state she missed.
    let mut mallory = Client::connect_url(&format!("{url}&resume_token={resume}"), "mallory").await;
    let alice_muted = mallory
        .wait_for("mallory resumed", |e| match e {
            Event::Signal(ServerMessage::Joined {
                participant,
                resumed: true,
                participants,
                ..
            }) if participant.id == mallory_id => participants
                .iter()
                .flat_map(|p| &p.tracks)
                .find(|t| t.id == audio)
                .map(|t| t.muted),
            _ => None,
        })
        .await;
    assert_eq!(alice_muted, toggles % 2 == 1, "the last toggle wins");
    wait_more(&mut mallory, "alice", "video", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_subscribe_grant_there_is_no_subscribe_leg() {
    let relay = start_relay(|_| {}).await;
    let (_alice, mut bob, _pump) = call(&relay, "grants").await;
    let publisher_only = Grants {
        subscribe: false,
        ..Grants::participant()
    };
    let mut dave = Client::connect_with(&relay, "grants", "dave", publisher_only).await;
    dave.send(Command::Publish {
        audio: true,
        video: false,
    });
    let _dave_pump = MediaPump::start(&dave);
    // Dave can publish (bob receives him) ...
    wait_more(&mut bob, "dave", "audio", 10).await;
    // ... but gets nothing: no subscribe offer, no media, while bob keeps receiving alice.
    unharmed(&mut bob).await;
    dave.pump();
    assert!(
        !dave
            .signals()
            .any(|s| matches!(s, ServerMessage::SubscribeOffer { .. })),
        "dave got a subscribe offer"
    );
    assert_eq!(dave.rtp().count(), 0);
    // And a participant that may not publish is refused with not_allowed.
    let mut eve = Client::connect_with(
        &relay,
        "grants",
        "eve",
        Grants {
            publish: false,
            ..Grants::participant()
        },
    )
    .await;
    eve.send(Command::Publish {
        audio: true,
        video: false,
    });
    expect_error(&mut eve, ErrorCode::NotAllowed).await;
}

fn upgrade_with_origin(path_and_query: &str, host: &str, origin: &str) -> String {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_may_open_the_websocket_or_call_the_api() {
    const KID: &str = "prod";
    let relay = start_relay(|c| {
        c.auth
            .keys
            .insert(KID.into(), "0123456789abcdef0123456789abcdef".into());
        c.http.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let mint = |grants| {
        relay
            .keys
            .mint(
                KID,
                &claims_for(
                    "r",
                    "alice",
                    "alice",
                    grants,
                    std::time::SystemTime::now(),
                    std::time::Duration::from_secs(60),
                ),
            )
            .unwrap()
    };
    let rtc = format!("/rtc?access_token={}", mint(Grants::participant()));
    let cases = [
        ("https://app.example", "relay.example", "101"),
        ("https://evil.example", "relay.example", "403"),
        // Loopback origins are only for dev mode.
        ("http://localhost:3000", "relay.example", "403"),
        // The relay's own page.
        ("https://relay.example", "relay.example", "101"),
        ("null", "relay.example", "403"),
    ];
    for (origin, host, want) in cases {
        let head = response_head(relay.http_addr, &upgrade_with_origin(&rtc, host, origin)).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {want}")),
            "{origin}: {head}"
        );
    }
    let (status, body) = http_request(
        relay.http_addr,
        &upgrade_with_origin(&rtc, "relay.example", "https://evil.example"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("origin_not_allowed"), "{body}");
    assert!(metric(&relay, "tern_signaling_origin_refusals_total").await >= 4.0);

    // CORS: a preflight from the allowed origin is answered; others are refused.
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /api/rooms HTTP/1.1\r\nHost: relay.example\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: GET\r\n\
             Access-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n"
        )
    };
    let head = response_head(relay.http_addr, &preflight("https://app.example"))
        .await
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(head.contains("access-control-allow-origin: https://app.example"));
    assert!(head.contains("access-control-allow-headers: authorization, content-type"));
    let head = response_head(relay.http_addr, &preflight("https://evil.example")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // An allowed cross-origin API call carries the CORS header.
    let admin = mint(Grants {
        admin: true,
        ..Grants::default()
    });
    let head = response_head(
        relay.http_addr,
        &format!(
            "GET /api/rooms HTTP/1.1\r\nHost: relay.example\r\nOrigin: https://app.example\r\n\
             Authorization: Bearer {admin}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await
    .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("access-control-allow-origin: https://app.example"));

    // Dev mode lets a local app on another port in, and nobody else.
    let dev = start_relay(|_| {}).await;
    let rtc = format!(
        "/rtc?access_token={}",
        token(&dev, "r", "alice", Grants::participant())
    );
    let head = response_head(
        dev.http_addr,
        &upgrade_with_origin(&rtc, "127.0.0.1:8080", "http://localhost:3000"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let head = response_head(
        dev.http_addr,
        &upgrade_with_origin(&rtc, "127.0.0.1:8080", "https://evil.example"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

/// A TLS client that trusts exactly `cert`.
fn connector(cert: &rcgen::Certificate) -> tokio_rustls::TlsConnector {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_certificate_generated_here() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("tern-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, signing_key.serialize_pem()).unwrap();
    let relay = start_relay(|c| {
        c.http.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.http.tls_cert_file = Some(cert_file.clone());
        c.http.tls_key_file = Some(key_file.clone());
    })
    .await;
    let https = relay.https_addr.expect("TLS listener");
    let tls = connector(&cert);
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();

    // A client that opens a connection and never speaks TLS holds up nobody.
    let _stalled = tokio::net::TcpStream::connect(https).await.unwrap();
    // Plain HTTP on the TLS port is refused, and the listener carries on.
    let mut plain = tokio::net::TcpStream::connect(https).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let mut stream = tls.connect(name.clone(), tcp).await.expect("TLS handshake");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");

    // A join over WSS.
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let stream = tls.connect(name, tcp).await.expect("TLS handshake");
    let url = format!(
        "wss://localhost:{}/rtc?access_token={}",
        https.port(),
        token(&relay, "secure", "alice", Grants::participant())
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket over TLS");
    let first = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("a message")
        .expect("open")
        .expect("frame");
    let Message::Text(text) = first else {
        panic!("not text: {first:?}")
    };
    let message: ServerMessage = serde_json::from_str(&text).unwrap();
    assert!(
        matches!(&message, ServerMessage::Joined { room, .. } if room == "secure"),
        "{message:?}"
    );
    // Plain HTTP stays available on its own listener.
    assert_eq!(http_get(relay.http_addr, "/healthz").await.0, 200);
    std::fs::remove_dir_all(&dir).ok();
}
