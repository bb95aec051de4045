//! Two `rtc` peer connections wired back to back in memory, on a virtual clock.
//!
//! Used by the per-packet benchmarks (one relay leg against a client) and by tests that need a
//! connected leg without sockets. Datagrams move between the two only when `step` is called, so
//! a test decides exactly what each side sees.

use super::engine::DeliverRtcp;
use bytes::BytesMut;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A browser-like peer connection: full ICE, the default codecs and interceptors, and inbound
/// RTCP delivered to the application (so a test publisher sees the relay's PLIs).
pub fn client_peer_connection(now: Instant) -> Result<RTCPeerConnection, RtcError> {
    client_peer_connection_with(now, &ClientSettings::default())
}

/// What a test client can do, where it differs from a browser's defaults.
#[derive(Debug, Clone)]
pub struct ClientSettings<'a> {
    /// Only the relay's publish formats of these video MIME types (with RTX); `None`: every
    /// codec webrtc-rs registers by default.
    pub video_mime_types: Option<&'a [&'a str]>,
    /// Opus parameters (with `video_mime_types` set).
    pub opus_fmtp: &'a str,
    /// Whether the client NACKs what it misses (off: retransmissions it gets are the relay's own
    /// doing).
    pub nack: bool,
    /// SRTP profiles the client offers, in its order; `None`: webrtc-rs's default.
    pub srtp_profiles: Option<Vec<SrtpProtectionProfile>>,
}

impl Default for ClientSettings<'_> {
    fn default() -> Self {
        ClientSettings {
            video_mime_types: None,
            opus_fmtp: "minptime=10;useinbandfec=1",
            nack: true,
            srtp_profiles: None,
        }
    }
}

/// A test client with chosen capabilities (see [`ClientSettings`]).
pub fn client_peer_connection_with(
    now: Instant,
    settings: &ClientSettings,
) -> Result<RTCPeerConnection, RtcError> {
    use super::formats;
    use rtc::peer_connection::configuration::interceptor_registry::{
        configure_nack, configure_rtcp_reports, configure_simulcast_extension_headers,
        configure_twcc_receiver_only,
    };
    use rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters;
    let mut engine = MediaEngine::default();
    match settings.video_mime_types {
        None => engine.register_default_codecs()?,
        Some(video) => {
            engine.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: "audio/opus".into(),
                        clock_rate: 48_000,
                        channels: 2,
                        sdp_fmtp_line: settings.opus_fmtp.into(),
                        rtcp_feedback: vec![],
                    },
                    payload_type: 111,
                },
                RtpCodecKind::Audio,
            )?;
            for format in formats::catalogue() {
                if !video
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(format.codec.mime_type()))
                {
                    continue;
                }
                engine.register_codec(
                    formats::parameters(&format, super::role::LegRole::Subscribe, true),
                    RtpCodecKind::Video,
                )?;
                if let Some(rtx) = formats::rtx_parameters(&format) {
                    engine.register_codec(rtx, RtpCodecKind::Video)?;
                }
            }
        }
    }
    let mut registry = Registry::new().with(Slot::from(14_000), DeliverRtcp::default());
    if settings.nack {
        registry = configure_nack(registry, &mut engine);
    }
    configure_simulcast_extension_headers(&mut engine)?;
    registry = configure_twcc_receiver_only(registry, &mut engine)?;
    registry = configure_rtcp_reports(registry);
    // Answering, be the DTLS client, as browsers are (rtc would otherwise make the
    // ICE-controlling side the DTLS server).
    // Checks every 50 ms rather than rtc's default 200 ms (still 1.4 s of attempts): the
    // controlling client nominates, and so starts DTLS, on its next check tick after a check
    // succeeds, so at 200 ms the client's tick, not the relay, set the join time. Browsers pace
    // their checks at 50 ms or less.
    let mut setting_engine = SettingEngineBuilder::new()
        .with_answering_dtls_role(RTCDtlsRole::Client)
        .with_ice_connection_attempts(Some(CLIENT_CHECK_INTERVAL), Some(28));
    if let Some(profiles) = &settings.srtp_profiles {
        setting_engine = setting_engine.with_srtp_protection_profiles(profiles.clone());
    }
    RTCPeerConnectionBuilder::new()
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine.build())
        .build(now)
}

/// How often a test or load client sends an ICE connectivity check.
pub const CLIENT_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// A local track of one encoding with a fixed SSRC, for senders that make up their media (test
/// clients, the load generator).
pub fn synthetic_track(
    kind: RtpCodecKind,
    ssrc: u32,
    mime: &str,
    clock_rate: u32,
    channels: u16,
) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "synthetic".into(),
        format!("synthetic-{ssrc:x}"),
        "synthetic".into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime.into(),
                clock_rate,
                channels,
                ..Default::default()
            },
            ..Default::default()
        }],
    )
}

/// One side of a [`Pair`].
pub struct End {
    pub pc: RTCPeerConnection,
    pub addr: SocketAddr,
    pub state: RTCPeerConnectionState,
    /// Events other than connection-state changes, oldest first, for the test to inspect.
    pub events: Vec<RTCPeerConnectionEvent>,
}

impl End {
    pub fn new(pc: RTCPeerConnection, addr: SocketAddr) -> Self {
        End {
            pc,
            addr,
            state: RTCPeerConnectionState::New,
            events: Vec::new(),
        }
    }

    fn take_events(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => self.state = state,
                other => self.events.push(other),
            }
        }
    }
}

pub struct Pair {
    pub a: End,
    pub b: End,
    pub now: Instant,
}

/// Wraps a datagram as arriving at `to` from `from`.
pub fn datagram(now: Instant, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: to,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: BytesMut::from(bytes),
    }
}

impl Pair {
    pub fn new(a: End, b: End, now: Instant) -> Self {
        Pair { a, b, now }
    }

    /// Moves every pending datagram across once, in both directions. Returns how many moved.
    pub fn step(&mut self) -> usize {
        let mut moved = 0;
        for a_to_b in [true, false] {
            let (from, to) = if a_to_b {
                (&mut self.a, &mut self.b)
            } else {
                (&mut self.b, &mut self.a)
            };
            while let Some(out) = from.pc.poll_write() {
                moved += 1;
                let msg = datagram(self.now, from.addr, to.addr, &out.message);
                // Errors on hostile or early input are the receiver's business; keep moving.
                let _ = to.pc.handle_read(msg);
            }
            from.take_events();
            to.take_events();
            while to.pc.poll_read().is_some() {}
        }
        moved
    }

    /// Runs until `done` holds or `limit` of virtual time passes; returns whether it held.
    pub fn drive(&mut self, limit: Duration, done: impl Fn(&Pair) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            if self.step() > 0 {
                continue;
            }
            let next = [self.a.pc.poll_timeout(), self.b.pc.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.now + Duration::from_millis(10));
            self.now = next.max(self.now + Duration::from_micros(100)).min(end);
            let _ = self.a.pc.handle_timeout(self.now);
            let _ = self.b.pc.handle_timeout(self.now);
        }
        done(self)
    }

    pub fn both_connected(&self) -> bool {
        self.a.state == RTCPeerConnectionState::Connected
            && self.b.state == RTCPeerConnectionState::Connected
    }
}
