//! The media input paths: datagrams on the shared socket, and RTP/RTCP after decryption.

use crate::media::codec::Codec;
use crate::media::extmap::{ExtensionIds, ExtensionTranslator, HeaderExtension};
use crate::media::forwarder::{Forwarder, ForwarderConfig, InboundPacket};
use crate::media::rewrite::{RewriteTarget, rewrite};
use crate::node::relay::NodeConfig;
use crate::node::sim::{ClientId, Media, Sim};
use bytes::Bytes;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::shared::marshal::{Marshal, Unmarshal};
use std::cell::RefCell;
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

thread_local! {
    static CALL: RefCell<Option<LiveCall>> = const { RefCell::new(None) };
}

/// A node with a call on it (Alice publishing audio and video to Bob, every leg connected),
/// kept across fuzz inputs because building one costs milliseconds.
struct LiveCall {
    sim: Sim,
    alice: ClientId,
}

fn live_call() -> Option<LiveCall> {
    let mut sim = Sim::new(NodeConfig::default());
    let alice = sim.join("fuzz", "alice").ok()?;
    let bob = sim.join("fuzz", "bob").ok()?;
    sim.publish(alice, true, true);
    sim.run(Duration::from_secs(1), Some(Media::STEADY));
    let receiving = !sim.client(bob).tags_from("alice", "video").is_empty();
    receiving.then_some(LiveCall { sim, alice })
}

/// The media port's whole input path, through the real node: demux, first checks, the leg's
/// ICE, DTLS and SRTP, and everything the node does with what gets through. Every datagram comes
/// from the address of Alice's publish leg (so it reaches the leg; from anywhere else the demux
/// drops it). Afterwards the call must still forward: hostile input may end Alice's own legs,
/// never the node.
pub fn demux_and_leg(data: &[u8]) {
    CALL.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = live_call();
        }
        let Some(call) = slot.as_mut() else {
            return;
        };
        let from = call.sim.client(call.alice).publish.addr;
        for d in datagrams(data) {
            call.sim.inject(from, d);
            call.sim.run(Duration::from_micros(100), None);
        }
        call.sim.run(Duration::from_millis(20), Some(Media::STEADY));
        // A call the input ended (or whose legs it closed) is rebuilt for the next input.
        let alice = call.sim.client(call.alice);
        if alice.closed.is_some() || alice.publish.state != RTCPeerConnectionState::Connected {
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
            let info = Codec::Vp8.inspect(&packet.payload);
            let meta = InboundPacket {
                ssrc: packet.header.ssrc,
                sequence_number: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                marker: packet.header.marker,
                keyframe_start,
                payload_bytes: packet.payload.len() as u32,
                resolution: info.resolution,
                vp8: info.vp8,
            };
            if packet.payload.is_empty() {
                forwarder.skip(&meta);
                let _ = forwarder.insert_padding(now);
            } else if let crate::media::forwarder::Verdict::Forward {
                sequence_number,
                timestamp,
                vp8,
            } = forwarder.forward(&meta, now)
            {
                let mut out = rewrite(&packet, &target, sequence_number, timestamp);
                if let Some(vp8) = vp8 {
                    let mut payload = out.payload.to_vec();
                    crate::media::codec::vp8::rewrite(
                        &mut payload,
                        vp8.picture_id,
                        vp8.tl0_picture_index,
                    );
                    out.payload = payload.into();
                }
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
    fn the_fuzzed_call_really_forwards() {
        assert!(
            super::live_call().is_some(),
            "the demux_leg target would test nothing"
        );
    }
}
