//! What clients that are not browsers need from the relay, with real peers on loopback: the SRTP
//! profile the relay chooses, and how a leg that never connects ends.

mod common;

use common::*;

const GCM: &str = "SRTP_AEAD_AES_128_GCM";
const SHA1_80: &str = "SRTP_AES128_CM_HMAC_SHA1_80";

/// (publish leg?, SRTP profile, the client's DTLS role) of each connected leg.
fn ciphers(client: &Client) -> Vec<(bool, String, String)> {
    client
        .log
        .iter()
        .filter_map(|e| match e {
            Event::SrtpCipher {
                publish,
                cipher,
                dtls_role,
            } => Some((*publish, cipher.clone(), dtls_role.clone())),
            _ => None,
        })
        .collect()
}

async fn wait_ciphers(client: &mut Client) -> Vec<(bool, String, String)> {
    client
        .wait_until("both legs connected with an SRTP profile", |log| {
            let legs = log
                .iter()
                .filter(|e| matches!(e, Event::SrtpCipher { .. }))
                .count();
            legs >= 2
        })
        .await;
    ciphers(client)
}

/// The relay is the DTLS server on both legs and takes AES-GCM whenever a client offers it,
/// even from a client that lists SHA1_80 first (as Chromium does); a client without AES-GCM
/// (GStreamer up to 1.22, node-webrtc) still connects, with SHA1_80. Media flows between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_profile_follows_the_relay_preference() {
    let relay = start_relay(|_| {}).await;
    let browser_like = ClientCodecs {
        srtp_profiles: Some(vec![
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
        ]),
        ..Default::default()
    };
    let without_gcm = ClientCodecs {
        srtp_profiles: Some(vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]),
        ..Default::default()
    };
    let mut alice = Client::connect_codecs(&relay, "srtp", "alice", &browser_like).await;
    let mut bob = Client::connect_codecs(&relay, "srtp", "bob", &without_gcm).await;
    for client in [&alice, &bob] {
        client.send(Command::Publish {
            audio: true,
            video: true,
        });
    }
    let _alice_media = MediaPump::start(&alice);
    let _bob_media = MediaPump::start(&bob);
    wait_more(&mut bob, "alice", "video", 10).await;
    wait_more(&mut alice, "bob", "video", 10).await;
    wait_more(&mut alice, "bob", "audio", 10).await;
    for (client, expected) in [(&mut alice, GCM), (&mut bob, SHA1_80)] {
        for (publish, cipher, role) in wait_ciphers(client).await {
            let leg = format!("{}'s {} leg", client.name, leg_name(publish));
            assert_eq!(role, "client", "{leg}: the relay must be the DTLS server");
            assert_eq!(cipher, expected, "{leg}");
        }
    }
}

fn leg_name(publish: bool) -> &'static str {
    if publish { "publish" } else { "subscribe" }
}

/// Without `media.allow_srtp_sha1_80` a client that offers only SHA1_80 cannot connect: its
/// leg fails at the DTLS stage within the connect deadline, is counted, and the participant is
/// told and removed instead of lingering with tracks that never play.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_whose_dtls_fails_is_counted_and_its_participant_removed() {
    let relay = start_relay(|c| {
        c.media.allow_srtp_sha1_80 = false;
        c.media.connect_timeout_s = 3;
    })
    .await;
    let mut watcher = Client::connect(&relay, "ghost", "watcher").await;
    let without_gcm = ClientCodecs {
        srtp_profiles: Some(vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]),
        ..Default::default()
    };
    let mut ghost = Client::connect_codecs(&relay, "ghost", "ghost", &without_gcm).await;
    ghost.send(Command::Publish {
        audio: true,
        video: true,
    });
    let _media = MediaPump::start(&ghost);
    let closed = ghost
        .wait_for("the relay closes the session", |e| match e {
            Event::Signal(tern_signaling::protocol::ServerMessage::Closed { reason }) => {
                Some(*reason)
            }
            _ => None,
        })
        .await;
    assert_eq!(
        closed,
        tern_signaling::protocol::LeaveReason::TransportFailed
    );
    wait_metric(
        &relay,
        "tern_leg_failures_total{stage=\"dtls\"}",
        "a DTLS failure counted",
        |v| v >= 1.0,
    )
    .await;
    watcher
        .wait_until("the ghost left", |log| {
            log.iter().any(|e| {
                matches!(
                    e,
                    Event::Signal(tern_signaling::protocol::ServerMessage::ParticipantLeft { .. })
                )
            })
        })
        .await;
    // Its tracks were never announced: their media could not flow.
    let announced = watcher.signals().any(|s| {
        matches!(
            s,
            tern_signaling::protocol::ServerMessage::TrackPublished { .. }
        )
    });
    assert!(
        !announced,
        "tracks of a leg that never connected were announced"
    );
}
