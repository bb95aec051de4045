//! The STUN and TURN servers a participant is given at join, with TURN credentials minted per
//! participant by the TURN REST scheme coturn implements (`use-auth-secret`): the username is
//! `<expiry unix seconds>:<identity>`, the password base64(HMAC-SHA1(shared secret, username)).
//! The TURN server checks both without talking to the relay; they stop working at expiry.

use base64::Engine;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tern_signaling::protocol::IceServer;

#[derive(Debug, Clone, Default)]
pub struct IceServerConfig {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    pub turn_secret: String,
    pub turn_credential_ttl: Duration,
}

impl IceServerConfig {
    /// What to hand `identity` joining at `now`.
    pub fn for_participant(&self, identity: &str, now: SystemTime) -> Vec<IceServer> {
        let mut servers = Vec::new();
        if !self.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn_urls.is_empty() {
            let (username, credential) =
                turn_credentials(&self.turn_secret, identity, now, self.turn_credential_ttl);
            servers.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }
}

/// (username, password) valid until `now + ttl`.
pub fn turn_credentials(
    secret: &str,
    identity: &str,
    now: SystemTime,
    ttl: Duration,
) -> (String, String) {
    let expiry = (now + ttl)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    // A colon in the identity would end coturn's timestamp field early; it is only a label here.
    let username = format!("{expiry}:{}", identity.replace(':', "_"));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (user, pass) = turn_credentials("s3cret", "alice", now, Duration::from_secs(3600));
        assert_eq!(user, "1700003600:alice");
        // printf '1700003600:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64
        assert_eq!(pass, "YAFdW/YDZewZsR1QSgUk2IrfbRI=");
    }

    #[test]
    fn only_configured_servers_are_handed_out() {
        let none = IceServerConfig::default();
        assert!(none.for_participant("a", SystemTime::now()).is_empty());
        let both = IceServerConfig {
            stun_urls: vec!["stun:stun.example:3478".into()],
            turn_urls: vec!["turn:turn.example:3478?transport=udp".into()],
            turn_secret: "s".into(),
            turn_credential_ttl: Duration::from_secs(60),
        };
        let servers = both.for_participant("a:b", SystemTime::now());
        assert_eq!(servers.len(), 2);
        assert!(servers[0].username.is_none());
        assert!(servers[1].username.as_deref().unwrap().ends_with(":a_b"));
    }
}
