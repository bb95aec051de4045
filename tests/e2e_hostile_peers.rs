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
