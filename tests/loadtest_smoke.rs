//! `tern loadtest` against a relay in-process with two media workers: a small run delivers every
//! stream with (practically) no loss, each worker carries one of the rooms, and every field of the
//! report is filled.

mod common;

use clap::Parser;
use tern::loadtest::{LoadtestArgs, run};
use tern::media::codec::MediaKind;

const SECRET: &str = "loadtest-smoke-secret-of-at-least-32-bytes";

/// A 3 s run of `rooms` rooms of 1 publisher and `subscribers` subscribers against `relay`, with
/// tokens minted from [`SECRET`], on one driver thread; `more` are further flags.
fn args(relay: &tern::app::Running, rooms: u32, subscribers: u32, more: &[&str]) -> LoadtestArgs {
    let url = format!("http://{}", relay.http_addr);
    let (rooms, subscribers) = (rooms.to_string(), subscribers.to_string());
    let mut argv = vec![
        "loadtest",
        "--url",
        &url,
        "--rooms",
        &rooms,
        "--publishers",
        "1",
        "--subscribers",
        &subscribers,
        "--duration",
        "3s",
        "--api-key",
        "smoke",
        "--api-secret",
        SECRET,
        "--threads",
        "1",
    ];
    argv.extend_from_slice(more);
    LoadtestArgs::try_parse_from(argv).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_delivers_every_stream() {
    let relay = common::start_relay(|config| {
        config.auth.keys.insert("smoke".into(), SECRET.into());
        config.media.workers = 2;
    })
    .await;
    let args = args(&relay, 2, 2, &[]);
    let report = run(&args).await.expect("the load test runs");
    let text = report.table();
    println!("{text}");

    assert_eq!(report.participants, 6);
    assert_eq!(report.participants_joined, 6, "{text}");
    assert_eq!(report.participants_ready, 6, "{text}");
    // 2 rooms x 1 publisher x 2 kinds x 2 receivers.
    assert_eq!(report.streams_expected, 8);
    assert_eq!(report.streams_received, 8, "{text}");
    // 3 s of 50 Opus + 30 VP8 frames (2 packets each at 500 kbit/s) per publisher, roughly.
    assert!(report.packets_sent >= 2 * 3 * 80, "{text}");
    assert_eq!(report.packets_expected, 2 * report.packets_sent);
    let loss = report.loss_percent.expect("loss measured");
    assert!(loss <= 0.5, "loss {loss} %\n{text}");
    for (name, value) in [
        ("latency p50", report.latency_p50_ms),
        ("latency p95", report.latency_p95_ms),
        ("latency p99", report.latency_p99_ms),
        ("latency max", report.latency_max_ms),
        ("jitter", report.jitter_mean_ms),
        ("join time p50", report.join_time_p50_ms),
        ("join time p95", report.join_time_p95_ms),
        (
            "media threads CPU",
            report.loadtest_media_threads_cpu_percent,
        ),
    ] {
        assert!(value.is_some_and(|v| v >= 0.0), "{name} missing\n{text}");
    }
    assert!(report.latency_p50_ms <= report.latency_max_ms);
    assert!(report.loadtest_cpu_percent > 0.0, "{text}");
    assert!(report.keyframes_sent >= 2, "{text}");
    assert_eq!(report.packets_foreign, 0, "{text}");
    assert!(report.errors.is_empty(), "{text}");
    // The two rooms went to the two workers, and each forwarded its room's media.
    for worker in 0..2 {
        let sent = relay
            .metrics
            .worker(worker)
            .rtp_packets_sent
            .get(MediaKind::Video)
            .get();
        assert!(
            sent >= 2 * 3 * 30,
            "worker {worker} forwarded {sent} video packets\n{text}"
        );
    }

    // The same summary as one JSON document with snake_case fields.
    let json = serde_json::to_value(&report).unwrap();
    for field in [
        "streams_received",
        "loss_percent",
        "latency_p99_ms",
        "join_time_p95_ms",
        "loadtest_cpu_percent",
    ] {
        assert!(!json[field].is_null(), "{field} in {json}");
    }
}

/// `--count-only`, the mode that saturates a relay: once ready, subscribers count the relay's
/// RTP without decrypting it, and the counts still add up to what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_receivers_count_what_the_relay_forwards() {
    let relay = common::start_relay(|config| {
        config.auth.keys.insert("smoke".into(), SECRET.into());
        // Counting receivers send no transport-cc feedback once ready.
        config.media.bandwidth_estimation = false;
    })
    .await;
    let args = args(&relay, 1, 3, &["--count-only"]);
    let report = run(&args).await.expect("the load test runs");
    let text = report.table();
    println!("{text}");

    assert!(report.count_only);
    assert_eq!(report.participants_ready, 4, "{text}");
    assert_eq!(report.packets_expected, 3 * report.packets_sent, "{text}");
    assert!(report.packets_sent >= 3 * 80, "{text}");
    // Counted by arrival, so packets in flight at either edge of the window may shift the
    // count a little either way; a receiver that counted nothing (or everything twice) fails.
    let expected = report.packets_expected as f64;
    let received = report.packets_received as f64;
    assert!(
        (0.95 * expected..=1.05 * expected).contains(&received),
        "{received} of {expected} counted\n{text}"
    );
    // Sealed packets carry no readable stamp: no latency is claimed for them.
    assert_eq!(report.latency_p50_ms, None, "{text}");
    assert_eq!(report.packets_foreign, 0, "{text}");
    assert!(report.errors.is_empty(), "{text}");
}
