//! RTP header-extension mapping between a publisher's leg and a subscriber's leg.
//!
//! Each leg negotiates its own extension ids. What a subscriber receives is decided here: the
//! extensions that describe the media itself (audio level, orientation, playout delay) are
//! renumbered to the subscriber leg's ids, and so is the dependency descriptor of VP9/AV1 SVC; transport extensions (transport-cc, abs-send-time) are
//! the sending leg's own business and are never copied; `mid` is set to the subscriber's own
//! transceiver; `rid`/`rrid` name the publisher's encodings and are stripped; anything unknown is
//! dropped.

/// The header extensions the relay knows by URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HeaderExtension {
    Mid = 0,
    Rid,
    RepairedRid,
    AudioLevel,
    VideoOrientation,
    TransportCc,
    AbsSendTime,
    PlayoutDelay,
    DependencyDescriptor,
}

const KINDS: usize = 9;

impl HeaderExtension {
    pub const ALL: [HeaderExtension; KINDS] = [
        HeaderExtension::Mid,
        HeaderExtension::Rid,
        HeaderExtension::RepairedRid,
        HeaderExtension::AudioLevel,
        HeaderExtension::VideoOrientation,
        HeaderExtension::TransportCc,
        HeaderExtension::AbsSendTime,
        HeaderExtension::PlayoutDelay,
        HeaderExtension::DependencyDescriptor,
    ];

    pub fn uri(self) -> &'static str {
        match self {
            HeaderExtension::Mid => "urn:ietf:params:rtp-hdrext:sdes:mid",
            HeaderExtension::Rid => "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            HeaderExtension::RepairedRid => {
                "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
            }
            HeaderExtension::AudioLevel => "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            HeaderExtension::VideoOrientation => "urn:3gpp:video-orientation",
            HeaderExtension::TransportCc => {
                "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
            }
            HeaderExtension::AbsSendTime => {
                "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
            }
            HeaderExtension::PlayoutDelay => {
                "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
            }
            HeaderExtension::DependencyDescriptor => {
                "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"
            }
        }
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        HeaderExtension::ALL.into_iter().find(|e| e.uri() == uri)
    }

    /// Whether the extension describes the media and so travels to subscribers.
    pub fn is_forwarded(self) -> bool {
        matches!(
            self,
            HeaderExtension::AudioLevel
                | HeaderExtension::VideoOrientation
                | HeaderExtension::PlayoutDelay
                | HeaderExtension::DependencyDescriptor
        )
    }
}

/// One leg's negotiated ids, in both directions.
#[derive(Debug, Clone)]
pub struct ExtensionIds {
    by_id: [Option<HeaderExtension>; 256],
    ids: [u8; KINDS],
}

impl Default for ExtensionIds {
    fn default() -> Self {
        ExtensionIds {
            by_id: [None; 256],
            ids: [0; KINDS],
        }
    }
}

impl ExtensionIds {
    /// Builds the table from negotiated `(id, uri)` pairs; unknown URIs and id 0 are ignored.
    pub fn from_negotiated<'a>(pairs: impl IntoIterator<Item = (u16, &'a str)>) -> Self {
        let mut ids = ExtensionIds::default();
        for (id, uri) in pairs {
            let (Ok(id), Some(ext)) = (u8::try_from(id), HeaderExtension::from_uri(uri)) else {
                continue;
            };
            if id == 0 {
                continue;
            }
            ids.by_id[usize::from(id)] = Some(ext);
            ids.ids[ext as usize] = id;
        }
        ids
    }

    pub fn extension(&self, id: u8) -> Option<HeaderExtension> {
        self.by_id[usize::from(id)]
    }

    pub fn id(&self, ext: HeaderExtension) -> Option<u8> {
        match self.ids[ext as usize] {
            0 => None,
            id => Some(id),
        }
    }
}

/// Largest id and payload the one-byte header form (RFC 8285 §4.2) can carry.
const ONE_BYTE_MAX_ID: u8 = 14;
const ONE_BYTE_MAX_LEN: usize = 16;
/// Largest payload of the two-byte form (§4.3).
const TWO_BYTE_MAX_LEN: usize = 255;

/// Whether an extension fits the one-byte header form; a packet with one that does not goes out
/// in the two-byte form (a dependency descriptor with its template structure is tens of bytes).
/// Both ends offer `extmap-allow-mixed` (RFC 8285 §6): `rtc` always does, browsers too.
pub fn fits_one_byte(id: u8, payload_len: usize) -> bool {
    id <= ONE_BYTE_MAX_ID && (1..=ONE_BYTE_MAX_LEN).contains(&payload_len)
}

/// Maps extensions of packets from one publisher leg onto one subscriber leg.
#[derive(Debug, Clone, Copy)]
pub struct ExtensionTranslator {
    map: [u8; 256],
}

impl ExtensionTranslator {
    pub fn new(publisher: &ExtensionIds, subscriber: &ExtensionIds) -> Self {
        let mut map = [0u8; 256];
        for (in_id, slot) in map.iter_mut().enumerate() {
            let Some(ext) = publisher.by_id[in_id] else {
                continue;
            };
            if !ext.is_forwarded() {
                continue;
            }
            if let Some(out_id) = subscriber.id(ext) {
                *slot = out_id;
            }
        }
        ExtensionTranslator { map }
    }

    /// The subscriber-side id for a publisher extension, or `None` to drop it. Empty payloads
    /// are dropped (none of the forwarded extensions has one).
    pub fn translate(&self, in_id: u8, payload_len: usize) -> Option<u8> {
        match self.map[usize::from(in_id)] {
            0 => None,
            out if (1..=TWO_BYTE_MAX_LEN).contains(&payload_len) => Some(out),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome_publisher() -> ExtensionIds {
        ExtensionIds::from_negotiated([
            (1, HeaderExtension::AudioLevel.uri()),
            (3, HeaderExtension::TransportCc.uri()),
            (4, HeaderExtension::Mid.uri()),
            (10, HeaderExtension::Rid.uri()),
            (11, HeaderExtension::RepairedRid.uri()),
            (13, HeaderExtension::VideoOrientation.uri()),
            (12, HeaderExtension::PlayoutDelay.uri()),
            (
                2,
                "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time",
            ),
        ])
    }

    #[test]
    fn media_extensions_are_renumbered_transport_ones_dropped() {
        let subscriber = ExtensionIds::from_negotiated([
            (5, HeaderExtension::AudioLevel.uri()),
            (1, HeaderExtension::Mid.uri()),
            (7, HeaderExtension::VideoOrientation.uri()),
            (9, HeaderExtension::TransportCc.uri()),
        ]);
        let t = ExtensionTranslator::new(&chrome_publisher(), &subscriber);
        assert_eq!(t.translate(1, 1), Some(5), "audio level renumbered");
        assert_eq!(t.translate(13, 1), Some(7), "orientation renumbered");
        assert_eq!(t.translate(3, 2), None, "transport-cc is the leg's own");
        assert_eq!(
            t.translate(4, 1),
            None,
            "mid is set by the relay, not copied"
        );
        assert_eq!(t.translate(10, 1), None, "rid stripped");
        assert_eq!(t.translate(11, 1), None, "rrid stripped");
        assert_eq!(
            t.translate(12, 3),
            None,
            "not negotiated on the subscriber leg"
        );
        assert_eq!(t.translate(2, 8), None, "unknown extension dropped");
        assert_eq!(t.translate(200, 1), None, "unnegotiated id dropped");
    }

    #[test]
    fn long_extensions_and_high_ids_are_kept_for_the_two_byte_form() {
        let subscriber = ExtensionIds::from_negotiated([
            (15, HeaderExtension::AudioLevel.uri()),
            (8, HeaderExtension::DependencyDescriptor.uri()),
        ]);
        let mut publisher = chrome_publisher();
        publisher = ExtensionIds::from_negotiated(
            (1..=255u16)
                .filter_map(|id| publisher.extension(id as u8).map(|e| (id, e.uri())))
                .chain([(9, HeaderExtension::DependencyDescriptor.uri())]),
        );
        let t = ExtensionTranslator::new(&publisher, &subscriber);
        assert_eq!(t.translate(1, 1), Some(15));
        assert!(!fits_one_byte(15, 1), "id 15 needs the two-byte form");
        assert_eq!(
            t.translate(9, 40),
            Some(8),
            "a descriptor with its structure"
        );
        assert!(!fits_one_byte(8, 17), "17 bytes need the two-byte form");
        assert!(fits_one_byte(8, 16));
        assert_eq!(t.translate(9, 0), None, "no empty payloads");
        assert_eq!(t.translate(9, 256), None);
    }

    #[test]
    fn ids_are_found_both_ways() {
        let ids = chrome_publisher();
        assert_eq!(ids.extension(4), Some(HeaderExtension::Mid));
        assert_eq!(ids.id(HeaderExtension::Mid), Some(4));
        assert_eq!(ids.id(HeaderExtension::AbsSendTime), None);
        let zero = ExtensionIds::from_negotiated([(0, HeaderExtension::Mid.uri())]);
        assert_eq!(zero.id(HeaderExtension::Mid), None);
    }
}
