//! Cost of Tern's own per-packet work, without the WebRTC stack: the room's fan-out decision
//! (forwarder per subscription) plus the header rewrite for each subscriber.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtc::rtp::header::{Extension, Header};
use rtc::rtp::packet::Packet;
use std::time::{Duration, Instant};
use tern::media::codec::Codec;
use tern::media::extmap::{ExtensionIds, ExtensionTranslator, HeaderExtension};
use tern::media::forwarder::InboundPacket;
use tern::media::ids::{ParticipantId, RoomId, TrackId};
use tern::media::rewrite::{RewriteTarget, rewrite};
use tern::media::room::{MemberInfo, PublicationInfo, Room, SinkId, TrackSource};

fn room_with_subscribers(fan_out: u64, now: Instant) -> Room {
    let mut room = Room::new(RoomId("bench".into()), Duration::from_millis(500));
    for id in 0..=fan_out {
        room.join(
            ParticipantId(id),
            MemberInfo {
                identity: id.to_string(),
                name: id.to_string(),
                can_publish: true,
                can_subscribe: true,
            },
        )
        .unwrap();
    }
    room.publish(
        TrackId(1),
        PublicationInfo {
            owner: ParticipantId(0),
            source: TrackSource::Camera,
            codec: Codec::Vp8,
        },
    )
    .unwrap();
    for id in 1..=fan_out {
        room.attach(TrackId(1), ParticipantId(id), SinkId(id), 0, 0, now)
            .unwrap();
    }
    while room.poll_output().is_some() {}
    room
}

fn bench_fan_out(c: &mut Criterion) {
    let publisher = ExtensionIds::from_negotiated([
        (1, HeaderExtension::AudioLevel.uri()),
        (3, HeaderExtension::TransportCc.uri()),
        (13, HeaderExtension::VideoOrientation.uri()),
    ]);
    let subscriber = ExtensionIds::from_negotiated([
        (4, HeaderExtension::Mid.uri()),
        (13, HeaderExtension::VideoOrientation.uri()),
    ]);
    let target = RewriteTarget {
        ssrc: 42,
        payload_type: 96,
        mid_extension: Some((4, Bytes::from_static(b"1"))),
        extensions: ExtensionTranslator::new(&publisher, &subscriber),
    };
    let packet = Packet {
        header: Header {
            version: 2,
            extension: true,
            extension_profile: 0xBEDE,
            payload_type: 96,
            ssrc: 7,
            extensions: vec![
                Extension {
                    id: 3,
                    payload: Bytes::from_static(&[0, 1]),
                },
                Extension {
                    id: 13,
                    payload: Bytes::from_static(&[0]),
                },
            ],
            ..Default::default()
        },
        payload: Bytes::from(vec![0x10u8; 1200]),
    };
    let mut group = c.benchmark_group("core");
    for fan_out in [1u64, 10] {
        let now = Instant::now();
        let mut room = room_with_subscribers(fan_out, now);
        let mut seq = 0u16;
        let mut out = Vec::with_capacity(16);
        group.throughput(Throughput::Elements(fan_out));
        group.bench_function(BenchmarkId::new("forward_and_rewrite", fan_out), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let meta = InboundPacket {
                    ssrc: 7,
                    sequence_number: seq,
                    timestamp: u32::from(seq) * 3000,
                    keyframe_start: true,
                    payload_bytes: 1000,
                    ..InboundPacket::default()
                };
                out.clear();
                room.forward(TrackId(1), &meta, now, |f| {
                    out.push(rewrite(&packet, &target, f.sequence_number, f.timestamp));
                });
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench_fan_out
}
criterion_main!(benches);
