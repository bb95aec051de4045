//! A real Prometheus server (Debian package `prometheus`) scrapes a relay with the shipped scrape
//! config while two participants are in a call; its query API must then see both participants
//! and packet counters that grow.

mod common;

use common::*;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query's single result, if there is one yet.
async fn query(addr: std::net::SocketAddr, expr: &str) -> Option<f64> {
    // Not listening yet while Prometheus starts.
    tokio::net::TcpStream::connect(addr).await.ok()?;
    let (status, body) = http_get(addr, &format!("/api/v1/query?query={}", encode(expr))).await;
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

async fn until_value(
    addr: std::net::SocketAddr,
    expr: &str,
    ok: impl Fn(f64) -> bool,
    within: Duration,
) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = query(addr, expr).await
            && ok(v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never answered {expr} as expected (last: {:?})",
            query(addr, expr).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_call_with_the_shipped_config() {
    let relay = start_relay(|_| {}).await;
    let alice = Client::connect(&relay, "scraped", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "scraped", "bob").await;
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 10).await;

    // The shipped config, pointed at this relay and scraping every second.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/prometheus.yml"
    ))
    .unwrap();
    assert!(shipped.contains("\"tern:8080\""));
    let config = shipped
        .replace("\"tern:8080\"", &format!("\"{}\"", relay.http_addr))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    let dir = std::env::temp_dir().join(format!("tern-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = Process::new("prometheus")
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the prometheus binary (Debian package prometheus; tests/run.sh installs it)");
    let _prometheus = KillOnDrop(child);

    let within = Duration::from_secs(60);
    until_value(addr, "up{job=\"tern\"}", |v| v == 1.0, within).await;
    until_value(addr, "sum(tern_participants)", |v| v == 2.0, within).await;
    let first = until_value(
        addr,
        "sum(tern_rtp_packets_received_total)",
        |v| v > 0.0,
        within,
    )
    .await;
    until_value(
        addr,
        "sum(tern_rtp_packets_received_total)",
        |v| v > first,
        within,
    )
    .await;
    let sent = until_value(
        addr,
        "sum(tern_rtp_packets_sent_total{kind=\"video\"})",
        |v| v > 0.0,
        within,
    )
    .await;
    assert!(sent > 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

/// The families /metrics exposes.
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_documented_and_the_histograms_fill() {
    let relay = start_relay(|_| {}).await;
    let alice = Client::connect(&relay, "measured", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "measured", "bob").await;
    let _pump = MediaPump::start(&alice);
    // 64 packets per latency sample: 300 packets give a few samples.
    wait_more(&mut bob, "alice", "video", 150).await;
    wait_more(&mut bob, "alice", "audio", 150).await;

    assert!(metric(&relay, "tern_join_duration_seconds_count").await >= 2.0);
    let joins = metric(&relay, "tern_join_duration_seconds_sum").await;
    assert!(joins > 0.0 && joins < 40.0, "{joins}");
    assert!(metric(&relay, "tern_forwarding_latency_seconds_count").await >= 2.0);
    let slowest_bucket = metric(&relay, "tern_forwarding_latency_seconds_bucket{le=\"0.1\"}").await;
    assert!(slowest_bucket >= 2.0);
    assert!(metric(&relay, "process_resident_memory_bytes").await > 1e6);
    assert!(metric(&relay, "process_open_fds").await > 3.0);
    assert!(metric(&relay, "process_cpu_seconds_total").await > 0.0);
    assert!(metric(&relay, "tern_leg_failures_total{stage=\"dtls\"}").await == 0.0);

    let exposed = families(&http_get(relay.http_addr, "/metrics").await.1);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            // `a` / `_b` / `_c` in one cell: `_b` completes `a`'s stem.
            let cell = l.split('|').nth(1).unwrap_or("");
            let names: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
            let first = names.first().copied().unwrap_or("").to_owned();
            let stem = first
                .rfind("_received_total")
                .map(|i| first[..i].to_owned())
                .unwrap_or_default();
            names
                .into_iter()
                .map(move |n| {
                    if n.starts_with('_') {
                        format!("{stem}{n}")
                    } else {
                        n.to_owned()
                    }
                })
                .collect::<Vec<_>>()
        })
        .filter(|n| n.starts_with("tern_") || n.starts_with("process_"))
        .collect();
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from README's table: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&exposed).collect();
    assert!(
        stale.is_empty(),
        "README documents metrics that do not exist: {stale:?}"
    );
}
