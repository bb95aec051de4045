//! Hand-built STUN (RFC 8489) for tests that act as an ICE agent the relay did not expect: a
//! second address of a client (renomination), or an attacker who knows a leg's ufrag.

use ring::hmac;
use std::net::SocketAddr;

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const PRIORITY: u16 = 0x0024;
const USE_CANDIDATE: u16 = 0x0025;
const ICE_CONTROLLED: u16 = 0x8029;
const ICE_CONTROLLING: u16 = 0x802A;

/// Which side a forged or extra check claims to be, with its tie-breaker.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Controlling(u64),
    Controlled(u64),
}

fn attribute(body: &mut Vec<u8>, typ: u16, value: &[u8]) {
    body.extend_from_slice(&typ.to_be_bytes());
    body.extend_from_slice(&(value.len() as u16).to_be_bytes());
    body.extend_from_slice(value);
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
}

/// A message of `message_type` with `attributes`, signed with `password` (short-term
/// credentials, RFC 8489 §14.5). `password: None` leaves MESSAGE-INTEGRITY out.
fn message(
    message_type: u16,
    transaction: [u8; 12],
    attributes: &[u8],
    password: Option<&str>,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + attributes.len() + 24);
    m.extend_from_slice(&message_type.to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&transaction);
    m.extend_from_slice(attributes);
    if let Some(password) = password {
        let covered = (m.len() - 20 + 24) as u16;
        m[2..4].copy_from_slice(&covered.to_be_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
        let tag = hmac::sign(&key, &m);
        let mut integrity = Vec::new();
        attribute(&mut integrity, MESSAGE_INTEGRITY, tag.as_ref());
        m.extend_from_slice(&integrity);
    }
    let length = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&length.to_be_bytes());
    m
}

/// A connectivity check to the relay: USERNAME `relay_ufrag:client_ufrag`, signed with the
/// relay's password (pass a wrong one to forge).
pub fn binding_request(
    relay_ufrag: &str,
    client_ufrag: &str,
    password: Option<&str>,
    role: Role,
    nominate: bool,
) -> Vec<u8> {
    let mut attributes = Vec::new();
    attribute(
        &mut attributes,
        USERNAME,
        format!("{relay_ufrag}:{client_ufrag}").as_bytes(),
    );
    attribute(&mut attributes, PRIORITY, &0x6e00_01ffu32.to_be_bytes());
    match role {
        Role::Controlling(tie) => attribute(&mut attributes, ICE_CONTROLLING, &tie.to_be_bytes()),
        Role::Controlled(tie) => attribute(&mut attributes, ICE_CONTROLLED, &tie.to_be_bytes()),
    }
    if nominate {
        attribute(&mut attributes, USE_CANDIDATE, &[]);
    }
    message(0x0001, rand::random(), &attributes, password)
}

/// The transaction id of a binding request, if `datagram` is one.
pub fn request_transaction(datagram: &[u8]) -> Option<[u8; 12]> {
    if datagram.len() < 20 || datagram[0..2] != [0x00, 0x01] || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    datagram[8..20].try_into().ok()
}

/// The success response to a binding request the relay sent to `mapped`, signed with the
/// client's password.
pub fn binding_success(transaction: [u8; 12], mapped: SocketAddr, password: &str) -> Vec<u8> {
    let SocketAddr::V4(v4) = mapped else {
        panic!("IPv4 only");
    };
    let mut value = vec![0u8, 0x01];
    value.extend_from_slice(&(v4.port() ^ 0x2112).to_be_bytes());
    for (octet, mask) in v4.ip().octets().iter().zip(MAGIC_COOKIE) {
        value.push(octet ^ mask);
    }
    let mut attributes = Vec::new();
    attribute(&mut attributes, XOR_MAPPED_ADDRESS, &value);
    message(0x0101, transaction, &attributes, Some(password))
}

/// `a=ice-ufrag` and `a=ice-pwd` of an SDP.
pub fn ice_credentials(sdp: &str) -> (String, String) {
    let value = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {prefix} in {sdp}"))
    };
    (value("a=ice-ufrag:"), value("a=ice-pwd:"))
}
