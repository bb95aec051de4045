//! ICE-TCP safeguards against clients that are not WebRTC peers: a connection that never
//! presents a STUN request naming a leg is closed at the deadline, an oversized frame closes its
//! connection at once, and connections beyond the cap are refused. (A real browser whose UDP is
//! blocked calls over ICE-TCP in tests/browser/media.mjs.)

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the relay closes `stream`; returns how long after `since` that was.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the relay kept the connection open"),
        }
    }
}

/// Waits until at least `count` connections were closed for `reason` (the count may land just
/// after the client saw the close).
async fn closed_count_reaches(relay: &tern::app::Running, reason: &str, count: f64) {
    let series = format!("tern_ice_tcp_connections_closed_total{{reason=\"{reason}\"}}");
    wait_metric(relay, &series, reason, |v| v >= count).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_are_not_ice_are_closed() {
    let relay = start_relay(|c| {
        c.media.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.media.tcp_stun_deadline_s = 3;
        c.media.tcp_max_connections = 3;
    })
    .await;
    let tcp = relay.tcp_addr.expect("ICE-TCP listener");

    // Silent, and a well-framed STUN request for a ufrag no leg has: both gone at the deadline.
    // The deadline runs from the relay's accept, which is after this.
    let silent_since = Instant::now();
    let mut silent = TcpStream::connect(tcp).await.unwrap();
    let mut stranger = TcpStream::connect(tcp).await.unwrap();
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    request.extend_from_slice(&[7u8; 12]);
    let mut framed = (request.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    stranger.write_all(&framed).await.unwrap();
    // A third takes the last slot; a fourth is refused at once.
    let mut third = TcpStream::connect(tcp).await.unwrap();
    let fourth_since = Instant::now();
    let mut fourth = TcpStream::connect(tcp).await.unwrap();
    let refused = closed_after(&mut fourth, fourth_since).await;
    assert!(
        refused < Duration::from_secs(2),
        "not refused at once: {refused:?}"
    );
    closed_count_reaches(&relay, "limit", 1.0).await;

    let waited = closed_after(&mut silent, silent_since).await;
    assert!(
        waited >= Duration::from_secs(3),
        "closed before the deadline: {waited:?}"
    );
    closed_after(&mut stranger, silent_since).await;
    closed_after(&mut third, silent_since).await;
    closed_count_reaches(&relay, "stun_deadline", 3.0).await;
    assert!(
        metric(
            &relay,
            "tern_packets_dropped_total{reason=\"unknown_ufrag\"}"
        )
        .await
            >= 1.0
    );

    // A frame longer than any packet: closed without waiting for the deadline.
    let big_since = Instant::now();
    let mut big = TcpStream::connect(tcp).await.unwrap();
    big.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    let took = closed_after(&mut big, big_since).await;
    assert!(
        took < Duration::from_secs(2),
        "not closed at once: {took:?}"
    );
    closed_count_reaches(&relay, "oversized_frame", 1.0).await;

    wait_metric(
        &relay,
        "tern_ice_tcp_connections",
        "no connection left",
        |v| v == 0.0,
    )
    .await;
}
