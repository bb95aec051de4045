//! How the relay configures webrtc-rs's `rtc` for its two kinds of leg.
//!
//! Publish legs receive (client offers, relay answers); subscribe legs send (relay offers). Both
//! are ICE-lite with relay-chosen credentials (the ufrag is the demux key), DTLS-SRTP with the
//! configured profiles, and the interceptors each direction needs: the publish leg generates
//! NACKs, receiver reports and transport-cc feedback for the publisher; the subscribe leg keeps a
//! bounded send history for video NACKs and sends sender reports.

use crate::media::codec::Codec;
use crate::media::extmap::HeaderExtension;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, NackResponderBuilder, Packet,
    ReceiverReportBuilder, Registry, SenderReportBuilder, Slot, StreamInfo, TaggedPacket,
    TwccReceiverBuilder,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::shared::error::Error as RtcError;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Which way media flows on a leg, from the relay's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegRole {
    /// The participant's own media arrives here.
    Publish,
    /// Everybody else's media leaves here.
    Subscribe,
}

impl LegRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LegRole::Publish => "publish",
            LegRole::Subscribe => "subscribe",
        }
    }
}

/// Settings shared by every leg of a node.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub srtp_profiles: Vec<SrtpProtectionProfile>,
    /// No STUN from the client for this long: the leg is `disconnected`.
    pub ice_disconnected_timeout: Duration,
    /// ...and this much longer: `failed`, and the participant is removed.
    pub ice_failed_timeout: Duration,
    /// Packets of send history per video stream for answering NACKs.
    pub nack_history: u16,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            srtp_profiles: vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm],
            // Browsers send consent checks every ~5 s, so anything shorter flaps. 7 + 5 puts a
            // dead peer out within the ~15 s budget.
            ice_disconnected_timeout: Duration::from_secs(7),
            ice_failed_timeout: Duration::from_secs(5),
            nack_history: 512,
        }
    }
}

/// The payload types the relay offers on subscribe legs (publish legs take the publisher's).
pub fn default_payload_type(codec: Codec) -> u8 {
    match codec {
        Codec::Opus => 111,
        Codec::Vp8 => 96,
    }
}

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    }
}

fn codec_parameters(codec: Codec, role: LegRole) -> RTCRtpCodecParameters {
    let (channels, fmtp, rtcp_feedback) = match codec {
        Codec::Opus => {
            let fb = match role {
                LegRole::Publish => vec![feedback("transport-cc", "")],
                LegRole::Subscribe => vec![],
            };
            (2, "minptime=10;useinbandfec=1", fb)
        }
        Codec::Vp8 => {
            let mut fb = vec![
                feedback("nack", ""),
                feedback("nack", "pli"),
                feedback("ccm", "fir"),
            ];
            if role == LegRole::Publish {
                fb.push(feedback("transport-cc", ""));
            }
            (0, "", fb)
        }
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: codec.mime_type().to_owned(),
            clock_rate: codec.clock_rate(),
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback,
        },
        payload_type: default_payload_type(codec),
    }
}

fn rtp_kind(codec: Codec) -> RtpCodecKind {
    match codec.kind() {
        crate::media::codec::MediaKind::Audio => RtpCodecKind::Audio,
        crate::media::codec::MediaKind::Video => RtpCodecKind::Video,
    }
}

/// Header extensions negotiated per role and media kind.
fn header_extensions(role: LegRole) -> Vec<(HeaderExtension, RtpCodecKind)> {
    use HeaderExtension as E;
    use RtpCodecKind::{Audio, Video};
    let mut list = vec![
        (E::Mid, Audio),
        (E::Mid, Video),
        (E::AudioLevel, Audio),
        (E::VideoOrientation, Video),
        (E::PlayoutDelay, Video),
    ];
    if role == LegRole::Publish {
        list.extend([
            (E::Rid, Video),
            (E::RepairedRid, Video),
            (E::TransportCc, Audio),
            (E::TransportCc, Video),
        ]);
    }
    list
}

fn media_engine(role: LegRole) -> Result<MediaEngine, RtcError> {
    let mut engine = MediaEngine::default();
    for codec in Codec::ALL {
        engine.register_codec(codec_parameters(codec, role), rtp_kind(codec))?;
    }
    for (ext, kind) in header_extensions(role) {
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

fn interceptors(role: LegRole, settings: &EngineSettings) -> Registry {
    let registry = Registry::new().with(Slot::from(14_000), DeliverRtcp::default());
    match role {
        LegRole::Publish => registry
            .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
            .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build()),
        LegRole::Subscribe => registry
            .with(
                Slot::NackResponder,
                NackResponderBuilder::new()
                    .with_size(settings.nack_history)
                    .build(),
            )
            .with(Slot::SenderReport, SenderReportBuilder::new().build()),
    }
}

/// ICE credentials chosen by the relay. The ufrag is the demux key of the shared socket.
#[derive(Debug, Clone)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

impl IceCredentials {
    /// Fresh random credentials: 16 characters of ufrag (>= 24 bits of entropy required by
    /// RFC 8445 §5.3) and 32 of password (>= 128 bits).
    pub fn random() -> Self {
        IceCredentials {
            ufrag: random_token(16),
            pwd: random_token(32),
        }
    }
}

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

/// Builds one leg's peer connection.
pub fn new_peer_connection(
    role: LegRole,
    settings: &EngineSettings,
    credentials: &IceCredentials,
    now: Instant,
) -> Result<RTCPeerConnection, RtcError> {
    let engine = media_engine(role)?;
    let registry = interceptors(role, settings);
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_credentials(credentials.ufrag.clone(), credentials.pwd.clone())
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
}
