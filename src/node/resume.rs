//! Resume tokens: the secret a participant presents on a new connection to take its session
//! back. A new one is issued at join and on every resume (a token that leaked from an old
//! connection is worth nothing once its owner has resumed).
//!
//! Signaling sees a read-only view ([`KnownResumeTokens`]) so that join limits never refuse a
//! resume of a session the relay holds.

use super::engine::random_token;
use crate::media::ids::ParticipantId;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Random characters per token (about 190 bits).
const TOKEN_LEN: usize = 32;

/// The worker's tokens.
#[derive(Default)]
pub struct ResumeTokens {
    by_token: HashMap<String, ParticipantId>,
    known: KnownResumeTokens,
}

/// Which tokens are current, shared with signaling.
#[derive(Debug, Clone, Default)]
pub struct KnownResumeTokens(Arc<Mutex<HashSet<String>>>);

impl KnownResumeTokens {
    pub fn contains(&self, token: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(token)
    }
}

impl ResumeTokens {
    pub fn known(&self) -> KnownResumeTokens {
        self.known.clone()
    }

    pub fn participant(&self, token: &str) -> Option<ParticipantId> {
        self.by_token.get(token).copied()
    }

    /// A fresh token for `participant`, replacing `previous` (if any).
    pub fn issue(&mut self, participant: ParticipantId, previous: Option<&str>) -> String {
        let token = random_token(TOKEN_LEN);
        let mut known = self.known.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = previous {
            self.by_token.remove(previous);
            known.remove(previous);
        }
        self.by_token.insert(token.clone(), participant);
        known.insert(token.clone());
        token
    }

    pub fn revoke(&mut self, token: &str) {
        self.by_token.remove(token);
        self.known
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reissued_token_replaces_the_old_one_everywhere() {
        let mut tokens = ResumeTokens::default();
        let known = tokens.known();
        let p = ParticipantId(7);
        let first = tokens.issue(p, None);
        assert_eq!(tokens.participant(&first), Some(p));
        assert!(known.contains(&first));
        let second = tokens.issue(p, Some(&first));
        assert_ne!(first, second);
        assert_eq!(tokens.participant(&first), None);
        assert!(!known.contains(&first));
        assert!(known.contains(&second));
        tokens.revoke(&second);
        assert!(!known.contains(&second) && tokens.participant(&second).is_none());
    }
}
