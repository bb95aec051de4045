//! How the relay configures webrtc-rs's `rtc` for its two kinds of leg.
//!
//! Publish legs receive (client offers, relay answers); subscribe legs send (relay offers). Both
//! are ICE-lite with relay-chosen credentials (the ufrag is the demux key), DTLS-SRTP with the
//! configured profiles, and the interceptors each direction needs: the publish leg generates
//! NACKs, receiver reports and transport-cc feedback for the publisher; the subscribe leg keeps a
//! bounded send history for video NACKs and sends sender reports.

use super::egress::SubscribeEgress;
use super::feedback::{FeedbackExport, FeedbackQueue};
use super::formats;
use super::role::LegRole;
use super::rtx_gate::{RetransmissionBudget, RetransmissionGate};
use super::rtx_probe::{ProbeTap, RtxProber, WithRtxStreams};
use crate::media::extmap::HeaderExtension;
use crate::metrics::MediaMetrics;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{
    Attribute, CongestionControlBuilder, Interceptor, NackGeneratorBuilder, NackResponderBuilder,
    Packet, ReceiverReportBuilder, Registry, Slot, StreamInfo, TaggedPacket, TwccReceiverBuilder,
    TwccSenderBuilder,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};
use rtc::shared::error::Error as RtcError;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Settings shared by every leg of a node.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// SRTP profiles in the relay's order of preference; the relay, as DTLS server, takes the
    /// first one the client offers.
    pub srtp_profiles: Vec<SrtpProtectionProfile>,
    /// No STUN from the client for this long: the leg is `disconnected`.
    pub ice_disconnected_timeout: Duration,
    /// ...and this much longer: `failed`, and the participant is removed.
    pub ice_failed_timeout: Duration,
    /// Packets of send history per video stream for answering NACKs.
    pub nack_history: u16,
    /// Subscribe legs negotiate transport-cc and keep the send history its feedback is joined
    /// to (bandwidth estimation); off, they carry neither.
    pub subscriber_feedback: bool,
    /// Publish legs negotiate RTX (retransmissions on their own stream; for simulcast layers
    /// tagged with repaired-rid, which `repair` unwraps); off, publishers retransmit on the
    /// media stream itself.
    pub publish_rtx: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            srtp_profiles: vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ],
            // Browsers send consent checks every ~5 s, so anything shorter flaps. 7 + 5 puts a
            // dead peer out within the ~15 s budget.
            ice_disconnected_timeout: Duration::from_secs(7),
            ice_failed_timeout: Duration::from_secs(5),
            nack_history: 512,
            subscriber_feedback: true,
            publish_rtx: true,
        }
    }
}

/// Header extensions negotiated per role and media kind.
fn header_extensions(
    role: LegRole,
    settings: &EngineSettings,
) -> Vec<(HeaderExtension, RtpCodecKind)> {
    use HeaderExtension as E;
    use RtpCodecKind::{Audio, Video};
    let mut list = vec![
        (E::Mid, Audio),
        (E::Mid, Video),
        (E::AudioLevel, Audio),
        (E::VideoOrientation, Video),
        (E::PlayoutDelay, Video),
        // For VP9/AV1 SVC, whose receivers need it to decode (publish answers keep it only on
        // those m-lines: with it, Chromium's VP8 loses the PictureID the relay splices on).
        (E::DependencyDescriptor, Video),
    ];
    if role == LegRole::Publish || settings.subscriber_feedback {
        list.extend([(E::TransportCc, Audio), (E::TransportCc, Video)]);
    }
    if role == LegRole::Publish {
        list.extend([(E::Rid, Video), (E::RepairedRid, Video)]);
    }
    list
}

fn media_engine(
    role: LegRole,
    settings: &EngineSettings,
    codecs: Option<&[formats::CatalogueFormat]>,
) -> Result<MediaEngine, RtcError> {
    let mut engine = MediaEngine::default();
    let rtx = role == LegRole::Subscribe || settings.publish_rtx;
    let catalogue = formats::catalogue();
    let codecs = codecs.unwrap_or(&catalogue);
    formats::register_formats(&mut engine, codecs, role, settings.subscriber_feedback, rtx)?;
    for (ext, kind) in header_extensions(role, settings) {
        engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: ext.uri().to_owned(),
            },
            kind,
            None,
        )?;
    }
    Ok(engine)
}

fn interceptors(
    role: LegRole,
    settings: &EngineSettings,
    metrics: Arc<MediaMetrics>,
    decrypted: Arc<AtomicU64>,
    taps: LegTaps,
) -> Registry {
    let registry = Registry::new().with(Slot::from(14_000), DeliverRtcp::default());
    let counters = LegCounters {
        metrics: metrics.clone(),
        decrypted,
    };
    match role {
        // The generator never learns of packets recovered by RTX (`rtc` unwraps RTX after the
        // interceptors), so without a cap it would NACK each loss every 100 ms until the packet
        // left its window, about 25 times, and the publisher would resend it as often.
        LegRole::Publish => registry
            // Below the NACK generator on the way out, so it counts the NACKs; below every
            // interceptor on the way in, so it sees everything SRTP let through.
            .with(
                Slot::from(2_500),
                Observe {
                    counters,
                    reads: VecDeque::new(),
                    writes: VecDeque::new(),
                },
            )
            // Wire-ward of everything that must see a repaired simulcast packet as itself.
            .with(Slot::from(600), super::repair::RepairedRidUnwrap::default())
            .with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                    .build(),
            )
            .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build()),
        // No sender-report interceptor: the relay derives each forwarded stream's reports from
        // the publisher's, so receivers keep audio and video in sync.
        // Transport-wide numbers on everything sent, and the send history that feedback is
        // joined to; the estimate itself is the media core's (no pacer: see `feedback`).
        LegRole::Subscribe => {
            let registry = registry.with(
                Slot::NackResponder,
                NackResponderBuilder::new()
                    .with_size(settings.nack_history)
                    .build(),
            );
            let steps = settings.subscriber_feedback.then(|| {
                (
                    RetransmissionGate::new(taps.retransmissions, metrics),
                    RtxProber::new(taps.probe),
                )
            });
            // Wire-ward of the NACK responder, app-ward of the numbering: a retransmission the
            // gate holds back is never numbered, so it never reads as loss, and probe copies
            // join the stream numbered.
            let registry = registry.with(Slot::from(2_900), SubscribeEgress::new(counters, steps));
            if !settings.subscriber_feedback {
                return registry;
            }
            registry
                // Both bind the RTX SSRC too, or no retransmission would be numbered or recorded.
                .with(
                    Slot::TwccSender,
                    WithRtxStreams(TwccSenderBuilder::new().build()),
                )
                .with(
                    Slot::CongestionControl,
                    WithRtxStreams(
                        CongestionControlBuilder::new(FeedbackExport::new(taps.feedback)).build(),
                    ),
                )
        }
    }
}

/// How often a publish leg asks for one lost packet (100 ms apart).
const MAX_NACKS_PER_PACKET: u16 = 3;

/// Random `[a-zA-Z0-9]` text from the OS-seeded CSPRNG.
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Builds one leg's peer connection. Its ICE credentials are random and change on every ICE
/// restart; the caller reads the ufrag from each local description (it is the demux key).
/// `decrypted` counts the RTP and RTCP packets that got through SRTP on this leg (shared by the
/// legs of one worker, which compares it before and after feeding a datagram).
/// What a subscribe leg's chain shares with the node: its transport-cc reports, and its
/// retransmission budget (a publish leg's stay unused).
#[derive(Clone, Default)]
pub struct LegTaps {
    pub feedback: FeedbackQueue,
    pub retransmissions: Arc<RetransmissionBudget>,
    pub probe: Arc<ProbeTap>,
}

///
/// `codecs`: the formats to register instead of the catalogue (a WHEP viewer's leg sends with
/// the payload types of the viewer's offer: `rtc` sends only its own).
pub fn new_peer_connection(
    role: LegRole,
    settings: &EngineSettings,
    codecs: Option<&[formats::CatalogueFormat]>,
    metrics: Arc<MediaMetrics>,
    decrypted: Arc<AtomicU64>,
    taps: LegTaps,
    now: Instant,
) -> Result<RTCPeerConnection, RtcError> {
    let engine = media_engine(role, settings, codecs)?;
    let registry = interceptors(role, settings, metrics, decrypted, taps);
    // The relay is the DTLS server on every leg, so that it chooses the SRTP profile, by its
    // own order (patches/rtc-dtls): a publish answer says `a=setup:passive`; on subscribe legs
    // the relay offers `actpass` and browsers answer `active`.
    let setting_engine = SettingEngineBuilder::new()
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .with_lite(true)
        .with_srtp_protection_profiles(settings.srtp_profiles.clone())
        .with_ice_timeouts(
            Some(settings.ice_disconnected_timeout),
            Some(settings.ice_failed_timeout),
            Some(Duration::from_secs(2)),
        )
        .build();
    RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
}

/// The relay's host candidate for `addr`, in `RTCIceCandidateInit` form.
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, RtcError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    RTCIceCandidate::from(&candidate).to_json()
}

/// A passive ICE-TCP host candidate (RFC 6544): clients connect to it.
pub fn tcp_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, RtcError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "tcp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type: rtc::ice::tcp_type::TcpType::Passive,
    }
    .new_candidate_host()?;
    RTCIceCandidate::from(&candidate).to_json()
}

/// Lets inbound RTCP reach the relay: the chain's terminus otherwise swallows it, and the relay
/// must act on PLI/FIR/NACK from subscribers and sender reports from publishers.
#[derive(Default)]
pub struct DeliverRtcp {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for DeliverRtcp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), RtcError> {
        if matches!(msg.message.packet, Packet::Rtcp(_)) {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), RtcError> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), RtcError> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for DeliverRtcp {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}

    /// Inbound only: the chain hands packets being sent past it (patches/README.md).
    fn handles_writes(&self) -> bool {
        false
    }
}

/// Counts what crosses the SRTP boundary that `rtc` keeps to itself otherwise: packets that
/// decrypted (so the worker can tell a rejected datagram from one an interceptor consumed), and
/// what the loss-recovery interceptors send (retransmissions to subscribers, NACKs to
/// publishers). A publish leg counts in [`Observe`], a subscribe leg in its egress interceptor
/// (`node/egress.rs`); both sit where every packet SRTP let in or will seal passes them.
pub(super) struct LegCounters {
    pub(super) metrics: Arc<MediaMetrics>,
    pub(super) decrypted: Arc<AtomicU64>,
}

impl LegCounters {
    pub(super) fn on_read(&self) {
        self.decrypted.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn on_write(&self, msg: &TaggedPacket) {
        match &msg.message.packet {
            Packet::Rtp(_) if msg.message.has(&Attribute::Retransmission) => {
                self.metrics.retransmissions_sent.inc();
            }
            Packet::Rtcp(packets) => {
                let nacks = packets
                    .iter()
                    .filter(|p| p.as_any().is::<TransportLayerNack>())
                    .count();
                if nacks > 0 {
                    self.metrics.nacks_sent.inc_by(nacks as u64);
                }
            }
            _ => {}
        }
    }
}

/// A publish leg's [`LegCounters`], as an interceptor of its own.
struct Observe {
    counters: LegCounters,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for Observe {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), RtcError> {
        self.counters.on_read();
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), RtcError> {
        self.counters.on_write(&msg);
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), RtcError> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for Observe {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
