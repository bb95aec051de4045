//! TURN credentials handed out at join are accepted by a real coturn (Debian package `coturn`)
//! configured with the same shared secret; tampered or expired ones are refused.

mod common;

use common::*;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::protocol::ServerMessage;

const SECRET: &str = "turn-shared-secret-0123456789";

/// Allocates a relayed address on coturn with these credentials and exchanges a few packets
/// through it; true when that worked.
fn allocation_works(port: u16, username: &str, password: &str) -> bool {
    let peer_port = free_port();
    Process::new("turnutils_uclient")
        .args(["-p", &port.to_string(), "-u", username, "-w", password])
        .args(["-n", "2", "-m", "1", "-l", "100", "-e", "127.0.0.1"])
        .args(["-r", &peer_port.to_string(), "-y", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("turnutils_uclient (Debian package coturn; tests/run.sh installs it)")
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_accepts_the_credentials_a_participant_gets_at_join() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("tern-coturn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Process::new("turnserver")
        .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
        .args(["--listening-port", &port.to_string()])
        .args(["--use-auth-secret", "--static-auth-secret", SECRET])
        .args(["--realm", "tern.test", "--no-tls", "--no-dtls", "--no-cli"])
        .args([
            "--allow-loopback-peers",
            "--simple-log",
            "--log-file",
            "stdout",
        ])
        .arg("--db")
        .arg(dir.join("turndb"))
        .arg("--pidfile")
        .arg(dir.join("turnserver.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver (Debian package coturn; tests/run.sh installs it)");
    let _coturn = KillOnDrop(child);
    let deadline = Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "coturn did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let turn_url = format!("turn:127.0.0.1:{port}?transport=udp");
    let relay = start_relay(|c| {
        c.ice.stun_urls = vec![format!("stun:127.0.0.1:{port}")];
        c.ice.turn_urls = vec![turn_url.clone()];
        c.ice.turn_secret = SECRET.into();
        c.ice.turn_credential_ttl_s = 600;
    })
    .await;
    let alice = Client::connect(&relay, "turn", "alice").await;
    let servers = alice
        .signals()
        .find_map(|s| match s {
            ServerMessage::Joined { ice_servers, .. } => Some(ice_servers.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert_eq!(servers[0].urls, [format!("stun:127.0.0.1:{port}")]);
    let turn = &servers[1];
    assert_eq!(turn.urls, [turn_url]);
    let username = turn.username.clone().unwrap();
    let password = turn.credential.clone().unwrap();
    let expiry: u64 = username.split(':').next().unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 590..=now + 610).contains(&expiry), "{username}");
    assert!(username.ends_with(":alice"));

    let good = tokio::task::spawn_blocking(move || {
        let tampered = format!("{}A", &password[..password.len() - 1]);
        let (old_user, old_pass) = tern::ice_servers::turn_credentials(
            SECRET,
            "alice",
            SystemTime::now() - Duration::from_secs(7200),
            Duration::from_secs(3600),
        );
        (
            allocation_works(port, &username, &password),
            allocation_works(port, &username, &tampered),
            allocation_works(port, &old_user, &old_pass),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        good,
        (true, false, false),
        "(given, tampered, expired) credentials"
    );
    std::fs::remove_dir_all(&dir).ok();
}
