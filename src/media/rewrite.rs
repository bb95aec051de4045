//! The RTP header a subscriber receives: its leg's SSRC and payload type, the forwarder's
//! sequence number and timestamp, and only the header extensions that leg negotiated.

use super::extmap::{ExtensionTranslator, fits_one_byte};
use bytes::Bytes;
use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE, Extension, Header};
use rtc::rtp::packet::Packet;

/// What one subscriber slot needs to rewrite a packet, fixed at negotiation.
#[derive(Debug, Clone)]
pub struct RewriteTarget {
    pub ssrc: u32,
    pub payload_type: u8,
    /// The `mid` header extension id and the slot's mid, when the leg negotiated it.
    pub mid_extension: Option<(u8, Bytes)>,
    pub extensions: ExtensionTranslator,
}

/// Builds the subscriber's packet. The payload is shared, not copied; CSRCs and padding are not
/// forwarded (the relay is no mixer, and padding is the sending leg's own business).
pub fn rewrite(
    packet: &Packet,
    target: &RewriteTarget,
    sequence_number: u16,
    timestamp: u32,
) -> Packet {
    // The one allocation of a forwarded copy: `rtc`'s `Header` owns its extensions in a `Vec`.
    // Room for the mid and for the transport-wide sequence number `rtc` appends on the way out,
    // so neither grows it again.
    let mut extensions = Vec::with_capacity(packet.header.extensions.len() + 2);
    for ext in &packet.header.extensions {
        if let Some(id) = target.extensions.translate(ext.id, ext.payload.len()) {
            extensions.push(Extension {
                id,
                payload: ext.payload.clone(),
            });
        }
    }
    if let Some((id, mid)) = &target.mid_extension {
        extensions.push(Extension {
            id: *id,
            payload: mid.clone(),
        });
    }
    let profile = if extensions
        .iter()
        .all(|e| fits_one_byte(e.id, e.payload.len()))
    {
        EXTENSION_PROFILE_ONE_BYTE
    } else {
        EXTENSION_PROFILE_TWO_BYTE
    };
    Packet {
        header: Header {
            version: 2,
            padding: false,
            extension: !extensions.is_empty(),
            marker: packet.header.marker,
            payload_type: target.payload_type,
            sequence_number,
            timestamp,
            ssrc: target.ssrc,
            csrc: Vec::new(),
            extension_profile: profile,
            extensions,
            extensions_padding: 0,
        },
        payload: packet.payload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::extmap::{ExtensionIds, HeaderExtension};
    use rtc::shared::marshal::{Marshal, Unmarshal};

    fn publisher_packet() -> Packet {
        Packet {
            header: Header {
                version: 2,
                padding: true,
                extension: true,
                marker: true,
                payload_type: 120,
                sequence_number: 9,
                timestamp: 99,
                ssrc: 0xdead_beef,
                csrc: vec![1, 2],
                extension_profile: 0x1000,
                extensions: vec![
                    Extension {
                        id: 1,
                        payload: Bytes::from_static(&[0x85]),
                    },
                    Extension {
                        id: 3,
                        payload: Bytes::from_static(&[0, 7]),
                    },
                    Extension {
                        id: 10,
                        payload: Bytes::from_static(b"h"),
                    },
                ],
                extensions_padding: 0,
            },
            payload: Bytes::from_static(b"media"),
        }
    }

    fn target() -> RewriteTarget {
        let publisher = ExtensionIds::from_negotiated([
            (1, HeaderExtension::AudioLevel.uri()),
            (3, HeaderExtension::TransportCc.uri()),
            (10, HeaderExtension::Rid.uri()),
        ]);
        let subscriber = ExtensionIds::from_negotiated([
            (6, HeaderExtension::AudioLevel.uri()),
            (2, HeaderExtension::Mid.uri()),
        ]);
        RewriteTarget {
            ssrc: 0x1234,
            payload_type: 111,
            mid_extension: Some((2, Bytes::from_static(b"3"))),
            extensions: ExtensionTranslator::new(&publisher, &subscriber),
        }
    }

    #[test]
    fn ssrc_payload_type_numbers_and_extensions_are_the_subscribers() {
        let out = rewrite(&publisher_packet(), &target(), 500, 7000);
        assert_eq!(out.header.ssrc, 0x1234);
        assert_eq!(out.header.payload_type, 111);
        assert_eq!(out.header.sequence_number, 500);
        assert_eq!(out.header.timestamp, 7000);
        assert!(out.header.marker, "marker is the publisher's");
        assert!(out.header.csrc.is_empty());
        assert!(!out.header.padding);
        let ids: Vec<(u8, &[u8])> = out
            .header
            .extensions
            .iter()
            .map(|e| (e.id, &e.payload[..]))
            .collect();
        assert_eq!(ids, vec![(6, &[0x85][..]), (2, &b"3"[..])]);
        assert_eq!(out.payload, Bytes::from_static(b"media"));
    }

    #[test]
    fn the_rewritten_packet_marshals_in_the_one_byte_form_and_parses_back() {
        let out = rewrite(&publisher_packet(), &target(), 1, 2);
        let wire = out.marshal().unwrap();
        assert_eq!(&wire[12..14], &[0xBE, 0xDE], "one-byte extension profile");
        let back = Packet::unmarshal(&mut &wire[..]).unwrap();
        assert_eq!(back.header.extensions, out.header.extensions);
        assert_eq!(back.payload, out.payload);
    }

    #[test]
    fn a_long_extension_goes_out_in_the_two_byte_form() {
        let descriptor = Bytes::from(vec![0x80u8; 40]);
        let publisher = ExtensionIds::from_negotiated([
            (1, HeaderExtension::AudioLevel.uri()),
            (9, HeaderExtension::DependencyDescriptor.uri()),
        ]);
        let subscriber = ExtensionIds::from_negotiated([
            (6, HeaderExtension::AudioLevel.uri()),
            (4, HeaderExtension::DependencyDescriptor.uri()),
        ]);
        let mut t = target();
        t.extensions = ExtensionTranslator::new(&publisher, &subscriber);
        let mut packet = publisher_packet();
        packet.header.extensions[1] = Extension {
            id: 9,
            payload: descriptor.clone(),
        };
        let out = rewrite(&packet, &t, 1, 2);
        let wire = out.marshal().unwrap();
        assert_eq!(&wire[12..14], &[0x10, 0x00], "two-byte extension profile");
        let back = Packet::unmarshal(&mut &wire[..]).unwrap();
        let ids: Vec<(u8, usize)> = back
            .header
            .extensions
            .iter()
            .map(|e| (e.id, e.payload.len()))
            .collect();
        assert_eq!(ids, vec![(6, 1), (4, 40), (2, 1)]);
        assert_eq!(back.header.extensions[1].payload, descriptor);
    }

    #[test]
    fn without_extensions_the_header_has_none() {
        let mut plain = publisher_packet();
        plain.header.extensions.clear();
        let mut t = target();
        t.mid_extension = None;
        let out = rewrite(&plain, &t, 1, 2);
        assert!(!out.header.extension);
        assert!(out.header.extensions.is_empty());
    }
}
