//! Several media workers in one relay: each room lives on one worker (its own thread and UDP
//! port), new rooms go to the least-loaded worker, a resumed session lands back on its room's
//! worker, and `/metrics` and the admin API add the workers up. (ICE-TCP to a room on the second
//! worker: tests/browser/media.mjs `tcp`.)

mod common;

use common::*;
use tern::media::codec::MediaKind;
use tern_signaling::auth::Grants;
use tern_signaling::protocol::ServerMessage;

/// A publisher and a subscriber in `room`, media flowing.
async fn call_in(relay: &tern::app::Running, room: &str) -> (Client, Client, MediaPump) {
    let alice = Client::connect(relay, room, "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    let mut bob = Client::connect(relay, room, "bob").await;
    let pump = MediaPump::start(&alice);
    wait_more(&mut bob, "alice", "video", 10).await;
    wait_more(&mut bob, "alice", "audio", 10).await;
    (alice, bob, pump)
}

fn video_sent(relay: &tern::app::Running, worker: usize) -> u64 {
    relay
        .metrics
        .worker(worker)
        .rtp_packets_sent
        .get(MediaKind::Video)
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_spread_over_workers_each_on_its_own_port_and_the_metrics_add_up() {
    let relay = start_relay(|c| c.media.workers = 2).await;
    assert_eq!(relay.media_addrs.len(), 2);
    assert_ne!(relay.media_addrs[0], relay.media_addrs[1]);

    let (_a1, mut bob1, pump1) = call_in(&relay, "first").await;
    let (_a2, mut bob2, pump2) = call_in(&relay, "second").await;
    assert_eq!(relay.control.worker_of_room("first"), Some(0));
    assert_eq!(
        relay.control.worker_of_room("second"),
        Some(1),
        "the second room goes to the idle worker"
    );
    // Each room's media went through its own worker, and its subscriber saw it whole.
    assert!(video_sent(&relay, 0) >= 10, "worker 0 forwarded nothing");
    assert!(video_sent(&relay, 1) >= 10, "worker 1 forwarded nothing");
    wait_more(&mut bob1, "alice", "video", 20).await;
    wait_more(&mut bob2, "alice", "video", 20).await;
    assert_no_gap(&bob1, "alice", "video", 20);
    assert_no_gap(&bob2, "alice", "video", 20);

    // A participant's id names its worker (signaling routes its messages by it).
    for (bob, worker) in [(&bob1, 0u64), (&bob2, 1)] {
        let id = tern::media::ids::ParticipantId::parse(bob.participant_id.as_ref().unwrap());
        assert_eq!(id.unwrap().0 % 2, worker);
    }

    // `/metrics` is the sum of the workers: once media stops, it equals the two workers' own
    // counters exactly.
    drop((pump1, pump2));
    let (sum, per_worker) = eventually("the counters settle", || {
        let before = (video_sent(&relay, 0), video_sent(&relay, 1));
        let body = relay.metrics.render(relay.snapshot.read());
        let after = (video_sent(&relay, 0), video_sent(&relay, 1));
        let rendered = body
            .lines()
            .find(|l| l.starts_with("tern_rtp_packets_sent_total{kind=\"video\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())?;
        (before == after && rendered == before.0 + before.1).then_some((rendered, before))
    })
    .await;
    assert!(
        per_worker.0 > 0 && per_worker.1 > 0,
        "{sum} = {per_worker:?}"
    );
    // The state gauges add up as well: two rooms, four participants, one room per worker.
    wait_metric(&relay, "tern_rooms", "two rooms", |v| v == 2.0).await;
    wait_metric(&relay, "tern_participants", "four participants", |v| {
        v == 4.0
    })
    .await;
    let rooms: Vec<u64> = relay.snapshot.per_worker().map(|s| s.rooms).collect();
    assert_eq!(rooms, vec![1, 1]);

    // The admin API lists the rooms of both workers, each with its worker.
    let admin = admin_token(&relay, "*");
    let (status, listed) = api(&relay, "GET", "/api/rooms", Some(&admin), None).await;
    assert_eq!(status, 200, "{listed}");
    let rooms = listed.get("rooms").unwrap_or(&listed);
    let workers: Vec<(String, u64)> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["worker"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        workers,
        vec![("first".to_owned(), 0), ("second".to_owned(), 1)]
    );
    // A request about one room reaches the worker holding it.
    let (status, room) = api(&relay, "GET", "/api/rooms/second", Some(&admin), None).await;
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["worker"], 1, "{room}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_lands_on_its_rooms_worker() {
    let relay = start_relay(|c| {
        c.media.workers = 2;
        c.session.resume_grace_s = 10;
    })
    .await;
    // The first room takes worker 0, so the call is on worker 1.
    let _elsewhere = Client::connect(&relay, "elsewhere", "carol").await;
    let (mut alice, mut bob, _pump) = call_in(&relay, "resume").await;
    assert_eq!(relay.control.worker_of_room("resume"), Some(1));
    let alice_id = alice.participant_id.clone().unwrap();
    let resume = alice.resume_token();

    alice.send(Command::DropSignaling);
    let id = alice_id.clone();
    bob.wait_for("alice reconnecting", |e| match e {
        Event::Signal(ServerMessage::ParticipantReconnecting { participant_id })
            if *participant_id == id =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    let url = format!(
        "{}&resume_token={resume}",
        ws_url(
            &relay,
            &token(&relay, "resume", "alice", Grants::participant())
        )
    );
    alice.send(Command::Reconnect(url));
    let resumed = alice
        .wait_for("joined again", |e| match e {
            Event::Signal(ServerMessage::Joined {
                participant,
                resumed,
                ..
            }) if *resumed => Some(participant.id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        resumed, alice_id,
        "the same participant, on the same worker"
    );
    assert_eq!(relay.control.worker_of_room("resume"), Some(1));
    // The resumed session's messages reach its worker: a ping is answered.
    alice.send(Command::Raw(
        tern_signaling::protocol::ClientMessage::Ping { timestamp: 7 },
    ));
    alice
        .wait_for("pong", |e| match e {
            Event::Signal(ServerMessage::Pong { timestamp: 7 }) => Some(()),
            _ => None,
        })
        .await;
    wait_more(&mut bob, "alice", "video", 20).await;
    assert_no_gap(&bob, "alice", "video", 20);
    let participants: Vec<u64> = relay
        .snapshot
        .per_worker()
        .map(|s| s.participants)
        .collect();
    assert_eq!(participants, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_room_is_placed_again_and_the_room_limit_counts_every_worker() {
    let relay = start_relay(|c| {
        c.media.workers = 2;
        c.room.max_rooms = 2;
        c.room.departure_timeout_s = 1;
    })
    .await;
    let first = Client::connect(&relay, "one", "a").await;
    let _second = Client::connect(&relay, "two", "b").await;
    assert_eq!(relay.control.worker_of_room("one"), Some(0));
    assert_eq!(relay.control.worker_of_room("two"), Some(1));
    // A third room is over the node's limit, though each worker holds only one.
    let refused = first_message(&relay, "three", "c").await;
    assert!(
        matches!(&refused, ServerMessage::Error { code, .. } if code.as_str() == "limit_exceeded"),
        "{refused:?}"
    );
    assert_eq!(
        relay.control.worker_of_room("three"),
        None,
        "nothing left behind"
    );
    // Room "one" closes after its last participant leaves; its place is free again.
    first.send(Command::Leave);
    eventually("room one closed", || {
        relay.control.worker_of_room("one").is_none().then_some(())
    })
    .await;
    let third = Client::connect(&relay, "three", "c").await;
    assert!(third.participant_id.is_some());
    assert_eq!(relay.control.worker_of_room("three"), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_its_load_limit_takes_no_new_participants_but_resumes() {
    // A limit of 3 %: the worker forwarding a fast stream (2,000 packets a second in a debug
    // build) is busy well over 3 % of the time, an idle one well under (its thread wakes a few
    // times a second for timers).
    let relay = start_relay(|c| {
        c.media.workers = 2;
        c.media.max_worker_load_percent = 3;
        c.media.max_packets_per_second_per_leg = 100_000;
        c.session.resume_grace_s = 10;
    })
    .await;
    // The busy room takes worker 0; the quiet one, worker 1, has more participants.
    let (alice, mut bob, pump) = call_in(&relay, "busy").await;
    let mut quiet_ones = Vec::new();
    for name in ["carol", "dave", "erin"] {
        quiet_ones.push(Client::connect(&relay, "quiet", name).await);
    }
    assert_eq!(relay.control.worker_of_room("busy"), Some(0));
    assert_eq!(relay.control.worker_of_room("quiet"), Some(1));
    drop(pump);
    let fast = MediaPump::start_fast(&alice, 10);
    wait_metric(
        &relay,
        "tern_media_worker_load{worker=\"0\"}",
        "worker 0 busy over 3 % of the time",
        |load| load > 0.03,
    )
    .await;
    // The quiet room's joins (their DTLS handshakes) weigh on worker 1 for a moment.
    wait_metric(
        &relay,
        "tern_media_worker_load{worker=\"1\"}",
        "worker 1, without media, under 3 %",
        |load| load < 0.03,
    )
    .await;

    // A newcomer to the busy room is refused at once, with nothing left behind.
    let refused = first_message(&relay, "busy", "frank").await;
    assert!(
        matches!(&refused, ServerMessage::Error { code, message, .. }
            if code.as_str() == "unavailable" && message.contains("load limit")),
        "{refused:?}"
    );
    assert_eq!(
        metric(&relay, "tern_limit_breaches_total{limit=\"worker_load\"}").await,
        1.0
    );
    // A new room goes to the worker under its limit, though it has more participants.
    let grace = Client::connect(&relay, "third", "grace").await;
    assert!(grace.participant_id.is_some());
    assert_eq!(relay.control.worker_of_room("third"), Some(1));

    // Bob, already in the busy room, resumes there: the worker carries him already.
    let resume = bob.resume_token();
    bob.send(Command::DropSignaling);
    let url = format!(
        "{}&resume_token={resume}",
        ws_url(&relay, &token(&relay, "busy", "bob", Grants::participant()))
    );
    bob.send(Command::Reconnect(url));
    bob.wait_for("bob resumed on the busy worker", |e| match e {
        Event::Signal(ServerMessage::Joined { resumed, .. }) if *resumed => Some(()),
        _ => None,
    })
    .await;
    wait_more(&mut bob, "alice", "video", 50).await;

    // The stream stops: the worker's load falls under the limit and it takes joins again.
    drop(fast);
    wait_metric(
        &relay,
        "tern_media_worker_load{worker=\"0\"}",
        "worker 0 back under 3 %",
        |load| load < 0.03,
    )
    .await;
    let frank = Client::connect(&relay, "busy", "frank").await;
    assert!(frank.participant_id.is_some());
    assert_eq!(relay.control.worker_of_room("busy"), Some(0));
}
