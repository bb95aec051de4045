//! Load run: one publisher and N subscribers (webrtc-rs `rtc` clients in this process) call
//! through the `tern` binary in its own process; reports the relay's CPU time per forwarded packet.
//!
//! cargo build --release && cargo run --release --example fanout -- [subscribers] [rounds/s] [seconds] [payload bytes]
//!
//! Each round sends one audio and one video packet, so the relay receives 2 x rounds/s packets
//! and forwards 2 x rounds/s x subscribers. CPU comes from /proc/<relay pid>/stat (user + system).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Client, Command, Event, http_get};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let body = http_get(addr, "/metrics").await.1;
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let subscribers = args.first().copied().unwrap_or(10);
    let rate = args.get(1).copied().unwrap_or(200) as u64;
    let seconds = args.get(2).copied().unwrap_or(10) as u64;
    let payload = args.get(3).copied().unwrap_or(1000);

    let http = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let media = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let bin = std::env::var("TERN_TEST_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/tern").to_owned());
    let relay = Relay(
        std::process::Command::new(&bin)
            .args([
                "--http-listen",
                &http.to_string(),
                "--media-listen",
                &media.to_string(),
            ])
            .env("TERN_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}")),
    );
    let pid = relay.0.id();
    let start = Instant::now();
    while tokio::net::TcpStream::connect(http).await.is_err()
        || http_get(http, "/healthz").await.0 != 200
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "relay did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = |name: &str| {
        let name = name.to_owned();
        async move {
            let body = http_get(http, &format!("/dev/token?room=load&identity={name}"))
                .await
                .1;
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            format!(
                "ws://{http}/rtc?access_token={}",
                json["token"].as_str().unwrap()
            )
        }
    };

    let publisher = Client::connect_url(&url("pub").await, "pub").await;
    publisher.send(Command::PayloadSize(payload));
    publisher.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let name = format!("sub{i}");
        subs.push(Client::connect_url(&url(&name).await, &name).await);
    }
    // Until every subscriber receives video (keyframes every round).
    let primed = Instant::now();
    loop {
        publisher.send(Command::SendMedia { keyframe: true });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut all = true;
        for s in subs.iter_mut() {
            s.pump();
            let video = s
                .log
                .iter()
                .any(|e| matches!(e, Event::Rtp(r) if common::tag(&r.payload).contains("/video/")));
            all &= video;
            s.log.clear();
        }
        if all {
            break;
        }
        assert!(
            primed.elapsed() < Duration::from_secs(30),
            "media did not start"
        );
    }

    let sent_before = metric(http, "tern_rtp_packets_sent_total{kind=\"video\"}").await
        + metric(http, "tern_rtp_packets_sent_total{kind=\"audio\"}").await;
    let cpu_before = cpu_seconds(pid);
    let began = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut rounds = 0u64;
    while began.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        publisher.send(Command::SendMedia {
            keyframe: rounds.is_multiple_of(300),
        });
        rounds += 1;
        if rounds.is_multiple_of(50) {
            for s in subs.iter_mut() {
                s.pump();
                s.log.clear();
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wall = began.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let sent = metric(http, "tern_rtp_packets_sent_total{kind=\"video\"}").await
        + metric(http, "tern_rtp_packets_sent_total{kind=\"audio\"}").await
        - sent_before;
    let received = metric(http, "tern_rtp_packets_received_total{kind=\"video\"}").await
        + metric(http, "tern_rtp_packets_received_total{kind=\"audio\"}").await;
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .unwrap_or_default();
    println!(
        "fan-out {subscribers}, {payload}-byte payloads, {:.0} packets/s in: relay forwarded {sent:.0} packets in {wall:.1} s \
         ({:.0}/s) using {cpu:.2} s CPU = {:.1}% of a core, {:.2} us CPU per forwarded packet; \
         {received:.0} received in total; relay RSS {rss_kb} kB",
        2.0 * rounds as f64 / wall,
        sent / wall,
        100.0 * cpu / wall,
        1e6 * cpu / sent.max(1.0),
    );
}
