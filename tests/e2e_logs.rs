//! The default log filter keeps an operator's log readable: a call is one line per join and per
//! leave from Tern, not the WebRTC stack's state changes of every peer connection.

mod common;

use common::*;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::auth::{Grants, KeySet, claims_for};
use tern_signaling::protocol::ServerMessage;

const SECRET: &str = "0123456789abcdef0123456789abcdef-logs";

fn url(http: std::net::SocketAddr, keys: &KeySet, identity: &str) -> String {
    let claims = claims_for(
        "logs",
        identity,
        identity,
        Grants::participant(),
        SystemTime::now(),
        Duration::from_secs(600),
    );
    let token = keys.mint("logs", &claims).unwrap();
    format!("ws://{http}/rtc?access_token={token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_logs_one_line_per_join_and_leave_at_the_default_filter() {
    let port = free_port();
    let http: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let log_path = std::env::temp_dir().join(format!("tern-e2e-logs-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Process::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--http-listen", &http.to_string()])
        .args(["--media-listen", "127.0.0.1:0"])
        .env("TERN_API_KEY", "logs")
        .env("TERN_API_SECRET", SECRET)
        .env_remove("TERN_CONFIG")
        .env_remove("TERN_LOG")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let mut process = KillOnDrop(child);
    let deadline = Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(http).await.is_err()
        || http_get(http, "/readyz").await.0 != 200
    {
        assert!(Instant::now() < deadline, "the node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = KeySet::new([("logs".to_owned(), SECRET.as_bytes().to_vec())]);

    // A whole call: both legs of two participants connect, media flows, both leave.
    let mut alice = Client::connect_url(&url(http, &keys, "alice"), "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect_url(&url(http, &keys, "bob"), "bob").await;
    let pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 20).await;
    drop(pump);
    for client in [&mut alice, &mut bob] {
        client.send(Command::Leave);
        client
            .wait_for("closed", |e| match e {
                Event::Signal(ServerMessage::Closed { .. }) => Some(()),
                _ => None,
            })
            .await;
    }
    // The relay logs a leave as it handles it; the closed message comes after.
    let log = std::fs::read_to_string(&log_path).unwrap();
    process.0.kill().ok();
    process.0.wait().ok();
    std::fs::remove_file(&log_path).ok();

    // From the first join's room on (the startup lines before it say where the relay listens).
    let call: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("room created"))
        .collect();
    let is = |l: &str, target: &str, message: &str| {
        l.contains(&format!(" {target}: {message}")) || l.contains(&format!("{target}: {message} "))
    };
    let count = |message: &str| {
        call.iter()
            .filter(|l| is(l, "tern::node::participants", message))
            .count()
    };
    assert_eq!(count("joined"), 2, "{log}");
    assert_eq!(count("left"), 2, "{log}");
    assert_eq!(count("room created"), 1, "{log}");
    let others: Vec<&&str> = call
        .iter()
        .filter(|l| {
            !["joined", "left", "room created", "room closed"]
                .iter()
                .any(|m| is(l, "tern::node::participants", m))
        })
        .collect();
    assert!(
        others.is_empty(),
        "more than a line per join and leave: {others:#?}"
    );
}
