//! H.264 RTP payload (RFC 6184): is this the first packet of a keyframe?
//!
//! A decoder can start only where the sequence parameter set arrives (SPS, then PPS, then the
//! IDR slice), so a packet that carries an SPS is the start; an IDR slice alone is not (starting
//! there, the subscriber would lack the parameter sets and show nothing until the next keyframe).

const NAL_SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

pub(super) fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        NAL_SPS => true,
        STAP_A => stap_a_has_sps(&payload[1..]),
        FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == NAL_SPS),
        _ => false,
    }
}

fn stap_a_has_sps(mut units: &[u8]) -> bool {
    while units.len() >= 2 {
        let size = usize::from(u16::from_be_bytes([units[0], units[1]]));
        let Some(unit) = units.get(2..2 + size) else {
            return false;
        };
        if unit.first().is_some_and(|h| h & 0x1f == NAL_SPS) {
            return true;
        }
        units = &units[2 + size..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_carrying_an_sps_starts_a_keyframe() {
        assert!(
            is_keyframe_start(&[0x67, 0x42, 0x00, 0x1f]),
            "single SPS NAL"
        );
        // STAP-A: SPS (4 bytes), PPS (2 bytes), IDR (2 bytes).
        let stap = [
            0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88,
        ];
        assert!(is_keyframe_start(&stap));
        // FU-A start fragment of an SPS.
        assert!(is_keyframe_start(&[0x7c, 0x87, 0x42]));
    }

    #[test]
    fn idr_slices_and_others_do_not() {
        assert!(!is_keyframe_start(&[0x65, 0x88]), "IDR without SPS");
        assert!(!is_keyframe_start(&[0x7c, 0x85, 0x00]), "FU-A of an IDR");
        assert!(!is_keyframe_start(&[0x41, 0x9a]), "non-IDR slice");
        let stap_without_sps = [0x78, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88];
        assert!(!is_keyframe_start(&stap_without_sps));
    }

    #[test]
    fn truncated_aggregates_are_never_keyframes() {
        assert!(!is_keyframe_start(&[]));
        assert!(
            !is_keyframe_start(&[0x78, 0, 9, 0x67]),
            "size beyond the packet"
        );
        assert!(!is_keyframe_start(&[0x7c]), "FU-A without its header");
    }
}
