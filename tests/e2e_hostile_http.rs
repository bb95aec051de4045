//! Attacks on the HTTP port, each while a legitimate call runs: one host holding connections,
//! request heads trickled a byte at a time, a flood that fills the port while health and metrics
//! must still answer, and a flood of distinct addresses against the join limiter.

mod common;

use common::call::call;
use common::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tern_signaling::protocol::ServerMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the loopback address `from` (any 127.0.0.0/8 address works on
/// `lo`), so an attacker is a different client from the legitimate call's.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Whether the server closed `stream` within `within` (EOF or reset), reading whatever comes.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// One host opens 500 connections and sends nothing: it gets at most its share (50 here), the
/// rest are closed on accept and counted; the ones it got are closed once the request-head
/// deadline passes. Meanwhile health checks and new joins from other clients work and the call
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_hold_the_http_port() {
    let mut c = call("hh-hold", |c| {
        c.http.max_connections_per_client = 50;
        c.http.request_head_timeout_s = 2;
    })
    .await;
    let attacker: IpAddr = "127.0.0.2".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..500 {
        if let Ok(stream) = connect_from(attacker, c.relay.http_addr).await {
            held.push(stream);
        }
    }
    wait_metric(
        &c.relay,
        "tern_limit_breaches_total{limit=\"http_connections_per_client\"}",
        "connections over the per-client cap refused",
        |v| v >= 450.0,
    )
    .await;
    let (status, _) = http_get(c.relay.http_addr, "/healthz").await;
    assert_eq!(status, 200);
    let mut dave = Client::connect(&c.relay, "hh-hold", "dave").await;
    wait_more(&mut dave, "carol", "audio", 20).await;
    c.assert_unharmed(2).await;
    // The request-head deadline frees the 50 it was given.
    let mut closed = 0;
    for stream in &mut held {
        if closed_within(stream, Duration::from_secs(6)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, held.len(), "every idle connection closed");
    let open = wait_metric(
        &c.relay,
        "tern_http_connections",
        "the attacker's connections gone",
        |v| v < 20.0,
    )
    .await;
    assert!(open >= 3.0, "the call's own WebSockets stay ({open})");
}

/// A request head sent a byte every 200 ms never completes: the connection is closed at the
/// head deadline (1 s here) while the bytes are still coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_trickled_byte_by_byte_is_cut_at_the_deadline() {
    let mut c = call("hh-trickle", |c| c.http.request_head_timeout_s = 1).await;
    let mut stream = connect_from("127.0.0.3".parse().unwrap(), c.relay.http_addr)
        .await
        .unwrap();
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut cut = None;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        if closed_within(&mut stream, Duration::from_millis(200)).await {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("the trickled request was served or never cut");
    assert!(cut < Duration::from_secs(4), "cut after {cut:?}");
    c.assert_unharmed(1).await;
}

/// The whole port filled from many addresses (the total cap, 100 here, reached): the separate
/// operations listener still answers health, readiness and metrics, and `/metrics` wants its
/// token there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer_on_their_own_listener_while_the_port_is_full() {
    let mut c = call("hh-full", |c| {
        c.http.max_connections = 100;
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        c.metrics.token = "scrape-secret".into();
    })
    .await;
    let ops = c.relay.metrics_addr.expect("operations listener");
    let mut held = Vec::new();
    for i in 0..200u32 {
        let from = IpAddr::from([127, 0, 1, (i % 200 + 1) as u8]);
        if let Ok(stream) = connect_from(from, c.relay.http_addr).await {
            held.push(stream);
        }
    }
    for path in ["/healthz", "/readyz"] {
        let (status, _) = http_get(ops, path).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = http_get(ops, "/metrics").await;
    assert_eq!(status, 401);
    assert!(body.contains("metrics_token_required"), "{body}");
    let (status, body) = http_request(
        ops,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer scrape-secret\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let refused = body
        .lines()
        .find_map(|l| l.strip_prefix("tern_limit_breaches_total{limit=\"http_connections\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        refused >= 90.0,
        "{refused} connections refused at the total cap"
    );
    // Metrics are not on the public port when they have a listener of their own.
    drop(held);
    wait_metric(&c.relay, "tern_http_connections", "the flood gone", |v| {
        v < 10.0
    })
    .await;
    let (status, _) = http_get(c.relay.http_addr, "/metrics").await;
    assert_eq!(status, 404);
    c.assert_unharmed(1).await;
}

/// 70,000 join attempts, each from an address of its own (named by a trusted proxy's
/// X-Forwarded-For), overflow the join limiter's table (65,536 addresses): none is refused,
/// 127.0.0.1 can still join and is still limited, and a participant whose address has used up
/// its joins still resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_addresses_locks_nobody_out() {
    let mut c = call("hh-joins", |c| {
        c.http.trusted_proxies = vec!["127.0.0.1".into()];
        c.http.max_joins_per_ip_per_minute = 3;
    })
    .await;
    // Carol and Bob joined from 127.0.0.1: two of its three joins a minute.

    const ATTEMPTS: u32 = 70_000;
    let mut tasks = Vec::new();
    for part in 0..4u32 {
        let addr = c.relay.http_addr;
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut reader, mut writer) = stream.into_split();
            let writes = tokio::spawn(async move {
                for i in (part..ATTEMPTS).step_by(4) {
                    let forwarded = std::net::Ipv4Addr::from(0x0a00_0000 + i);
                    let request = format!(
                        "GET /rtc HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: {forwarded}\r\n\r\n"
                    );
                    writer.write_all(request.as_bytes()).await.unwrap();
                }
                writer
            });
            let mut responses = 0u32;
            let mut tail = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let want = ATTEMPTS / 4;
            while responses < want {
                let n = reader.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {responses} responses");
                tail.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&tail);
                responses += text.matches("HTTP/1.1 401").count() as u32;
                assert!(!text.contains("HTTP/1.1 429"), "a fresh address was refused");
                let keep = tail.len().saturating_sub(16);
                tail.drain(..keep);
            }
            drop(writes.await.unwrap());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(c.breaches("join_rate").await, 0.0, "nobody was refused");
    // 127.0.0.1 can still join.
    let mut dave = Client::connect(&c.relay, "hh-joins", "dave").await;
    wait_more(&mut dave, "carol", "audio", 10).await;
    // The limit still holds for it (the flood may have made it start afresh: that only ever
    // gives an address back its own budget).
    let mut refused = false;
    for _ in 0..4 {
        refused |= upgrade_request(&c.relay, "", "").await.0 == 429;
    }
    assert!(refused, "127.0.0.1 was never refused");
    // Bob's address is out of joins, but his session resumes.
    let resume = c.bob.resume_token();
    c.bob.send(Command::DropSignaling);
    let url = format!(
        "{}&resume_token={resume}",
        ws_url(
            &c.relay,
            &token(
                &c.relay,
                "hh-joins",
                "bob",
                tern_signaling::auth::Grants::participant()
            )
        )
    );
    c.bob.send(Command::Reconnect(url));
    c.bob
        .wait_until("bob resumed", |log| {
            log.iter().any(|e| {
                matches!(
                    e,
                    Event::Signal(ServerMessage::Joined { resumed: true, .. })
                )
            })
        })
        .await;
    c.assert_unharmed(1).await;
}

/// DNS rebinding: a page on evil.example points its name at 127.0.0.1 and calls the dev-mode
/// relay with `Host` and `Origin` both evil.example:8080. Dev mode answers only loopback host
/// names: no token, no CORS approval, no WebSocket. Loopback names still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_refuses_dns_rebound_hosts() {
    let relay = start_relay(|_| {}).await;
    let rebound = |path: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: evil.example:8080\r\nOrigin: http://evil.example:8080\r\n\
             {extra}Connection: close\r\n\r\n"
        )
    };
    let (status, body) = http_request(relay.http_addr, &rebound("/dev/token?room=r", "")).await;
    assert_eq!(status, 403);
    assert!(body.contains("host_not_allowed"), "{body}");
    let ws = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let token = token(
        &relay,
        "r",
        "alice",
        tern_signaling::auth::Grants::participant(),
    );
    let head = response_head(
        relay.http_addr,
        &rebound(&format!("/rtc?access_token={token}"), ws)
            .replace("Connection: close", "Connection: Upgrade"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (status, _) = http_request(relay.http_addr, &rebound("/", "")).await;
    assert_eq!(status, 403);
    let (status, body) = http_get(relay.http_addr, "/dev/token?room=r&identity=alice").await;
    assert_eq!(status, 200, "{body}");
}

/// The dev token endpoint refuses what the relay would refuse at join: an identity with a
/// newline (which could forge log lines) gets no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_are_not_minted_for_identities_the_relay_refuses() {
    let relay = start_relay(|_| {}).await;
    let (status, body) = http_get(
        relay.http_addr,
        "/dev/token?room=r&identity=mallory%0A2026-11-30T00:00:00Z%20INFO%20admin",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("token_invalid_claims"), "{body}");
    let (status, _) = http_get(relay.http_addr, "/dev/token?room=%1B%5B2Jr&identity=a").await;
    assert_eq!(status, 400);
}
