//! ICE as clients with several addresses use it: a client that moves to another candidate pair
//! mid-call keeps its media and its place in the room.

mod common;

use common::stun::{Role, binding_request, binding_success, ice_credentials, request_transaction};
use common::*;
use std::time::{Duration, Instant};
use tern_signaling::protocol::ServerMessage;
use tokio::net::UdpSocket;

/// Bob's subscribe leg starts on his first address. Then, like a laptop that found a better
/// path (Ethernet plugged in, a VPN up), he checks and nominates a second address and stops
/// using the first. The relay must move the leg there (renomination): media follows, and
/// consent on the new pair keeps him in the room long after the old pair went silent (ICE
/// timeouts of 3 s + 2 s here, so without renomination he would be gone within about 5 s; the
/// test clients check every 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renomination_moves_the_selected_pair() {
    let relay = start_relay(|c| {
        c.media.ice_disconnected_timeout_s = 3;
        c.media.ice_failed_timeout_s = 2;
    })
    .await;
    let mut alice = Client::connect(&relay, "move", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "move", "bob").await;
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 20).await;

    let offer = bob
        .signals()
        .filter_map(|s| match s {
            ServerMessage::SubscribeOffer { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .last()
        .unwrap();
    let answer = bob
        .log
        .iter()
        .filter_map(|e| match e {
            Event::LocalSdp {
                publish: false,
                sdp,
            } => Some(sdp.clone()),
            _ => None,
        })
        .last()
        .unwrap();
    let (relay_ufrag, relay_pwd) = ice_credentials(&offer);
    let (bob_ufrag, bob_pwd) = ice_credentials(&answer);

    let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let second_addr = second.local_addr().unwrap();
    let mut media_at_second = 0usize;
    let mut frozen_at: Option<Instant> = None;
    let mut next_check = Instant::now();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + DEADLINE;
    // Run until the old address has been silent for 7 s (past the failure horizon).
    while frozen_at.is_none_or(|at| at.elapsed() < Duration::from_secs(7)) {
        assert!(
            Instant::now() < deadline,
            "media never moved to the new address ({media_at_second} packets there)"
        );
        if Instant::now() >= next_check {
            // A browser checks its selected pair about every 2.5 s; more often here, so the
            // test does not wait.
            let check = binding_request(
                &relay_ufrag,
                &bob_ufrag,
                Some(&relay_pwd),
                Role::Controlling(7),
                true,
            );
            second.send_to(&check, relay.media_addr).await.unwrap();
            next_check = Instant::now() + Duration::from_millis(250);
        }
        let received =
            tokio::time::timeout(Duration::from_millis(50), second.recv_from(&mut buf)).await;
        let Ok(Ok((n, from))) = received else {
            bob.pump();
            continue;
        };
        if let Some(transaction) = request_transaction(&buf[..n]) {
            // The relay checks the new pair before it will use it.
            let response = binding_success(transaction, second_addr, &bob_pwd);
            second.send_to(&response, from).await.unwrap();
        } else if (128..192).contains(&buf[0]) {
            media_at_second += 1;
            if frozen_at.is_none() && media_at_second >= 20 {
                // Media moved: the first address goes quiet for good.
                bob.send(Command::FreezeMedia);
                frozen_at = Some(Instant::now());
            }
        }
        bob.pump();
    }
    assert!(
        media_at_second >= 100,
        "only {media_at_second} packets reached the new address"
    );
    alice.pump();
    let bob_left = alice
        .signals()
        .any(|s| matches!(s, ServerMessage::ParticipantLeft { .. }));
    assert!(!bob_left, "bob was removed while his new pair was alive");
    assert_eq!(
        metric(&relay, "tern_leg_failures_total{stage=\"ice\"}").await,
        0.0
    );
}
