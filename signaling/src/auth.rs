//! Join tokens: HS256 JWTs naming a key id (`kid`), an identity, a room and grants.
//!
//! Tokens are checked before the WebSocket upgrade, so a refused client never holds a socket.
//! The reason codes in [`TokenError`] are part of the HTTP API (401 bodies) and never change.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the bearer of a token may do in its room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub publish_data: bool,
    #[serde(default)]
    pub admin: bool,
}

impl Grants {
    /// What an ordinary call participant gets: send and receive media and data, no admin.
    pub fn participant() -> Self {
        Grants {
            publish: true,
            subscribe: true,
            publish_data: true,
            admin: false,
        }
    }
}

/// The claims of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The participant's identity: unique per room; a second join with it replaces the first.
    pub sub: String,
    /// Display name shown to others.
    #[serde(default)]
    pub name: String,
    pub room: String,
    pub grants: Grants,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: u64,
}

/// Why a token was refused. `code()` is the stable reason code sent in 401 bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    /// Decodes and verifies, but a required claim is empty or too long, or a claim has a
    /// control character.
    InvalidClaims,
}

impl TokenError {
    pub const ALL: [TokenError; 7] = [
        TokenError::Missing,
        TokenError::Malformed,
        TokenError::UnknownKey,
        TokenError::BadSignature,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::InvalidClaims,
    ];

    pub fn code(self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Malformed => "token_malformed",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::InvalidClaims => "token_invalid_claims",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            TokenError::Missing => "no access_token query parameter or Bearer header",
            TokenError::Malformed => {
                "the token is not a well-formed HS256 JWT with a kid header and no crit header"
            }
            TokenError::UnknownKey => "the token's kid names no key configured on this relay",
            TokenError::BadSignature => "the token's signature does not match its key",
            TokenError::Expired => "the token has expired; mint a new one",
            TokenError::NotYetValid => "the token is not valid yet (nbf in the future)",
            TokenError::InvalidClaims => {
                "sub and room must be 1 to 256 characters, name at most 256, none of them a \
                 control character"
            }
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.explain())
    }
}

impl std::error::Error for TokenError {}

/// Longest identity, room or name, in characters.
pub const MAX_CLAIM_CHARS: usize = 256;
/// Clock skew tolerated between the token minter and this relay.
const LEEWAY_S: u64 = 10;

/// The relay's signing keys: key id -> shared secret.
#[derive(Clone)]
pub struct KeySet {
    keys: HashMap<String, Vec<u8>>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        f.debug_struct("KeySet")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeySet {
    pub fn new(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        KeySet {
            keys: keys.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Verifies a token's signature, validity window and claims.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<JoinClaims, TokenError> {
        let claims = self.verify_signed(token)?;
        let now_s = unix_seconds(now);
        if claims.exp + LEEWAY_S <= now_s {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now_s + LEEWAY_S {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// Verifies a token's signature and claims but not its validity window: for acting on a
    /// session the token opened while it was valid (a WHIP client ends its session hours later
    /// with the token it started with).
    pub fn verify_signed(&self, token: &str) -> Result<JoinClaims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::HS256 || has_crit_header(token) {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let secret = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;

        // Time is checked here against the caller's clock, not jsonwebtoken's, so tests can
        // pass any instant.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        let data = jsonwebtoken::decode::<JoinClaims>(
            token,
            &DecodingKey::from_secret(secret),
            &validation,
        )
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed,
        })?;
        let claims = data.claims;
        check_claim_text(&claims.sub, &claims.name, &claims.room)?;
        Ok(claims)
    }

    /// Signs a token with key `kid`. Fails only if `kid` is not in the set.
    pub fn mint(&self, kid: &str, claims: &JoinClaims) -> Result<String, TokenError> {
        let secret = self.keys.get(kid).ok_or(TokenError::UnknownKey)?;
        let header = Header {
            kid: Some(kid.to_owned()),
            ..Header::new(Algorithm::HS256)
        };
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
            .map_err(|_| TokenError::Malformed)
    }
}

/// Checks an identity, display name and room for a join token: identity and room 1 to
/// [`MAX_CLAIM_CHARS`] characters, name at most that, none with a control character (C0, DEL,
/// C1); `InvalidClaims` otherwise. [`KeySet::verify`] applies exactly this, so that whoever mints
/// tokens can refuse what the relay would. Identities and names are shown to everyone in the room
/// and to operators (admin API, logs, terminals), where a control character could forge a line
/// or an escape sequence.
pub fn check_claim_text(identity: &str, name: &str, room: &str) -> Result<(), TokenError> {
    let fits = |s: &str| s.chars().count() <= MAX_CLAIM_CHARS && !s.chars().any(char::is_control);
    if identity.is_empty() || room.is_empty() || !fits(identity) || !fits(name) || !fits(room) {
        return Err(TokenError::InvalidClaims);
    }
    Ok(())
}

/// Whether the token's header has a `crit` member. RFC 7515 §4.1.11: a token is invalid when
/// `crit` names an extension the recipient does not understand, and the relay understands none
/// (an empty list is forbidden outright). `jsonwebtoken` ignores header members it does not know,
/// so the header is read again here; one that cannot be read counts as having one.
fn has_crit_header(token: &str) -> bool {
    let encoded = token.split('.').next().unwrap_or("");
    URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|json| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).ok()
        })
        .is_none_or(|header| header.contains_key("crit"))
}

/// Claims for a token valid from `now` for `ttl`.
pub fn claims_for(
    room: &str,
    identity: &str,
    name: &str,
    grants: Grants,
    now: SystemTime,
    ttl: Duration,
) -> JoinClaims {
    let now_s = unix_seconds(now);
    JoinClaims {
        sub: identity.to_owned(),
        name: name.to_owned(),
        room: room.to_owned(),
        grants,
        exp: now_s + ttl.as_secs(),
        nbf: now_s,
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeySet {
        KeySet::new([
            ("k1".to_owned(), b"secret-one-secret-one".to_vec()),
            ("k2".to_owned(), b"secret-two-secret-two".to_vec()),
        ])
    }

    fn claims(now: SystemTime) -> JoinClaims {
        claims_for(
            "room",
            "alice",
            "Alice",
            Grants::participant(),
            now,
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let now = SystemTime::now();
        let token = keys().mint("k1", &claims(now)).unwrap();
        assert_eq!(keys().verify(&token, now).unwrap(), claims(now));
    }

    #[test]
    fn each_bad_token_gets_its_own_reason() {
        let now = SystemTime::now();
        let ks = keys();
        assert_eq!(ks.verify("", now), Err(TokenError::Missing));
        assert_eq!(ks.verify("abc.def", now), Err(TokenError::Malformed));
        assert_eq!(ks.verify("a.b.c", now), Err(TokenError::Malformed));

        let other = KeySet::new([("k3".to_owned(), b"x".to_vec())]);
        let unknown = other.mint("k3", &claims(now)).unwrap();
        assert_eq!(ks.verify(&unknown, now), Err(TokenError::UnknownKey));

        let forged = KeySet::new([("k1".to_owned(), b"not-the-secret".to_vec())])
            .mint("k1", &claims(now))
            .unwrap();
        assert_eq!(ks.verify(&forged, now), Err(TokenError::BadSignature));

        let token = ks.mint("k2", &claims(now)).unwrap();
        let later = now + Duration::from_secs(3600 + 60);
        assert_eq!(ks.verify(&token, later), Err(TokenError::Expired));
        let earlier = now - Duration::from_secs(120);
        assert_eq!(ks.verify(&token, earlier), Err(TokenError::NotYetValid));

        let mut empty_room = claims(now);
        empty_room.room.clear();
        let token = ks.mint("k1", &empty_room).unwrap();
        assert_eq!(ks.verify(&token, now), Err(TokenError::InvalidClaims));
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token signed with `k1` whose header is exactly `header`.
    fn signed_with_header(header: &str, now: SystemTime) -> String {
        let body = format!(
            "{}.{}",
            b64(header.as_bytes()),
            b64(&serde_json::to_vec(&claims(now)).unwrap())
        );
        let key = EncodingKey::from_secret(b"secret-one-secret-one");
        let signature =
            jsonwebtoken::crypto::sign(body.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{body}.{signature}")
    }

    #[test]
    fn a_token_with_a_crit_header_is_refused() {
        let now = SystemTime::now();
        let plain = signed_with_header(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#, now);
        assert_eq!(keys().verify(&plain, now), Ok(claims(now)));
        for header in [
            r#"{"alg":"HS256","typ":"JWT","kid":"k1","crit":["exp"]}"#,
            r#"{"alg":"HS256","kid":"k1","crit":["b64"],"b64":false}"#,
            r#"{"alg":"HS256","kid":"k1","crit":[]}"#,
            r#"{"alg":"HS256","kid":"k1","crit":null}"#,
        ] {
            let token = signed_with_header(header, now);
            assert_eq!(
                keys().verify(&token, now),
                Err(TokenError::Malformed),
                "{header}"
            );
        }
    }

    #[test]
    fn claims_with_control_characters_or_too_long_are_refused() {
        let now = SystemTime::now();
        let long = "x".repeat(MAX_CLAIM_CHARS + 1);
        let longest = "é".repeat(MAX_CLAIM_CHARS);
        let cases: [(&str, &str, &str, bool); 12] = [
            ("alice", "Alice", "room", true),
            (&longest, &longest, &longest, true),
            ("alice", "", "room", true),
            ("", "Alice", "room", false),
            ("alice", "Alice", "", false),
            (&long, "Alice", "room", false),
            ("alice", &long, "room", false),
            ("alice", "Alice", &long, false),
            ("ali\u{1b}[2Jce", "Alice", "room", false),
            ("alice", "Alice\nBob: hi", "room", false),
            ("alice", "Alice\u{7f}", "room", false),
            ("alice", "Alice", "ro\u{85}om", false),
        ];
        for (identity, name, room, ok) in cases {
            let want = if ok {
                Ok(())
            } else {
                Err(TokenError::InvalidClaims)
            };
            assert_eq!(
                check_claim_text(identity, name, room),
                want,
                "{identity:?} {name:?} {room:?}"
            );
            let mut claims = claims(now);
            (claims.sub, claims.name, claims.room) = (identity.into(), name.into(), room.into());
            let token = keys().mint("k1", &claims).unwrap();
            let verified = keys().verify(&token, now).map(|_| ());
            assert_eq!(verified, want, "{identity:?} {name:?} {room:?}");
        }
        // C1 controls and DEL, but not other invisible characters: names in every script pass.
        assert!(check_claim_text("\u{9f}", "a", "r").is_err());
        assert!(check_claim_text("a", "\u{a0}Zoë \u{200d}", "r").is_ok());
    }

    #[test]
    fn key_set_debug_never_shows_secrets() {
        let text = format!("{:?}", keys());
        assert!(!text.contains("secret-one"));
    }
}
