//! Why the node refused what a client asked, typed by whose fault it was.
//!
//! A client's mistake is explained to it (the code it can act on, and what was wrong). A failure
//! inside the relay is logged with its detail and the client is told only that the relay failed
//! at what: internal error text (library messages, addresses, state) never goes on the wire.

use std::fmt::Display;
use tern_signaling::protocol::ErrorCode;
use tracing::warn;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request was wrong or not allowed now.
    Client { code: ErrorCode, reason: String },
    /// The relay itself failed while `doing` this.
    Internal { doing: &'static str, detail: String },
}

impl Refusal {
    pub fn client(code: ErrorCode, reason: impl Into<String>) -> Self {
        Refusal::Client {
            code,
            reason: reason.into(),
        }
    }

    pub fn internal(doing: &'static str, detail: impl Display) -> Self {
        Refusal::Internal {
            doing,
            detail: detail.to_string(),
        }
    }

    /// What the client is told: its code and explanation, or that the relay failed (the detail
    /// is logged here, once, instead).
    pub fn into_wire(self) -> (ErrorCode, String) {
        match self {
            Refusal::Client { code, reason } => (code, reason),
            Refusal::Internal { doing, detail } => {
                warn!(doing, detail, "refused a request: the relay failed");
                (
                    ErrorCode::Internal,
                    format!("the relay failed while {doing}; try again"),
                )
            }
        }
    }

    /// For logs.
    pub fn text(&self) -> &str {
        match self {
            Refusal::Client { reason, .. } => reason,
            Refusal::Internal { detail, .. } => detail,
        }
    }
}

/// A client's mistake (shorthand for [`Refusal::client`]).
pub fn refuse(code: ErrorCode, reason: impl Into<String>) -> Refusal {
    Refusal::client(code, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_stays_in_the_relay() {
        let refusal = Refusal::internal("creating a peer connection", "EPERM at 10.0.0.1:3478");
        let (code, text) = refusal.into_wire();
        assert_eq!(code, ErrorCode::Internal);
        assert!(!text.contains("10.0.0.1"), "{text}");
        let (code, text) = refuse(ErrorCode::InvalidSdp, "no m-line").into_wire();
        assert_eq!((code, text.as_str()), (ErrorCode::InvalidSdp, "no m-line"));
    }
}
