//! VP8 RTP payload (RFC 7741): is this the first packet of a keyframe?

/// RFC 7741 §4.2 payload descriptor, then §4.3 payload header: a keyframe starts in a packet with
/// S=1 and PID=0 whose VP8 payload header has the inverse key-frame flag P cleared.
pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start_of_partition = first & 0x10 != 0;
    let partition_id = first & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&flags) = payload.get(at) else {
            return false;
        };
        at += 1;
        if flags & 0x80 != 0 {
            // PictureID: 7 or 15 bits, the M bit says which.
            let Some(&picture_id) = payload.get(at) else {
                return false;
            };
            at += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if flags & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if flags & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    payload.get(at).is_some_and(|header| header & 0x01 == 0)
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
}
