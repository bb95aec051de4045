//! The pure room on a virtual clock: who receives what as members join, publish, leave and
//! resume; fan-out numbering; keyframe requests.

use std::time::{Duration, Instant};
use tern::media::codec::Codec;
use tern::media::forwarder::InboundPacket;
use tern::media::ids::{ParticipantId, RoomId, TrackId};
use tern::media::room::{
    MemberInfo, MemberState, PublicationInfo, Room, RoomError, RoomOutput, SinkId, TrackSource,
};

const A: ParticipantId = ParticipantId(1);
const B: ParticipantId = ParticipantId(2);
const C: ParticipantId = ParticipantId(3);

fn member(name: &str) -> MemberInfo {
    MemberInfo {
        identity: name.into(),
        name: name.into(),
        can_publish: true,
        can_subscribe: true,
    }
}

fn room() -> Room {
    Room::new(RoomId("r".into()), Duration::from_millis(500))
}

fn outputs(room: &mut Room) -> Vec<RoomOutput> {
    std::iter::from_fn(|| room.poll_output()).collect()
}

fn camera(owner: ParticipantId) -> PublicationInfo {
    PublicationInfo {
        owner,
        source: TrackSource::Camera,
        codec: Codec::Vp8,
    }
}

fn microphone(owner: ParticipantId) -> PublicationInfo {
    PublicationInfo {
        owner,
        source: TrackSource::Microphone,
        codec: Codec::Opus,
    }
}

fn packet(seq: u16, key: bool) -> InboundPacket {
    InboundPacket {
        ssrc: 7,
        sequence_number: seq,
        timestamp: u32::from(seq) * 3000,
        keyframe_start: key,
        payload_bytes: 1000,
        ..InboundPacket::default()
    }
}

#[test]
fn a_publication_goes_to_every_other_member_never_back() {
    let mut r = room();
    r.join(A, member("a")).unwrap();
    r.join(B, member("b")).unwrap();
    r.join(C, member("c")).unwrap();
    assert!(outputs(&mut r).is_empty(), "nothing published yet");
    r.publish(TrackId(10), camera(A)).unwrap();
    assert_eq!(
        outputs(&mut r),
        vec![
            RoomOutput::SubscriptionsChanged(B),
            RoomOutput::SubscriptionsChanged(C)
        ]
    );
    assert_eq!(r.subscribed_tracks(B), vec![TrackId(10)]);
    assert_eq!(r.subscribed_tracks(C), vec![TrackId(10)]);
    assert!(
        r.subscribed_tracks(A).is_empty(),
        "never back to its publisher"
    );
}

#[test]
fn a_late_joiner_subscribes_to_everything_already_published() {
    let mut r = room();
    r.join(A, member("a")).unwrap();
    r.publish(TrackId(10), camera(A)).unwrap();
    r.publish(TrackId(11), microphone(A)).unwrap();
    outputs(&mut r);
    r.join(B, member("b")).unwrap();
    assert_eq!(outputs(&mut r), vec![RoomOutput::SubscriptionsChanged(B)]);
    assert_eq!(r.subscribed_tracks(B), vec![TrackId(10), TrackId(11)]);
}

#[test]
fn leaving_removes_publications_and_subscriptions_and_tells_subscribers() {
    let mut r = room();
    for (id, name) in [(A, "a"), (B, "b"), (C, "c")] {
        r.join(id, member(name)).unwrap();
    }
    r.publish(TrackId(10), camera(A)).unwrap();
    r.publish(TrackId(20), camera(B)).unwrap();
    outputs(&mut r);
    assert_eq!(r.leave(A).unwrap(), vec![TrackId(10)]);
    assert_eq!(
        outputs(&mut r),
        vec![
            RoomOutput::SubscriptionsChanged(B),
            RoomOutput::SubscriptionsChanged(C)
        ],
        "both subscribers of A's track renegotiate"
    );
    assert!(r.publication(TrackId(10)).is_none());
    assert_eq!(r.subscribed_tracks(C), vec![TrackId(20)]);
    // A's subscription to B's track went with A.
    let subscribers: Vec<ParticipantId> = r
        .publication(TrackId(20))
        .unwrap()
        .subscriptions()
        .iter()
        .map(|s| s.subscriber)
        .collect();
    assert_eq!(subscribers, vec![C]);
    assert_eq!(r.leave(A), Err(RoomError::NotMember));
}

#[test]
fn grants_are_respected() {
    let mut r = room();
    r.join(A, member("a")).unwrap();
    let listener = MemberInfo {
        can_publish: false,
        can_subscribe: true,
        ..member("l")
    };
    let recorder_off = MemberInfo {
        can_publish: true,
        can_subscribe: false,
        ..member("p")
    };
    r.join(B, listener).unwrap();
    r.join(C, recorder_off).unwrap();
    assert_eq!(r.publish(TrackId(1), camera(B)), Err(RoomError::NotAllowed));
    r.publish(TrackId(2), camera(A)).unwrap();
    assert_eq!(r.subscribed_tracks(B), vec![TrackId(2)]);
    assert!(
        r.subscribed_tracks(C).is_empty(),
        "no subscribe grant, no subscription"
    );
    assert_eq!(
        r.publish(TrackId(2), camera(A)),
        Err(RoomError::DuplicateTrack)
    );
}

#[test]
fn attached_subscriptions_start_at_a_keyframe_with_their_own_numbering() {
    let t0 = Instant::now();
    let mut r = room();
    r.join(A, member("a")).unwrap();
    r.join(B, member("b")).unwrap();
    r.join(C, member("c")).unwrap();
    r.publish(TrackId(10), camera(A)).unwrap();
    outputs(&mut r);
    // Not attached yet: nothing forwarded.
    let mut sent = Vec::new();
    r.forward(TrackId(10), &packet(1, true), t0, |f| {
        sent.push((f.sink, f.sequence_number, f.timestamp))
    });
    assert!(sent.is_empty());

    r.attach(TrackId(10), B, SinkId(100), 1000, 50, t0).unwrap();
    assert_eq!(
        outputs(&mut r),
        vec![RoomOutput::RequestKeyframe {
            track: TrackId(10),
            ssrc: Some(7)
        }]
    );
    r.attach(TrackId(10), C, SinkId(200), 7, 9, t0).unwrap();
    assert!(
        outputs(&mut r).is_empty(),
        "keyframe requests are throttled per track"
    );

    let fan = r.forward(TrackId(10), &packet(2, false), t0, |f| {
        sent.push((f.sink, f.sequence_number, f.timestamp))
    });
    assert_eq!(fan.awaiting_keyframe, 2);
    assert!(sent.is_empty());
    let fan = r.forward(TrackId(10), &packet(3, true), t0, |f| {
        sent.push((f.sink, f.sequence_number, f.timestamp))
    });
    assert_eq!(fan.forwarded, 2);
    r.forward(TrackId(10), &packet(4, false), t0, |f| {
        sent.push((f.sink, f.sequence_number, f.timestamp))
    });
    assert_eq!(
        sent,
        vec![
            (SinkId(100), 1000, 50),
            (SinkId(200), 7, 9),
            (SinkId(100), 1001, 3050),
            (SinkId(200), 8, 3009),
        ]
    );
    r.detach(TrackId(10), C);
    sent.clear();
    r.forward(TrackId(10), &packet(5, false), t0, |f| {
        sent.push((f.sink, f.sequence_number, f.timestamp))
    });
    assert_eq!(sent, vec![(SinkId(100), 1002, 6050)]);
}

#[test]
fn keyframe_requests_from_subscribers_are_throttled_and_only_for_video() {
    let t0 = Instant::now();
    let mut r = room();
    r.join(A, member("a")).unwrap();
    r.join(B, member("b")).unwrap();
    r.publish(TrackId(10), camera(A)).unwrap();
    r.publish(TrackId(11), microphone(A)).unwrap();
    outputs(&mut r);
    let mut requests = 0;
    for i in 0..10u64 {
        let now = t0 + Duration::from_millis(i * 100);
        r.request_keyframe(TrackId(10), now);
        r.request_keyframe(TrackId(11), now);
        r.handle_timeout(now);
        requests += outputs(&mut r)
            .iter()
            .filter(|o| matches!(o, RoomOutput::RequestKeyframe { .. }))
            .count();
    }
    assert_eq!(
        requests, 2,
        "ten PLIs in a second reach the publisher at most twice"
    );
}

#[test]
fn a_member_who_does_not_resume_in_time_expires() {
    let t0 = Instant::now();
    let mut r = room();
    r.join(A, member("a")).unwrap();
    r.join(B, member("b")).unwrap();
    r.set_reconnecting(A, t0 + Duration::from_secs(10));
    r.set_reconnecting(B, t0 + Duration::from_secs(10));
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    r.set_active(B);
    assert_eq!(r.member(B).unwrap().state, MemberState::Active);
    r.handle_timeout(t0 + Duration::from_secs(9));
    assert!(outputs(&mut r).is_empty());
    r.handle_timeout(t0 + Duration::from_secs(10));
    r.handle_timeout(t0 + Duration::from_secs(11));
    assert_eq!(
        outputs(&mut r),
        vec![RoomOutput::GraceExpired(A)],
        "reported once"
    );
}

#[test]
fn sender_reports_are_translated_with_each_subscriptions_offset() {
    let t0 = Instant::now();
    let mut r = room();
    for (id, name) in [(A, "a"), (B, "b"), (C, "c")] {
        r.join(id, member(name)).unwrap();
    }
    r.publish(TrackId(10), microphone(A)).unwrap();
    r.attach(TrackId(10), B, SinkId(1), 0, 5_000, t0).unwrap();
    r.attach(TrackId(10), C, SinkId(2), 0, 90_000, t0).unwrap();
    let audio = InboundPacket {
        ssrc: 7,
        sequence_number: 1,
        timestamp: 1_000,
        keyframe_start: true,
        payload_bytes: 1000,
        ..InboundPacket::default()
    };
    r.forward(TrackId(10), &audio, t0, |_| {});
    let mut reports = Vec::new();
    r.sender_report(TrackId(10), 7, 1_960, 0, |sink, rtp| {
        reports.push((sink, rtp))
    });
    assert_eq!(reports, vec![(SinkId(1), 5_960), (SinkId(2), 90_960)]);
    reports.clear();
    r.sender_report(TrackId(10), 8, 1_960, 0, |sink, rtp| {
        reports.push((sink, rtp))
    });
    assert!(
        reports.is_empty(),
        "a report about another SSRC is not this stream's"
    );
}

#[test]
fn an_operators_mute_and_the_publishers_own_are_kept_apart() {
    let mut r = room();
    let now = Instant::now();
    r.join(A, member("a")).unwrap();
    r.publish(TrackId(11), microphone(A)).unwrap();
    let muted = |r: &Room| {
        let p = r.publication(TrackId(11)).unwrap();
        (p.muted(), p.publisher_muted, p.admin_muted)
    };
    // The publisher mutes, an operator mutes and unmutes: the publisher's mute stands.
    r.set_muted(TrackId(11), true).unwrap();
    r.set_admin_muted(TrackId(11), true, now).unwrap();
    assert_eq!(muted(&r), (true, true, true));
    r.set_admin_muted(TrackId(11), false, now).unwrap();
    assert_eq!(muted(&r), (true, true, false));
    // Under an operator's mute the publisher may mute further but not unmute.
    r.set_admin_muted(TrackId(11), true, now).unwrap();
    assert_eq!(r.set_muted(TrackId(11), false), Err(RoomError::NotAllowed));
    assert_eq!(muted(&r), (true, true, true));
    r.set_admin_muted(TrackId(11), false, now).unwrap();
    r.set_muted(TrackId(11), false).unwrap();
    assert_eq!(muted(&r), (false, false, false));
    assert_eq!(r.set_muted(TrackId(99), true), Err(RoomError::UnknownTrack));
}

/// Probes and retransmissions look like media: a padding-only packet is dropped with its
/// sequence gap closed, a duplicate is dropped, and neither a duplicate nor a late copy of a
/// keyframe's first packet is taken as the point to switch layers.
#[test]
fn padding_and_duplicates_are_dropped_and_never_a_switch_point() {
    use tern::media::room::LayerTarget;
    let t0 = Instant::now();
    let mut r = room();
    r.join(A, member("a")).unwrap();
    r.join(B, member("b")).unwrap();
    r.publish(TrackId(10), camera(A)).unwrap();
    assert!(r.bind_layer(TrackId(10), 7, Some("q"), t0));
    assert!(r.bind_layer(TrackId(10), 8, Some("f"), t0));
    r.attach(TrackId(10), B, SinkId(100), 1_000, 0, t0).unwrap();
    r.set_target(TrackId(10), B, LayerTarget::Layer(0), t0);
    let mut sent = Vec::new();
    let forward = |r: &mut Room, p: InboundPacket, sent: &mut Vec<u16>| {
        r.forward(TrackId(10), &p, t0, |f| sent.push(f.sequence_number))
    };
    let on = |ssrc: u32, seq: u16, key: bool| InboundPacket {
        ssrc,
        marker: true,
        ..packet(seq, key)
    };
    forward(&mut r, on(7, 1, true), &mut sent);
    forward(&mut r, on(7, 2, false), &mut sent);
    // A duplicate of 2, then padding (3, 4), then media again.
    assert!(forward(&mut r, on(7, 2, false), &mut sent).duplicate);
    for seq in [3, 4] {
        let padding = InboundPacket {
            payload_bytes: 0,
            ..on(7, seq, false)
        };
        assert!(forward(&mut r, padding, &mut sent).padding);
    }
    forward(&mut r, on(7, 5, false), &mut sent);
    assert_eq!(
        sent,
        vec![1_000, 1_001, 1_002],
        "no gap where the padding was"
    );

    // Switch to layer f (slot 1): its keyframe's first packet arrives, then a copy of it (a
    // probe's), then a late one of an older keyframe: only the first splices.
    r.set_target(TrackId(10), B, LayerTarget::Layer(1), t0);
    forward(&mut r, on(8, 100, false), &mut sent);
    assert_eq!(sent.len(), 3, "not before its keyframe");
    forward(&mut r, on(7, 6, false), &mut sent);
    assert_eq!(sent.len(), 4, "the old layer continues until the splice");
    let fan = forward(&mut r, on(8, 101, true), &mut sent);
    assert_eq!(fan.switched_up, 1);
    assert!(forward(&mut r, on(8, 101, true), &mut sent).duplicate);
    let late = forward(&mut r, on(8, 99, true), &mut sent);
    assert_eq!((late.switched_up, late.switched_down), (0, 0));
    forward(&mut r, on(8, 102, false), &mut sent);
    forward(&mut r, on(7, 7, true), &mut sent);
    // 1000..=1003 on q, then f from 1004: the late f packet from before the splice is stale,
    // q no longer forwarded.
    assert_eq!(sent, vec![1_000, 1_001, 1_002, 1_003, 1_004, 1_005]);
}

/// The room reads every audio packet's level and tells everyone who speaks when that changes:
/// a participant talking for a second becomes the active speaker, a muted one never does, and
/// silence (no packets, as with DTX) ends the turn.
#[test]
fn the_active_speakers_follow_the_audio_levels() {
    let mut r = room();
    let t0 = Instant::now();
    r.join(A, member("a")).unwrap();
    r.join(B, member("b")).unwrap();
    let (mic_a, mic_b) = (TrackId(21), TrackId(22));
    r.publish(mic_a, microphone(A)).unwrap();
    r.publish(mic_b, microphone(B)).unwrap();
    r.set_muted(mic_b, true).unwrap();
    outputs(&mut r);
    let changed = |r: &mut Room| {
        outputs(r)
            .iter()
            .filter(|o| **o == RoomOutput::ActiveSpeakersChanged)
            .count()
    };
    // A talks (-30 dBov) and B, muted, shouts (-10 dBov): 50 packets a second for a second.
    let mut now = t0;
    for _ in 0..50 {
        now += Duration::from_millis(20);
        r.observe_audio_level(mic_a, 30, now);
        r.observe_audio_level(mic_b, 10, now);
        r.handle_timeout(now);
    }
    assert_eq!(changed(&mut r), 1);
    assert_eq!(r.active_speakers(), &[A]);
    // Then silence: no packets at all for three seconds.
    for _ in 0..150 {
        now += Duration::from_millis(20);
        r.handle_timeout(now);
    }
    assert_eq!(changed(&mut r), 1);
    assert!(r.active_speakers().is_empty());
    // A talking member who leaves is no speaker any more.
    for _ in 0..50 {
        now += Duration::from_millis(20);
        r.observe_audio_level(mic_a, 30, now);
        r.handle_timeout(now);
    }
    assert_eq!(r.active_speakers(), &[A]);
    r.leave(A).unwrap();
    r.handle_timeout(now + Duration::from_millis(20));
    assert!(r.active_speakers().is_empty());
}

/// A WHEP viewer's m-line follows a new publisher: the sink goes on from where the first track
/// left off (no jump in numbering, across a wrap), starting the new track at its keyframe, and
/// a continuation is never put on a track of the other kind.
#[test]
fn a_sink_continues_its_numbering_from_one_track_to_another() {
    let t0 = Instant::now();
    let mut r = room();
    for (id, name) in [(A, "a"), (B, "b"), (C, "c")] {
        r.join(id, member(name)).unwrap();
    }
    r.publish(TrackId(10), camera(A)).unwrap();
    r.publish(TrackId(20), camera(B)).unwrap();
    r.publish(TrackId(21), microphone(B)).unwrap();
    r.attach(TrackId(10), C, SinkId(300), 65_534, 1_000, t0)
        .unwrap();
    let mut sent = Vec::new();
    for seq in 1..=3 {
        r.forward(TrackId(10), &packet(seq, seq == 1), t0, |f| {
            sent.push((f.sink, f.sequence_number))
        });
    }
    assert_eq!(
        sent,
        vec![
            (SinkId(300), 65_534),
            (SinkId(300), 65_535),
            (SinkId(300), 0)
        ]
    );

    let continuation = r.detach_continuation(TrackId(10), C).expect("was attached");
    assert!(
        r.detach_continuation(TrackId(10), C).is_none(),
        "detached once"
    );
    let continued = r.attach_continuing(TrackId(20), C, SinkId(300), continuation, t0);
    assert_eq!(continued, Ok(()));
    sent.clear();
    let other = |seq: u16, key: bool| InboundPacket {
        ssrc: 99,
        ..packet(seq, key)
    };
    // A's track no longer reaches the sink; B's starts at its keyframe.
    r.forward(TrackId(10), &packet(4, false), t0, |f| {
        sent.push((f.sink, f.sequence_number))
    });
    r.forward(TrackId(20), &other(500, false), t0, |f| {
        sent.push((f.sink, f.sequence_number))
    });
    assert!(sent.is_empty(), "{sent:?}");
    for seq in 501..=502 {
        r.forward(TrackId(20), &other(seq, seq == 501), t0, |f| {
            sent.push((f.sink, f.sequence_number))
        });
    }
    assert_eq!(sent, vec![(SinkId(300), 1), (SinkId(300), 2)]);

    // Video numbering cannot go on as audio.
    let video = r.detach_continuation(TrackId(20), C).unwrap();
    assert_eq!(
        r.attach_continuing(TrackId(21), C, SinkId(301), video, t0),
        Err(RoomError::NotAllowed)
    );

    // A track that is unpublished leaves its numbering to the sink of a member that keeps it
    // (and to nobody else's), until that member leaves.
    r.publish(TrackId(30), camera(A)).unwrap();
    r.attach(TrackId(30), B, SinkId(400), 10, 0, t0).unwrap();
    r.attach(TrackId(30), C, SinkId(300), 10, 0, t0).unwrap();
    r.keep_numbering(C);
    r.unpublish(TrackId(30)).unwrap();
    assert!(
        r.take_continuation(SinkId(400)).is_none(),
        "B does not keep numbering"
    );
    r.publish(TrackId(31), camera(A)).unwrap();
    r.attach(TrackId(31), C, SinkId(301), 10, 0, t0).unwrap();
    r.unpublish(TrackId(31)).unwrap();
    assert!(r.take_continuation(SinkId(300)).is_some());
    assert!(r.take_continuation(SinkId(300)).is_none(), "taken once");
    r.leave(C).unwrap();
    assert!(
        r.take_continuation(SinkId(301)).is_none(),
        "forgotten with its member"
    );
}
