//! Connection quality through signaling: a newcomer is told everybody's quality, a participant
//! whose connection drops is `lost` for the others at the next judgement, and `good` again once
//! it resumed and stayed healthy. (Loss making a connection `poor`, on real networks:
//! tests/browser/media.mjs `loss`; the judgement itself: `media::quality`'s unit tests.)

mod common;

use common::*;
use tern_signaling::auth::Grants;
use tern_signaling::protocol::{ParticipantQuality, ServerMessage};

/// Waits for a `connection_quality` naming `participant` with `quality`.
async fn told(client: &mut Client, participant: &str, quality: &str) {
    let (participant, quality) = (participant.to_owned(), quality.to_owned());
    client
        .wait_for(&format!("{participant} {quality}"), |e| match e {
            Event::Signal(ServerMessage::ConnectionQuality { updates })
                if updates.contains(&ParticipantQuality {
                    participant_id: participant.clone(),
                    quality: quality.clone(),
                }) =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_is_told_to_newcomers_and_follows_a_dropped_connection() {
    let relay = start_relay(|c| c.session.resume_grace_s = 15).await;
    let mut alice = Client::connect(&relay, "quality", "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(&relay, "quality", "bob").await;
    let _pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 10).await;
    let alice_id = alice.participant_id.clone().unwrap();
    let bob_id = bob.participant_id.clone().unwrap();

    // Bob is told both qualities after joining (a healthy loopback call is good).
    told(&mut bob, &alice_id, "good").await;
    told(&mut bob, &bob_id, "good").await;

    // Alice's signaling drops: she is lost for bob until she resumes.
    let resume = alice.resume_token();
    alice.send(Command::DropSignaling);
    told(&mut bob, &alice_id, "lost").await;
    let url = format!(
        "{}&resume_token={resume}",
        ws_url(
            &relay,
            &token(&relay, "quality", "alice", Grants::participant())
        )
    );
    alice.send(Command::Reconnect(url));
    told(&mut bob, &alice_id, "good").await;
    // The resumed session hears everybody's quality again, after its new `joined`.
    alice
        .wait_until("everybody's quality after the resume", |log| {
            let resumed = log.iter().position(|e| {
                matches!(e, Event::Signal(ServerMessage::Joined { resumed: true, .. }))
            });
            resumed.is_some_and(|at| {
                log[at..].iter().any(|e| {
                    matches!(e, Event::Signal(ServerMessage::ConnectionQuality { updates }) if updates.len() == 2)
                })
            })
        })
        .await;
}
