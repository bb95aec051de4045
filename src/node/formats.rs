//! The codec formats the relay accepts from publishers and offers to subscribers.
//!
//! Publish legs accept what browsers offer: Opus, VP8, VP9 profile 0, and H.264 in the four
//! common profiles with both packetization modes, each video format with RTX. Subscribe legs
//! offer exactly the publisher's format for each track; for Opus that includes its stereo, FEC
//! and DTX properties, so the subscribe leg registers one payload type per combination (BUNDLE
//! requires one payload type to mean one configuration across m-lines).

use super::engine::LegRole;
use super::sdp::{opus_fmtp, same_format};
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

/// The formats of one leg role, in the relay's order of preference.
pub fn catalogue(role: LegRole) -> Vec<CatalogueFormat> {
    let mut formats = Vec::new();
    match role {
        // One Opus entry matches any Opus offer; the publisher's own parameters are read from
        // its offer.
        LegRole::Publish => formats.push(CatalogueFormat {
            codec: Codec::Opus,
            payload_type: 111,
            rtx_payload_type: None,
            fmtp: "minptime=10;useinbandfec=1".into(),
        }),
        LegRole::Subscribe => {
            for (i, (stereo, fec, dtx)) in [
                (false, true, false),
                (false, true, true),
                (false, false, false),
                (false, false, true),
                (true, true, false),
                (true, true, true),
                (true, false, false),
                (true, false, true),
            ]
            .into_iter()
            .enumerate()
            {
                formats.push(CatalogueFormat {
                    codec: Codec::Opus,
                    payload_type: 111 + i as u8,
                    rtx_payload_type: None,
                    fmtp: opus_fmtp(stereo, fec, dtx),
                });
            }
        }
    }
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
    formats
}

/// The catalogue format that is the same media format as `fmtp` of `codec`.
pub fn find(role: LegRole, codec: Codec, fmtp: &str) -> Option<CatalogueFormat> {
    catalogue(role).into_iter().find(|f| {
        f.codec == codec
            && (role == LegRole::Publish && codec == Codec::Opus
                || same_format(codec, &f.fmtp, fmtp))
    })
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
pub fn parameters(format: &CatalogueFormat, role: LegRole) -> RTCRtpCodecParameters {
    let mut rtcp_feedback = match format.codec.kind() {
        MediaKind::Audio => vec![],
        MediaKind::Video => vec![
            feedback("nack", ""),
            feedback("nack", "pli"),
            feedback("ccm", "fir"),
        ],
    };
    // Transport-wide feedback toward publishers (browsers ramp up slowly without it); subscribe
    // legs have no estimator to feed yet.
    if role == LegRole::Publish {
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

pub fn register(engine: &mut MediaEngine, role: LegRole) -> Result<(), RtcError> {
    for format in catalogue(role) {
        let kind = rtp_kind(format.codec.kind());
        engine.register_codec(parameters(&format, role), kind)?;
        if let Some(rtx) = rtx_parameters(&format) {
            engine.register_codec(rtx, kind)?;
        }
    }
    Ok(())
}

/// Codec preferences for a subscribe m-line carrying `first`: that format first (the relay will
/// send it), then every other format of the kind, so the subscriber's first answer tells the
/// relay everything it can receive (the `rtc` media engine fixes its negotiated codecs from it).
pub fn subscribe_preferences(first: &CatalogueFormat) -> Vec<RTCRtpCodecParameters> {
    let role = LegRole::Subscribe;
    let kind = first.codec.kind();
    let mut ordered = vec![first.clone()];
    ordered.extend(
        catalogue(role)
            .into_iter()
            .filter(|f| f.codec.kind() == kind && f != first),
    );
    let mut list = Vec::new();
    for format in &ordered {
        list.push(parameters(format, role));
        list.extend(rtx_parameters(format));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn payload_types_are_unique_per_role() {
        for role in [LegRole::Publish, LegRole::Subscribe] {
            let mut seen = HashSet::new();
            for f in catalogue(role) {
                assert!(
                    seen.insert(f.payload_type),
                    "{role:?} pt {} twice",
                    f.payload_type
                );
                if let Some(rtx) = f.rtx_payload_type {
                    assert!(seen.insert(rtx), "{role:?} rtx pt {rtx} twice");
                }
            }
            assert!(
                seen.iter().all(|pt| (96..=127).contains(pt)),
                "dynamic range only"
            );
        }
    }

    #[test]
    fn every_publisher_format_has_exactly_one_subscriber_format() {
        let h264 = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
        let found = find(LegRole::Subscribe, Codec::H264, h264).unwrap();
        assert_eq!(found.payload_type, 100);
        let found = find(
            LegRole::Subscribe,
            Codec::H264,
            "packetization-mode=0;profile-level-id=4d0032",
        )
        .unwrap();
        assert_eq!(
            found.payload_type, 123,
            "level does not matter, profile and mode do"
        );
        assert!(
            find(
                LegRole::Subscribe,
                Codec::H264,
                "packetization-mode=1;profile-level-id=f4001f"
            )
            .is_none()
        );
        let stereo_dtx = opus_fmtp(true, true, true);
        let found = find(LegRole::Subscribe, Codec::Opus, &stereo_dtx).unwrap();
        assert_eq!(found.fmtp, stereo_dtx);
        assert!(find(LegRole::Subscribe, Codec::Vp9, "profile-id=2").is_none());
        assert_eq!(
            find(LegRole::Publish, Codec::Opus, "anything")
                .unwrap()
                .payload_type,
            111
        );
    }
}
