//! VP9 RTP payload (RFC 9628 §4.2): is this the first packet of a keyframe?

/// Starts a keyframe: B=1 (start of a frame), P=0 (not inter-picture predicted) and, when layer
/// indices are present, spatial layer 0 (the layer a decoder can start from).
pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let picture_id_present = first & 0x80 != 0;
    let inter_predicted = first & 0x40 != 0;
    let layers_present = first & 0x20 != 0;
    let start_of_frame = first & 0x08 != 0;
    if inter_predicted || !start_of_frame {
        return false;
    }
    let mut at = 1;
    if picture_id_present {
        let Some(&picture_id) = payload.get(at) else {
            return false;
        };
        at += if picture_id & 0x80 != 0 { 2 } else { 1 };
    }
    if layers_present {
        let Some(&layer) = payload.get(at) else {
            return false;
        };
        let spatial_id = (layer >> 1) & 0x07;
        return spatial_id == 0;
    }
    payload.len() > at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_starts_are_found() {
        // I=1 (15-bit picture id), B=1, P=0, then payload.
        assert!(is_keyframe_start(&[0x88, 0x80, 0x01, 0xaa]));
        // P=1: inter frame.
        assert!(!is_keyframe_start(&[0xc8, 0x80, 0x01, 0xaa]));
        // B=0: not the start of the frame.
        assert!(!is_keyframe_start(&[0x80, 0x80, 0x01, 0xaa]));
        // L=1 with spatial layer 0 and 1.
        assert!(is_keyframe_start(&[0xa8, 0x05, 0x00, 0x00]));
        assert!(!is_keyframe_start(&[0xa8, 0x05, 0x02, 0x00]));
    }

    #[test]
    fn truncated_payloads_are_never_keyframes() {
        for bytes in [&[][..], &[0x88], &[0x88, 0x80], &[0xa8], &[0x08]] {
            assert!(!is_keyframe_start(bytes), "{bytes:?}");
        }
    }
}
