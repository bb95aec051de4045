//! What Tern's own per-packet work allocates, counted by a global allocator in this test binary:
//! the room's forwarding decisions nothing, a rewritten header one block (the `Vec` of
//! extensions `rtc`'s `Header` owns, sized so `rtc` never grows it), a renumbered VP8 payload
//! one chunk of the arena per few dozen packets. Allocation counts are exact, not timings.

use bytes::Bytes;
use rtc::rtp::header::{Extension, Header};
use rtc::rtp::packet::Packet;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};
use tern::media::codec::{Codec, vp8};
use tern::media::extmap::{ExtensionIds, ExtensionTranslator, HeaderExtension};
use tern::media::forwarder::InboundPacket;
use tern::media::ids::{ParticipantId, RoomId, TrackId};
use tern::media::rewrite::{RewriteTarget, rewrite};
use tern::media::room::{MemberInfo, PublicationInfo, Room, SinkId, TrackSource};
use tern::node::arena::Arena;

struct Counting;

thread_local! {
    // Per thread, so tests running side by side do not count each other.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const FAN_OUT: u64 = 10;

fn room(now: Instant) -> Room {
    let mut room = Room::new(RoomId("allocations".into()), Duration::from_millis(500));
    for id in 0..=FAN_OUT {
        let member = MemberInfo {
            identity: id.to_string(),
            name: id.to_string(),
            can_publish: true,
            can_subscribe: true,
        };
        room.join(ParticipantId(id), member).unwrap();
    }
    let publication = PublicationInfo {
        owner: ParticipantId(0),
        source: TrackSource::Camera,
        codec: Codec::Vp8,
    };
    room.publish(TrackId(1), publication).unwrap();
    for id in 1..=FAN_OUT {
        room.attach(TrackId(1), ParticipantId(id), SinkId(id), 0, 0, now)
            .unwrap();
    }
    while room.poll_output().is_some() {}
    room
}

fn inbound(seq: u16, keyframe_start: bool) -> InboundPacket {
    InboundPacket {
        ssrc: 7,
        sequence_number: seq,
        timestamp: u32::from(seq).wrapping_mul(3000),
        keyframe_start,
        payload_bytes: 1000,
        ..InboundPacket::default()
    }
}

#[test]
fn forwarding_decisions_allocate_nothing_over_sequence_wraps() {
    let start = Instant::now();
    let mut room = room(start);
    let mut copies = 0u64;
    // Warm-up: the first keyframe starts every subscription, meters fill their windows.
    for seq in 0..2_000u16 {
        let now = start + Duration::from_millis(u64::from(seq));
        room.forward(TrackId(1), &inbound(seq, seq == 0), now, |_| {});
        while room.poll_output().is_some() {}
    }
    let before = allocations();
    // 200,000 packets: the sequence number wraps three times and simulated minutes pass.
    for n in 2_000u32..202_000 {
        let seq = n as u16;
        let now = start + Duration::from_millis(u64::from(n));
        room.forward(TrackId(1), &inbound(seq, false), now, |_| copies += 1);
    }
    let made = allocations() - before;
    assert_eq!(
        copies,
        200_000 * FAN_OUT,
        "every subscriber got every packet"
    );
    assert_eq!(
        made, 0,
        "{made} allocations in {copies} forwarding decisions"
    );
}

#[test]
fn a_rewritten_header_is_one_allocation_that_rtc_never_grows() {
    let publisher = ExtensionIds::from_negotiated([
        (1, HeaderExtension::AudioLevel.uri()),
        (3, HeaderExtension::TransportCc.uri()),
        (13, HeaderExtension::VideoOrientation.uri()),
    ]);
    let subscriber = ExtensionIds::from_negotiated([
        (4, HeaderExtension::Mid.uri()),
        (13, HeaderExtension::VideoOrientation.uri()),
        (5, HeaderExtension::TransportCc.uri()),
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
                    id: 1,
                    payload: Bytes::from_static(&[0x85]),
                },
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
    let twcc = Bytes::from_static(&[0, 9]);
    let copy = |seq: u16| {
        let mut out = rewrite(&packet, &target, seq, u32::from(seq));
        // What rtc's transport-wide congestion control interceptor does to every copy.
        out.header.set_extension(5, twcc.clone()).unwrap();
        out
    };
    drop(copy(0)); // anything initialised once
    let before = allocations();
    for seq in 1..=10_000u16 {
        let out = copy(seq);
        // Orientation (translated), mid, transport-cc; audio level is not negotiated.
        assert_eq!(out.header.extensions.len(), 3);
    }
    assert_eq!(allocations() - before, 10_000);
}

#[test]
fn renumbered_vp8_payloads_share_arena_chunks() {
    // A VP8 descriptor with a 15-bit PictureID and TL0PICIDX, then 1,200 bytes of frame.
    let mut source = vec![0x90, 0xe0, 0x80, 0x01, 0x05, 0x00];
    source.resize(1_206, 0xab);
    let mut arena = Arena::new(64 * 1024);
    let before = allocations();
    let mut kept = Vec::with_capacity(10_000);
    for n in 0..10_000u16 {
        let mut payload = arena.copy(&source);
        vp8::rewrite(&mut payload, Some(n & 0x7fff), Some(n as u8));
        kept.push(payload.freeze());
    }
    let made = allocations() - before;
    // Two per chunk of 54 payloads (the chunk, and the reference count `bytes` gives it when
    // the first buffer is cut from it), however long the buffers are kept.
    // (The first chunk is made by the first copy.)
    let chunks = 10_000u64.div_ceil((64 * 1024 / source.len()) as u64) + 1;
    assert!(made <= 2 * chunks, "{made} allocations for 10,000 payloads");
    assert_eq!(&kept[9_999][6..], &source[6..]);
    assert_eq!(
        vp8::parse(&kept[9_999]).unwrap().picture_id.unwrap().value,
        9_999
    );
}
