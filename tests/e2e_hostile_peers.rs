//! What one attacker can do to everyone else, tried while a legitimate call runs in the same
//! relay: each attack must be refused and counted, and the call's packets must keep flowing.

mod common;

use common::call::{Call, call};
use common::stun::{Role, binding_request};
use common::*;
use std::time::{Duration, Instant};
use tern_signaling::protocol::ServerMessage;
use tokio::net::UdpSocket;

/// The relay's ufrag on Carol's publish leg, from her publish answer.
fn carol_publish_ufrag(c: &mut Call) -> String {
    c.carol.pump();
    c.carol
        .signals()
        .find_map(|s| match s {
            ServerMessage::PublishAnswer { sdp, .. } => Some(stun::ice_credentials(sdp).0),
            _ => None,
        })
        .expect("carol's publish answer")
}

/// Anyone on the path sees a leg's ufrag in every connectivity check. 20,000 forged checks a
/// second naming Carol's publish leg (from a stranger, and from Carol's own address), each
/// claiming ICE-CONTROLLED with tie-breaker 0 so that a relay that processed it would turn
/// controlling: all are dropped before the leg (counted as `stun_unauthenticated`), none spends
/// the leg's packet budget (no `flood` drops), the leg stays controlled, and Bob's stream from
/// Carol has no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stun_never_reaches_the_leg() {
    let mut c = call("hp-stun", |_| {}).await;
    let ufrag = carol_publish_ufrag(&mut c);
    let flood_before = c.dropped("flood").await;
    let forged_before = c.dropped("stun_unauthenticated").await;
    let forgery = |i: u32| {
        binding_request(
            &ufrag,
            "mallory",
            Some(if i.is_multiple_of(2) {
                "guessed-password"
            } else {
                ""
            }),
            Role::Controlled(0),
            i.is_multiple_of(3),
        )
    };
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let mut sent = 0u32;
    // Two seconds at 20,000 a second, paced in 10 ms steps.
    for step in 0..200u32 {
        for i in 0..200u32 {
            let n = step * 200 + i;
            if n.is_multiple_of(10) {
                // From Carol's own address: the same forgery, a spoofed source.
                c.carol.send(Command::RawUdp {
                    subscribe_leg: false,
                    to: c.relay.media_addr,
                    bytes: forgery(n),
                });
            } else {
                stranger
                    .send_to(&forgery(n), c.relay.media_addr)
                    .await
                    .unwrap();
            }
            sent += 1;
        }
        let due = started + Duration::from_millis(10 * u64::from(step + 1));
        tokio::time::sleep_until(due.into()).await;
    }
    c.assert_unharmed(2).await;
    wait_metric(
        &c.relay,
        "tern_packets_dropped_total{reason=\"stun_unauthenticated\"}",
        "every forgery dropped as unauthenticated",
        |v| v >= forged_before + f64::from(sent),
    )
    .await;
    assert_eq!(
        c.dropped("flood").await,
        flood_before,
        "forgeries spent the leg's budget"
    );
    for leg in c.relay.control.leg_reports().await {
        assert_eq!(leg.ice_role, "controlled", "{leg:?}");
    }
}

/// An SDP within the size limit can still carry hundreds of m-lines, each costing the media
/// worker time to apply. Mallory sends 48 such offers a second: the first ones are refused for
/// their m-lines before anything parses them (`sdp_media_sections`), the rest for their rate
/// (`offer_rate`), and the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdp_bombs_are_refused_before_they_cost_the_worker() {
    let mut c = call("hp-bomb", |_| {}).await;
    let mallory = Client::connect(&c.relay, "hp-bomb", "mallory").await;
    let mut bomb = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    for mid in 0..184 {
        bomb.push_str(&format!(
            "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\na=inactive\r\n\
             a=rtpmap:111 opus/48000/2\r\n"
        ));
    }
    assert!(bomb.len() < 32 * 1024);
    let sections_before = c.breaches("sdp_media_sections").await;
    let rate_before = c.breaches("offer_rate").await;
    let started = Instant::now();
    for i in 0..96u32 {
        mallory.send(Command::Raw(
            tern_signaling::protocol::ClientMessage::PublishOffer {
                sdp: bomb.clone(),
                tracks: Vec::new(),
            },
        ));
        let due = started + Duration::from_millis(u64::from(i + 1) * 1000 / 48);
        tokio::time::sleep_until(due.into()).await;
    }
    c.assert_unharmed(1).await;
    let sections = c.breaches("sdp_media_sections").await - sections_before;
    let rate = c.breaches("offer_rate").await - rate_before;
    assert_eq!(sections + rate, 96.0, "every bomb refused");
    assert!(
        (6.0..=12.0).contains(&sections),
        "{sections} parsed-for-size offers"
    );
    assert!(rate >= 84.0, "{rate} refused for their rate");
}

/// Mallory publishes and unpublishes as fast as she may: one participant's churn must not make
/// everyone else renegotiate more than a few times a second (300 ms apart at least).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_churn_cannot_renegotiate_everyone_many_times_a_second() {
    let mut c = call("hp-churn", |c| c.room.max_offers_per_s = 50).await;
    let mut mallory = Client::connect(&c.relay, "hp-churn", "mallory").await;
    mallory.send(Command::Publish {
        audio: true,
        video: true,
    });
    let offer = mallory
        .wait_for("mallory's publish offer", |e| match e {
            Event::LocalSdp { publish: true, sdp } => Some(sdp.clone()),
            _ => None,
        })
        .await;
    wait_more(&mut c.bob, "carol", "audio", 10).await;
    let silent = offer
        .replace("a=sendrecv", "a=inactive")
        .replace("a=sendonly", "a=inactive");
    let offers = |bob: &mut Client| {
        bob.pump();
        bob.signals()
            .filter(|s| matches!(s, ServerMessage::SubscribeOffer { .. }))
            .count()
    };
    let changes = |bob: &mut Client| {
        bob.pump();
        bob.signals()
            .filter(|s| {
                matches!(
                    s,
                    ServerMessage::TrackPublished { .. } | ServerMessage::TrackUnpublished { .. }
                )
            })
            .count()
    };
    let offers_before = offers(&mut c.bob);
    let changes_before = changes(&mut c.bob);
    let started = Instant::now();
    // 30 offers a second for 3 s, alternately taking her tracks down and putting them back.
    for i in 0..90u32 {
        let sdp = if i % 2 == 0 {
            silent.clone()
        } else {
            offer.clone()
        };
        mallory.send(Command::Raw(
            tern_signaling::protocol::ClientMessage::PublishOffer {
                sdp,
                tracks: Vec::new(),
            },
        ));
        let due = started + Duration::from_millis(u64::from(i + 1) * 1000 / 30);
        tokio::time::sleep_until(due.into()).await;
    }
    let elapsed = started.elapsed();
    c.assert_unharmed(1).await;
    let churn = changes(&mut c.bob) - changes_before;
    assert!(
        churn >= 40,
        "the churn did not happen ({churn} track changes)"
    );
    let renegotiations = offers(&mut c.bob) - offers_before;
    // What each kind of command cost the media worker in this run (a debug build), for the
    // record; not asserted.
    for command in ["publish_offer", "subscribe_answer"] {
        let series =
            |suffix: &str| format!("tern_worker_command_seconds_{suffix}{{command=\"{command}\"}}");
        let count = metric(&c.relay, &series("count")).await;
        let sum = metric(&c.relay, &series("sum")).await;
        eprintln!(
            "{command}: {count} commands, {:.0} µs each on average",
            sum / count.max(1.0) * 1e6
        );
    }
    let allowed = (elapsed.as_millis() / 300) as usize + 2;
    assert!(
        renegotiations <= allowed,
        "{renegotiations} subscribe offers to bob in {elapsed:?}"
    );
}
