//! First checks on datagrams from a verified address, before the WebRTC stack sees them: what
//! protocol it is (RFC 7983), whether the cleartext part of an SRTP/SRTCP packet is well formed,
//! and whether the sender exceeds its packet rate. Cheap, allocation-free, and never the only
//! line of defence (the stack authenticates everything after this).

use std::time::Instant;

/// Larger than any datagram a WebRTC peer sends (MTU-sized); bigger ones are dropped unread.
pub const MAX_DATAGRAM_BYTES: usize = 1_600;

/// What a datagram on the media port claims to be, by its first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

pub fn classify(datagram: &[u8]) -> Class {
    match datagram.first() {
        Some(0..=3) => Class::Stun,
        Some(20..=63) => Class::Dtls,
        Some(128..=191) => {
            // RTCP packet types 192-223 (RFC 5761 §4), read with the marker bit.
            match datagram.get(1) {
                Some(192..=223) => Class::Rtcp,
                _ => Class::Rtp,
            }
        }
        _ => Class::Other,
    }
}

/// The smallest SRTP/SRTCP authentication trailer (an 80-bit tag; GCM's is 128 bits).
const MIN_AUTH_TAG: usize = 10;

/// Whether the cleartext header of an SRTP packet (RFC 3711 §3.1: the RTP header and its
/// extensions are not encrypted) fits inside the datagram.
pub fn rtp_header_fits(datagram: &[u8]) -> bool {
    if datagram.len() < 12 + MIN_AUTH_TAG || datagram[0] >> 6 != 2 {
        return false;
    }
    let csrc_count = usize::from(datagram[0] & 0x0f);
    let mut header = 12 + 4 * csrc_count;
    if datagram[0] & 0x10 != 0 {
        let Some(ext) = datagram.get(header..header + 4) else {
            return false;
        };
        header += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    header + MIN_AUTH_TAG <= datagram.len()
}

/// Whether the first, cleartext RTCP header of an SRTCP packet (RFC 3711 §3.4) is consistent
/// with the datagram: version 2 and a first packet that fits before the SRTCP index and tag.
pub fn rtcp_header_fits(datagram: &[u8]) -> bool {
    if datagram.len() < 8 + 4 + MIN_AUTH_TAG || datagram[0] >> 6 != 2 {
        return false;
    }
    let first = 4 * (usize::from(u16::from_be_bytes([datagram[2], datagram[3]])) + 1);
    first + 4 + MIN_AUTH_TAG <= datagram.len()
}

/// A token bucket: `rate` packets per second, bursts up to `burst`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl RateLimit {
    pub fn new(rate_per_s: u32, burst: u32) -> Self {
        RateLimit {
            rate_per_s: f64::from(rate_per_s),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Takes one token; false when the sender is over its rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate_per_s;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn classification_follows_rfc_7983() {
        assert_eq!(classify(&[0, 1]), Class::Stun);
        assert_eq!(classify(&[22, 254]), Class::Dtls);
        assert_eq!(classify(&[0x80, 96]), Class::Rtp);
        assert_eq!(classify(&[0x80, 0xe0]), Class::Rtp, "marker bit with PT 96");
        assert_eq!(classify(&[0x80, 200]), Class::Rtcp);
        assert_eq!(classify(&[0x81, 205]), Class::Rtcp);
        assert_eq!(classify(&[64, 0]), Class::Other);
        assert_eq!(classify(&[]), Class::Other);
    }

    #[test]
    fn rtp_headers_must_fit() {
        let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
        p.extend([0u8; 20]);
        assert!(rtp_header_fits(&p));
        let mut lying_csrc = p.clone();
        lying_csrc[0] = 0x8f; // 15 CSRCs = 60 bytes
        assert!(!rtp_header_fits(&lying_csrc));
        let mut lying_ext = p.clone();
        lying_ext[0] = 0x90;
        lying_ext[12..16].copy_from_slice(&[0xbe, 0xde, 0x00, 0x20]); // 128 bytes of extension
        assert!(!rtp_header_fits(&lying_ext));
        let mut v1 = p.clone();
        v1[0] = 0x40;
        assert!(!rtp_header_fits(&v1));
        assert!(!rtp_header_fits(&p[..15]));
    }

    #[test]
    fn rtcp_headers_must_fit() {
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend([0u8; 24 + 4 + 16]);
        assert!(rtcp_header_fits(&sr));
        let mut lying = sr.clone();
        lying[3] = 60;
        assert!(!rtcp_header_fits(&lying));
        assert!(!rtcp_header_fits(&sr[..10]));
    }

    #[test]
    fn the_rate_limit_allows_bursts_then_the_rate() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(100, 10);
        let burst = (0..50).filter(|_| limit.allow(t0)).count();
        assert_eq!(burst, 10);
        let t1 = t0 + Duration::from_millis(100);
        let after = (0..50).filter(|_| limit.allow(t1)).count();
        assert_eq!(after, 10, "100/s for 100 ms refills 10");
    }
}
