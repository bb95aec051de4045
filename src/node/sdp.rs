//! Reading the parts of a client's SDP the relay decides on: which m-lines send what.

use crate::media::codec::{Codec, MediaKind};
use rtc::sdp::description::session::SessionDescription;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// Whether the client sends media on an m-line with this direction.
    pub fn client_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// One m-line of an SDP.
#[derive(Debug, Clone)]
pub struct Section {
    pub mid: String,
    /// `None` for data channels and media kinds the relay does not forward.
    pub kind: Option<MediaKind>,
    pub direction: Direction,
    /// Codecs the relay forwards, in the client's order of preference.
    pub codecs: Vec<Codec>,
    /// Port 0: the m-line is rejected or removed.
    pub rejected: bool,
}

impl Section {
    /// The codec the relay will receive on this m-line: the client's first choice among the
    /// ones it forwards.
    pub fn codec(&self) -> Option<Codec> {
        self.codecs.first().copied()
    }
}

pub fn sections(description: &SessionDescription) -> Vec<Section> {
    description
        .media_descriptions
        .iter()
        .map(|media| {
            let kind = match media.media_name.media.as_str() {
                "audio" => Some(MediaKind::Audio),
                "video" => Some(MediaKind::Video),
                _ => None,
            };
            let direction = if media.has_attribute("sendonly") {
                Direction::SendOnly
            } else if media.has_attribute("recvonly") {
                Direction::RecvOnly
            } else if media.has_attribute("inactive") {
                Direction::Inactive
            } else {
                Direction::SendRecv
            };
            let by_pt = media.codecs();
            let codecs = media
                .media_name
                .formats
                .iter()
                .filter_map(|pt| pt.parse::<u8>().ok())
                .filter_map(|pt| by_pt.get(&pt))
                .filter_map(|c| {
                    let prefix = match kind? {
                        MediaKind::Audio => "audio/",
                        MediaKind::Video => "video/",
                    };
                    Codec::from_mime_type(&format!("{prefix}{}", c.name))
                })
                .fold(Vec::new(), |mut list, codec| {
                    if !list.contains(&codec) {
                        list.push(codec);
                    }
                    list
                });
            Section {
                mid: media
                    .attribute("mid")
                    .flatten()
                    .unwrap_or_default()
                    .to_owned(),
                kind,
                direction,
                codecs,
                rejected: media.media_name.port.value == 0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const OFFER: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1 2\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtpmap:0 PCMU/8000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102 96\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:1\r\n\
a=sendrecv\r\n\
a=rtpmap:102 H264/90000\r\n\
a=rtpmap:96 VP8/90000\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 102\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:2\r\n\
a=inactive\r\n\
a=rtpmap:102 H264/90000\r\n";

    #[test]
    fn sections_report_mid_direction_and_forwardable_codecs() {
        let parsed = SessionDescription::unmarshal(&mut Cursor::new(OFFER.as_bytes())).unwrap();
        let s = sections(&parsed);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].mid, "0");
        assert_eq!(s[0].kind, Some(MediaKind::Audio));
        assert_eq!(s[0].direction, Direction::SendOnly);
        assert_eq!(s[0].codec(), Some(Codec::Opus));
        assert_eq!(s[1].direction, Direction::SendRecv);
        assert_eq!(s[1].codecs, vec![Codec::Vp8], "H264 is not forwarded (yet)");
        assert!(s[2].rejected);
        assert_eq!(s[2].codec(), None);
        assert!(!s[2].direction.client_sends());
    }
}
