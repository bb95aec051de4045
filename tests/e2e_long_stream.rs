//! A long call compressed: 200,000 packets per stream through the relay at a high rate, real
//! peers on loopback. Sequence numbers wrap three times on the way in and out; every packet
//! must arrive, numbered continuously, without the stream ever stalling.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PACKETS: u32 = 200_000;
/// Rounds of audio + video every 10 ms: 5,000 packets per second per stream. At twice that, a
/// debug build of the relay on a loaded two-core machine fell behind: its socket's 8 MiB buffer
/// overflowed, and the few packets that the publisher's NACK history no longer held were lost.
const ROUNDS_PER_TICK: u32 = 50;

/// One stream as the subscriber saw it: tag number -> rewritten sequence number.
#[derive(Default)]
struct Stream {
    numbers: HashMap<u32, u16>,
    first: Option<u32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_packets_per_stream_arrive_without_a_gap_or_a_stall() {
    // 10,000 packets a second per stream from the first moment is far beyond what any
    // subscriber's bandwidth estimate allows (it would be paced and paused): this test is about
    // numbering over wraps, so the relay forwards by budgets alone.
    let relay = start_relay(|c| {
        c.media.max_packets_per_second_per_leg = 100_000;
        c.media.bandwidth_estimation = false;
    })
    .await;
    let alice = Client::connect(&relay, "long", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "long", "bob").await;
    let pump = MediaPump::start_fast(&alice, ROUNDS_PER_TICK);

    let mut streams: HashMap<&str, Stream> = HashMap::new();
    let started = Instant::now();
    let mut last_progress: Option<Instant> = None;
    let mut longest_stall = Duration::ZERO;
    let done = |streams: &HashMap<&str, Stream>| {
        ["audio", "video"].iter().all(|k| {
            streams
                .get(k)
                .is_some_and(|s| s.numbers.len() >= PACKETS as usize)
        })
    };
    while !done(&streams) {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "too slow: {:?}",
            streams
                .iter()
                .map(|(k, s)| (k, s.numbers.len()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        bob.pump();
        let mut arrived = 0;
        // Counted and forgotten, so the log does not hold 400,000 packets.
        for event in bob.log.drain(..) {
            let Event::Rtp(r) = event else {
                continue;
            };
            let tag = tag(&r.payload);
            let kind = if tag.starts_with("alice/audio/") {
                "audio"
            } else if tag.starts_with("alice/video/") {
                "video"
            } else {
                continue;
            };
            let n: u32 = tag.rsplit('/').next().unwrap().parse().unwrap();
            let stream = streams.entry(kind).or_default();
            stream.first = Some(stream.first.map_or(n, |f| f.min(n)));
            stream.numbers.insert(n, r.sequence_number);
            arrived += 1;
        }
        let now = Instant::now();
        match last_progress {
            Some(at) if arrived == 0 => longest_stall = longest_stall.max(now - at),
            _ if arrived > 0 => last_progress = Some(now),
            _ => {}
        }
    }
    drop(pump);
    let rate = (2 * PACKETS) as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "{} packets per stream in {:.1} s ({rate:.0} packets/s forwarded), longest pause {longest_stall:?}",
        PACKETS,
        started.elapsed().as_secs_f64()
    );
    for (kind, stream) in &streams {
        let first = stream.first.unwrap();
        let first_seq = stream.numbers[&first];
        let last = first + PACKETS - 1;
        for n in first..=last {
            let seq = stream
                .numbers
                .get(&n)
                .unwrap_or_else(|| panic!("{kind} packet {n} never arrived"));
            assert_eq!(
                *seq,
                first_seq.wrapping_add((n - first) as u16),
                "{kind} packet {n} renumbered out of sequence"
            );
        }
    }
    assert!(
        longest_stall < Duration::from_secs(2),
        "the stream stalled for {longest_stall:?}"
    );
    assert_eq!(
        metric(&relay, "tern_packets_dropped_total{reason=\"stale\"}").await,
        0.0
    );
}
