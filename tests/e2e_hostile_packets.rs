//! Hostile datagrams on the shared media port. Each case runs while Carol streams to Bob through
//! the same relay; the case's datagrams must be dropped and counted under their reason, and
//! Bob's stream must show no gap.

mod common;

use common::call::{Call, call};
use common::*;
use std::time::Duration;
use tern_signaling::protocol::{ErrorCode, ServerMessage};
use tokio::net::UdpSocket;

struct Scene {
    call: Call,
    mallory: Client,
}

/// Carol publishes to Bob; Mallory is in the room with her own (verified) publish leg.
async fn scene(room: &str) -> Scene {
    scene_with(room, |_| {}).await
}

async fn scene_with(room: &str, adjust: impl FnOnce(&mut tern::config::Config)) -> Scene {
    let call = call(room, adjust).await;
    let mut mallory = Client::connect(&call.relay, room, "mallory").await;
    mallory.send(Command::Publish {
        audio: true,
        video: false,
    });
    wait_more(&mut mallory, "carol", "audio", 5).await;
    // Her track is announced once her publish leg has connected.
    let mallory_id = mallory
        .signals()
        .find_map(|s| match s {
            ServerMessage::Joined { participant, .. } => Some(participant.id.clone()),
            _ => None,
        })
        .expect("mallory joined");
    let mut call = call;
    call.bob
        .wait_for("mallory's track published", |e| match e {
            Event::Signal(ServerMessage::TrackPublished { track }) => {
                (track.participant_id == mallory_id).then_some(())
            }
            _ => None,
        })
        .await;
    Scene { call, mallory }
}

impl Scene {
    async fn drops(&self, reason: &str) -> f64 {
        metric(
            &self.call.relay,
            &format!("tern_packets_dropped_total{{reason=\"{reason}\"}}"),
        )
        .await
    }

    /// Waits until at least `count` packets were dropped for `reason` (the hostile packets may
    /// still be on their way to the relay when the healthy stream has been checked).
    async fn wait_drops(&self, reason: &str, count: f64) {
        let series = format!("tern_packets_dropped_total{{reason=\"{reason}\"}}");
        wait_metric(&self.call.relay, &series, reason, |v| v >= count).await;
    }

    /// Bob's stream from Carol kept flowing without a gap.
    async fn assert_call_unharmed(&mut self) {
        wait_more(&mut self.call.bob, "carol", "video", 20).await;
        wait_more(&mut self.call.bob, "carol", "audio", 20).await;
        assert_no_gap(&self.call.bob, "carol", "video", 25);
        assert_no_gap(&self.call.bob, "carol", "audio", 25);
    }

    /// The relay ufrag of Mallory's publish leg, from its answer.
    fn mallory_relay_ufrag(&self) -> String {
        self.mallory
            .signals()
            .find_map(|s| match s {
                ServerMessage::PublishAnswer { sdp, .. } => sdp
                    .lines()
                    .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
                    .map(str::to_owned),
                _ => None,
            })
            .expect("mallory's publish answer")
    }
}

async fn attacker() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

fn binding_request(username: &str, integrity: &[u8; 20]) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    attrs.extend_from_slice(&0x0008u16.to_be_bytes());
    attrs.extend_from_slice(&20u16.to_be_bytes());
    attrs.extend_from_slice(integrity);
    let mut msg = vec![0x00, 0x01];
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    msg.extend_from_slice(&[9u8; 12]);
    msg.extend_from_slice(&attrs);
    msg
}

/// RTP-looking bytes with a valid cleartext header (so only the stack can reject them).
fn fake_srtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78]);
    p.extend_from_slice(&[0xab; 100]);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_from_unknown_addresses_are_dropped() {
    let mut s = scene("h-unknown").await;
    let before = s.drops("unknown_source").await;
    let socket = attacker().await;
    for i in 0..200u16 {
        socket
            .send_to(&fake_srtp(i), s.call.relay.media_addr)
            .await
            .unwrap();
    }
    s.assert_call_unharmed().await;
    s.wait_drops("unknown_source", before + 200.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_with_an_unknown_ufrag_is_dropped() {
    let mut s = scene("h-ufrag").await;
    let before = s.drops("unknown_ufrag").await;
    let socket = attacker().await;
    for _ in 0..50 {
        let request = binding_request("nosuchufrag:x", &[0; 20]);
        socket
            .send_to(&request, s.call.relay.media_addr)
            .await
            .unwrap();
    }
    s.assert_call_unharmed().await;
    s.wait_drops("unknown_ufrag", before + 50.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_without_valid_integrity_never_poisons_the_demux_table() {
    let mut s = scene("h-integrity").await;
    let ufrag = s.mallory_relay_ufrag();
    let socket = attacker().await;
    // A right ufrag but a forged MESSAGE-INTEGRITY: the leg must not learn this address.
    for _ in 0..20 {
        let request = binding_request(&format!("{ufrag}:attacker"), &[0x55; 20]);
        socket
            .send_to(&request, s.call.relay.media_addr)
            .await
            .unwrap();
    }
    // No success response ever comes back to the forger.
    let mut buf = [0u8; 1500];
    let got = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await;
    if let Ok(Ok((n, _))) = got {
        assert_ne!(
            &buf[..2],
            &[0x01, 0x01],
            "a binding success for a forged request ({n} bytes)"
        );
    }
    // Media from that address is still unknown: it did not steer Mallory's leg.
    let before = s.drops("unknown_source").await;
    for i in 0..50u16 {
        socket
            .send_to(&fake_srtp(i), s.call.relay.media_addr)
            .await
            .unwrap();
    }
    s.assert_call_unharmed().await;
    s.wait_drops("unknown_source", before + 50.0).await;
    wait_more(&mut s.mallory, "carol", "audio", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_datagrams_are_dropped_unread() {
    let mut s = scene("h-oversized").await;
    let before = s.drops("oversized").await;
    let socket = attacker().await;
    for _ in 0..20 {
        socket
            .send_to(&[0x80; 3000], s.call.relay.media_addr)
            .await
            .unwrap();
    }
    // Also from a verified address.
    for _ in 0..20 {
        s.mallory.send(Command::RawUdp {
            subscribe_leg: false,
            to: s.call.relay.media_addr,
            bytes: vec![0x80; 2500],
        });
    }
    s.assert_call_unharmed().await;
    s.wait_drops("oversized", before + 40.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rtp_from_a_verified_address_is_dropped() {
    let mut s = scene("h-malformed").await;
    let before = s.drops("malformed").await;
    // 15 CSRCs claimed in a 40-byte packet; a header extension longer than the packet; not RTP.
    let mut lying_csrc = fake_srtp(1);
    lying_csrc[0] = 0x8f;
    lying_csrc.truncate(40);
    let mut lying_ext = fake_srtp(2);
    lying_ext[0] = 0x90;
    lying_ext[12..16].copy_from_slice(&[0xbe, 0xde, 0x40, 0x00]);
    for bytes in [lying_csrc, lying_ext, vec![0x42; 60]] {
        for _ in 0..10 {
            s.mallory.send(Command::RawUdp {
                subscribe_leg: false,
                to: s.call.relay.media_addr,
                bytes: bytes.clone(),
            });
        }
    }
    s.assert_call_unharmed().await;
    s.wait_drops("malformed", before + 30.0).await;
    // Mallory's own leg survives its garbage.
    wait_more(&mut s.mallory, "carol", "video", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_that_is_garbage_after_decryption_is_rejected_and_harmless() {
    let mut s = scene("h-rtcp").await;
    // Mallory needs video to own an SRTCP-capable sender; publish it too.
    s.mallory.send(Command::Publish {
        audio: true,
        video: true,
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = s.drops("srtp_rejected").await;
    for _ in 0..20 {
        s.mallory.send(Command::GarbageRtcp);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.assert_call_unharmed().await;
    s.wait_drops("srtp_rejected", before + 20.0).await;
    wait_more(&mut s.mallory, "carol", "audio", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_is_cut_to_its_rate() {
    // A limit far below what the test sends however slowly this machine sends it (20,000 in up
    // to 14 s), and far above the call's own packets (about 200/s per leg).
    let mut s = scene_with("h-flood", |c| {
        c.media.max_packets_per_second_per_leg = 1_000
    })
    .await;
    let before_flood = s.drops("flood").await;
    for i in 0..20_000u16 {
        s.mallory.send(Command::RawUdp {
            subscribe_leg: false,
            to: s.call.relay.media_addr,
            bytes: fake_srtp(i),
        });
        if i % 2_000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    s.assert_call_unharmed().await;
    s.wait_drops("flood", before_flood + 5_000.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_webrtc_stack_closes_only_that_leg() {
    let mut s = scene("h-panic").await;
    s.mallory.send(Command::RawUdp {
        subscribe_leg: false,
        to: s.call.relay.media_addr,
        bytes: b"TERN-FAULT-PANIC and whatever follows".to_vec(),
    });
    s.mallory
        .wait_for("an internal error about the publish leg", |e| match e {
            Event::Signal(ServerMessage::Error {
                code: ErrorCode::Internal,
                ..
            }) => Some(()),
            _ => None,
        })
        .await;
    s.assert_call_unharmed().await;
    assert_eq!(metric(&s.call.relay, "tern_leg_panics_total").await, 1.0);
    assert_eq!(
        metric(&s.call.relay, "tern_participants").await,
        3.0,
        "mallory is still in the room"
    );
    // Her subscribe leg was not the one that panicked: she still receives.
    wait_more(&mut s.mallory, "carol", "video", 10).await;
    // And her publications are gone for the others.
    s.call
        .bob
        .wait_for("mallory's track unpublished", |e| {
            matches!(e, Event::Signal(ServerMessage::TrackUnpublished { .. })).then_some(())
        })
        .await;
}
