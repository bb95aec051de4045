//! Graceful drain of the real `tern` process: SIGTERM during a call stops new joins (readiness
//! 503, joins refused with a code) while the call goes on and may even resume, and the process
//! exits 0 once the last participant has left; a second signal exits at once.

mod common;

use common::*;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::auth::{Grants, KeySet, claims_for};
use tern_signaling::protocol::ServerMessage;

const SECRET: &str = "0123456789abcdef0123456789abcdef-drain";

struct Node {
    process: KillOnDrop,
    http: std::net::SocketAddr,
    keys: KeySet,
}

async fn start_node() -> Node {
    let port = free_port();
    let child = Process::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--http-listen", &format!("127.0.0.1:{port}")])
        .args(["--media-listen", "127.0.0.1:0", "--log", "warn"])
        .env("TERN_API_KEY", "drain")
        .env("TERN_API_SECRET", SECRET)
        .env_remove("TERN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node {
        process: KillOnDrop(child),
        http: ([127, 0, 0, 1], port).into(),
        keys: KeySet::new([("drain".to_owned(), SECRET.as_bytes().to_vec())]),
    };
    let deadline = Instant::now() + DEADLINE;
    while http_status(&node, "/readyz").await != 200 {
        assert!(Instant::now() < deadline, "the node never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node
}

async fn http_status(node: &Node, path: &str) -> u16 {
    match tokio::net::TcpStream::connect(node.http).await {
        Ok(_) => http_get(node.http, path).await.0,
        Err(_) => 0,
    }
}

fn url(node: &Node, identity: &str, resume: Option<&str>) -> String {
    let claims = claims_for(
        "drain",
        identity,
        identity,
        Grants::participant(),
        SystemTime::now(),
        Duration::from_secs(600),
    );
    let token = node.keys.mint("drain", &claims).unwrap();
    let resume = resume
        .map(|r| format!("&resume_token={r}"))
        .unwrap_or_default();
    format!("ws://{}/rtc?access_token={token}{resume}", node.http)
}

fn signal(node: &Node, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    let rc = unsafe { libc::kill(node.process.0.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0);
}

/// Waits for the process to exit and returns its exit code.
async fn exit_code(node: &mut Node, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = node.process.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_until_the_last_participant_leaves() {
    let mut node = start_node().await;
    let alice = Client::connect_url(&url(&node, "alice", None), "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect_url(&url(&node, "bob", None), "bob").await;
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 10).await;

    signal(&node, libc::SIGTERM);
    let deadline = Instant::now() + DEADLINE;
    while http_status(&node, "/readyz").await != 503 {
        assert!(Instant::now() < deadline, "/readyz still ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        http_status(&node, "/healthz").await,
        200,
        "alive while draining"
    );

    // New joins are refused before the upgrade, with a code.
    let carol = url(&node, "carol", None);
    let query = &carol[carol.find("/rtc").unwrap()..];
    let request = format!(
        "GET {query} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let (status, body) = http_request(node.http, &request).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"draining\""), "{body}");

    // The call goes on, and a participant whose connection drops may still resume.
    wait_more(&mut bob, "alice", "video", 30).await;
    let resume = bob.resume_token();
    bob.send(Command::DropSignaling);
    bob.send(Command::Reconnect(url(&node, "bob", Some(&resume))));
    bob.wait_for("resumed", |e| match e {
        Event::Signal(ServerMessage::Joined { resumed: true, .. }) => Some(()),
        _ => None,
    })
    .await;
    wait_more(&mut bob, "alice", "video", 10).await;
    assert!(
        node.process.0.try_wait().unwrap().is_none(),
        "exited mid-call"
    );

    // Once both have left, the process exits cleanly.
    alice.send(Command::Leave);
    bob.send(Command::Leave);
    assert_eq!(exit_code(&mut node, DEADLINE).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    for second in [libc::SIGTERM, libc::SIGINT] {
        let mut node = start_node().await;
        let _alice = Client::connect_url(&url(&node, "alice", None), "alice").await;
        signal(&node, libc::SIGTERM);
        let deadline = Instant::now() + DEADLINE;
        while http_status(&node, "/readyz").await != 503 {
            assert!(Instant::now() < deadline, "/readyz still ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            node.process.0.try_wait().unwrap().is_none(),
            "waits for alice"
        );
        signal(&node, second);
        assert_eq!(exit_code(&mut node, DEADLINE).await, Some(0));
    }
}
