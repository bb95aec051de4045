//! Identifiers. Numbers inside the relay, prefixed strings on the wire (`PA_…`, `TR_…`) so a
//! client never confuses one kind of id for another.

use std::fmt;

macro_rules! wire_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl $name {
            /// Parses the wire form; `None` for anything else (client input is untrusted).
            pub fn parse(text: &str) -> Option<Self> {
                let hex = text.strip_prefix($prefix)?;
                if hex.is_empty() || hex.len() > 16 {
                    return None;
                }
                u64::from_str_radix(hex, 16).ok().map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{:x}"), self.0)
            }
        }
    };
}

wire_id!(
    /// One participant of one room, stable across resumed signaling connections.
    ParticipantId,
    "PA_"
);
wire_id!(
    /// One published track.
    TrackId,
    "TR_"
);

/// A room, named by its join tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub String);

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ids_round_trip_and_refuse_foreign_text() {
        let p = ParticipantId(0xdead_beef);
        assert_eq!(p.to_string(), "PA_deadbeef");
        assert_eq!(ParticipantId::parse("PA_deadbeef"), Some(p));
        assert_eq!(TrackId::parse("PA_deadbeef"), None);
        assert_eq!(TrackId::parse("TR_"), None);
        assert_eq!(TrackId::parse("TR_zz"), None);
        assert_eq!(TrackId::parse("TR_11111111111111111"), None);
        assert_eq!(
            TrackId::parse("TR_ffffffffffffffff"),
            Some(TrackId(u64::MAX))
        );
    }
}
