//! Per-packet cost of one relay leg on webrtc-rs's `rtc`, measured before building on it.
//!
//! - `receive`: one SRTP datagram into a publish leg (`handle_read`) until the RTP packet comes
//!   out (`poll_read`), including every interceptor and any RTCP the leg queues.
//! - `send`: one RTP packet into a subscribe leg (`write_rtp`) until the SRTP datagram comes
//!   out (`poll_write`).
//! - `srtp_*`: the bare AES-128-GCM seal/open of the same packet, so the library's own overhead
//!   (receive/send minus crypto) can be read off.
//!
//! Legs are configured exactly as the relay configures them (`tern::node::engine`), connected to
//! a browser-like client over an in-memory pair.

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::message::RTCMessage;
use rtc::rtp::{Header, Packet};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tern::node::engine::{EngineSettings, host_candidate, new_peer_connection};
use tern::node::pair::{End, Pair, client_peer_connection, datagram};
use tern::node::role::LegRole;

const PAYLOAD: usize = 1_200;

/// Counts allocations (and reallocations), so each bench can say how many one packet costs.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Prints the allocations per packet of the last measured run of `name`.
fn report_allocations(name: &str, allocations: u64, packets: u64) {
    if packets > 0 {
        eprintln!(
            "rtc_leg/{name}: {:.2} allocations per packet",
            allocations as f64 / packets as f64
        );
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn vp8_track(ssrc: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "stream".into(),
        format!("video-{ssrc}"),
        "video".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90_000,
                ..Default::default()
            },
            ..Default::default()
        }],
    )
}

fn vp8_packet(ssrc: u32, seq: u16, pt: u8) -> Packet {
    Packet {
        header: Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::from(vec![0x10u8; PAYLOAD]),
    }
}

/// Connects `offerer` (which already has its tracks) to `answerer`; the relay leg is lite and
/// owns `relay_addr`.
fn connect(mut offerer: End, mut answerer: End, now: Instant) -> Pair {
    let offer = offerer.pc.create_offer(None).unwrap();
    offerer
        .pc
        .set_local_description(now, offer.clone())
        .unwrap();
    answerer.pc.set_remote_description(now, offer).unwrap();
    let answer = answerer.pc.create_answer(None).unwrap();
    answerer
        .pc
        .set_local_description(now, answer.clone())
        .unwrap();
    offerer.pc.set_remote_description(now, answer).unwrap();
    let mut pair = Pair::new(offerer, answerer, now);
    assert!(
        pair.drive(Duration::from_secs(10), Pair::both_connected),
        "legs did not connect"
    );
    pair
}

fn relay_leg(role: LegRole, now: Instant) -> End {
    let metrics = tern::metrics::Metrics::new().media.clone();
    let mut pc = new_peer_connection(
        role,
        &EngineSettings::default(),
        None,
        metrics,
        Default::default(),
        Default::default(),
        now,
    )
    .unwrap();
    pc.add_local_candidate(host_candidate(addr(3478)).unwrap())
        .unwrap();
    End::new(pc, addr(3478))
}

fn client(now: Instant) -> End {
    let mut pc = client_peer_connection(now).unwrap();
    pc.add_local_candidate(host_candidate(addr(5000)).unwrap())
        .unwrap();
    End::new(pc, addr(5000))
}

/// Publisher (client, offerer) -> relay publish leg (answerer). Returns the pair and the
/// client's sender, ready to produce SRTP datagrams.
fn publish_setup() -> (Pair, RTCRtpSenderId, u8) {
    let now = Instant::now();
    let mut publisher = client(now);
    let sender = publisher.pc.add_track(vp8_track(0x1111)).unwrap();
    let relay = relay_leg(LegRole::Publish, now);
    let mut pair = connect(publisher, relay, now);
    let pt = negotiated_pt(&mut pair.a, sender);
    // Let the first packet establish the stream (OnTrack) outside the measurement.
    pair.a
        .pc
        .rtp_sender(sender)
        .unwrap()
        .write_rtp(pair.now, vp8_packet(0x1111, 0, pt))
        .unwrap();
    pair.step();
    (pair, sender, pt)
}

fn negotiated_pt(end: &mut End, sender: RTCRtpSenderId) -> u8 {
    end.pc
        .rtp_sender(sender)
        .unwrap()
        .get_parameters()
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/VP8"))
        .map(|c| c.payload_type)
        .unwrap()
}

fn bench_receive(c: &mut Criterion) {
    let (mut pair, sender, pt) = publish_setup();
    let mut seq: u16 = 1;
    let last = &mut (0u64, 0u64);
    let mut group = c.benchmark_group("rtc_leg");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("receive", PAYLOAD), |b| {
        b.iter_custom(|iters| {
            // Encrypt outside the clock: each SRTP datagram is accepted once (replay window).
            let mut datagrams = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                pair.now += Duration::from_micros(50);
                let now = pair.now;
                pair.a
                    .pc
                    .rtp_sender(sender)
                    .unwrap()
                    .write_rtp(now, vp8_packet(0x1111, seq, pt))
                    .unwrap();
                seq = seq.wrapping_add(1);
                while let Some(out) = pair.a.pc.poll_write() {
                    if out.message.len() > PAYLOAD {
                        datagrams.push(datagram(now, pair.a.addr, pair.b.addr, &out.message));
                    }
                }
            }
            let relay = &mut pair.b.pc;
            let mut received = 0u64;
            let allocations = ALLOCATIONS.load(Ordering::Relaxed);
            let start = Instant::now();
            for msg in datagrams {
                relay.handle_read(msg).unwrap();
                while relay.poll_event().is_some() {}
                while let Some(m) = relay.poll_read() {
                    if matches!(m.message, RTCMessage::RtpPacket(..)) {
                        received += 1;
                    }
                }
                while relay.poll_write().is_some() {}
            }
            let elapsed = start.elapsed();
            *last = (ALLOCATIONS.load(Ordering::Relaxed) - allocations, received);
            assert_eq!(received, iters, "every datagram must come out as RTP");
            elapsed
        })
    });
    group.finish();
    report_allocations("receive", last.0, last.1);
}

fn bench_send(c: &mut Criterion) {
    let now = Instant::now();
    let mut relay = relay_leg(LegRole::Subscribe, now);
    let sender = relay.pc.add_track(vp8_track(0x2222)).unwrap();
    let subscriber = client(now);
    let mut pair = connect(relay, subscriber, now);
    let pt = negotiated_pt(&mut pair.a, sender);
    let template = vp8_packet(0x2222, 0, pt);
    let mut seq: u16 = 0;
    let last = &mut (0u64, 0u64);
    let mut group = c.benchmark_group("rtc_leg");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("send", PAYLOAD), |b| {
        b.iter_custom(|iters| {
            let relay = &mut pair.a.pc;
            let mut sent = 0u64;
            let allocations = ALLOCATIONS.load(Ordering::Relaxed);
            let start = Instant::now();
            for _ in 0..iters {
                pair.now += Duration::from_micros(50);
                let mut packet = template.clone();
                packet.header.sequence_number = seq;
                seq = seq.wrapping_add(1);
                relay
                    .rtp_sender(sender)
                    .unwrap()
                    .write_rtp(pair.now, packet)
                    .unwrap();
                while let Some(out) = relay.poll_write() {
                    if out.message.len() > PAYLOAD {
                        sent += 1;
                    }
                }
            }
            let elapsed = start.elapsed();
            *last = (ALLOCATIONS.load(Ordering::Relaxed) - allocations, sent);
            assert_eq!(sent, iters, "every packet must leave as one datagram");
            elapsed
        })
    });
    group.finish();
    report_allocations("send", last.0, last.1);
}

fn bench_bare_srtp(c: &mut Criterion) {
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;
    let provider = rtc::crypto::default_provider().unwrap();
    let make = || {
        Context::new(
            &[7u8; 16],
            &[9u8; 12],
            ProtectionProfile::AeadAes128Gcm,
            None,
            None,
            provider.crypto(),
        )
        .unwrap()
    };
    let mut sealer = make();
    let mut opener = make();
    let mut plain = BytesMut::new();
    let mut seq: u16 = 0;
    let mut group = c.benchmark_group("rtc_leg");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("srtp_seal_open_gcm", PAYLOAD), |b| {
        b.iter(|| {
            use rtc::shared::marshal::{Marshal, MarshalSize};
            let packet = vp8_packet(0x3333, seq, 96);
            seq = seq.wrapping_add(1);
            plain.clear();
            plain.resize(packet.marshal_size(), 0);
            let n = packet.marshal_to(&mut plain).unwrap();
            let sealed = sealer.encrypt_rtp(&plain[..n]).unwrap();
            opener.decrypt_rtp(&sealed).unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    targets = bench_receive, bench_send, bench_bare_srtp
}
criterion_main!(benches);
