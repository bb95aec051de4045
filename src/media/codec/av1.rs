//! AV1 RTP payload (the AOMedia "RTP Payload Format for AV1", §4.4): is this the first packet of
//! a keyframe?
//!
//! The aggregation header's N bit marks the first packet of a coded video sequence, which is where
//! a decoder can start; libwebrtc sets it on every keyframe. A sequence header as the first
//! whole OBU is taken as the same sign, for packetizers that leave N clear.

/// OBU type of a sequence header (AV1 specification §6.2.2).
const OBU_SEQUENCE_HEADER: u8 = 1;

pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&aggregation) = payload.first() else {
        return false;
    };
    let continues_fragment = aggregation & 0x80 != 0;
    let new_sequence = aggregation & 0x08 != 0;
    let elements = (aggregation >> 4) & 0x03;
    if continues_fragment {
        return false;
    }
    // With W = 1 the only element has no length field; otherwise the first one does.
    let obu_at = if elements == 1 {
        Some(1)
    } else {
        leb128_len(&payload[1..]).and_then(|(length, bytes)| (length > 0).then_some(1 + bytes))
    };
    let Some(&obu_header) = obu_at.and_then(|at| payload.get(at)) else {
        return false;
    };
    let forbidden = obu_header & 0x80 != 0;
    if forbidden {
        return false;
    }
    new_sequence || (obu_header >> 3) & 0x0f == OBU_SEQUENCE_HEADER
}

/// A LEB128 value (at most 8 bytes, AV1 specification §4.10.5) and the bytes it took.
fn leb128_len(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // OBU headers (type << 3, has_size_field set): sequence header, frame.
    const SEQUENCE_HEADER: u8 = (1 << 3) | 0x02;
    const FRAME: u8 = (6 << 3) | 0x02;

    #[test]
    fn keyframe_starts_are_found() {
        // N=1, W=2: the first element has a length, then a sequence header.
        assert!(is_keyframe_start(&[
            0x28,
            0x03,
            SEQUENCE_HEADER,
            0x00,
            0x00
        ]));
        // N=1, W=1: one element, no length field.
        assert!(is_keyframe_start(&[0x18, FRAME, 0x00]));
        // N=0 but a sequence header first (a packetizer that leaves N clear).
        assert!(is_keyframe_start(&[0x10, SEQUENCE_HEADER, 0x00]));
        // W=0: every element has a length; a long (two-byte) length.
        assert!(is_keyframe_start(&[0x08, 0x81, 0x01, FRAME, 0x00]));
    }

    #[test]
    fn other_packets_are_not_keyframe_starts() {
        // A delta frame: N=0, a frame OBU.
        assert!(!is_keyframe_start(&[0x10, FRAME, 0x00]));
        // Z=1: continues a fragment, even with N set.
        assert!(!is_keyframe_start(&[0x98, SEQUENCE_HEADER, 0x00]));
        // The forbidden bit set.
        assert!(!is_keyframe_start(&[0x18, 0x80 | SEQUENCE_HEADER]));
    }

    #[test]
    fn truncated_or_malformed_payloads_are_never_keyframes() {
        let cases: [&[u8]; 6] = [
            &[],
            &[0x18],
            &[0x28],
            &[0x28, 0x00, SEQUENCE_HEADER],
            &[0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0x28, 0x03],
        ];
        for bytes in cases {
            assert!(!is_keyframe_start(bytes), "{bytes:?}");
        }
    }
}
