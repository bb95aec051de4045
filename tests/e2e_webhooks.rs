//! Webhooks against real HTTP receivers: every event of a call arrives once (retries repeat the
//! same id), in order, with a valid signature; a receiver that is down costs the call nothing.

mod common;

use common::*;
use rtc::peer_connection::state::RTCPeerConnectionState;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tern_signaling::auth::{Grants, claims_for};
use tern_signaling::protocol::ServerMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KID: &str = "hooks";
const SECRET: &str = "0123456789abcdef0123456789abcdef-hooks";

#[derive(Debug, Clone)]
struct Delivery {
    signature: String,
    key_id: String,
    body: String,
}

/// An HTTP receiver that records every POST and answers 500 to the first `fail_first`.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let record = got.clone();
    tokio::spawn(async move {
        let mut served = 0;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut data = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                data.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&data).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let head = text[..end].to_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if data.len() >= end + 4 + length {
                        break (head, text[end + 4..end + 4 + length].to_owned());
                    }
                }
            };
            if head.is_empty() {
                continue;
            }
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(": ")?;
                        k.eq_ignore_ascii_case(name).then(|| v.to_owned())
                    })
                    .unwrap_or_default()
            };
            record.lock().unwrap().push(Delivery {
                signature: header("tern-signature"),
                key_id: header("tern-key-id"),
                body,
            });
            served += 1;
            let status = if served <= fail_first {
                "500 Internal Server Error"
            } else {
                "204 No Content"
            };
            let _ = stream
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await;
        }
    });
    Receiver { url, got }
}

fn events(receiver: &Receiver) -> Vec<serde_json::Value> {
    receiver
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_str(&d.body).expect("JSON body"))
        .collect()
}

/// What happened, as "event participant-identity" strings, de-duplicated by event id.
fn story(events: &[serde_json::Value]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e["id"].as_str().unwrap().to_owned()))
        .map(|e| {
            let who = e["participant"]["identity"].as_str().unwrap_or("");
            let what = e["track"]["kind"].as_str().unwrap_or("");
            format!("{} {who} {what}", e["event"].as_str().unwrap())
                .trim()
                .to_owned()
        })
        .collect()
}

fn verify(delivery: &Delivery) -> bool {
    let Some((t, v1)) = delivery
        .signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let expected = ring::hmac::sign(&key, format!("{t}.{}", delivery.body).as_bytes());
    let hex: String = expected
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex == v1 && delivery.key_id == KID
}

async fn join(relay: &tern::app::Running, name: &str) -> Client {
    let claims = claims_for(
        "hooks",
        name,
        name,
        Grants::participant(),
        SystemTime::now(),
        Duration::from_secs(600),
    );
    let token = relay.keys.mint(KID, &claims).unwrap();
    Client::connect_url(&ws_url(relay, &token), name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_order_signed_and_a_dead_receiver_costs_nothing() {
    let ok = receiver(0).await;
    let flaky = receiver(1).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/gone", l.local_addr().unwrap())
    };
    let relay = start_relay(|c| {
        c.auth.keys.insert(KID.into(), SECRET.into());
        c.webhooks.urls = vec![ok.url.clone(), flaky.url.clone(), dead.clone()];
        c.webhooks.attempts = 3;
        c.room.departure_timeout_s = 1;
    })
    .await;

    let mut alice = join(&relay, "alice").await;
    alice.send(Command::Publish {
        audio: true,
        video: true,
    });
    // Tracks are published once their leg has connected (their media can flow).
    alice
        .wait_for("publish leg connected", |e| match e {
            Event::PublishState(RTCPeerConnectionState::Connected) => Some(()),
            _ => None,
        })
        .await;
    let mut bob = join(&relay, "bob").await;
    let _pump = MediaPump::start(&alice);
    // Meanwhile the dead receiver is being retried: the call does not notice.
    wait_more(&mut bob, "alice", "video", 100).await;
    assert_no_gap(&bob, "alice", "video", 100);
    assert_no_gap(&bob, "alice", "audio", 100);
    alice.send(Command::Leave);
    bob.wait_for("alice left", |e| match e {
        Event::Signal(ServerMessage::ParticipantLeft { .. }) => Some(()),
        _ => None,
    })
    .await;
    bob.send(Command::Leave);

    let want = [
        "room_started",
        "participant_joined alice",
        "track_published alice audio",
        "track_published alice video",
        "participant_joined bob",
        "track_unpublished alice audio",
        "track_unpublished alice video",
        "participant_left alice",
        "participant_left bob",
        "room_finished",
    ];
    let deadline = Instant::now() + DEADLINE;
    while story(&events(&ok)).len() < want.len() || story(&events(&flaky)).len() < want.len() {
        assert!(
            Instant::now() < deadline,
            "events missing: ok {:?}, flaky {:?}",
            story(&events(&ok)),
            story(&events(&flaky))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The two tracks of one participant may be announced in either order.
    let normalise = |mut s: Vec<String>| {
        s[2..4].sort();
        s[5..7].sort();
        s
    };
    assert_eq!(normalise(story(&events(&ok))), want);
    assert_eq!(normalise(story(&events(&flaky))), want);
    // The healthy receiver got each event exactly once; the flaky one got its first twice.
    assert_eq!(events(&ok).len(), want.len());
    assert_eq!(events(&flaky).len(), want.len() + 1);
    assert_eq!(events(&flaky)[0]["id"], events(&flaky)[1]["id"]);
    for delivery in ok
        .got
        .lock()
        .unwrap()
        .iter()
        .chain(flaky.got.lock().unwrap().iter())
    {
        assert!(verify(delivery), "bad signature on {}", delivery.body);
    }
    let left = events(&ok)
        .into_iter()
        .find(|e| e["event"] == "participant_left")
        .unwrap();
    assert_eq!(left["reason"], "left");
    assert_eq!(left["room"], "hooks");

    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&relay, "tern_webhook_deliveries_total{outcome=\"failed\"}").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the dead receiver never counted as failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric(
            &relay,
            "tern_webhook_deliveries_total{outcome=\"delivered\"}"
        )
        .await
            >= 20.0
    );
    assert!(metric(&relay, "tern_webhook_deliveries_total{outcome=\"retried\"}").await >= 2.0);
}
