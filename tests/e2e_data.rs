//! Data messages (chat) through the relay's data channel on each subscribe leg.

mod common;

use common::*;
use tern_signaling::auth::Grants;
use tern_signaling::protocol::{ErrorCode, ServerMessage};

async fn wait_data(client: &mut Client, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    client
        .wait_for(what, |e| match e {
            Event::Data(text) => {
                let json: serde_json::Value = serde_json::from_str(text).ok()?;
                check(&json).then_some(())
            }
            _ => None,
        })
        .await;
}

async fn data_open(client: &mut Client) {
    client
        .wait_for("data channel open", |e| {
            matches!(e, Event::DataOpen).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_everybody_else_in_the_room_with_its_sender() {
    let relay = start_relay(|_| {}).await;
    let mut alice = Client::connect(&relay, "chat", "alice").await;
    let mut bob = Client::connect(&relay, "chat", "bob").await;
    let mut carol = Client::connect(&relay, "chat", "carol").await;
    let mut elsewhere = Client::connect(&relay, "other-room", "dave").await;
    for c in [&mut alice, &mut bob, &mut carol, &mut elsewhere] {
        data_open(c).await;
    }
    let alice_id = alice.participant_id.clone().unwrap();
    alice.send(Command::SendData("hello, room".into()));
    for c in [&mut bob, &mut carol] {
        let id = alice_id.clone();
        wait_data(c, "alice's message", |j| {
            j["from"] == id.as_str() && j["data"] == "hello, room"
        })
        .await;
    }
    // Ordered and reliable: a burst arrives complete and in order.
    for i in 0..30 {
        bob.send(Command::SendData(format!("line {i}")));
    }
    wait_data(&mut carol, "the last line", |j| j["data"] == "line 29").await;
    let lines: Vec<String> = carol
        .log
        .iter()
        .filter_map(|e| match e {
            Event::Data(t) => serde_json::from_str::<serde_json::Value>(t).ok(),
            _ => None,
        })
        .filter_map(|j| j["data"].as_str().map(str::to_owned))
        .filter(|d| d.starts_with("line "))
        .collect();
    let expected: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected);
    alice.pump();
    elsewhere.pump();
    assert!(
        !alice
            .log
            .iter()
            .any(|e| matches!(e, Event::Data(t) if t.contains("hello, room"))),
        "not echoed"
    );
    assert!(
        !elsewhere.log.iter().any(|e| matches!(e, Event::Data(_))),
        "other rooms hear nothing"
    );
    assert!(metric(&relay, "tern_data_messages_sent_total").await >= 62.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_needs_the_grant_and_is_bounded() {
    let relay = start_relay(|_| {}).await;
    let mut bob = Client::connect(&relay, "chat2", "bob").await;
    let muted_grants = Grants {
        publish_data: false,
        ..Grants::participant()
    };
    let mut mute = Client::connect_with(&relay, "chat2", "mute", muted_grants).await;
    data_open(&mut bob).await;
    data_open(&mut mute).await;
    mute.send(Command::SendData("can anyone hear me".into()));
    mute.wait_for("not_allowed", |e| match e {
        Event::Signal(ServerMessage::Error {
            code: ErrorCode::NotAllowed,
            ..
        }) => Some(()),
        _ => None,
    })
    .await;
    bob.send(Command::SendData("x".repeat(20_000)));
    bob.wait_for("limit_exceeded", |e| match e {
        Event::Signal(ServerMessage::Error {
            code: ErrorCode::LimitExceeded,
            ..
        }) => Some(()),
        _ => None,
    })
    .await;
    // The listener without the grant still receives.
    bob.send(Command::SendData("you can hear me".into()));
    wait_data(&mut mute, "bob's message", |j| {
        j["data"] == "you can hear me"
    })
    .await;
    assert!(metric(&relay, "tern_data_messages_refused_total").await >= 2.0);
}
