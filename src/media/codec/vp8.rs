//! VP8 RTP payload (RFC 7741): the payload descriptor's fields the relay reads and rewrites, and
//! whether a packet starts a keyframe (with the frame's size, from the keyframe header).

/// What the relay reads from one VP8 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Descriptor {
    /// The first packet of a keyframe: S=1, PID=0, and the inverse key-frame flag P clear
    /// (RFC 7741 §4.2 and §4.3).
    pub keyframe_start: bool,
    /// Width and height from the keyframe header (RFC 6386 §9.1), on keyframe starts only.
    pub resolution: Option<(u16, u16)>,
    pub picture_id: Option<PictureId>,
    /// TL0PICIDX: the index of the last base-temporal-layer picture.
    pub tl0_picture_index: Option<u8>,
    /// The temporal layer of this picture (TID), when the descriptor carries it.
    pub temporal_id: Option<u8>,
    /// The Y bit: this picture depends only on the base layer, so forwarding its temporal layer
    /// may begin here.
    pub layer_sync: bool,
    /// The first packet of a picture (S=1, PID=0).
    pub picture_start: bool,
}

/// A PictureID and how wide the publisher writes it (the M bit: 7 or 15 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureId {
    pub value: u16,
    pub wide: bool,
}

impl PictureId {
    /// The value space this PictureID lives in.
    pub fn modulus(self) -> u16 {
        if self.wide { 0x8000 } else { 0x80 }
    }
}

/// Byte offsets of the rewritable descriptor fields within one payload.
struct Layout {
    picture_id_at: Option<(usize, bool)>,
    tl0_at: Option<usize>,
    tid_at: Option<usize>,
    header_at: usize,
}

fn layout(payload: &[u8]) -> Option<Layout> {
    let first = *payload.first()?;
    let mut layout = Layout {
        picture_id_at: None,
        tl0_at: None,
        tid_at: None,
        header_at: 1,
    };
    if first & 0x80 == 0 {
        return Some(layout);
    }
    let flags = *payload.get(1)?;
    let mut at = 2;
    if flags & 0x80 != 0 {
        let wide = *payload.get(at)? & 0x80 != 0;
        layout.picture_id_at = Some((at, wide));
        at += if wide { 2 } else { 1 };
    }
    if flags & 0x40 != 0 {
        layout.tl0_at = Some(at);
        at += 1;
    }
    if flags & 0x30 != 0 {
        if flags & 0x20 != 0 {
            layout.tid_at = Some(at);
        }
        at += 1;
    }
    layout.header_at = at;
    (at <= payload.len()).then_some(layout)
}

/// Reads the descriptor; `None` for a payload too short to hold the one it announces.
pub fn parse(payload: &[u8]) -> Option<Vp8Descriptor> {
    let layout = layout(payload)?;
    let first = payload[0];
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    let mut descriptor = Vp8Descriptor::default();
    if let Some((at, wide)) = layout.picture_id_at {
        let value = if wide {
            u16::from_be_bytes([*payload.get(at)? & 0x7f, *payload.get(at + 1)?])
        } else {
            u16::from(payload[at] & 0x7f)
        };
        descriptor.picture_id = Some(PictureId { value, wide });
    }
    descriptor.tl0_picture_index = layout.tl0_at.and_then(|at| payload.get(at).copied());
    let tid_byte = layout.tid_at.and_then(|at| payload.get(at)).copied();
    descriptor.temporal_id = tid_byte.map(|b| b >> 6);
    descriptor.layer_sync = tid_byte.is_some_and(|b| b & 0x20 != 0);
    descriptor.picture_start = start_of_partition && partition_id == 0;
    let header = &payload[layout.header_at..];
    descriptor.keyframe_start = start_of_partition
        && partition_id == 0
        && header.first().is_some_and(|tag| tag & 0x01 == 0);
    if descriptor.keyframe_start {
        descriptor.resolution = keyframe_resolution(header);
    }
    Some(descriptor)
}

/// RFC 6386 §9.1: a 3-byte frame tag, the start code 9d 01 2a, then 14-bit width and height
/// (little endian, the top two bits are scaling).
fn keyframe_resolution(header: &[u8]) -> Option<(u16, u16)> {
    if header.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([header[6], *header.get(7)?]) & 0x3fff;
    let height = u16::from_le_bytes([*header.get(8)?, *header.get(9)?]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    parse(payload).is_some_and(|d| d.keyframe_start)
}

/// Writes a new PictureID and TL0PICIDX into a descriptor that carries them (in place; the
/// PictureID keeps the publisher's width). Fields the payload does not carry are left alone.
pub fn rewrite(payload: &mut [u8], picture_id: Option<u16>, tl0_picture_index: Option<u8>) {
    let Some(layout) = layout(payload) else {
        return;
    };
    if let (Some((at, wide)), Some(value)) = (layout.picture_id_at, picture_id) {
        if wide && at + 1 < payload.len() {
            let [high, low] = (value & 0x7fff).to_be_bytes();
            payload[at] = 0x80 | high;
            payload[at + 1] = low;
        } else if !wide {
            payload[at] = (value & 0x7f) as u8;
        }
    }
    if let (Some(at), Some(value)) = (layout.tl0_at, tl0_picture_index) {
        payload[at] = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_found_behind_every_descriptor_shape() {
        // Minimal descriptor: S=1, PID=0, then a keyframe header (P=0).
        assert!(is_keyframe_start(&[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Same with P=1: an interframe.
        assert!(!is_keyframe_start(&[0x10, 0x01]));
        // Not the start of partition 0.
        assert!(!is_keyframe_start(&[0x00, 0x00]));
        assert!(!is_keyframe_start(&[0x11, 0x00]));
        // X=1, I=1 with a 15-bit PictureID, L=1, T=1: header is at byte 6.
        assert!(is_keyframe_start(&[
            0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x00
        ]));
        assert!(!is_keyframe_start(&[
            0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x01
        ]));
        // X=1, I=1 with a 7-bit PictureID: header at byte 3.
        assert!(is_keyframe_start(&[0x90, 0x80, 0x12, 0x00]));
    }

    #[test]
    fn truncated_payloads_are_never_keyframes() {
        for bytes in [
            &[][..],
            &[0x10],
            &[0x90],
            &[0x90, 0x80],
            &[0x90, 0x80, 0x81],
            &[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40],
        ] {
            assert!(!is_keyframe_start(bytes), "{bytes:?}");
        }
    }

    /// X=1 I=1 L=1 T=1, 15-bit PictureID 0x0123, TL0PICIDX 5, TID 2, then a 640x360 keyframe.
    fn keyframe_640x360() -> Vec<u8> {
        let mut p = vec![0x90, 0xe0, 0x81, 0x23, 0x05, 0x80];
        p.extend_from_slice(&[0x50, 0x12, 0x00, 0x9d, 0x01, 0x2a]);
        p.extend_from_slice(&640u16.to_le_bytes());
        p.extend_from_slice(&360u16.to_le_bytes());
        p
    }

    #[test]
    fn descriptor_fields_and_keyframe_size_are_read() {
        let d = parse(&keyframe_640x360()).unwrap();
        assert!(d.keyframe_start);
        assert_eq!(d.resolution, Some((640, 360)));
        assert_eq!(
            d.picture_id,
            Some(PictureId {
                value: 0x0123,
                wide: true
            })
        );
        assert_eq!(d.tl0_picture_index, Some(5));
        assert_eq!(d.temporal_id, Some(2));
    }

    #[test]
    fn rewrite_changes_only_picture_id_and_tl0() {
        let mut p = keyframe_640x360();
        let before = p.clone();
        rewrite(&mut p, Some(0x7ffe), Some(250));
        let d = parse(&p).unwrap();
        assert_eq!(d.picture_id.unwrap().value, 0x7ffe);
        assert_eq!(d.tl0_picture_index, Some(250));
        assert_eq!(d.temporal_id, Some(2));
        assert_eq!(d.resolution, Some((640, 360)));
        assert_eq!(p[..2], before[..2]);
        assert_eq!(p[5..], before[5..]);
        // 7-bit PictureIDs stay 7 bits wide.
        let mut narrow = vec![0x90, 0x80, 0x12, 0x00];
        rewrite(&mut narrow, Some(0x1ff), None);
        assert_eq!(narrow, vec![0x90, 0x80, 0x7f, 0x00]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678u32;
        for len in 0..40 {
            for _ in 0..200 {
                let mut bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        state as u8
                    })
                    .collect();
                let _ = parse(&bytes);
                rewrite(&mut bytes, Some(1), Some(1));
            }
        }
    }
}
