//! Reading the parts of a client's SDP the relay decides on (which m-lines send which codec), and
//! comparing codec formats the way RTP payload formats define them.

use crate::media::codec::{Codec, MediaKind};
use rtc::sdp::description::session::SessionDescription;
use std::collections::BTreeMap;

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

/// One codec format of an m-line: what the relay needs to forward it and to offer it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub codec: Codec,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub channels: u16,
    /// `a=fmtp` parameters; for Opus in canonical form (see [`canonical_opus_fmtp`]).
    pub fmtp: String,
}

/// One m-line of an SDP.
#[derive(Debug, Clone)]
pub struct Section {
    pub mid: String,
    /// `None` for data channels and media kinds the relay does not forward.
    pub kind: Option<MediaKind>,
    pub direction: Direction,
    /// Formats of codecs the relay forwards, in the client's order of preference.
    pub formats: Vec<Format>,
    /// Every payload type of the `m=` line (RTX and codecs the relay ignores included).
    pub payload_types: Vec<u8>,
    /// Port 0 without `a=bundle-only`: the m-line is rejected or removed.
    pub rejected: bool,
    /// RTX payload types and the payload type each repairs (`apt`).
    pub rtx: Vec<(u8, u8)>,
}

impl Section {
    /// The format the relay will receive on this m-line: the client's first choice among the
    /// ones it forwards and that `accepts` (the relay's own capabilities).
    pub fn first_format(&self, accepts: impl Fn(&Format) -> bool) -> Option<&Format> {
        self.formats.iter().find(|f| accepts(f))
    }

    /// The RTX payload type that repairs `payload_type` here, if any.
    pub fn rtx_for(&self, payload_type: u8) -> Option<u8> {
        self.rtx
            .iter()
            .find(|(_, apt)| *apt == payload_type)
            .map(|(rtx, _)| *rtx)
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
            let rtx = by_pt
                .values()
                .filter(|c| c.name.eq_ignore_ascii_case("rtx"))
                .filter_map(|c| {
                    let apt = fmtp_parameters(&c.fmtp).get("apt")?.parse().ok()?;
                    Some((c.payload_type, apt))
                })
                .collect();
            let payload_types = media
                .media_name
                .formats
                .iter()
                .filter_map(|pt| pt.parse::<u8>().ok())
                .collect();
            let formats = media
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
                    let codec = Codec::from_mime_type(&format!("{prefix}{}", c.name))?;
                    let fmtp = match codec {
                        Codec::Opus => canonical_opus_fmtp(&c.fmtp),
                        _ => c.fmtp.clone(),
                    };
                    Some(Format {
                        codec,
                        payload_type: c.payload_type,
                        clock_rate: c.clock_rate,
                        channels: c.encoding_parameters.parse().unwrap_or(0),
                        fmtp,
                    })
                })
                .collect();
            Section {
                mid: media
                    .attribute("mid")
                    .flatten()
                    .unwrap_or_default()
                    .to_owned(),
                kind,
                direction,
                formats,
                payload_types,
                // Port 0 with `a=bundle-only` (RFC 8843 §7.2.1) is an m-line that only exists
                // inside the bundle: Firefox offers every m-line after the first that way.
                rejected: media.media_name.port.value == 0 && !media.has_attribute("bundle-only"),
                rtx,
            }
        })
        .collect()
}

/// Whether an offer insists on being the DTLS server (`a=setup:passive`). The relay must be the
/// server to choose the SRTP profile, and RFC 8842 §5.2 has offerers say `actpass`.
pub fn offers_passive_dtls(description: &SessionDescription) -> bool {
    let passive = |value: Option<&str>| value.is_some_and(|v| v.trim() == "passive");
    passive(description.attribute("setup").map(String::as_str))
        || description
            .media_descriptions
            .iter()
            .any(|m| passive(m.attribute("setup").flatten()))
}

/// Parses `a=fmtp` parameters (`k=v;k=v`), keys lower-cased.
pub fn fmtp_parameters(fmtp: &str) -> BTreeMap<String, String> {
    fmtp.split(';')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

/// Opus parameters in one canonical form that names every property the relay carries from a
/// publisher to its subscribers (RFC 7587 §6.1): stereo (from `stereo` or `sprop-stereo`),
/// in-band FEC and DTX, each explicitly 0 or 1. Explicit values let the relay's formats be told
/// apart exactly (a missing key would match any value).
pub fn canonical_opus_fmtp(fmtp: &str) -> String {
    let p = fmtp_parameters(fmtp);
    let on = |k: &str| p.get(k).is_some_and(|v| v == "1");
    let stereo = on("stereo") || on("sprop-stereo");
    let fec = on("useinbandfec");
    let dtx = on("usedtx");
    opus_fmtp(stereo, fec, dtx)
}

pub fn opus_fmtp(stereo: bool, fec: bool, dtx: bool) -> String {
    format!(
        "minptime=10;stereo={};useinbandfec={};usedtx={}",
        u8::from(stereo),
        u8::from(fec),
        u8::from(dtx)
    )
}

/// Whether two formats of the same codec are the same media format configuration: H.264
/// profile (not level) and packetization mode (RFC 6184 §8.2.2), VP9 profile (RFC 9628 §6), AV1
/// profile (level and tier are receiver limits, AV1 RTP payload format §7.2), Opus properties as canonicalised above. Other parameters do not change the stream.
pub fn same_format(codec: Codec, a_fmtp: &str, b_fmtp: &str) -> bool {
    let a = fmtp_parameters(a_fmtp);
    let b = fmtp_parameters(b_fmtp);
    match codec {
        Codec::H264 => {
            let mode = |p: &BTreeMap<String, String>| {
                p.get("packetization-mode")
                    .cloned()
                    .unwrap_or_else(|| "0".into())
            };
            let profile = |p: &BTreeMap<String, String>| {
                p.get("profile-level-id")
                    .map(|id| id.to_ascii_lowercase().chars().take(4).collect::<String>())
                    .unwrap_or_else(|| "4200".into())
            };
            mode(&a) == mode(&b) && profile(&a) == profile(&b)
        }
        Codec::Vp9 | Codec::Av1 => {
            let key = if codec == Codec::Vp9 {
                "profile-id"
            } else {
                "profile"
            };
            let profile =
                |p: &BTreeMap<String, String>| p.get(key).cloned().unwrap_or_else(|| "0".into());
            profile(&a) == profile(&b)
        }
        Codec::Opus => canonical_opus_fmtp(a_fmtp) == canonical_opus_fmtp(b_fmtp),
        Codec::Vp8 => true,
    }
}

/// An offer or answer whose bundled m-sections carry different ICE credentials (aiortc's
/// default "balanced" bundle policy does so; RFC 8843 allows it) rewritten so that every
/// m-section of the BUNDLE group carries the credentials of the group's first, tagged
/// m-section: only those are used once bundled (RFC 8843 §7.2), and `rtc` refuses a
/// description with several. `None` when nothing needs changing.
pub fn unify_bundle_credentials(sdp: &str) -> Option<String> {
    let bundle: Vec<&str> = sdp
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=group:BUNDLE "))?
        .split_whitespace()
        .collect();
    let tagged = *bundle.first()?;
    let sections = split_sections(sdp);
    let (ufrag, pwd) = sections.iter().find_map(|section| {
        (first_value(section, "a=mid:") == Some(tagged)).then(|| {
            (
                first_value(section, "a=ice-ufrag:"),
                first_value(section, "a=ice-pwd:"),
            )
        })
    })?;
    let (ufrag, pwd) = (ufrag?, pwd?);
    let mut changed = false;
    let mut out = String::with_capacity(sdp.len());
    for section in &sections {
        let bundled = first_value(section, "a=mid:").is_some_and(|mid| bundle.contains(&mid));
        for line in section.split_inclusive('\n') {
            let ending = &line[line.trim_end().len()..];
            let replaced = match line.trim_end() {
                l if bundled
                    && l.starts_with("a=ice-ufrag:")
                    && l != format!("a=ice-ufrag:{ufrag}") =>
                {
                    Some(format!("a=ice-ufrag:{ufrag}{ending}"))
                }
                l if bundled && l.starts_with("a=ice-pwd:") && l != format!("a=ice-pwd:{pwd}") => {
                    Some(format!("a=ice-pwd:{pwd}{ending}"))
                }
                _ => None,
            };
            match replaced {
                Some(line) => {
                    changed = true;
                    out.push_str(&line);
                }
                None => out.push_str(line),
            }
        }
    }
    changed.then_some(out)
}

/// The relay's SDP with its candidates (and end-of-candidates) repeated in every m-section that
/// has none, as libwebrtc writes them: some stacks (aiortc) read a bundle's candidates from
/// another m-section than the first.
pub fn repeat_candidates(sdp: &str) -> String {
    let sections = split_sections(sdp);
    let candidates: Vec<&str> = sections
        .get(1)
        .map(|first| {
            first
                .split_inclusive('\n')
                .filter(|l| l.starts_with("a=candidate:") || l.starts_with("a=end-of-candidates"))
                .collect()
        })
        .unwrap_or_default();
    let mut out = String::with_capacity(sdp.len() + sections.len() * 100);
    for (i, section) in sections.iter().enumerate() {
        out.push_str(section);
        let has_own = section.contains("\na=candidate:");
        if i > 1 && !has_own {
            if !out.ends_with('\n') {
                out.push_str("\r\n");
            }
            for line in &candidates {
                out.push_str(line);
            }
        }
    }
    out
}

/// `sdp` with the `a=extmap` lines of `uri` removed from every m-section whose mid is not in
/// `keep`. What the other side does not see in an answer it does not send.
pub fn keep_extension_only_in(sdp: &str, uri: &str, keep: &[&str]) -> String {
    let mut out = String::with_capacity(sdp.len());
    for (i, section) in split_sections(sdp).into_iter().enumerate() {
        let kept = i == 0 || first_value(section, "a=mid:").is_some_and(|mid| keep.contains(&mid));
        for line in section.split_inclusive('\n') {
            let is_extmap_of_uri =
                line.starts_with("a=extmap:") && line.split_whitespace().nth(1) == Some(uri);
            if kept || !is_extmap_of_uri {
                out.push_str(line);
            }
        }
    }
    out
}

/// An SDP cut into its session part and one part per m-section (each from its `m=` line).
fn split_sections(sdp: &str) -> Vec<&str> {
    let mut starts = vec![0];
    let mut at = 0;
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") && at > 0 {
            starts.push(at);
        }
        at += line.len();
    }
    starts.push(sdp.len());
    starts.windows(2).map(|w| &sdp[w[0]..w[1]]).collect()
}

/// The relay's ICE ufrag in a local description (`a=ice-ufrag:`).
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    first_value(sdp, "a=ice-ufrag:")
}

pub fn ice_pwd(sdp: &str) -> Option<&str> {
    first_value(sdp, "a=ice-pwd:")
}

/// The value of the first line that starts with `prefix`.
fn first_value<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
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
a=ice-ufrag:abcd\r\n\
a=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1;sprop-stereo=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102 96 97\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:1\r\n\
a=sendrecv\r\n\
a=rtpmap:102 H264/90000\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 98\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:2\r\n\
a=inactive\r\n\
a=rtpmap:98 AV1/90000\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 120\r\n\
c=IN IP4 0.0.0.0\r\n\
a=bundle-only\r\n\
a=mid:3\r\n\
a=sendonly\r\n\
a=rtpmap:120 VP8/90000\r\n";

    #[test]
    fn sections_report_mid_direction_and_forwardable_formats() {
        let parsed = SessionDescription::unmarshal(&mut Cursor::new(OFFER.as_bytes())).unwrap();
        let s = sections(&parsed);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].mid, "0");
        assert_eq!(s[0].kind, Some(MediaKind::Audio));
        assert_eq!(s[0].direction, Direction::SendOnly);
        let opus = &s[0].formats[0];
        assert_eq!(
            (opus.codec, opus.payload_type, opus.channels),
            (Codec::Opus, 111, 2)
        );
        assert_eq!(opus.fmtp, "minptime=10;stereo=1;useinbandfec=1;usedtx=0");
        assert_eq!(s[0].formats.len(), 1, "PCMU is not forwarded");
        assert_eq!(s[1].direction, Direction::SendRecv);
        let codecs: Vec<Codec> = s[1].formats.iter().map(|f| f.codec).collect();
        assert_eq!(codecs, vec![Codec::H264, Codec::Vp8], "client order kept");
        assert_eq!((s[1].rtx_for(96), s[1].rtx_for(102)), (Some(97), None));
        assert!(s[2].rejected);
        assert_eq!(
            s[2].formats[0].codec,
            Codec::Av1,
            "formats of rejected m-lines are read"
        );
        assert!(!s[2].direction.client_sends());
        // Port 0 but bundle-only, as Firefox offers a second track: a live m-line.
        assert!(!s[3].rejected && s[3].direction.client_sends());
        assert_eq!(s[3].formats[0].codec, Codec::Vp8);
        assert_eq!(ice_ufrag(OFFER), Some("abcd"));
    }

    #[test]
    fn an_extension_is_kept_only_in_the_named_sections() {
        let dd = "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";
        let answer = format!(
            "v=0\r\ns=-\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:8 {dd}\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 112\r\na=mid:1\r\na=extmap:8/recvonly {dd}\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=mid:2\r\na=extmap:8 {dd}\r\n"
        );
        let out = keep_extension_only_in(&answer, dd, &["1", "2"]);
        let sections = split_sections(&out);
        assert!(!sections[1].contains(dd), "VP8 m-line loses it");
        assert!(sections[1].contains("sdes:mid"), "other extensions stay");
        assert!(sections[2].contains("a=extmap:8/recvonly"));
        assert!(sections[3].contains(dd));
        assert_eq!(
            out.len(),
            answer.len() - format!("a=extmap:8 {dd}\r\n").len()
        );
    }

    #[test]
    fn bundled_sections_get_the_tagged_sections_credentials() {
        let offer = "v=0\r\ns=-\r\na=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:aaaa\r\na=ice-pwd:pa\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=ice-ufrag:bbbb\r\na=ice-pwd:pb\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=ice-ufrag:cccc\r\na=ice-pwd:pc\r\n";
        let unified = unify_bundle_credentials(offer).unwrap();
        assert_eq!(unified.matches("a=ice-ufrag:aaaa\r\n").count(), 2);
        assert_eq!(unified.matches("a=ice-pwd:pa\r\n").count(), 2);
        // Not in the group: left alone.
        assert!(unified.contains("a=ice-ufrag:cccc\r\na=ice-pwd:pc\r\n"));
        assert_eq!(unified.len(), offer.len());
        // Already one set of credentials (every browser): nothing to do.
        assert!(unify_bundle_credentials(&unified).is_none());
        assert!(unify_bundle_credentials(OFFER).is_none());
    }

    #[test]
    fn candidates_are_repeated_where_an_m_section_has_none() {
        let answer = "v=0\r\ns=-\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        let out = repeat_candidates(answer);
        assert_eq!(out.matches("a=candidate:").count(), 2);
        assert_eq!(out.matches("a=end-of-candidates").count(), 2);
        assert!(out.ends_with(
            "a=mid:1\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n"
        ));
        // Idempotent.
        assert_eq!(repeat_candidates(&out), out);
    }

    #[test]
    fn formats_compare_by_what_defines_the_stream() {
        let base = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
        assert!(same_format(
            Codec::H264,
            base,
            "packetization-mode=1;profile-level-id=42e034"
        ));
        assert!(!same_format(
            Codec::H264,
            base,
            "packetization-mode=0;profile-level-id=42e01f"
        ));
        assert!(!same_format(
            Codec::H264,
            base,
            "packetization-mode=1;profile-level-id=64001f"
        ));
        assert!(same_format(Codec::Vp9, "", "profile-id=0"));
        assert!(!same_format(Codec::Vp9, "profile-id=2", "profile-id=0"));
        assert!(same_format(
            Codec::Av1,
            "level-idx=5;profile=0;tier=0",
            "profile=0"
        ));
        assert!(!same_format(Codec::Av1, "profile=1", ""));
        assert!(same_format(
            Codec::Opus,
            "minptime=10;useinbandfec=1",
            "useinbandfec=1"
        ));
        assert!(!same_format(
            Codec::Opus,
            "useinbandfec=1;stereo=1",
            "useinbandfec=1"
        ));
        assert!(same_format(Codec::Opus, "sprop-stereo=1", "stereo=1"));
    }
}
