//! Synthetic Opus and VP8 payloads, each packet stamped so receivers can measure what arrived.
//!
//! The relay looks into VP8 payloads (RFC 7741) to find keyframes, so the video here is framed
//! like a real encoder's: a payload descriptor on every packet (S=1 on a frame's first), the VP8
//! payload header on the first (P=0 on keyframes, with the keyframe start code), frames split
//! into packets of at most [`MAX_PAYLOAD_BYTES`]. The stamp sits behind those headers, where a
//! decoder would find compressed data, so nothing the relay reads is disturbed.

/// The payload bytes of one packet at most, as browsers keep RTP packets under a typical MTU.
pub const MAX_PAYLOAD_BYTES: usize = 1150;
/// One Opus packet of 20 ms at about 32 kbit/s, as browsers send speech.
pub const OPUS_PAYLOAD_BYTES: usize = 80;
/// Keyframes are this many times a delta frame (real encoders' are several times larger).
pub const KEYFRAME_FACTOR: usize = 4;

const MAGIC: [u8; 4] = *b"TnLT";
/// Magic, stream id, counter, send time.
pub const STAMP_BYTES: usize = 4 + 4 + 8 + 8;
/// Opus TOC: config 15 (hybrid fullband, 20 ms), mono, one frame: what browsers send for speech.
const OPUS_TOC: u8 = 0x78;
/// X=1 with a 15-bit PictureID (I=1, M=1), as libwebrtc writes it.
const VP8_DESCRIPTOR_BYTES: usize = 4;
const VP8_HEADER_BYTES: usize = 3;
/// Start code and 640x480 (RFC 6386 §9.1), behind the frame tag of a keyframe.
const VP8_KEYFRAME_EXTRA: [u8; 7] = [0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];

/// What every synthetic packet carries, so a receiver knows which packet of which stream it
/// got and when it left (both ends share one process, hence one clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub stream: u32,
    pub counter: u64,
    pub sent_ns: u64,
}

impl Stamp {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.sent_ns.to_be_bytes());
    }

    fn read_at(payload: &[u8], at: usize) -> Option<Stamp> {
        let bytes = payload.get(at..at + STAMP_BYTES)?;
        if bytes[..4] != MAGIC {
            return None;
        }
        Some(Stamp {
            stream: u32::from_be_bytes(bytes[4..8].try_into().ok()?),
            counter: u64::from_be_bytes(bytes[8..16].try_into().ok()?),
            sent_ns: u64::from_be_bytes(bytes[16..24].try_into().ok()?),
        })
    }

    /// The stamp of a received Opus or VP8 payload, if it carries one.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        // Behind the Opus TOC byte; a VP8 descriptor's second byte is never the magic's first.
        Stamp::read_at(payload, 1).or_else(|| Stamp::read_at(payload, vp8_stamp_offset(payload)?))
    }
}

/// One Opus packet: the TOC byte, the stamp, filler.
pub fn opus_payload(stamp: &Stamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(OPUS_PAYLOAD_BYTES);
    out.push(OPUS_TOC);
    stamp.write(&mut out);
    out.resize(OPUS_PAYLOAD_BYTES, 0);
    out
}

/// The packets of VP8 frames at a chosen size, with a running PictureID.
#[derive(Debug)]
pub struct Vp8Packetizer {
    delta_frame_bytes: usize,
    picture_id: u16,
    /// Fill frames with pseudo-random bytes instead of zeros (xorshift state; 0: zeros).
    noise: u64,
}

impl Vp8Packetizer {
    /// Frames of `bitrate_bps / fps` bytes (keyframes [`KEYFRAME_FACTOR`] times that).
    pub fn new(bitrate_bps: u64, fps: u32) -> Self {
        let bytes = bitrate_bps / 8 / u64::from(fps.max(1));
        Vp8Packetizer {
            delta_frame_bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
            picture_id: 0,
            noise: 0,
        }
    }

    /// Frames that look end-to-end encrypted: behind the clear VP8 header and the stamp, bytes
    /// as random as ciphertext (the relay must not care).
    pub fn encrypted(mut self, on: bool) -> Self {
        self.noise = if on { 0x9e37_79b9_7f4a_7c15 } else { 0 };
        self
    }

    /// The payloads of one frame, in order; packet `i` carries `counter + i` in its stamp. The
    /// last one gets the RTP marker bit.
    pub fn frame(
        &mut self,
        keyframe: bool,
        stream: u32,
        counter: u64,
        sent_ns: u64,
    ) -> Vec<Vec<u8>> {
        let frame_bytes = if keyframe {
            self.delta_frame_bytes.saturating_mul(KEYFRAME_FACTOR)
        } else {
            self.delta_frame_bytes
        };
        let first_overhead = VP8_DESCRIPTOR_BYTES
            + VP8_HEADER_BYTES
            + if keyframe {
                VP8_KEYFRAME_EXTRA.len()
            } else {
                0
            }
            + STAMP_BYTES;
        let packets = frame_bytes.div_ceil(MAX_PAYLOAD_BYTES).max(1);
        // Near-equal packets, as libwebrtc splits a frame; each at least holds its headers.
        let base = frame_bytes / packets;
        let extra = frame_bytes % packets;
        let picture_id = self.picture_id;
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        (0..packets)
            .map(|i| {
                let first = i == 0;
                let size = (base + usize::from(i < extra))
                    .max(if first {
                        first_overhead
                    } else {
                        VP8_DESCRIPTOR_BYTES + STAMP_BYTES
                    })
                    .min(MAX_PAYLOAD_BYTES.max(first_overhead));
                let mut out = Vec::with_capacity(size);
                // RFC 7741 §4.2: X=1, S on the frame's first packet, PID=0; I=1; M=1 and the
                // 15-bit PictureID.
                out.push(0x80 | if first { 0x10 } else { 0 });
                out.push(0x80);
                out.push(0x80 | (picture_id >> 8) as u8);
                out.push(picture_id as u8);
                if first {
                    // RFC 6386 §9.1 frame tag: P (0 = keyframe), version 0, show_frame=1, and
                    // the first partition's size (the rest of this packet, as if one partition).
                    let partition = (size - first_overhead + STAMP_BYTES) as u32 & 0x7_ffff;
                    let tag = u32::from(!keyframe) | 0x10 | (partition << 5);
                    out.extend_from_slice(&tag.to_le_bytes()[..3]);
                    if keyframe {
                        out.extend_from_slice(&VP8_KEYFRAME_EXTRA);
                    }
                }
                Stamp {
                    stream,
                    counter: counter + i as u64,
                    sent_ns,
                }
                .write(&mut out);
                if self.noise == 0 {
                    out.resize(size, 0);
                } else {
                    while out.len() < size {
                        self.noise ^= self.noise << 13;
                        self.noise ^= self.noise >> 7;
                        self.noise ^= self.noise << 17;
                        let word = self.noise.to_le_bytes();
                        let take = (size - out.len()).min(word.len());
                        out.extend_from_slice(&word[..take]);
                    }
                }
                out
            })
            .collect()
    }
}

/// Where the stamp starts in a VP8 payload: behind the descriptor, and on a frame's first
/// packet behind the payload header too.
fn vp8_stamp_offset(payload: &[u8]) -> Option<usize> {
    let first = *payload.first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let flags = *payload.get(at)?;
        at += 1;
        if flags & 0x80 != 0 {
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if flags & 0x40 != 0 {
            at += 1;
        }
        if flags & 0x30 != 0 {
            at += 1;
        }
    }
    let start_of_frame = first & 0x10 != 0 && first & 0x07 == 0;
    if start_of_frame {
        let keyframe = payload.get(at)? & 0x01 == 0;
        at += VP8_HEADER_BYTES
            + if keyframe {
                VP8_KEYFRAME_EXTRA.len()
            } else {
                0
            };
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Codec;

    /// The relay's own keyframe detection.
    fn is_vp8_keyframe_start(payload: &[u8]) -> bool {
        Codec::Vp8.is_keyframe_start(payload)
    }

    #[test]
    fn opus_stamp_round_trips() {
        let stamp = Stamp {
            stream: 7,
            counter: 1 << 40,
            sent_ns: 123_456_789,
        };
        let payload = opus_payload(&stamp);
        assert_eq!(payload.len(), OPUS_PAYLOAD_BYTES);
        assert_eq!(payload[0], OPUS_TOC);
        assert_eq!(Stamp::read(&payload), Some(stamp));
    }

    #[test]
    fn encrypted_looking_frames_keep_their_clear_bytes_and_stamps() {
        let mut plain = Vp8Packetizer::new(500_000, 30);
        let mut sealed = Vp8Packetizer::new(500_000, 30).encrypted(true);
        let (a, b) = (
            plain.frame(true, 3, 100, 42),
            sealed.frame(true, 3, 100, 42),
        );
        assert_eq!(a.len(), b.len());
        for (p, s) in a.iter().zip(&b) {
            assert_eq!(p.len(), s.len());
            let clear = VP8_DESCRIPTOR_BYTES + STAMP_BYTES;
            assert_eq!(Stamp::read(p), Stamp::read(s));
            assert!(s[clear + 16..].iter().any(|byte| *byte != 0));
            assert!(p[p.len() - 16..].iter().all(|byte| *byte == 0));
        }
        assert!(is_vp8_keyframe_start(&b[0]));
        let delta = sealed.frame(false, 3, 108, 43);
        assert!(!is_vp8_keyframe_start(&delta[0]));
    }

    #[test]
    fn vp8_frames_are_split_and_stamped() {
        // 500 kbit/s at 30 fps: 2,083 bytes a delta frame, two packets; keyframes four times that.
        let mut vp8 = Vp8Packetizer::new(500_000, 30);
        let key = vp8.frame(true, 3, 100, 42);
        assert_eq!(key.len(), 8);
        assert!(key.iter().all(|p| p.len() <= MAX_PAYLOAD_BYTES));
        assert!(is_vp8_keyframe_start(&key[0]));
        assert!(!is_vp8_keyframe_start(&key[1]));
        for (i, packet) in key.iter().enumerate() {
            let stamp = Stamp::read(packet).expect("stamped");
            assert_eq!(
                (stamp.stream, stamp.counter, stamp.sent_ns),
                (3, 100 + i as u64, 42)
            );
            assert_eq!(
                packet[0] & 0x10 != 0,
                i == 0,
                "S bit only on the first packet"
            );
        }
        let delta = vp8.frame(false, 3, 108, 43);
        assert_eq!(delta.len(), 2);
        assert_eq!(delta.iter().map(Vec::len).sum::<usize>(), 2083);
        assert!(!is_vp8_keyframe_start(&delta[0]));
        assert_eq!(Stamp::read(&delta[1]).unwrap().counter, 109);
        // The PictureID runs on (15 bits, M=1).
        assert_eq!(u16::from_be_bytes([key[0][2], key[0][3]]), 0x8000);
        assert_eq!(u16::from_be_bytes([delta[0][2], delta[0][3]]), 0x8001);
    }

    #[test]
    fn tiny_frames_still_hold_their_headers() {
        let mut vp8 = Vp8Packetizer::new(1_000, 30);
        let key = vp8.frame(true, 1, 0, 0);
        assert_eq!(key.len(), 1);
        assert!(is_vp8_keyframe_start(&key[0]));
        assert_eq!(Stamp::read(&key[0]).unwrap().stream, 1);
    }

    #[test]
    fn foreign_payloads_have_no_stamp() {
        assert_eq!(Stamp::read(&[]), None);
        assert_eq!(Stamp::read(&[0x10, 0x00, 0x9d]), None);
        assert_eq!(Stamp::read(&[0x78; 40]), None);
    }
}
