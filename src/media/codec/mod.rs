//! The codecs the relay forwards, and what it must know of each payload (keyframes).

mod av1;
mod h264;
pub mod vp8;
mod vp9;

pub use vp8::Vp8Descriptor;

/// Audio or video; the two kinds the relay forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl Codec {
    pub const ALL: [Codec; 5] = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1];

    pub fn mime_type(self) -> &'static str {
        match self {
            Codec::Opus => "audio/opus",
            Codec::Vp8 => "video/VP8",
            Codec::Vp9 => "video/VP9",
            Codec::H264 => "video/H264",
            Codec::Av1 => "video/AV1",
        }
    }

    /// Case-insensitive, as SDP encoding names are (RFC 8866 §6.6).
    pub fn from_mime_type(mime: &str) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.mime_type().eq_ignore_ascii_case(mime))
    }

    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus => MediaKind::Audio,
            Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1 => MediaKind::Video,
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1 => 90_000,
        }
    }

    /// What the relay reads from one payload: where a decoder can start, the frame size when the
    /// payload says it, and VP8's descriptor fields (rewritten on layer switches).
    pub fn inspect(self, payload: &[u8]) -> PayloadInfo {
        match self {
            Codec::Vp8 => match vp8::parse(payload) {
                Some(d) => PayloadInfo {
                    keyframe_start: d.keyframe_start,
                    resolution: d.resolution,
                    vp8: Some(d),
                },
                None => PayloadInfo::default(),
            },
            _ => PayloadInfo {
                keyframe_start: self.is_keyframe_start(payload),
                ..PayloadInfo::default()
            },
        }
    }

    /// Whether a decoder can start at this packet: the first packet of a keyframe for video,
    /// any packet for audio. Malformed payloads are never a keyframe.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Opus => true,
            Codec::Vp8 => vp8::is_keyframe_start(payload),
            Codec::Vp9 => vp9::is_keyframe_start(payload),
            Codec::H264 => h264::is_keyframe_start(payload),
            Codec::Av1 => av1::is_keyframe_start(payload),
        }
    }
}

/// What [`Codec::inspect`] found in one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadInfo {
    pub keyframe_start: bool,
    pub resolution: Option<(u16, u16)>,
    pub vp8: Option<Vp8Descriptor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_match_case_insensitively() {
        assert_eq!(Codec::from_mime_type("video/vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime_type("AUDIO/OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime_type("video/h264"), Some(Codec::H264));
        assert_eq!(Codec::from_mime_type("video/av1"), Some(Codec::Av1));
        assert_eq!(Codec::from_mime_type("video/H265"), None);
    }
}
