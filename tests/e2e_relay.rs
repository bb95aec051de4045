//! End to end over real sockets on loopback: in-process WebRTC clients (webrtc-rs `rtc`) join
//! one room through the real signaling WebSocket and the relay's one shared UDP port.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tern_signaling::protocol::{LeaveReason, ServerMessage};

/// Checks one subscriber's view of one publisher track: numbers `from..to` arrived exactly once,
/// in order, with identical payloads, continuous rewritten sequence numbers and timestamps.
fn assert_complete(
    subscriber: &Client,
    publisher: &str,
    kind: &str,
    from: u32,
    to: u32,
    ts_step: u32,
) {
    let got = received_from(subscriber, publisher, kind);
    let window: Vec<&&Received> = got
        .iter()
        .filter(|r| number(r) >= from && number(r) < to)
        .collect();
    let numbers: Vec<u32> = window.iter().map(|r| number(r)).collect();
    let expected: Vec<u32> = (from..to).collect();
    assert_eq!(
        numbers, expected,
        "{} must receive {publisher}'s {kind} packets {from}..{to} exactly once, in order",
        subscriber.name
    );
    for r in &window {
        let expected_tag = format!("{publisher}/{kind}/{}", number(r));
        assert_eq!(
            tag(&r.payload),
            expected_tag,
            "payload must arrive unchanged"
        );
    }
    // Everything received from this track (not only the window) has gap-free numbering.
    for pair in got.windows(2) {
        assert_eq!(
            pair[1].sequence_number,
            pair[0].sequence_number.wrapping_add(1),
            "{}: rewritten sequence numbers of {publisher}/{kind} must have no gaps",
            subscriber.name
        );
        assert_eq!(
            pair[1].timestamp.wrapping_sub(pair[0].timestamp),
            ts_step * (number(pair[1]) - number(pair[0])),
            "timestamps keep the publisher's spacing"
        );
        assert_eq!(pair[0].ssrc, pair[1].ssrc, "one SSRC per forwarded track");
    }
}

async fn wait_subscribed(client: &mut Client, tracks: usize) {
    let name = client.name.clone();
    client
        .wait_until(
            &format!("{name} subscribed to {tracks} tracks and connected"),
            |log| {
                let offered = log
                    .iter()
                    .filter_map(|e| match e {
                        Event::Signal(ServerMessage::SubscribeOffer { tracks, .. }) => {
                            Some(tracks.len())
                        }
                        _ => None,
                    })
                    .last();
                let connected = log
                    .iter()
                    .rev()
                    .find_map(|e| match e {
                        Event::SubscribeState(s) => Some(s.to_string() == "connected"),
                        _ => None,
                    })
                    .unwrap_or(false);
                offered == Some(tracks) && connected
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_exchange_media_then_one_leaves_and_a_late_joiner_starts_at_keyframes() {
    let relay = start_relay(|_| {}).await;
    let names = ["alice", "bob", "carol"];
    let mut clients = Vec::new();
    for name in names {
        let c = Client::connect(&relay, "e2e", name).await;
        c.send(Command::Publish {
            audio: true,
            video: true,
        });
        clients.push(c);
    }
    for c in clients.iter_mut() {
        wait_subscribed(c, 4).await;
    }

    // Priming: keyframes every round until every flow is established.
    let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
    let deadline = Instant::now() + DEADLINE;
    // Packets are numbered per sender from 0, one per round.
    let mut rounds = 0u32;
    loop {
        for c in refs.iter() {
            c.send(Command::SendMedia { keyframe: true });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        rounds += 1;
        let mut all = true;
        for s in refs.iter_mut() {
            s.pump();
            for p in names {
                if p == s.name {
                    continue;
                }
                for kind in ["audio", "video"] {
                    if received_from(s, p, kind).is_empty() {
                        all = false;
                    }
                }
            }
        }
        if all {
            break;
        }
        if Instant::now() > deadline {
            let metrics = http_get(relay.http_addr, "/metrics").await.1;
            let tern: Vec<&str> = metrics.lines().filter(|l| l.starts_with("tern_")).collect();
            panic!(
                "media did not start flowing:\n{}\n{}",
                tern.join("\n"),
                refs[0].describe()
            );
        }
    }

    // Measured phase: 100 rounds; every packet must arrive exactly once at both others.
    let from = rounds;
    let to = rounds + 100;
    for i in 0..100 {
        for c in refs.iter() {
            c.send(Command::SendMedia {
                keyframe: i % 30 == 0,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in refs.iter_mut() {
        let me = s.name.clone();
        let last: Vec<String> = names
            .iter()
            .filter(|p| **p != me)
            .flat_map(|p| {
                [
                    format!("{p}/audio/{}", to - 1),
                    format!("{p}/video/{}", to - 1),
                ]
            })
            .collect();
        s.wait_until("the last packet of every remote track", |log| {
            last.iter().all(|t| {
                log.iter()
                    .any(|e| matches!(e, Event::Rtp(r) if tag(&r.payload) == *t))
            })
        })
        .await;
    }
    for s in refs.iter() {
        for p in names {
            if p == s.name {
                assert!(
                    received_from(s, p, "audio").is_empty()
                        && received_from(s, p, "video").is_empty(),
                    "{p} must never receive its own media"
                );
                continue;
            }
            assert_complete(s, p, "audio", from, to, 960);
            assert_complete(s, p, "video", from, to, 3000);
            let first_video = received_from(s, p, "video")[0];
            assert!(
                is_keyframe(&first_video.payload),
                "first forwarded video packet is a keyframe"
            );
        }
        // Two remote tracks of each kind, each on its own SSRC, with one msid stream per publisher.
        let ssrcs: std::collections::HashSet<u32> = s.rtp().map(|r| r.ssrc).collect();
        assert_eq!(ssrcs.len(), 4, "{}: four forwarded streams", s.name);
    }
    assert!(metric(&relay, "tern_rtp_packets_received_total{kind=\"video\"}").await >= 300.0);
    assert!(metric(&relay, "tern_rtp_packets_sent_total{kind=\"audio\"}").await >= 600.0);
    assert_eq!(metric(&relay, "tern_participants").await, 3.0);
    assert_eq!(
        metric(&relay, "tern_subscriptions{kind=\"video\"}").await,
        6.0
    );

    // Carol leaves: the others are told and get a renegotiated subscribe leg without her tracks.
    let carol_id = refs[2].participant_id.clone().unwrap();
    refs[2].send(Command::Leave);
    for s in refs.iter_mut().take(2) {
        let id = carol_id.clone();
        s.wait_for("carol left", |e| match e {
            Event::Signal(ServerMessage::ParticipantLeft {
                participant_id,
                reason,
            }) if *participant_id == id => Some(*reason),
            _ => None,
        })
        .await;
        let id = carol_id.clone();
        s.wait_until("a subscribe offer without carol's tracks", |log| {
            log.iter()
                .filter_map(|e| match e {
                    Event::Signal(ServerMessage::SubscribeOffer { tracks, .. }) => Some(tracks),
                    _ => None,
                })
                .last()
                .is_some_and(|tracks| {
                    tracks.len() == 2 && tracks.iter().all(|t| t.participant_id != id)
                })
        })
        .await;
    }
    drop(refs);
    let left_reason = clients[0]
        .signals()
        .find_map(|s| match s {
            ServerMessage::ParticipantLeft { reason, .. } => Some(*reason),
            _ => None,
        })
        .unwrap();
    assert_eq!(left_reason, LeaveReason::Left);
    clients.truncate(2);

    // Dave joins late, while alice and bob send keyframes only every 50 packets (or on PLI).
    let mut dave = Client::connect(&relay, "e2e", "dave").await;
    wait_subscribed(&mut dave, 4).await;
    for i in 0..150u32 {
        for c in clients.iter() {
            c.send(Command::SendMedia {
                keyframe: i % 50 == 0,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dave.wait_until("video from alice and bob", |log| {
        ["alice", "bob"].iter().all(|p| {
            log.iter().any(|e| matches!(e, Event::Rtp(r) if tag(&r.payload).starts_with(&format!("{p}/video/"))))
        })
    })
    .await;
    let mut first_by_track: HashMap<String, bool> = HashMap::new();
    for r in dave.rtp() {
        if tag(&r.payload).contains("/video/") {
            first_by_track
                .entry(r.track.clone())
                .or_insert_with(|| is_keyframe(&r.payload));
        }
    }
    assert_eq!(first_by_track.len(), 2, "dave receives both video tracks");
    assert!(
        first_by_track.values().all(|k| *k),
        "the first video packet of each stream a late joiner receives is a keyframe"
    );
    assert!(metric(&relay, "tern_keyframe_requests_sent_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_transport_is_removed_within_fifteen_seconds_and_empty_rooms_close() {
    // Default ICE timeouts (7 s disconnected + 5 s failed): the budget under test.
    let relay = start_relay(|c| c.room.departure_timeout_s = 1).await;
    let alice = Client::connect(&relay, "lifecycle", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "lifecycle", "bob").await;
    let pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "audio", 5).await;

    // Alice's network dies; her signaling connection stays up.
    alice.send(Command::FreezeMedia);
    drop(pump);
    let frozen_at = std::time::Instant::now();
    let alice_id = alice.participant_id.clone().unwrap();
    let reason = bob
        .wait_for("alice removed", |e| match e {
            Event::Signal(ServerMessage::ParticipantLeft {
                participant_id,
                reason,
            }) if *participant_id == alice_id => Some(*reason),
            _ => None,
        })
        .await;
    let took = frozen_at.elapsed();
    assert_eq!(reason, LeaveReason::TransportFailed);
    assert!(took <= Duration::from_secs(16), "removed after {took:?}");
    assert!(metric(&relay, "tern_leg_failures_total{stage=\"ice\"}").await >= 1.0);

    // Bob leaves too; the empty room closes after its timeout.
    bob.send(Command::Leave);
    let mut rooms = 1.0;
    for _ in 0..300 {
        rooms = metric(&relay, "tern_rooms").await;
        if rooms == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rooms, 0.0, "empty room closed");
    assert_eq!(
        metric(&relay, "tern_peer_connections").await,
        0.0,
        "every leg closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renegotiation_reuses_m_lines_so_the_sdp_stays_bounded() {
    let relay = start_relay(|_| {}).await;
    let mut watcher = Client::connect(&relay, "churn", "watcher").await;
    for round in 0..5 {
        let name = format!("guest{round}");
        let guest = Client::connect(&relay, "churn", &name).await;
        guest.send(Command::Publish {
            audio: true,
            video: true,
        });
        watcher
            .wait_until("a subscribe offer with the guest's two tracks", |log| {
                log.iter()
                    .filter_map(|e| match e {
                        Event::Signal(ServerMessage::SubscribeOffer { tracks, .. }) => {
                            Some(tracks.len())
                        }
                        _ => None,
                    })
                    .last()
                    == Some(2)
            })
            .await;
        guest.send(Command::Leave);
        watcher
            .wait_until("a subscribe offer without tracks", |log| {
                log.iter()
                    .filter_map(|e| match e {
                        Event::Signal(ServerMessage::SubscribeOffer { tracks, .. }) => {
                            Some(tracks.len())
                        }
                        _ => None,
                    })
                    .last()
                    == Some(0)
            })
            .await;
        drop(guest);
    }
    let m_lines: Vec<usize> = watcher
        .signals()
        .filter_map(|s| match s {
            ServerMessage::SubscribeOffer { sdp, .. } => {
                Some(sdp.matches("\r\nm=audio").count() + sdp.matches("\r\nm=video").count())
            }
            _ => None,
        })
        .collect();
    assert!(m_lines.len() >= 10, "one offer per change: {m_lines:?}");
    assert!(
        m_lines.iter().all(|n| *n <= 2),
        "media m-lines are reused, never accumulate: {m_lines:?}"
    );
    // Every media m-line the relay offers is sendonly, a retired one too: it never invites the
    // subscriber to send, and never goes through `inactive` (GStreamer up to 1.22 cannot take
    // an m-line back from there).
    for signal in watcher.signals() {
        let ServerMessage::SubscribeOffer { sdp, .. } = signal else {
            continue;
        };
        for section in sdp.split("\r\nm=").skip(1) {
            if section.starts_with("application") {
                continue;
            }
            assert!(
                section.contains("\r\na=sendonly"),
                "not sendonly: m={section}"
            );
        }
    }
}
