//! Which leg a datagram on the shared UDP socket belongs to.
//!
//! STUN requests name their leg: the relay chose every leg's ICE ufrag, and a binding request's
//! USERNAME is `<relay ufrag>:<client ufrag>`. Everything else (DTLS, SRTP, SRTCP, STUN
//! responses) is routed by the sender's address, learned only from a request whose
//! MESSAGE-INTEGRITY checks out against the leg's ICE password, so a spoofed STUN packet cannot
//! steer anybody's media. The address is learned as the request arrives, not when the leg
//! answers it: a client that nominates at once (Firefox, to an ICE-lite peer) gets no answer
//! until it has answered the leg's own check, and that answer must already route. Tables are
//! bounded per leg and per source IP.

use ring::hmac;
use rustc_hash::FxHashMap;
use std::net::{IpAddr, SocketAddr};

/// A leg, as the worker numbers them. Never reused, so a stale key cannot alias a new leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegKey(pub u64);

/// Where one datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// From a learned address.
    Leg(LegKey),
    /// A STUN request naming this leg's ufrag; `authentic` when its MESSAGE-INTEGRITY is the
    /// leg's (then its address is the leg's to learn).
    Stun { key: LegKey, authentic: bool },
    /// A STUN message naming no leg of ours.
    UnknownUfrag,
    /// Not STUN and from an address no leg has verified.
    UnknownSource,
}

/// How many client addresses one leg may be reached from at once (NAT rebinding, ICE restart).
/// This bounds the table: an address is learned only from a request signed with a leg's own
/// ICE password, so the table holds at most this many per leg. (There is no bound per source
/// IP: a carrier-grade or office NAT puts hundreds of legitimate participants behind one.)
const MAX_ADDRS_PER_LEG: usize = 4;

#[derive(Default)]
pub struct Demux {
    /// Each leg's ufrag, with its ICE password as the key of STUN's short-term HMAC-SHA1.
    by_ufrag: FxHashMap<String, (LegKey, hmac::Key)>,
    by_addr: FxHashMap<SocketAddr, LegKey>,
    addrs_of_leg: FxHashMap<LegKey, Vec<SocketAddr>>,
}

/// v4-mapped IPv6 addresses (from a dual-stack socket) are the IPv4 address they carry.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr.ip().to_canonical() {
        // Anything else keeps its IPv6 scope id.
        ip @ IpAddr::V4(_) => SocketAddr::new(ip, addr.port()),
        IpAddr::V6(_) => addr,
    }
}

impl Demux {
    pub fn route(&self, from: SocketAddr, datagram: &[u8]) -> Route {
        if let Some(Stun::Request { ufrag, integrity }) = classify_stun(datagram) {
            return match ufrag.and_then(|ufrag| self.by_ufrag.get(ufrag)) {
                Some((key, password)) => Route::Stun {
                    key: *key,
                    authentic: integrity.is_some_and(|at| authentic(datagram, at, password)),
                },
                None => Route::UnknownUfrag,
            };
        }
        match self.by_addr.get(&from) {
            Some(&key) => Route::Leg(key),
            None => Route::UnknownSource,
        }
    }

    pub fn add_ufrag(&mut self, ufrag: &str, password: &str, key: LegKey) {
        let password = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
        self.by_ufrag.insert(ufrag.to_owned(), (key, password));
    }

    pub fn remove_ufrag(&mut self, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
    }

    /// Binds `from` to `key` after an authentic request from it.
    pub fn learn(&mut self, key: LegKey, from: SocketAddr) {
        if self.by_addr.get(&from) == Some(&key) {
            return;
        }
        // The address now belongs to this leg (a client reusing a port for a new leg).
        if let Some(previous) = self.by_addr.insert(from, key) {
            self.forget_addr_of(previous, from);
        }
        let addrs = self.addrs_of_leg.entry(key).or_default();
        addrs.push(from);
        if addrs.len() > MAX_ADDRS_PER_LEG {
            let oldest = addrs.remove(0);
            self.by_addr.remove(&oldest);
        }
    }

    /// Forgets everything about a closed leg; returns the addresses it had.
    pub fn remove_leg(&mut self, key: LegKey) -> Vec<SocketAddr> {
        self.by_ufrag.retain(|_, (k, _)| *k != key);
        let addrs = self.addrs_of_leg.remove(&key).unwrap_or_default();
        for addr in &addrs {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
            }
        }
        addrs
    }

    /// Forgets one address (its TCP connection closed).
    pub fn forget(&mut self, addr: SocketAddr) {
        if let Some(key) = self.by_addr.remove(&addr) {
            self.forget_addr_of(key, addr);
        }
    }

    pub fn learned_addrs(&self) -> usize {
        self.by_addr.len()
    }

    fn forget_addr_of(&mut self, key: LegKey, addr: SocketAddr) {
        if let Some(addrs) = self.addrs_of_leg.get_mut(&key) {
            addrs.retain(|a| *a != addr);
        }
    }
}

const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_HEADER_LEN: usize = 20;
const STUN_ATTR_USERNAME: u16 = 0x0006;
const STUN_ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const STUN_INTEGRITY_LEN: usize = 20;
const STUN_BINDING_REQUEST: u16 = 0x0001;

/// Is this a STUN message (RFC 5389 §6: top two bits zero, magic cookie, length fits)?
fn stun_header(datagram: &[u8]) -> Option<(u16, usize)> {
    if datagram.len() < STUN_HEADER_LEN || datagram[0] & 0xC0 != 0 {
        return None;
    }
    if datagram[4..8] != STUN_MAGIC_COOKIE {
        return None;
    }
    let message_type = u16::from_be_bytes([datagram[0], datagram[1]]);
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if STUN_HEADER_LEN + length > datagram.len() || length % 4 != 0 {
        return None;
    }
    Some((message_type, length))
}

enum Stun<'a> {
    /// A binding request: the relay-side ufrag its USERNAME names, if it has a usable one, and
    /// where its MESSAGE-INTEGRITY attribute starts, if it has one.
    Request {
        ufrag: Option<&'a str>,
        integrity: Option<usize>,
    },
    /// Responses and indications: they carry no USERNAME.
    Other,
}

/// `None` when the datagram is not STUN at all.
fn classify_stun(datagram: &[u8]) -> Option<Stun<'_>> {
    let (message_type, length) = stun_header(datagram)?;
    if message_type != STUN_BINDING_REQUEST {
        return Some(Stun::Other);
    }
    let end = STUN_HEADER_LEN + length;
    let mut ufrag = None;
    let mut at = STUN_HEADER_LEN;
    while at + 4 <= end {
        let attr = u16::from_be_bytes([datagram[at], datagram[at + 1]]);
        let len = usize::from(u16::from_be_bytes([datagram[at + 2], datagram[at + 3]]));
        let value_end = at + 4 + len;
        if value_end > end {
            return Some(Stun::Request {
                ufrag: None,
                integrity: None,
            });
        }
        if attr == STUN_ATTR_USERNAME && ufrag.is_none() {
            let username = std::str::from_utf8(&datagram[at + 4..value_end]).ok();
            ufrag = Some(username.and_then(|u| u.split(':').next()));
        }
        // Only FINGERPRINT may follow MESSAGE-INTEGRITY, and it is not covered by it.
        if attr == STUN_ATTR_MESSAGE_INTEGRITY {
            let integrity = (len == STUN_INTEGRITY_LEN).then_some(at);
            return Some(Stun::Request {
                ufrag: ufrag.flatten(),
                integrity,
            });
        }
        at = value_end + (4 - len % 4) % 4;
    }
    Some(Stun::Request {
        ufrag: ufrag.flatten(),
        integrity: None,
    })
}

/// RFC 5389 §15.4: MESSAGE-INTEGRITY (at offset `at`) is the HMAC-SHA1, keyed with the ICE
/// password, of the message before it, with the header's length counting up to its end.
fn authentic(datagram: &[u8], at: usize, password: &hmac::Key) -> bool {
    let Some(tag) = datagram.get(at + 4..at + 4 + STUN_INTEGRITY_LEN) else {
        return false;
    };
    let mut header = [0u8; STUN_HEADER_LEN];
    header.copy_from_slice(&datagram[..STUN_HEADER_LEN]);
    let covered = (at + 4 + STUN_INTEGRITY_LEN - STUN_HEADER_LEN) as u16;
    header[2..4].copy_from_slice(&covered.to_be_bytes());
    let mut hmac = hmac::Context::with_key(password);
    hmac.update(&header);
    hmac.update(&datagram[STUN_HEADER_LEN..at]);
    let expected = hmac.sign();
    // Constant time: a forger learns nothing from how long the comparison took.
    expected
        .as_ref()
        .iter()
        .zip(tag)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(message_type: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (typ, value) in attrs {
            body.extend_from_slice(&typ.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&message_type.to_be_bytes());
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7u8; 12]);
        msg.extend_from_slice(&body);
        msg
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// `message` with MESSAGE-INTEGRITY (keyed with `password`) and a FINGERPRINT-like trailer
    /// appended, as a client builds a connectivity check.
    fn signed(mut message: Vec<u8>, password: &str) -> Vec<u8> {
        let at = message.len();
        let covered = (at + 24 - STUN_HEADER_LEN) as u16;
        message[2..4].copy_from_slice(&covered.to_be_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
        let tag = hmac::sign(&key, &message);
        message.extend_from_slice(&STUN_ATTR_MESSAGE_INTEGRITY.to_be_bytes());
        message.extend_from_slice(&20u16.to_be_bytes());
        message.extend_from_slice(tag.as_ref());
        message.extend_from_slice(&[0x80, 0x28, 0, 4, 1, 2, 3, 4]);
        let total = (message.len() - STUN_HEADER_LEN) as u16;
        message[2..4].copy_from_slice(&total.to_be_bytes());
        message
    }

    #[test]
    fn stun_requests_route_by_ufrag_everything_else_by_learned_address() {
        let mut demux = Demux::default();
        demux.add_ufrag("relayufrag", "relaypassword", LegKey(1));
        let check = stun(
            0x0001,
            &[(0x0024, b"\0\0\0\x01"), (0x0006, b"relayufrag:client")],
        );
        let request = signed(check.clone(), "relaypassword");
        let key = LegKey(1);
        assert_eq!(
            demux.route(addr(5000), &request),
            Route::Stun {
                key,
                authentic: true
            }
        );
        // Unsigned, signed with another password, or altered after signing: routed to the leg
        // (which refuses it) but never authentic, so never learned.
        let forged = signed(check.clone(), "guess");
        let mut altered = request.clone();
        altered[24] ^= 1;
        for not_authentic in [&check, &forged, &altered] {
            assert_eq!(
                demux.route(addr(5000), not_authentic),
                Route::Stun {
                    key,
                    authentic: false
                }
            );
        }
        let foreign = stun(0x0001, &[(0x0006, b"other:client")]);
        assert_eq!(demux.route(addr(5000), &foreign), Route::UnknownUfrag);
        let srtp = [0x80u8, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(demux.route(addr(5000), &srtp), Route::UnknownSource);
        demux.learn(LegKey(1), addr(5000));
        assert_eq!(demux.route(addr(5000), &srtp), Route::Leg(LegKey(1)));
        assert_eq!(demux.route(addr(5001), &srtp), Route::UnknownSource);
    }

    #[test]
    fn no_cut_or_flipped_check_panics_or_passes_as_authentic() {
        let mut demux = Demux::default();
        demux.add_ufrag("relayufrag", "relaypassword", LegKey(1));
        let check = stun(0x0001, &[(0x0006, b"relayufrag:client")]);
        let request = signed(check, "relaypassword");
        for len in 0..request.len() {
            let _ = demux.route(addr(1), &request[..len]);
        }
        // Every byte up to the end of MESSAGE-INTEGRITY is covered by it (the FINGERPRINT-like
        // trailer after it is not).
        let covered = request.len() - 8;
        for at in 0..covered {
            let mut flipped = request.clone();
            flipped[at] ^= 0x01;
            let route = demux.route(addr(1), &flipped);
            assert!(
                !matches!(
                    route,
                    Route::Stun {
                        authentic: true,
                        ..
                    }
                ),
                "byte {at} flipped: {route:?}"
            );
        }
        assert_eq!(
            demux.route(addr(1), &request),
            Route::Stun {
                key: LegKey(1),
                authentic: true
            }
        );
    }

    #[test]
    fn malformed_stun_never_routes_by_ufrag() {
        let mut demux = Demux::default();
        demux.add_ufrag("u", "p", LegKey(1));
        // USERNAME length runs past the message end.
        let mut bad = stun(0x0001, &[(0x0006, b"u:c")]);
        bad[22..24].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(demux.route(addr(1), &bad), Route::UnknownUfrag);
        // Declared length longer than the datagram: not STUN at all.
        let mut truncated = stun(0x0001, &[(0x0006, b"u:c")]);
        truncated.truncate(24);
        assert_eq!(demux.route(addr(1), &truncated), Route::UnknownSource);
        // Responses are routed by learned address only.
        let response = stun(0x0101, &[(0x0006, b"u:c")]);
        assert_eq!(demux.route(addr(1), &response), Route::UnknownSource);
        demux.learn(LegKey(1), addr(1));
        assert_eq!(demux.route(addr(1), &response), Route::Leg(LegKey(1)));
        // A MESSAGE-INTEGRITY of the wrong size is no integrity at all.
        let short = stun(0x0001, &[(0x0006, b"u:c"), (0x0008, &[0u8; 16])]);
        let key = LegKey(1);
        assert_eq!(
            demux.route(addr(2), &short),
            Route::Stun {
                key,
                authentic: false
            }
        );
    }

    #[test]
    fn bounds_per_leg_evict_the_oldest_address() {
        let mut demux = Demux::default();
        for port in 0..6 {
            demux.learn(LegKey(1), addr(6000 + port));
        }
        assert_eq!(demux.learned_addrs(), MAX_ADDRS_PER_LEG);
        assert_eq!(demux.route(addr(6000), &[0x80; 12]), Route::UnknownSource);
        assert_eq!(demux.route(addr(6005), &[0x80; 12]), Route::Leg(LegKey(1)));
    }

    #[test]
    fn an_address_moves_to_the_leg_that_verified_it_last() {
        let mut demux = Demux::default();
        demux.learn(LegKey(1), addr(7000));
        demux.learn(LegKey(2), addr(7000));
        assert_eq!(demux.route(addr(7000), &[0x80; 12]), Route::Leg(LegKey(2)));
        demux.remove_leg(LegKey(1));
        assert_eq!(demux.route(addr(7000), &[0x80; 12]), Route::Leg(LegKey(2)));
        demux.remove_leg(LegKey(2));
        assert_eq!(demux.learned_addrs(), 0);
        assert!(demux.addrs_of_leg.is_empty());
    }

    #[test]
    fn a_thousand_legs_behind_one_nat_address_are_all_reachable() {
        let mut demux = Demux::default();
        for leg in 0..1_000u16 {
            demux.learn(LegKey(u64::from(leg)), addr(10_000 + leg));
        }
        assert_eq!(demux.learned_addrs(), 1_000);
        assert_eq!(
            demux.route(addr(10_999), &[0x80; 12]),
            Route::Leg(LegKey(999))
        );
    }

    #[test]
    fn v4_mapped_addresses_are_normalized() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        assert_eq!(normalize(mapped), addr(9));
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(normalize(v6), v6);
    }
}
