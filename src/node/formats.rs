//! The codec formats the relay accepts from publishers and offers to subscribers.
//!
//! Publish legs accept what browsers offer: Opus, VP8, VP9 profile 0, H.264 in the four common
//! profiles with both packetization modes, and AV1 main profile, each video format with RTX. Subscribe legs
//! offer exactly the publisher's format for each video track. Opus is one format on subscribe
//! legs whatever the publisher's parameters: stereo, in-band FEC and DTX are receiver
//! preferences (RFC 7587 §6.1) and the Opus bitstream describes itself, so any Opus decoder
//! plays any Opus stream. (One payload type per parameter combination broke rooms whose
//! publishers differed: a subscriber's first answer accepts one Opus payload type, and every
//! later Opus track either had no payload type to go out with or repeated that one in offers.)

use super::role::LegRole;
use super::sdp::same_format;
use crate::media::codec::{Codec, MediaKind};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::shared::error::Error as RtcError;

/// One format in the relay's catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueFormat {
    pub codec: Codec,
    pub payload_type: u8,
    pub rtx_payload_type: Option<u8>,
    pub fmtp: String,
}

const H264_PROFILES: [(&str, u8, u8, u8, u8); 4] = [
    // profile-level-id, pt (mode 1), rtx, pt (mode 0), rtx
    ("42e01f", 100, 101, 119, 120),
    ("42001f", 102, 103, 121, 122),
    ("4d001f", 104, 105, 123, 124),
    ("64001f", 106, 107, 125, 126),
];

/// The relay's formats, in its order of preference. Both leg roles register them all; they
/// differ in the feedback they negotiate (see [`parameters`]).
pub fn catalogue() -> Vec<CatalogueFormat> {
    let mut formats = Vec::new();
    // One Opus entry: it matches any publisher's Opus, and goes to any subscriber.
    formats.push(CatalogueFormat {
        codec: Codec::Opus,
        payload_type: 111,
        rtx_payload_type: None,
        fmtp: "minptime=10;useinbandfec=1".into(),
    });
    formats.push(CatalogueFormat {
        codec: Codec::Vp8,
        payload_type: 96,
        rtx_payload_type: Some(97),
        fmtp: String::new(),
    });
    formats.push(CatalogueFormat {
        codec: Codec::Vp9,
        payload_type: 98,
        rtx_payload_type: Some(99),
        fmtp: "profile-id=0".into(),
    });
    for (profile, pt1, rtx1, pt0, rtx0) in H264_PROFILES {
        for (mode, pt, rtx) in [(1, pt1, rtx1), (0, pt0, rtx0)] {
            formats.push(CatalogueFormat {
                codec: Codec::H264,
                payload_type: pt,
                rtx_payload_type: Some(rtx),
                fmtp: format!(
                    "level-asymmetry-allowed=1;packetization-mode={mode};profile-level-id={profile}"
                ),
            });
        }
    }
    // AV1 last: browsers that offer it also offer VP8, which every subscriber can decode.
    formats.push(CatalogueFormat {
        codec: Codec::Av1,
        payload_type: 112,
        rtx_payload_type: Some(113),
        fmtp: "profile=0".into(),
    });
    formats
}

/// The catalogue format that carries `fmtp` of `codec`: for video the same media format, for
/// Opus the one Opus entry.
pub fn find(codec: Codec, fmtp: &str) -> Option<CatalogueFormat> {
    catalogue()
        .into_iter()
        .find(|f| f.codec == codec && (codec == Codec::Opus || same_format(codec, &f.fmtp, fmtp)))
}

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    }
}

pub fn rtp_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

/// The codec parameters of a catalogue format as registered on a leg of `role`.
pub fn parameters(
    format: &CatalogueFormat,
    role: LegRole,
    subscriber_feedback: bool,
) -> RTCRtpCodecParameters {
    let mut rtcp_feedback = match format.codec.kind() {
        MediaKind::Audio => vec![],
        MediaKind::Video => vec![
            feedback("nack", ""),
            feedback("nack", "pli"),
            feedback("ccm", "fir"),
        ],
    };
    // Transport-wide feedback: toward publishers, so browsers ramp up quickly; from
    // subscribers, for all their media, since the relay's estimate of their downlink is built
    // on it.
    let wanted = match role {
        LegRole::Subscribe => subscriber_feedback,
        LegRole::Publish => format.codec.kind() == MediaKind::Video,
    };
    if wanted {
        rtcp_feedback.push(feedback("transport-cc", ""));
    }
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: format.codec.mime_type().to_owned(),
            clock_rate: format.codec.clock_rate(),
            channels: if format.codec.kind() == MediaKind::Audio {
                2
            } else {
                0
            },
            sdp_fmtp_line: format.fmtp.clone(),
            rtcp_feedback,
        },
        payload_type: format.payload_type,
    }
}

/// The RTX (RFC 4588) parameters for a video format, if it has them.
pub fn rtx_parameters(format: &CatalogueFormat) -> Option<RTCRtpCodecParameters> {
    let rtx = format.rtx_payload_type?;
    Some(RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "video/rtx".to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: format!("apt={}", format.payload_type),
            rtcp_feedback: vec![],
        },
        payload_type: rtx,
    })
}

/// Registers the catalogue on a leg's engine. `rtx` off leaves RTX out (a publisher then
/// retransmits on the media stream itself).
pub fn register(
    engine: &mut MediaEngine,
    role: LegRole,
    subscriber_feedback: bool,
    rtx: bool,
) -> Result<(), RtcError> {
    register_formats(engine, &catalogue(), role, subscriber_feedback, rtx)
}

/// Registers `formats` (the catalogue's, or a WHEP viewer's with the viewer's payload types).
pub fn register_formats(
    engine: &mut MediaEngine,
    formats: &[CatalogueFormat],
    role: LegRole,
    subscriber_feedback: bool,
    rtx: bool,
) -> Result<(), RtcError> {
    for format in formats {
        let kind = rtp_kind(format.codec.kind());
        engine.register_codec(parameters(format, role, subscriber_feedback), kind)?;
        if let Some(rtx) = rtx_parameters(format).filter(|_| rtx) {
            engine.register_codec(rtx, kind)?;
        }
    }
    Ok(())
}

/// Codec preferences for a subscribe m-line carrying `format`.
///
/// Until the subscriber has answered an m-line of this kind, every format of the kind is
/// offered, `format` first (the relay will send it): the first answer tells the relay everything
/// the subscriber can receive, and `rtc` fixes the leg's codecs of that kind from it. After that
/// only `format` (and its RTX, if the subscriber took RTX) is offered, and only if the first answer
/// accepted it (`accepted` lists its payload types); `None` means the subscriber cannot receive
/// it. Offering anything the leg's codecs do not hold would make `rtc` map it onto another of
/// them, which repeats payload types in the offer.
pub fn subscribe_preferences(
    format: &CatalogueFormat,
    accepted: Option<&[u8]>,
    subscriber_feedback: bool,
) -> Option<Vec<RTCRtpCodecParameters>> {
    let role = LegRole::Subscribe;
    let Some(accepted) = accepted else {
        let kind = format.codec.kind();
        let mut ordered = vec![format.clone()];
        ordered.extend(
            catalogue()
                .into_iter()
                .filter(|f| f.codec.kind() == kind && f != format),
        );
        let mut list = Vec::new();
        for format in &ordered {
            list.push(parameters(format, role, subscriber_feedback));
            list.extend(rtx_parameters(format));
        }
        return Some(list);
    };
    if !accepted.contains(&format.payload_type) {
        return None;
    }
    let mut list = vec![parameters(format, role, subscriber_feedback)];
    if format
        .rtx_payload_type
        .is_some_and(|rtx| accepted.contains(&rtx))
    {
        list.extend(rtx_parameters(format));
    }
    Some(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn payload_types(list: &[RTCRtpCodecParameters]) -> Vec<u8> {
        list.iter().map(|c| c.payload_type).collect()
    }

    #[test]
    fn preferences_offer_everything_first_then_only_what_the_first_answer_took() {
        let vp9 = find(Codec::Vp9, "profile-id=0").unwrap();
        let first = subscribe_preferences(&vp9, None, true).unwrap();
        let pts = payload_types(&first);
        assert_eq!(
            &pts[..2],
            &[98, 99],
            "the track's own format first, with its RTX"
        );
        assert!(
            pts.contains(&96) && pts.contains(&100),
            "then every other video format"
        );
        let unique: HashSet<u8> = pts.iter().copied().collect();
        assert_eq!(unique.len(), pts.len(), "no payload type twice");
        // The subscriber took VP8 (with RTX) and VP9 without RTX.
        let accepted = [96, 97, 98];
        assert_eq!(
            payload_types(&subscribe_preferences(&vp9, Some(&accepted), true).unwrap()),
            vec![98]
        );
        let vp8 = find(Codec::Vp8, "").unwrap();
        assert_eq!(
            payload_types(&subscribe_preferences(&vp8, Some(&accepted), true).unwrap()),
            vec![96, 97]
        );
        let h264 = find(Codec::H264, "packetization-mode=1;profile-level-id=42e01f").unwrap();
        assert!(subscribe_preferences(&h264, Some(&accepted), true).is_none());
        // Audio: one Opus payload type, offered once.
        let opus = find(Codec::Opus, "stereo=1").unwrap();
        assert_eq!(
            payload_types(&subscribe_preferences(&opus, None, true).unwrap()),
            vec![111]
        );
        assert_eq!(
            payload_types(&subscribe_preferences(&opus, Some(&[111]), true).unwrap()),
            vec![111]
        );
    }

    #[test]
    fn payload_types_are_unique() {
        let mut seen = HashSet::new();
        for f in catalogue() {
            assert!(seen.insert(f.payload_type), "pt {} twice", f.payload_type);
            if let Some(rtx) = f.rtx_payload_type {
                assert!(seen.insert(rtx), "rtx pt {rtx} twice");
            }
        }
        assert!(
            seen.iter().all(|pt| (96..=127).contains(pt)),
            "dynamic range only"
        );
    }

    #[test]
    fn every_publisher_format_has_exactly_one_subscriber_format() {
        let h264 = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
        let found = find(Codec::H264, h264).unwrap();
        assert_eq!(found.payload_type, 100);
        let found = find(Codec::H264, "packetization-mode=0;profile-level-id=4d0032").unwrap();
        assert_eq!(
            found.payload_type, 123,
            "level does not matter, profile and mode do"
        );
        assert!(find(Codec::H264, "packetization-mode=1;profile-level-id=f4001f").is_none());
        // Every Opus, whatever its parameters, goes out as the one Opus format.
        for fmtp in [
            "minptime=10;stereo=1;useinbandfec=0;usedtx=1",
            "useinbandfec=1",
            "",
        ] {
            assert_eq!(find(Codec::Opus, fmtp).unwrap().payload_type, 111);
        }
        assert!(find(Codec::Vp9, "profile-id=2").is_none());
    }
}
