//! The media input paths: datagrams on the shared socket, and RTP/RTCP after decryption.

use crate::media::codec::Codec;
use crate::media::extmap::{ExtensionIds, ExtensionTranslator, HeaderExtension};
use crate::media::forwarder::{Forwarder, ForwarderConfig, InboundPacket};
use crate::media::rewrite::{RewriteTarget, rewrite};
use crate::metrics::Metrics;
use crate::node::demux::{Demux, LegKey};
use crate::node::engine::{EngineSettings, host_candidate, new_peer_connection};
use crate::node::guard::{self, Class, RateLimit};
use crate::node::pair::{End, Pair, client_peer_connection, datagram};
use crate::node::role::LegRole;
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, Unmarshal};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Splits fuzz input into datagrams: each is a 2-byte big-endian length, then that many bytes.
fn datagrams(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
        let (d, rest) = data[2..].split_at(len);
        data = rest;
        Some(d)
    })
}

fn relay_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 3478))
}

fn client_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 5000))
}

/// A relay publish leg connected (ICE, DTLS, SRTP) to a browser-like client, kept across fuzz
/// inputs because building one costs milliseconds.
fn connected_leg() -> Option<Pair> {
    let now = Instant::now();
    let metrics = Metrics::new().media.clone();
    let mut relay = new_peer_connection(
        LegRole::Publish,
        &EngineSettings::default(),
        metrics,
        Default::default(),
        now,
    )
    .ok()?;
    relay
        .add_local_candidate(host_candidate(relay_addr()).ok()?)
        .ok()?;
    let mut client = client_peer_connection(now).ok()?;
    client
        .add_local_candidate(host_candidate(client_addr()).ok()?)
        .ok()?;
    client
        .add_track(MediaStreamTrack::new(
            "s".into(),
            "v".into(),
            "v".into(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(1),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: "video/VP8".into(),
                    clock_rate: 90_000,
                    ..Default::default()
                },
                ..Default::default()
            }],
        ))
        .ok()?;
    let offer = client.create_offer(None).ok()?;
    client.set_local_description(now, offer.clone()).ok()?;
    relay.set_remote_description(now, offer).ok()?;
    let answer = relay.create_answer(None).ok()?;
    relay.set_local_description(now, answer.clone()).ok()?;
    client.set_remote_description(now, answer).ok()?;
    let mut pair = Pair::new(
        End::new(client, client_addr()),
        End::new(relay, relay_addr()),
        now,
    );
    pair.drive(Duration::from_secs(10), Pair::both_connected)
        .then_some(pair)
}

thread_local! {
    static LEG: RefCell<Option<Pair>> = const { RefCell::new(None) };
}

/// The shared-socket input path: demux, first checks, then a connected leg's `handle_read` and
/// everything it produces. Any datagram may be hostile.
pub fn demux_and_leg(data: &[u8]) {
    let mut demux = Demux::default();
    demux.add_ufrag("relayufrag", "relaypassword", LegKey(1));
    let mut limit = RateLimit::new(5_000, 2_500);
    LEG.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = connected_leg();
        }
        let Some(pair) = slot.as_mut() else {
            return;
        };
        for d in datagrams(data) {
            let _ = demux.route(client_addr(), d);
            demux.learn(LegKey(1), client_addr());
            let well_formed = match guard::classify(d) {
                Class::Stun | Class::Dtls => true,
                Class::Rtp => guard::rtp_header_fits(d),
                Class::Rtcp => guard::rtcp_header_fits(d),
                Class::Other => false,
            };
            if !well_formed || !limit.allow(pair.now) {
                continue;
            }
            pair.now += Duration::from_micros(100);
            let relay = &mut pair.b.pc;
            let _ = relay.handle_read(datagram(pair.now, client_addr(), relay_addr(), d));
            while relay.poll_event().is_some() {}
            while relay.poll_read().is_some() {}
            while relay.poll_write().is_some() {}
        }
        let _ = pair.b.pc.handle_timeout(pair.now);
        while pair.b.pc.poll_write().is_some() {}
        // A leg the input killed is rebuilt for the next input.
        if pair.b.state != rtc::peer_connection::state::RTCPeerConnectionState::Connected {
            *slot = None;
        }
    });
}

/// The packet path after decryption: RTP parsing, keyframe detection for every codec, the
/// forwarder, header rewriting and marshalling; RTCP parsing and the relay's use of it.
pub fn rtp_and_rtcp(data: &[u8]) {
    let t0 = Instant::now();
    let publisher = ExtensionIds::from_negotiated([
        (1, HeaderExtension::AudioLevel.uri()),
        (3, HeaderExtension::TransportCc.uri()),
        (4, HeaderExtension::Mid.uri()),
        (13, HeaderExtension::VideoOrientation.uri()),
    ]);
    let subscriber = ExtensionIds::from_negotiated([
        (2, HeaderExtension::Mid.uri()),
        (5, HeaderExtension::AudioLevel.uri()),
        (14, HeaderExtension::VideoOrientation.uri()),
    ]);
    let target = RewriteTarget {
        ssrc: 42,
        payload_type: 96,
        mid_extension: Some((2, Bytes::from_static(b"0"))),
        extensions: ExtensionTranslator::new(&publisher, &subscriber),
    };
    let mut forwarder = Forwarder::new(ForwarderConfig {
        clock_rate: 90_000,
        starts_at_keyframe: true,
        initial_sequence_number: 65_000,
        initial_timestamp: u32::MAX - 1000,
    });
    for (i, d) in datagrams(data).enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 10);
        if let Ok(packet) = rtc::rtp::packet::Packet::unmarshal(&mut &d[..]) {
            // Every detector sees every payload (no short circuit).
            let mut keyframe_start = false;
            for codec in Codec::ALL {
                keyframe_start |= codec.is_keyframe_start(&packet.payload);
            }
            let meta = InboundPacket {
                ssrc: packet.header.ssrc,
                sequence_number: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                keyframe_start,
                payload_bytes: packet.payload.len() as u32,
            };
            if let crate::media::forwarder::Verdict::Forward {
                sequence_number,
                timestamp,
            } = forwarder.forward(&meta, now)
            {
                let out = rewrite(&packet, &target, sequence_number, timestamp);
                if let Ok(wire) = out.marshal() {
                    let back = rtc::rtp::packet::Packet::unmarshal(&mut &wire[..])
                        .expect("a rewritten packet parses back");
                    assert_eq!(back.header.sequence_number, sequence_number);
                }
            }
            let _ = forwarder.timestamp_offset(packet.header.ssrc);
        }
        if let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &d[..]) {
            for p in &packets {
                let any = p.as_any();
                let _ = any.is::<rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication>();
                if let Some(sr) = any.downcast_ref::<rtc::rtcp::sender_report::SenderReport>() {
                    let _ = sr
                        .rtp_time
                        .wrapping_add(forwarder.timestamp_offset(sr.ssrc).unwrap_or(0));
                }
                let _ = p.destination_ssrc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzzed_leg_really_connects() {
        assert!(
            super::connected_leg().is_some(),
            "the demux_leg target would test nothing"
        );
    }
}
