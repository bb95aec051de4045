//! The node on a virtual clock with in-memory `rtc` clients (`tern::node::sim`): joins, offers,
//! ICE and DTLS, media, resume, timeouts and hostile datagrams, deterministic and in
//! milliseconds of test time. Each test asserts on what arrived.

use rtc::peer_connection::state::RTCPeerConnectionState;
use std::time::Duration;
use tern::node::relay::NodeConfig;
use tern::node::sim::{ClientId, Datagram, Media, Sim};
use tern::node::timers::Timer;
use tern_signaling::protocol::{LeaveReason, ServerMessage};

const ROOM: &str = "sim";

/// Alice publishes audio and video and Bob subscribes; both legs of each are connected and
/// Bob has received some of each of Alice's streams.
fn call() -> (Sim, ClientId, ClientId) {
    let mut sim = Sim::new(NodeConfig::default());
    let alice = sim.join(ROOM, "alice").expect("alice joins");
    let bob = sim.join(ROOM, "bob").expect("bob joins");
    sim.publish(alice, true, true);
    sim.run(Duration::from_secs(2), Some(Media::STEADY));
    let (a, b) = (sim.client(alice), sim.client(bob));
    assert!(!a.tags_from("alice", "video").is_empty() || !b.tags_from("alice", "video").is_empty());
    (sim, alice, bob)
}

/// Every tag from `first` on, without a gap.
fn assert_contiguous(tags: &[u32], what: &str) {
    assert!(!tags.is_empty(), "{what}: nothing arrived");
    for pair in tags.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{what}: gap or reorder in {tags:?}");
    }
}

#[test]
fn a_published_track_reaches_the_subscriber_without_a_gap() {
    let (mut sim, _alice, bob) = call();
    let audio = sim.client(bob).tags_from("alice", "audio");
    let video = sim.client(bob).tags_from("alice", "video");
    assert!(audio.len() > 100, "bob got {} audio packets", audio.len());
    assert!(video.len() > 100, "bob got {} video packets", video.len());
    assert_contiguous(&audio, "audio");
    assert_contiguous(&video, "video");
    // Forwarding started at a keyframe: the first video packet Bob got was one.
    assert_eq!(
        video[0] % 30,
        0,
        "first forwarded video frame is a keyframe"
    );
    sim.run(Duration::from_secs(1), Some(Media::STEADY));
    assert_eq!(
        sim.client(bob).tags_from("alice", "audio").len(),
        audio.len() + 100
    );
    assert!(sim.metric("tern_rtp_packets_sent_total{kind=\"video\"}") >= video.len() as f64);
}

#[test]
fn a_late_publisher_is_offered_to_everyone_in_one_debounced_offer() {
    let (mut sim, alice, bob) = call();
    let before = sim.client(bob).offers_answered;
    let carol = sim.join(ROOM, "carol").expect("carol joins");
    sim.run(Duration::from_millis(200), None);
    sim.publish(carol, true, true);
    sim.run(Duration::from_secs(2), Some(Media::STEADY));
    // Carol's two tracks came to Bob in one new offer, not two.
    assert_eq!(sim.client(bob).offers_answered, before + 1);
    assert!(sim.client(bob).tags_from("carol", "video").len() > 50);
    assert!(sim.client(alice).tags_from("carol", "audio").len() > 50);
    assert!(sim.client(carol).tags_from("alice", "audio").len() > 50);
}

#[test]
fn a_subscriber_that_drops_signaling_resumes_and_keeps_receiving() {
    let (mut sim, alice, bob) = call();
    sim.drop_signaling(bob);
    assert!(
        sim.client(alice)
            .was_told(|m| matches!(m, ServerMessage::ParticipantReconnecting { .. }))
    );
    // Media keeps flowing to Bob while his signaling is away.
    let before = sim.client(bob).tags_from("alice", "audio").len();
    sim.run(Duration::from_secs(1), Some(Media::STEADY));
    assert_eq!(
        sim.client(bob).tags_from("alice", "audio").len(),
        before + 100
    );
    let offers = sim.client(bob).offers_answered;
    sim.resume(bob, ROOM).expect("bob resumes");
    assert!(
        sim.client(bob)
            .was_told(|m| matches!(m, ServerMessage::Joined { resumed: true, .. }))
    );
    assert!(
        sim.client(alice)
            .was_told(|m| matches!(m, ServerMessage::ParticipantResumed { .. }))
    );
    sim.run(Duration::from_secs(2), Some(Media::STEADY));
    // The relay restarted ICE on his subscribe leg (a fresh offer), and media went on through
    // the restart on the pair in use before it.
    assert_eq!(sim.client(bob).offers_answered, offers + 1);
    let audio = sim.client(bob).tags_from("alice", "audio");
    assert_contiguous(&audio, "audio across the resume");
    assert!(audio.len() >= before + 300);
}

#[test]
fn a_publisher_that_changes_networks_restarts_ice_and_its_media_goes_on() {
    let (mut sim, alice, bob) = call();
    let old = sim.client(alice).publish.addr;
    let answers = |sim: &Sim| {
        sim.client(alice)
            .told
            .iter()
            .filter(|m| matches!(m, ServerMessage::PublishAnswer { .. }))
            .count()
    };
    let before = answers(&sim);
    // Rounds 0..200 went out in `call`; 200..400 go out from the new network.
    sim.move_publish_leg(alice);
    sim.run(Duration::from_secs(2), Some(Media::STEADY));
    // The relay answered the restart and learned the new address from Alice's checks; until
    // then what she sent from there was dropped as from an unknown source.
    assert_eq!(answers(&sim), before + 1);
    assert_ne!(sim.client(alice).publish.addr, old);
    let audio = sim.client(bob).tags_from("alice", "audio");
    assert_eq!(audio.last(), Some(&399));
    let settled: Vec<u32> = audio.iter().copied().filter(|n| *n >= 250).collect();
    assert_eq!(settled.len(), 150);
    assert_contiguous(&settled, "audio from the new network");
    let lost = 200 - audio.iter().filter(|n| **n >= 200).count();
    assert!(lost <= 5, "{lost} audio packets lost in the move");
}

/// How long a subscriber's leg takes to connect when its answers take `signaling_delay`.
fn subscribe_connect_time(signaling_delay: Duration) -> Duration {
    let mut sim = Sim::new(NodeConfig::default());
    sim.signaling_delay = signaling_delay;
    let start = sim.now;
    let bob = sim.join(ROOM, "bob").unwrap();
    assert!(sim.run_until(Duration::from_secs(2), |sim| {
        sim.client(bob).subscribe.state == RTCPeerConnectionState::Connected
    }));
    sim.now - start
}

#[test]
fn checks_that_arrive_before_the_answer_are_answered_once_it_is_applied() {
    // With a slow answer (30 ms through signaling, against 5 ms for the client's first check)
    // the relay holds the check until it can answer it: the leg connects as soon as with an
    // instant answer. Dropped, the check would have to be retransmitted first.
    let instant = subscribe_connect_time(Duration::ZERO);
    let slow = subscribe_connect_time(Duration::from_millis(30));
    assert!(
        slow <= instant + Duration::from_millis(5),
        "{slow:?} with a slow answer, {instant:?} with an instant one"
    );
}

#[test]
fn a_participant_that_never_resumes_is_removed_when_its_grace_ends() {
    let mut sim = Sim::new(NodeConfig {
        resume_grace: Duration::from_secs(10),
        ..NodeConfig::default()
    });
    let alice = sim.join(ROOM, "alice").unwrap();
    let bob = sim.join(ROOM, "bob").unwrap();
    sim.run(Duration::from_secs(1), None);
    sim.drop_signaling(bob);
    sim.run(Duration::from_millis(9_900), None);
    let left = |sim: &Sim| {
        sim.client(alice).was_told(|m| {
            matches!(
                m,
                ServerMessage::ParticipantLeft {
                    reason: LeaveReason::Timeout,
                    ..
                }
            )
        })
    };
    assert!(!left(&sim), "removed before its grace ended");
    assert!(sim.run_until(Duration::from_millis(200), left));
    assert_eq!(sim.metric("tern_participants"), 1.0);
}

/// A WHIP (or WHEP) session cannot resume: when its HTTP side lets go of it, the participant
/// leaves at once instead of waiting out the grace.
#[test]
fn a_whip_session_that_ends_leaves_at_once() {
    let mut sim = Sim::new(NodeConfig {
        resume_grace: Duration::from_secs(10),
        ..NodeConfig::default()
    });
    let alice = sim.join(ROOM, "alice").unwrap();
    let obs = sim
        .join_via(ROOM, "obs", tern_signaling::control::JoinVia::Whip)
        .unwrap();
    sim.run(Duration::from_secs(1), None);
    sim.drop_signaling(obs);
    assert!(sim.client(alice).was_told(|m| matches!(
        m,
        ServerMessage::ParticipantLeft {
            reason: LeaveReason::Left,
            ..
        }
    )));
    assert_eq!(sim.metric("tern_participants"), 1.0);
}

#[test]
fn an_empty_room_closes_after_its_departure_timeout() {
    let mut sim = Sim::new(NodeConfig::default());
    let alice = sim.join(ROOM, "alice").unwrap();
    sim.run(Duration::from_secs(1), None);
    sim.send(alice, tern_signaling::protocol::ClientMessage::Leave {});
    assert_eq!(sim.client(alice).closed, Some(LeaveReason::Left));
    sim.run(Duration::from_millis(100), None);
    assert_eq!(sim.metric("tern_rooms"), 1.0);
    let departure = Duration::from_secs(u64::from(
        NodeConfig::default().room_defaults.departure_timeout_s,
    ));
    sim.run(departure, None);
    assert_eq!(sim.metric("tern_rooms"), 0.0);
}

/// A network filter that loses the next `count` SRTP packets of `ssrc` on the path `on` picks
/// (the SSRC is in the clear; RTCP, payload types 72-76 with the marker bit, is left alone).
fn lose_rtp(
    mut count: u32,
    ssrc: u32,
    on: impl Fn(&Datagram) -> bool + 'static,
) -> Box<dyn FnMut(&Datagram) -> bool> {
    Box::new(move |d| {
        let rtp = d.bytes.len() > 12
            && d.bytes[0] >> 6 == 2
            && !(72..=76).contains(&(d.bytes[1] & 0x7f))
            && d.bytes[8..12] == ssrc.to_be_bytes();
        if rtp && count > 0 && on(d) {
            count -= 1;
            return true;
        }
        false
    })
}

/// Whether a datagram is DTLS (RFC 7983: first byte 20..=63).
fn is_dtls(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(20..=63))
}

#[test]
fn a_leg_whose_checks_never_arrive_fails_and_its_participant_is_removed() {
    let mut sim = Sim::new(NodeConfig::default());
    // Nothing from the client ever reaches the relay.
    sim.filter = Some(Box::new(|d| d.to.port() == 3478));
    let alice = sim.join(ROOM, "alice").unwrap();
    let timeout = NodeConfig::default().connect_timeout;
    assert!(sim.run_until(timeout + Duration::from_millis(100), |sim| {
        sim.client(alice).closed.is_some()
    }));
    assert_eq!(sim.client(alice).closed, Some(LeaveReason::TransportFailed));
    sim.run(Duration::from_millis(300), None);
    assert_eq!(sim.metric("tern_participants"), 0.0);
    assert_eq!(sim.metric("tern_leg_failures_total{stage=\"ice\"}"), 1.0);
}

#[test]
fn a_leg_whose_dtls_never_completes_fails_at_the_connect_deadline() {
    let mut sim = Sim::new(NodeConfig::default());
    // ICE gets through; the client's DTLS never does.
    sim.filter = Some(Box::new(|d| d.to.port() == 3478 && is_dtls(&d.bytes)));
    let alice = sim.join(ROOM, "alice").unwrap();
    let timeout = NodeConfig::default().connect_timeout;
    sim.run(timeout - Duration::from_millis(100), None);
    assert_eq!(sim.client(alice).closed, None, "failed before its deadline");
    sim.run(Duration::from_millis(200), None);
    assert_eq!(sim.client(alice).closed, Some(LeaveReason::TransportFailed));
    assert_eq!(sim.metric("tern_leg_failures_total{stage=\"dtls\"}"), 1.0);
}

#[test]
fn a_new_subscriber_gets_a_keyframe_requested_for_it() {
    let mut sim = Sim::new(NodeConfig::default());
    let alice = sim.join(ROOM, "alice").unwrap();
    sim.publish(alice, false, true);
    // Alice sends only delta frames unless asked.
    let deltas = Media {
        every: Duration::from_millis(10),
        keyframe_every: None,
    };
    sim.run(Duration::from_secs(1), Some(deltas));
    let bob = sim.join(ROOM, "bob").unwrap();
    assert!(sim.run_until(Duration::from_secs(3), |sim| { sim.client(alice).plis > 0 }));
    sim.run(Duration::from_secs(1), Some(deltas));
    // Nothing is forwarded before a keyframe: Bob has none of Alice's video yet.
    assert!(sim.client(bob).tags_from("alice", "video").is_empty());
    assert!(sim.metric("tern_packets_dropped_total{reason=\"awaiting_keyframe\"}") > 0.0);
    sim.send_media(alice, true);
    sim.run(Duration::from_millis(500), Some(deltas));
    let video = sim.client(bob).tags_from("alice", "video");
    assert!(video.len() > 30, "{video:?}");
    assert_contiguous(&video, "video from the keyframe on");
}

#[test]
fn a_subscribers_keyframe_request_reaches_the_publisher() {
    let (mut sim, alice, bob) = call();
    let before = sim.client(alice).plis;
    let ssrc = sim
        .client(bob)
        .received
        .iter()
        .find(|r| r.tag.starts_with("alice/video/"))
        .map(|r| r.ssrc)
        .expect("bob receives alice's video");
    // Right after a keyframe went by, the request is answered by that keyframe: the encoder
    // is not asked again.
    sim.send_media(alice, true);
    sim.run(Duration::from_millis(20), None);
    sim.send_pli(bob, ssrc);
    sim.run(Duration::from_millis(200), None);
    assert_eq!(sim.client(alice).plis, before);
    // Long after the last keyframe, it reaches Alice's encoder at once.
    let deltas = Media {
        every: Duration::from_millis(10),
        keyframe_every: None,
    };
    sim.run(Duration::from_secs(1), Some(deltas));
    sim.send_pli(bob, ssrc);
    sim.run(Duration::from_millis(20), None);
    assert_eq!(sim.client(alice).plis, before + 1);
    assert!(sim.metric("tern_keyframe_requests_sent_total") >= 1.0);
}

#[test]
fn a_video_packet_lost_on_the_way_to_a_subscriber_is_retransmitted() {
    let (mut sim, _alice, bob) = call();
    let bob_addr = sim.client(bob).subscribe.addr;
    let ssrc = sim
        .client(bob)
        .received
        .iter()
        .find(|r| r.tag.starts_with("alice/video/"))
        .map(|r| r.ssrc)
        .expect("bob receives alice's video");
    // The next 3 video packets from the relay to Bob are lost.
    sim.filter = Some(lose_rtp(3, ssrc, move |d| d.to == bob_addr));
    let before = sim.client(bob).tags_from("alice", "video").len();
    sim.run(Duration::from_secs(2), Some(Media::STEADY));
    assert_eq!(sim.dropped, 3);
    let mut video = sim.client(bob).tags_from("alice", "video");
    // Bob NACKed, the relay resent from its history: all 200 arrived, three of them late
    // (and more than once: `rtc`'s NACK generator, in the client here, does not see packets
    // recovered through RTX and repeats its NACKs).
    video.sort_unstable();
    video.dedup();
    assert_eq!(video.len(), before + 200);
    assert_contiguous(&video, "video after retransmission");
    assert!(sim.metric("tern_rtcp_feedback_received_total{type=\"nack\"}") >= 1.0);
}

#[test]
fn a_packet_lost_on_the_way_from_a_publisher_is_asked_for_a_bounded_number_of_times() {
    let (mut sim, alice, bob) = call();
    let alice_addr = sim.client(alice).publish.addr;
    let relay = sim.relay_addr;
    // One of Alice's video packets is lost on the way to the relay (her video SSRC is
    // 0x2000_0000 + 0x100 in the harness).
    let ssrc: u32 = 0x2000_0100;
    sim.filter = Some(lose_rtp(1, ssrc, move |d| {
        d.from == alice_addr && d.to == relay
    }));
    let nacks_before = sim.client(alice).nacks;
    let before = sim.client(bob).tags_from("alice", "video").len();
    sim.run(Duration::from_secs(4), Some(Media::STEADY));
    assert_eq!(sim.dropped, 1);
    // Alice resent it (RTX) and Bob got every frame.
    let mut video = sim.client(bob).tags_from("alice", "video");
    video.sort_unstable();
    video.dedup();
    assert_eq!(video.len(), before + 400);
    // The relay asked for it at most three times, though it cannot tell that the first
    // retransmission already arrived.
    let asked = sim.client(alice).nacks - nacks_before;
    assert!((1..=3).contains(&asked), "alice was NACKed {asked} times");
}

#[test]
fn hostile_datagrams_are_dropped_and_the_call_goes_on() {
    let (mut sim, alice, bob) = call();
    let stranger = "10.9.9.9:9999".parse().unwrap();
    // A datagram from an address no leg learned; STUN naming no known ufrag; a forged check
    // from an unknown address naming Alice's leg with a bad integrity; garbage.
    sim.inject(
        stranger,
        &[0x80, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 3],
    );
    sim.inject(stranger, b"\x00\x01\x00\x00\x21\x12\xa4\x42012345678901");
    sim.inject(stranger, &[0xff; 2_000]);
    let alice_addr = sim.client(alice).publish.addr;
    // From Alice's own address: an RTP packet that fails SRTP authentication, and garbage.
    let mut forged = vec![0x80, 0x60, 0, 1, 0, 0, 0, 1, 0x10, 0, 1, 0x01];
    forged.extend_from_slice(&[0xaa; 40]);
    sim.inject(alice_addr, &forged);
    sim.inject(alice_addr, &[0x42; 64]);
    let before = sim.client(bob).tags_from("alice", "audio").len();
    sim.run(Duration::from_secs(1), Some(Media::STEADY));
    let audio = sim.client(bob).tags_from("alice", "audio");
    assert_eq!(audio.len(), before + 100);
    assert_contiguous(&audio, "audio beside hostile datagrams");
    assert!(sim.metric("tern_packets_dropped_total{reason=\"unknown_source\"}") >= 1.0);
    assert!(sim.metric("tern_packets_dropped_total{reason=\"oversized\"}") >= 1.0);
    assert!(sim.metric("tern_packets_dropped_total{reason=\"srtp_rejected\"}") >= 1.0);
    assert!(sim.metric("tern_packets_dropped_total{reason=\"malformed\"}") >= 1.0);
}

#[test]
fn an_idle_node_sleeps_until_its_next_named_deadline() {
    let mut sim = Sim::new(NodeConfig::default());
    let (at, timer) = sim.node.poll_timeout().expect("a deadline");
    assert_eq!(timer, Timer::Snapshot);
    assert!(at > sim.now);
    // A room with one connected participant: only the legs' own protocol timers, the snapshot
    // and (while anybody is here) the connection-quality tick wake the node.
    let _alice = sim.join(ROOM, "alice").unwrap();
    sim.run(Duration::from_secs(2), None);
    let (at, timer) = sim.node.poll_timeout().expect("a deadline");
    assert!(at > sim.now);
    assert!(
        matches!(
            timer,
            Timer::Leg(_) | Timer::Snapshot | Timer::ConnectDeadline(_) | Timer::Quality
        ),
        "{timer:?}"
    );
}

#[test]
fn the_same_call_plays_out_the_same_way_every_time() {
    let summary = || {
        let (mut sim, _alice, bob) = call();
        sim.run(Duration::from_secs(1), Some(Media::STEADY));
        let b = sim.client(bob);
        (
            b.tags_from("alice", "audio"),
            b.tags_from("alice", "video"),
            b.offers_answered,
        )
    };
    assert_eq!(summary(), summary());
}

#[test]
fn probes_are_retransmitted_copies_of_recent_video_first_and_their_feedback_counts() {
    let (mut sim, _alice, bob) = call();
    let bob_addr = sim.client(bob).subscribe.addr;
    let primaries: Vec<u32> = {
        let mut ssrcs: Vec<u32> = sim.client(bob).received.iter().map(|r| r.ssrc).collect();
        ssrcs.sort_unstable();
        ssrcs.dedup();
        ssrcs
    };
    // Every RTP datagram to Bob on an SSRC that is not one of his media streams is RTX (the
    // RTP header is in the clear under SRTP). The network loses nothing, so Bob never NACKs:
    // any RTX he gets is a probe. One with a header extension carries a transport-wide number
    // (the RTX the relay sends has no other): his feedback reports on it.
    let rtx = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let numbered = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let (seen, seen_numbered) = (rtx.clone(), numbered.clone());
    sim.filter = Some(Box::new(move |d: &Datagram| {
        let b = &d.bytes;
        let rtp = b.len() >= 12 && b[0] >> 6 == 2 && !(192..=223).contains(&b[1]);
        if d.to == bob_addr && rtp {
            let ssrc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
            if !primaries.contains(&ssrc) {
                seen.set(seen.get() + 1);
                if b[0] & 0x10 != 0 {
                    seen_numbered.set(seen_numbered.get() + 1);
                }
            }
        }
        false
    }));
    // Carol publishes about 1.8 Mbit/s of video (200 packets a second of 1,100 bytes), above the
    // relay's first estimate of Bob's downlink: that subscription starts paused, and the relay
    // probes toward Bob, with copies of Alice's video that he has just received.
    let carol = sim.join(ROOM, "carol").expect("carol joins");
    sim.client_mut(carol).video_filler = 1_100;
    sim.publish(carol, true, true);
    let fast = Media {
        every: Duration::from_millis(5),
        keyframe_every: Some(60),
    };
    let mut resumed = false;
    for _ in 0..40 {
        sim.run(Duration::from_millis(500), Some(fast));
        if sim.client(bob).tags_from("carol", "video").len() > 1_000 {
            resumed = true;
            break;
        }
    }
    eprintln!(
        "probe bytes {}, rtx datagrams {}, bob's video from carol {}",
        sim.metric("tern_probe_bytes_sent_total"),
        rtx.get(),
        sim.client(bob).tags_from("carol", "video").len()
    );
    assert!(sim.metric("tern_probe_bytes_sent_total") > 0.0);
    assert!(rtx.get() > 0, "no probe went out as a retransmitted copy");
    assert_eq!(
        numbered.get(),
        rtx.get(),
        "every copy carries a transport-wide number"
    );
    assert!(
        sim.metric("tern_rtcp_feedback_received_total{type=\"nack\"}") == 0.0,
        "nothing was lost, so every copy was a probe"
    );
    // The estimate rose to carry the 1.8 Mbit/s stream.
    assert!(resumed, "bob never got carol's 1.8 Mbit/s video");
    let mut video = sim.client(bob).tags_from("alice", "video");
    let received = video.len();
    video.sort_unstable();
    video.dedup();
    assert!(
        video.len() < received,
        "the copies reached bob as repeats of alice's video"
    );
    assert_contiguous(&video, "alice's video with the copies");
}

#[test]
fn a_subscriber_pauses_a_video_it_does_not_show_and_takes_it_back() {
    use tern_signaling::protocol::{ClientMessage, ErrorCode, PauseReason, TrackInfo, TrackKind};
    let (mut sim, _alice, bob) = call();
    let video: TrackInfo = sim
        .client(bob)
        .told
        .iter()
        .find_map(|m| match m {
            ServerMessage::SubscribeOffer { tracks, .. } => {
                tracks.iter().find(|t| t.kind == TrackKind::Video).cloned()
            }
            _ => None,
        })
        .expect("bob was offered alice's video");
    let wish = |paused, max_width| ClientMessage::UpdateSubscription {
        track_id: video.id.clone(),
        paused,
        max_width,
        max_height: None,
    };
    sim.send(bob, wish(true, None));
    sim.run(Duration::from_millis(500), Some(Media::STEADY));
    assert!(sim.client(bob).was_told(|m| matches!(
        m,
        ServerMessage::SubscriptionState { track_id, paused: true, reason: Some(PauseReason::Requested), .. }
            if *track_id == video.id
    )));
    let (video_before, audio_before) = (
        sim.client(bob).tags_from("alice", "video").len(),
        sim.client(bob).tags_from("alice", "audio").len(),
    );
    sim.run(Duration::from_secs(2), Some(Media::STEADY));
    assert_eq!(
        sim.client(bob).tags_from("alice", "video").len(),
        video_before,
        "no video while paused"
    );
    assert_eq!(
        sim.client(bob).tags_from("alice", "audio").len(),
        audio_before + 200,
        "audio goes on"
    );
    // Taken back: forwarding starts again at a keyframe, numbered on from before the pause.
    sim.send(bob, wish(false, Some(640)));
    sim.run(Duration::from_secs(2), Some(Media::STEADY));
    let video = sim.client(bob).tags_from("alice", "video");
    assert!(
        video.len() > video_before + 100,
        "{} -> {}",
        video_before,
        video.len()
    );
    assert_eq!(video[video_before] % 30, 0, "resumed at a keyframe");
    let numbers: Vec<u16> = sim
        .client(bob)
        .received
        .iter()
        .filter(|r| r.tag.starts_with("alice/video/"))
        .map(|r| r.sequence_number)
        .collect();
    for pair in numbers.windows(2) {
        assert_eq!(
            pair[1],
            pair[0].wrapping_add(1),
            "sequence numbers continue"
        );
    }
    // Someone else's track, an audio track, a size of 0: refused, nothing else happens.
    let refused = |sim: &Sim, code: ErrorCode| {
        sim.client(bob)
            .told
            .iter()
            .filter(|m| matches!(m, ServerMessage::Error { code: c, .. } if *c == code))
            .count()
    };
    let audio_id = sim
        .client(bob)
        .told
        .iter()
        .find_map(|m| match m {
            ServerMessage::SubscribeOffer { tracks, .. } => tracks
                .iter()
                .find(|t| t.kind == TrackKind::Audio)
                .map(|t| t.id.clone()),
            _ => None,
        })
        .expect("bob was offered alice's audio");
    for track_id in ["TR_1".to_owned(), audio_id, "not a track".to_owned()] {
        sim.send(
            bob,
            ClientMessage::UpdateSubscription {
                track_id,
                paused: true,
                max_width: None,
                max_height: None,
            },
        );
    }
    sim.send(bob, wish(false, Some(0)));
    sim.run(Duration::from_millis(200), Some(Media::STEADY));
    assert_eq!(refused(&sim, ErrorCode::UnknownTrack), 3);
    assert_eq!(refused(&sim, ErrorCode::MalformedMessage), 1);
    assert!(sim.client(bob).tags_from("alice", "video").len() > video.len());
}
