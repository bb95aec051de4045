//! Retransmissions of rid-named simulcast layers (RFC 4588 RTX tagged with repaired-rid,
//! RFC 8852), unwrapped into their layer's stream before `rtc` sees them.
//!
//! `rtc` 0.21 binds simulcast layers by rid but drops RTX that names its layer by repaired-rid
//! (such layers have no `ssrc-group:FID`, so it cannot resolve the RTX SSRC): every loss on a
//! simulcast layer would then stay a loss, and the NACK generator, never seeing the repair, would
//! keep asking. This interceptor sits wire-ward of the NACK generator and turns such a packet
//! back into the original (primary SSRC and payload type, the original sequence number, the
//! payload without its 2-byte OSN), so the rest of the chain sees an ordinary late packet.
//! Publishers tag only their first packets with rid and repaired-rid (until the relay's reports
//! reach them), so the RTX SSRC to layer mapping is learned from the tagged ones and kept.

use crate::media::extmap::HeaderExtension;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::shared::error::Error as RtcError;
use std::collections::VecDeque;
use std::time::Instant;

/// Layers (and RTX streams) remembered per leg: more than any publisher sends.
const MAX_STREAMS: usize = 16;

/// One layer's primary stream, by rid.
#[derive(Debug, Clone)]
struct Primary {
    rid: Box<str>,
    ssrc: u32,
    payload_type: u8,
}

/// An RTX stream and the layer it repairs.
#[derive(Debug, Clone, Copy)]
struct Repair {
    rtx_ssrc: u32,
    primary_ssrc: u32,
}

#[derive(Default)]
pub struct RepairedRidUnwrap {
    rid_id: Option<u8>,
    repaired_rid_id: Option<u8>,
    primaries: Vec<Primary>,
    repairs: Vec<Repair>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl RepairedRidUnwrap {
    fn learn_primary(&mut self, rid: &[u8], ssrc: u32, payload_type: u8) {
        let Ok(rid) = std::str::from_utf8(rid) else {
            return;
        };
        if let Some(known) = self.primaries.iter_mut().find(|p| &*p.rid == rid) {
            known.ssrc = ssrc;
            known.payload_type = payload_type;
        } else if self.primaries.len() < MAX_STREAMS {
            self.primaries.push(Primary {
                rid: rid.into(),
                ssrc,
                payload_type,
            });
        }
    }

    /// The primary stream an RTX packet repairs, learning its SSRC when it is tagged.
    fn primary_of(&mut self, rtx_ssrc: u32, repaired_rid: Option<&[u8]>) -> Option<(u32, u8)> {
        if let Some(rid) = repaired_rid {
            let primary = self.primaries.iter().find(|p| p.rid.as_bytes() == rid)?;
            let found = (primary.ssrc, primary.payload_type);
            if let Some(repair) = self.repairs.iter_mut().find(|r| r.rtx_ssrc == rtx_ssrc) {
                repair.primary_ssrc = found.0;
            } else if self.repairs.len() < MAX_STREAMS {
                self.repairs.push(Repair {
                    rtx_ssrc,
                    primary_ssrc: found.0,
                });
            }
            return Some(found);
        }
        let primary_ssrc = self
            .repairs
            .iter()
            .find(|r| r.rtx_ssrc == rtx_ssrc)?
            .primary_ssrc;
        let primary = self.primaries.iter().find(|p| p.ssrc == primary_ssrc)?;
        Some((primary.ssrc, primary.payload_type))
    }

    fn unwrap(&mut self, packet: &mut rtc::rtp::packet::Packet) {
        let header = &packet.header;
        let rid = self.rid_id.and_then(|id| header.get_extension(id));
        if let Some(rid) = rid {
            self.learn_primary(&rid, header.ssrc, header.payload_type);
            return;
        }
        let repaired_rid = self.repaired_rid_id.and_then(|id| header.get_extension(id));
        let known_rtx = self.repairs.iter().any(|r| r.rtx_ssrc == header.ssrc);
        if repaired_rid.is_none() && !known_rtx {
            return;
        }
        // RFC 4588 §4: the original sequence number, then the original payload. Shorter is
        // padding (a bandwidth probe): `rtc` drops it as an unknown stream.
        if packet.payload.len() < 2 {
            return;
        }
        let Some((ssrc, payload_type)) = self.primary_of(header.ssrc, repaired_rid.as_deref())
        else {
            return;
        };
        let original = u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
        if let Some(id) = self.repaired_rid_id {
            let _ = packet.header.del_extension(id);
        }
        packet.header.ssrc = ssrc;
        packet.header.payload_type = payload_type;
        packet.header.sequence_number = original;
        packet.header.padding = false;
        packet.payload = packet.payload.slice(2..);
    }
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for RepairedRidUnwrap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), RtcError> {
        if let Packet::Rtp(packet) = &mut msg.message.packet {
            self.unwrap(packet);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), RtcError> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), RtcError> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for RepairedRidUnwrap {
    /// Inbound only: the chain hands packets being sent past it.
    fn handles_writes(&self) -> bool {
        false
    }

    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    /// The extension ids are the publisher's (the relay answers its offer): learned from any
    /// bound stream, since BUNDLE gives all of a leg's streams the same ids.
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        for extension in &info.rtp_header_extensions {
            let Ok(id) = u8::try_from(extension.id) else {
                continue;
            };
            if extension.uri == HeaderExtension::Rid.uri() {
                self.rid_id = Some(id);
            } else if extension.uri == HeaderExtension::RepairedRid.uri() {
                self.repaired_rid_id = Some(id);
            }
        }
    }
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::rtp::header::Header;

    fn packet(
        ssrc: u32,
        pt: u8,
        seq: u16,
        ext: Option<(u8, &str)>,
        payload: &[u8],
    ) -> rtc::rtp::packet::Packet {
        let mut header = Header {
            version: 2,
            ssrc,
            payload_type: pt,
            sequence_number: seq,
            ..Header::default()
        };
        if let Some((id, value)) = ext {
            header
                .set_extension(id, Bytes::copy_from_slice(value.as_bytes()))
                .unwrap();
        }
        rtc::rtp::packet::Packet {
            header,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn unwrap() -> RepairedRidUnwrap {
        RepairedRidUnwrap {
            rid_id: Some(10),
            repaired_rid_id: Some(11),
            ..RepairedRidUnwrap::default()
        }
    }

    #[test]
    fn tagged_rtx_becomes_the_original_packet_and_untagged_rtx_follows() {
        let mut u = unwrap();
        let mut media = packet(1111, 96, 500, Some((10, "h")), b"media");
        u.unwrap(&mut media);
        assert_eq!(media.header.ssrc, 1111);
        // RTX on its own SSRC and payload type, tagged with the layer's rid.
        let mut rtx = packet(2222, 97, 9, Some((11, "h")), &[0x01, 0xf4, b'x', b'y']);
        u.unwrap(&mut rtx);
        assert_eq!(
            (
                rtx.header.ssrc,
                rtx.header.payload_type,
                rtx.header.sequence_number
            ),
            (1111, 96, 500)
        );
        assert_eq!(&rtx.payload[..], b"xy");
        assert_eq!(rtx.header.get_extension(11), None);
        // Later RTX without the tag: mapped by its SSRC.
        let mut later = packet(2222, 97, 10, None, &[0x01, 0xf5, b'z']);
        u.unwrap(&mut later);
        assert_eq!(
            (later.header.ssrc, later.header.sequence_number),
            (1111, 501)
        );
    }

    #[test]
    fn padding_unknown_layers_and_plain_media_are_left_alone() {
        let mut u = unwrap();
        let mut media = packet(1111, 96, 500, Some((10, "h")), b"media");
        u.unwrap(&mut media);
        let mut padding = packet(2222, 97, 9, Some((11, "h")), &[]);
        u.unwrap(&mut padding);
        assert_eq!(padding.header.ssrc, 2222);
        let mut unknown = packet(3333, 97, 9, Some((11, "f")), &[0, 1, 2]);
        u.unwrap(&mut unknown);
        assert_eq!(unknown.header.ssrc, 3333);
        let mut plain = packet(1111, 96, 501, None, b"more");
        u.unwrap(&mut plain);
        assert_eq!(
            (plain.header.ssrc, plain.header.sequence_number),
            (1111, 501)
        );
    }
}
