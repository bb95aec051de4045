//! Media robustness end to end with real WebRTC peers on loopback: codecs and codec filtering,
//! hop-by-hop loss recovery, keyframe requests, publisher restarts, sender reports, dead peers,
//! ICE restart.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tern_signaling::protocol::{ErrorCode, LeaveReason, ServerMessage, TrackKind};

/// The id of `publisher`'s track of `kind`, from the subscriber's latest subscribe offer.
fn track_of(subscriber: &Client, publisher_id: &str, kind: TrackKind) -> String {
    subscriber
        .signals()
        .filter_map(|s| match s {
            ServerMessage::SubscribeOffer { tracks, .. } => Some(tracks),
            _ => None,
        })
        .last()
        .and_then(|tracks| {
            tracks
                .iter()
                .find(|t| t.participant_id == publisher_id && t.kind == kind)
                .map(|t| t.id.clone())
        })
        .expect("track in the subscribe offer")
}

fn count_plis(client: &Client) -> usize {
    client
        .log
        .iter()
        .filter(|e| matches!(e, Event::Pli))
        .count()
}

/// A section of an SDP: the lines of the m-line whose `m=` starts with `kind`.
fn m_section<'a>(sdp: &'a str, kind: &str) -> Vec<&'a str> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in sdp.lines() {
        if line.starts_with("m=") {
            inside = line.starts_with(&format!("m={kind}"));
        }
        if inside {
            lines.push(line);
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_cannot_decode_a_track_is_told_and_still_gets_the_rest() {
    let relay = start_relay(|_| {}).await;
    let alice = Client::connect(&relay, "codecs", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let h264_only = ClientCodecs {
        video: Some(vec!["video/H264"]),
        ..Default::default()
    };
    let mut bob = Client::connect_codecs(&relay, "codecs", "bob", &h264_only).await;
    let _pump = MediaPump::start(&alice);
    let video = bob
        .wait_for("codec_not_receivable", |e| match e {
            Event::Signal(ServerMessage::Error {
                code: ErrorCode::CodecNotReceivable,
                track_id,
                ..
            }) => track_id.clone(),
            _ => None,
        })
        .await;
    let alice_id = alice.participant_id.clone().unwrap();
    assert!(video.starts_with("TR_"));
    wait_more(&mut bob, "alice", "audio", 20).await;
    assert_no_gap(&bob, "alice", "audio", 20);
    assert!(
        received_from(&bob, "alice", "video").is_empty(),
        "no black tile in silence"
    );
    // The relay stopped offering the track it cannot deliver.
    bob.wait_until("an offer without the video track", |log| {
        log.iter()
            .filter_map(|e| match e {
                Event::Signal(ServerMessage::SubscribeOffer { tracks, .. }) => Some(tracks),
                _ => None,
            })
            .last()
            .is_some_and(|t| {
                t.len() == 1 && t[0].kind == TrackKind::Audio && t[0].participant_id == alice_id
            })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_and_vp9_reach_subscribers_that_support_them_starting_at_keyframes() {
    let relay = start_relay(|_| {}).await;
    let h264 = ClientCodecs {
        publish_video: Some("video/H264"),
        ..Default::default()
    };
    let vp9 = ClientCodecs {
        publish_video: Some("video/VP9"),
        ..Default::default()
    };
    let hugo = Client::connect_codecs(&relay, "codecs2", "hugo", &h264).await;
    hugo.send(Command::Publish {
        audio: false,
        video: true,
    });
    let vera = Client::connect_codecs(&relay, "codecs2", "vera", &vp9).await;
    vera.send(Command::Publish {
        audio: false,
        video: true,
    });
    let mut sam = Client::connect(&relay, "codecs2", "sam").await;
    let _p1 = MediaPump::start(&hugo);
    let _p2 = MediaPump::start(&vera);
    wait_more(&mut sam, "hugo", "video", 40).await;
    wait_more(&mut sam, "vera", "video", 40).await;
    for (publisher, mime) in [("hugo", "video/H264"), ("vera", "video/VP9")] {
        assert_no_gap(&sam, publisher, "video", 40);
        let got = received_from(&sam, publisher, "video");
        assert!(
            is_keyframe_of(mime, &got[0].payload),
            "{publisher}: starts at a keyframe"
        );
        let offered = sam
            .signals()
            .filter_map(|s| match s {
                ServerMessage::SubscribeOffer { tracks, .. } => Some(tracks.clone()),
                _ => None,
            })
            .last()
            .unwrap();
        let info = offered
            .iter()
            .find(|t| t.codec.as_deref() == Some(mime))
            .unwrap_or_else(|| panic!("{mime} announced"));
        // The payload type sam receives is the one the relay's offer gives that codec.
        let sdp = sam
            .signals()
            .filter_map(|s| match s {
                ServerMessage::SubscribeOffer { sdp, .. } => Some(sdp.clone()),
                _ => None,
            })
            .last()
            .unwrap();
        let name = mime.trim_start_matches("video/");
        let pt = got[0].payload_type;
        assert!(
            sdp.lines()
                .any(|l| l == format!("a=rtpmap:{pt} {name}/90000")),
            "{publisher}'s packets carry {name}'s payload type {pt} ({})",
            info.id
        );
    }
}

/// Every `m=` line of an SDP lists each payload type once (RFC 8866 §5.14).
fn assert_payload_types_unique(sdp: &str) {
    for line in sdp.lines().filter(|l| l.starts_with("m=")) {
        let pts: Vec<&str> = line.split(' ').skip(3).collect();
        let unique: std::collections::HashSet<&&str> = pts.iter().collect();
        assert_eq!(unique.len(), pts.len(), "payload type listed twice: {line}");
    }
}

/// Regression: a subscriber's first answer accepts one Opus payload type; a later publisher
/// whose Opus parameters differed had no payload type to go out with (`codec_not_receivable`)
/// or made the relay's offers list that one payload type eight times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_with_different_opus_parameters_all_reach_every_subscriber() {
    let relay = start_relay(|_| {}).await;
    let opus = |fmtp: &str| ClientCodecs {
        video: Some(vec!["video/VP8"]),
        opus_fmtp: fmtp.into(),
        ..Default::default()
    };
    let alice = Client::connect_codecs(
        &relay,
        "opus",
        "alice",
        &opus("minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1;usedtx=1"),
    )
    .await;
    alice.send(Command::Publish {
        audio: true,
        video: false,
    });
    let mut bob = Client::connect(&relay, "opus", "bob").await;
    let _alice_media = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "audio", 10).await;
    // Like aiortc: in-band FEC off, mono.
    let mut carol = Client::connect_codecs(&relay, "opus", "carol", &opus("useinbandfec=0")).await;
    carol.send(Command::Publish {
        audio: true,
        video: false,
    });
    let _carol_media = MediaPump::start(&carol);
    wait_more(&mut bob, "carol", "audio", 10).await;
    wait_more(&mut carol, "alice", "audio", 10).await;
    wait_more(&mut bob, "alice", "audio", 10).await;
    for subscriber in [&bob, &carol] {
        assert!(
            subscriber.errors().is_empty(),
            "{}: {:?}",
            subscriber.name,
            subscriber.errors()
        );
        for signal in subscriber.signals() {
            if let ServerMessage::SubscribeOffer { sdp, .. } = signal {
                assert_payload_types_unique(sdp);
            }
        }
    }
    // Both publishers' audio reaches bob with the one Opus payload type of his leg.
    let pts: std::collections::HashSet<u8> = ["alice", "carol"]
        .iter()
        .flat_map(|p| received_from(&bob, p, "audio"))
        .map(|r| r.payload_type)
        .collect();
    assert_eq!(pts.len(), 1, "{pts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_m_line_is_answered_with_exactly_one_video_codec() {
    let relay = start_relay(|_| {}).await;
    let mut alice = Client::connect(&relay, "onecodec", "alice").await; // offers VP8, VP9, H264...
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let answer = alice
        .wait_for("publish answer", |e| match e {
            Event::Signal(ServerMessage::PublishAnswer { sdp, .. }) => Some(sdp.clone()),
            _ => None,
        })
        .await;
    let video = m_section(&answer, "video");
    let primaries: Vec<&&str> = video
        .iter()
        .filter(|l| l.starts_with("a=rtpmap:") && !l.contains(" rtx/"))
        .collect();
    assert_eq!(primaries.len(), 1, "one video codec: {primaries:?}");
    assert!(
        primaries[0].contains("VP8/90000"),
        "the publisher's first choice"
    );
    assert!(
        video.iter().any(|l| l.contains(" rtx/90000")),
        "with its RTX"
    );
    let audio = m_section(&answer, "audio");
    assert_eq!(
        audio.iter().filter(|l| l.starts_with("a=rtpmap:")).count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_the_publisher_withholds_is_nacked_by_the_relay_and_forwarded_once() {
    let relay = start_relay(|_| {}).await;
    let mut alice = Client::connect(&relay, "nack", "alice").await;
    alice.send(Command::Publish {
        audio: false,
        video: true,
    });
    // Subscribers that never NACK themselves: whatever recovery they see is the relay's.
    let quiet = ClientCodecs {
        no_nack: true,
        ..Default::default()
    };
    let mut bob = Client::connect_codecs(&relay, "nack", "bob", &quiet).await;
    let mut carol = Client::connect_codecs(&relay, "nack", "carol", &quiet).await;
    // The test drives alice one video packet at a time, numbered from 0.
    let mut sent = 0u32;
    fn send(alice: &Client, sent: &mut u32, keyframe: bool) {
        alice.send(Command::SendMedia { keyframe });
        *sent += 1;
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        send(&alice, &mut sent, true);
        tokio::time::sleep(Duration::from_millis(10)).await;
        bob.pump();
        carol.pump();
        if !received_from(&bob, "alice", "video").is_empty()
            && !received_from(&carol, "alice", "video").is_empty()
        {
            break;
        }
        assert!(Instant::now() < deadline, "media did not start");
    }
    // The next packet is held back; the ones after it go out, so the relay sees a gap.
    alice.send(Command::WithholdNextVideo);
    for _ in 0..20 {
        send(&alice, &mut sent, false);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let nacked = alice
        .wait_for("a NACK from the relay", |e| match e {
            Event::Nack(seqs) => Some(seqs.clone()),
            _ => None,
        })
        .await;
    assert!(!nacked.is_empty());
    for _ in 0..10 {
        send(&alice, &mut sent, false);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = format!("alice/video/{}", sent - 1);
    for s in [&mut bob, &mut carol] {
        s.wait_until("the last packet", |log| {
            log.iter()
                .any(|e| matches!(e, Event::Rtp(r) if tag(&r.payload) == last))
        })
        .await;
        let got = received_from(s, "alice", "video");
        let mut numbers: Vec<u32> = got.iter().map(|r| number(r)).collect();
        let total = numbers.len();
        numbers.sort();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            total,
            "{}: every packet exactly once",
            s.name
        );
        for pair in numbers.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "{}: the withheld packet arrived",
                s.name
            );
        }
        // Its rewritten sequence number is exactly the gap it left.
        let mut seqs: Vec<(u32, u16)> =
            got.iter().map(|r| (number(r), r.sequence_number)).collect();
        seqs.sort();
        for pair in seqs.windows(2) {
            assert_eq!(pair[1].1, pair[0].1.wrapping_add(1));
        }
    }
    assert!(metric(&relay, "tern_nacks_sent_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribers_nack_is_answered_from_the_relays_own_history() {
    let relay = start_relay(|_| {}).await;
    let mut alice = Client::connect(&relay, "nack2", "alice").await;
    alice.send(Command::Publish {
        audio: false,
        video: true,
    });
    let mut bob = Client::connect(&relay, "nack2", "bob").await;
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 10).await;
    let next = number(received_from(&bob, "alice", "video").last().unwrap()) + 20;
    let target = format!("alice/video/{next}");
    bob.send(Command::DiscardAndNack(target.clone()));
    let t = target.clone();
    bob.wait_until("the discarded packet again", |log| {
        log.iter()
            .any(|e| matches!(e, Event::Rtp(r) if tag(&r.payload) == t))
    })
    .await;
    wait_more(&mut bob, "alice", "video", 10).await;
    let copies = bob.rtp().filter(|r| tag(&r.payload) == target).count();
    assert_eq!(copies, 1, "retransmitted once");
    assert_no_gap_after_sorting(&bob);
    alice.pump();
    let publisher_seq = (next as u16).wrapping_add(65_500);
    let asked = alice
        .log
        .iter()
        .any(|e| matches!(e, Event::Nack(seqs) if seqs.contains(&publisher_seq)));
    assert!(
        !asked,
        "the publisher never saw a NACK for the packet the relay had"
    );
    assert!(metric(&relay, "tern_retransmissions_sent_total").await >= 1.0);
    assert!(metric(&relay, "tern_rtcp_feedback_received_total{type=\"nack\"}").await >= 1.0);
}

fn assert_no_gap_after_sorting(client: &Client) {
    let mut numbers: Vec<u32> = received_from(client, "alice", "video")
        .iter()
        .map(|r| number(r))
        .collect();
    numbers.sort();
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{}: nothing missing", client.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_plis_in_a_second_reach_the_right_publisher_at_most_twice() {
    let relay = start_relay(|_| {}).await;
    let mut alice = Client::connect(&relay, "pli", "alice").await;
    alice.send(Command::Publish {
        audio: false,
        video: true,
    });
    let mut bob = Client::connect(&relay, "pli", "bob").await;
    bob.send(Command::Publish {
        audio: false,
        video: true,
    });
    let mut sam = Client::connect(&relay, "pli", "sam").await;
    // Keyframes only when asked, so every keyframe in the window answers a request.
    let _p1 = MediaPump::start_with(&alice, None);
    let _p2 = MediaPump::start_with(&bob, None);
    wait_more(&mut sam, "alice", "video", 10).await;
    wait_more(&mut sam, "bob", "video", 10).await;
    // Let the keyframe requests of the subscriptions' start pass their throttle window.
    tokio::time::sleep(Duration::from_millis(700)).await;
    alice.pump();
    bob.pump();
    let (alice_before, bob_before) = (count_plis(&alice), count_plis(&bob));
    let track = track_of(
        &sam,
        alice.participant_id.as_deref().unwrap(),
        TrackKind::Video,
    );
    let start = Instant::now();
    for _ in 0..10 {
        sam.send(Command::SendPli(track.clone()));
        tokio::time::sleep(Duration::from_millis(45)).await;
    }
    // Ten requests within about half a second; a stalled machine may stretch that, and a 500 ms
    // throttle then rightly lets one more through per half second.
    let span = start.elapsed();
    let allowed = 2.max(1 + span.as_millis() as usize / 500);
    let plis = "tern_rtcp_feedback_received_total{type=\"pli\"}";
    wait_metric(&relay, plis, "all ten PLIs at the relay", |v| v >= 10.0).await;
    // What the relay forwarded is on its way to Alice; wait for the first to land.
    alice
        .wait_until("a PLI reached alice", |log| {
            log.iter().filter(|e| matches!(e, Event::Pli)).count() > alice_before
        })
        .await;
    // Any further (wrongly forwarded) ones would follow within milliseconds.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        alice.pump();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bob.pump();
    let to_alice = count_plis(&alice) - alice_before;
    let to_bob = count_plis(&bob) - bob_before;
    assert!(
        (1..=allowed).contains(&to_alice),
        "alice got {to_alice} PLIs for ten sent over {span:?}"
    );
    assert_eq!(to_bob, 0, "bob's encoder was never asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_ssrc_restart_is_invisible_to_subscribers() {
    let relay = start_relay(|_| {}).await;
    let alice = Client::connect(&relay, "restart", "alice").await;
    alice.send(Command::Publish {
        audio: false,
        video: true,
    });
    let mut bob = Client::connect(&relay, "restart", "bob").await;
    let pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 20).await;
    drop(pump);
    tokio::time::sleep(Duration::from_millis(50)).await;
    alice.send(Command::RestartVideoSsrc);
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 60).await;
    let got = received_from(&bob, "alice", "video");
    let ssrcs: std::collections::HashSet<u32> = got.iter().map(|r| r.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "one SSRC for bob throughout");
    for pair in got.windows(2) {
        assert_eq!(
            pair[1].sequence_number,
            pair[0].sequence_number.wrapping_add(1),
            "continuous sequence numbers across the restart"
        );
        let step = pair[1].timestamp.wrapping_sub(pair[0].timestamp);
        assert!(
            step > 0 && step < 90_000 * 5,
            "timestamps move forward a little: {step}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_streams_get_sender_reports_in_their_own_timestamp_space() {
    let relay = start_relay(|_| {}).await;
    let alice = Client::connect(&relay, "sr", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "sr", "bob").await;
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 10).await;
    // Publishers report about once a second.
    bob.wait_until("sender reports for both streams", |log| {
        let ssrcs: std::collections::HashSet<u32> = log
            .iter()
            .filter_map(|e| match e {
                Event::SenderReport { ssrc, .. } => Some(*ssrc),
                _ => None,
            })
            .collect();
        ssrcs.len() >= 2
    })
    .await;
    for kind in ["audio", "video"] {
        let got = received_from(&bob, "alice", kind);
        let ssrc = got[0].ssrc;
        let (ntp, rtp) = bob
            .log
            .iter()
            .find_map(|e| match e {
                Event::SenderReport {
                    ssrc: s,
                    ntp_time,
                    rtp_time,
                } if *s == ssrc => Some((*ntp_time, *rtp_time)),
                _ => None,
            })
            .expect("a report for this stream");
        assert_ne!(ntp, 0);
        // The report's RTP time is in bob's timestamp space: close to the timestamps bob
        // receives (publisher and subscriber bases differ by random offsets otherwise).
        let latest = got.last().unwrap().timestamp;
        let distance = rtp.wrapping_sub(latest) as i32;
        let rate = if kind == "audio" { 48_000 } else { 90_000 };
        assert!(
            distance.abs() < rate * 3,
            "{kind}: report rtp {rtp} vs received {latest}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_disappears_for_the_others_within_fifteen_seconds() {
    let relay = start_relay(|_| {}).await; // default grace (10 s) and ICE timeouts
    let alice = Client::connect(&relay, "kill", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "kill", "bob").await;
    let pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "audio", 5).await;
    let id = alice.participant_id.clone().unwrap();
    drop(pump);
    drop(alice); // socket and media gone at once, like a killed process
    let killed = Instant::now();
    bob.wait_for("alice gone", |e| match e {
        Event::Signal(ServerMessage::ParticipantLeft { participant_id, .. })
            if *participant_id == id =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    assert!(
        killed.elapsed() <= Duration::from_secs(15),
        "took {:?}",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restarts_change_the_ufrag_and_media_keeps_flowing() {
    let relay = start_relay(|_| {}).await;
    let mut alice = Client::connect(&relay, "ice", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "ice", "bob").await;
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 10).await;
    let ufrag = |sdp: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .unwrap()
            .to_owned()
    };
    let answers = |c: &Client| -> Vec<String> {
        c.signals()
            .filter_map(|s| match s {
                ServerMessage::PublishAnswer { sdp, .. } => Some(ufrag(sdp)),
                _ => None,
            })
            .collect()
    };
    // Client-initiated, on the publish leg.
    alice.send(Command::RestartPublishIce);
    alice
        .wait_until("a second publish answer", |log| {
            log.iter()
                .filter(|e| matches!(e, Event::Signal(ServerMessage::PublishAnswer { .. })))
                .count()
                >= 2
        })
        .await;
    let relay_ufrags = answers(&alice);
    assert_ne!(
        relay_ufrags[0], relay_ufrags[1],
        "the relay answers a restart with fresh credentials"
    );
    wait_more(&mut bob, "alice", "video", 30).await;

    // Relay-initiated, on the subscribe leg: bob resumes after a signaling drop.
    let offers_before = bob
        .signals()
        .filter_map(|s| match s {
            ServerMessage::SubscribeOffer { sdp, .. } => Some(ufrag(sdp)),
            _ => None,
        })
        .last()
        .unwrap();
    let resume = bob.resume_token();
    bob.send(Command::DropSignaling);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let url = format!(
        "{}&resume_token={resume}",
        ws_url(
            &relay,
            &token(
                &relay,
                "ice",
                "bob",
                tern_signaling::auth::Grants::participant()
            )
        )
    );
    bob.send(Command::Reconnect(url));
    let before = offers_before.clone();
    bob.wait_until("a subscribe offer with new credentials", |log| {
        log.iter()
            .filter_map(|e| match e {
                Event::Signal(ServerMessage::SubscribeOffer { sdp, .. }) => Some(ufrag(sdp)),
                _ => None,
            })
            .last()
            .is_some_and(|u| u != before)
    })
    .await;
    wait_more(&mut bob, "alice", "video", 30).await;
    assert!(
        !bob.signals().any(|s| matches!(
            s,
            ServerMessage::ParticipantLeft {
                reason: LeaveReason::TransportFailed,
                ..
            }
        )),
        "nobody's transport failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_socket_serves_ipv4_and_ipv6_clients_together() {
    let relay = start_relay(|c| {
        c.media.listen = "[::]:0".parse().unwrap();
        c.media.advertised_ips = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    })
    .await;
    let v6 = ClientCodecs {
        ipv6: true,
        ..Default::default()
    };
    let alice = Client::connect(&relay, "dual", "alice").await; // IPv4
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let bob = Client::connect_codecs(&relay, "dual", "bob", &v6).await; // IPv6
    bob.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut alice = alice;
    let mut bob = bob;
    let _p1 = MediaPump::start(&alice);
    let _p2 = MediaPump::start(&bob);
    wait_more(&mut alice, "bob", "video", 20).await;
    wait_more(&mut bob, "alice", "video", 20).await;
    assert_no_gap(&alice, "bob", "audio", 10);
    assert_no_gap(&bob, "alice", "audio", 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_media_address_serves_the_advertised_one() {
    let relay = start_relay(|c| {
        c.media.listen = "0.0.0.0:0".parse().unwrap();
        c.media.advertised_ips = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let alice = Client::connect(&relay, "wild", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "wild", "bob").await;
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 20).await;
}
