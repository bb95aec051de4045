//! The codecs the relay forwards, and what it must know of each payload (keyframes).

mod vp8;

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
}

impl Codec {
    pub const ALL: [Codec; 2] = [Codec::Opus, Codec::Vp8];

    pub fn mime_type(self) -> &'static str {
        match self {
            Codec::Opus => "audio/opus",
            Codec::Vp8 => "video/VP8",
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
            Codec::Vp8 => MediaKind::Video,
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Vp8 => 90_000,
        }
    }

    /// Whether a decoder can start at this packet: the first packet of a keyframe for video,
    /// any packet for audio. Malformed payloads are never a keyframe.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Codec::Opus => true,
            Codec::Vp8 => vp8::is_keyframe_start(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_match_case_insensitively() {
        assert_eq!(Codec::from_mime_type("video/vp8"), Some(Codec::Vp8));
        assert_eq!(Codec::from_mime_type("AUDIO/OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_mime_type("video/H264"), None);
    }
}
