//! The relay's side of end-to-end encrypted calls: `e2ee` declared at join and shown to
//! everyone, rooms that admit only encrypting participants, and the key exchange messages passed
//! on unread to exactly whom they are for, bounded in size and rate.

mod common;

use common::*;
use tern_signaling::auth::Grants;
use tern_signaling::protocol::{ClientMessage, ErrorCode, MAX_E2EE_DATA_BYTES, ServerMessage};

async fn connect_e2ee(relay: &tern::app::Running, room: &str, name: &str) -> Client {
    let url = ws_url(relay, &token(relay, room, name, Grants::participant())) + "&e2ee=1";
    Client::connect_url(&url, name).await
}

fn e2ee(to: Option<&str>, data: &str) -> Command {
    Command::Raw(ClientMessage::E2ee {
        to: to.map(str::to_owned),
        data: data.to_owned(),
    })
}

/// The `data` of every `e2ee` message `client` received from `from`, in order.
fn received_from(client: &mut Client, from: &str) -> Vec<String> {
    client.pump();
    client
        .signals()
        .filter_map(|m| match m {
            ServerMessage::E2ee { from: f, data } if f == from => Some(data.clone()),
            _ => None,
        })
        .collect()
}

async fn wait_e2ee(client: &mut Client, from: &str, data: &str) {
    let (from, data) = (from.to_owned(), data.to_owned());
    client
        .wait_for(&format!("e2ee {data} from {from}"), |e| match e {
            Event::Signal(ServerMessage::E2ee { from: f, data: d }) if *f == from && *d == data => {
                Some(())
            }
            _ => None,
        })
        .await;
}

#[tokio::test]
async fn e2ee_is_declared_at_join_and_shown_to_everyone() {
    let relay = start_relay(|_| {}).await;
    let mut alice = connect_e2ee(&relay, "r", "alice").await;
    let mut bob = Client::connect(&relay, "r", "bob").await;
    let alice_id = alice.participant_id.clone().unwrap();
    let bob_id = bob.participant_id.clone().unwrap();

    // Bob's `joined` lists Alice as encrypting; Alice is told Bob joined without it.
    let listed = bob
        .wait_for("joined", |e| match e {
            Event::Signal(ServerMessage::Joined {
                participant,
                participants,
                ..
            }) => Some((participant.e2ee, participants.clone())),
            _ => None,
        })
        .await;
    assert!(!listed.0, "bob did not ask for e2ee");
    let alice_seen = listed.1.iter().find(|p| p.id == alice_id).unwrap();
    assert!(alice_seen.e2ee);
    let bob_seen = alice
        .wait_for("bob joined", |e| match e {
            Event::Signal(ServerMessage::ParticipantJoined { participant }) => {
                Some(participant.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(bob_seen.id, bob_id);
    assert!(!bob_seen.e2ee);

    // And the admin API says so.
    let (status, room) = api(
        &relay,
        "GET",
        "/api/rooms/r",
        Some(&admin_token(&relay, "r")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{room}");
    let flags: Vec<(String, bool)> = room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["identity"].as_str().unwrap().to_owned(),
                p["e2ee"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(flags, vec![("alice".into(), true), ("bob".into(), false)]);

    // A value other than 1/0 is refused before the upgrade.
    let url_query = format!(
        "?access_token={}&e2ee=yes",
        token(&relay, "r", "carol", Grants::participant())
    );
    let (status, body) = upgrade_request(&relay, &url_query, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_parameter"), "{body}");
}

#[tokio::test]
async fn key_messages_reach_exactly_whom_they_are_for() {
    let relay = start_relay(|_| {}).await;
    let alice = connect_e2ee(&relay, "r", "alice").await;
    let mut bob = connect_e2ee(&relay, "r", "bob").await;
    let mut carol = connect_e2ee(&relay, "r", "carol").await;
    let mut dave = Client::connect(&relay, "r", "dave").await;
    let mut eve = connect_e2ee(&relay, "other", "eve").await;
    let alice_id = alice.participant_id.clone().unwrap();
    let bob_id = bob.participant_id.clone().unwrap();
    let dave_id = dave.participant_id.clone().unwrap();
    let eve_id = eve.participant_id.clone().unwrap();

    // To everyone: the encrypting participants of the room, not the sender, not Dave (plain),
    // not Eve (another room).
    alice.send(e2ee(None, "announce-1"));
    // To Bob alone.
    alice.send(e2ee(Some(&bob_id), "key-for-bob"));
    // A marker to everyone last: once it is in, anything misdelivered before it would be too.
    alice.send(e2ee(None, "marker"));
    wait_e2ee(&mut bob, &alice_id, "marker").await;
    wait_e2ee(&mut carol, &alice_id, "marker").await;
    assert_eq!(
        received_from(&mut bob, &alice_id),
        ["announce-1", "key-for-bob", "marker"]
    );
    assert_eq!(
        received_from(&mut carol, &alice_id),
        ["announce-1", "marker"]
    );
    // Dave and Eve get a message of their own afterwards, so they have read past that point.
    let mut eve_peer = connect_e2ee(&relay, "other", "frank").await;
    eve_peer.send(e2ee(None, "hello-eve"));
    wait_e2ee(
        &mut eve,
        &eve_peer.participant_id.clone().unwrap(),
        "hello-eve",
    )
    .await;
    assert!(received_from(&mut eve, &alice_id).is_empty());
    assert!(received_from(&mut dave, &alice_id).is_empty());
    eve_peer.pump();

    // Refusals: a plain participant may not send; nobody may address a plain participant,
    // someone in another room, themselves, or nobody at all; data is bounded.
    dave.send(e2ee(None, "x"));
    expect_error(&mut dave, ErrorCode::NotAllowed).await;
    let mut alice = alice;
    for to in [
        dave_id.as_str(),
        eve_id.as_str(),
        alice_id.as_str(),
        "PA_nonsense",
    ] {
        alice.send(e2ee(Some(to), "x"));
        expect_error(&mut alice, ErrorCode::UnknownParticipant).await;
        alice.log.clear();
    }
    alice.send(e2ee(None, &"x".repeat(MAX_E2EE_DATA_BYTES + 1)));
    expect_error(&mut alice, ErrorCode::LimitExceeded).await;
    // Exactly the limit passes.
    let largest = "y".repeat(MAX_E2EE_DATA_BYTES);
    alice.send(e2ee(Some(&bob_id), &largest));
    wait_e2ee(&mut bob, &alice_id, &largest).await;
}

#[tokio::test]
async fn key_messages_are_rate_limited_and_counted() {
    let relay = start_relay(|config| {
        // The session's own message rate would cut in first otherwise.
        config.session.max_messages_per_s = 1_000;
    })
    .await;
    let mut alice = connect_e2ee(&relay, "r", "alice").await;
    let mut bob = connect_e2ee(&relay, "r", "bob").await;
    let alice_id = alice.participant_id.clone().unwrap();
    let bob_id = bob.participant_id.clone().unwrap();
    // Messages to one participant: 30 at once are within the burst.
    for n in 0..30 {
        alice.send(e2ee(Some(&bob_id), &format!("d{n}")));
    }
    wait_e2ee(&mut bob, &alice_id, "d29").await;
    // Messages to everyone are copied to every encrypting participant: a few a second only.
    for n in 0..200 {
        alice.send(e2ee(None, &format!("m{n}")));
    }
    // A barrier the node answers in order after the 200 (signaling itself answers pings).
    alice.send(Command::Raw(ClientMessage::UpdateSubscription {
        track_id: "TR_barrier".into(),
        paused: true,
        max_width: None,
        max_height: None,
    }));
    expect_error(&mut alice, ErrorCode::UnknownTrack).await;
    let refused = alice
        .signals()
        .filter(|m| {
            matches!(
                m,
                ServerMessage::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            )
        })
        .count();
    // Bursts of 5 and 2 a second to everyone: however fast the 200 went out, nearly all were
    // too many.
    assert!(refused >= 150, "{refused} of 200 refused");
    let breaches = metric(&relay, "tern_limit_breaches_total{limit=\"e2ee_rate\"}").await;
    assert_eq!(breaches as usize, refused);
    // Everything not refused arrived, in order.
    let delivered = 200 - refused;
    bob.wait_until("the accepted messages", |log| {
        log.iter()
            .filter(|e| matches!(e, Event::Signal(ServerMessage::E2ee { .. })))
            .count()
            >= 30 + delivered
    })
    .await;
    let got = received_from(&mut bob, &alice_id);
    assert_eq!(got.len(), 30 + delivered);
    assert_eq!(got[30], "m0");
}

/// A join without `e2ee=1` to `room` is refused with `e2ee_required`, the only message.
async fn refused_as_plain(relay: &tern::app::Running, room: &str, identity: &str) {
    let first = first_message(relay, room, identity).await;
    assert!(
        matches!(
            first,
            ServerMessage::Error {
                code: ErrorCode::E2eeRequired,
                ..
            }
        ),
        "{first:?}"
    );
}

#[tokio::test]
async fn a_room_that_requires_e2ee_refuses_plain_joins_before_making_anything() {
    let relay = start_relay(|config| config.room.e2ee_required = true).await;
    let operator = admin_token(&relay, "*");
    // The relay's default: a plain join is refused and no room is left behind.
    refused_as_plain(&relay, "secret", "mallory").await;
    let (_, rooms) = api(&relay, "GET", "/api/rooms", Some(&operator), None).await;
    assert_eq!(rooms.as_array().map(Vec::len), Some(0), "{rooms}");
    let _alice = connect_e2ee(&relay, "secret", "alice").await;
    refused_as_plain(&relay, "secret", "mallory").await;

    // Per room through the admin API: a room that does not require it admits plain joins.
    let (status, body) = api(
        &relay,
        "POST",
        "/api/rooms",
        Some(&operator),
        Some(r#"{"name":"open","e2ee_required":false}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["policy"]["e2ee_required"], false);
    let plain = Client::connect(&relay, "open", "bob").await;
    assert!(plain.participant_id.is_some());
    // And changed on a live room.
    let (status, body) = api(
        &relay,
        "PATCH",
        "/api/rooms/open",
        Some(&operator),
        Some(r#"{"e2ee_required":true}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    refused_as_plain(&relay, "open", "carol").await;
}
