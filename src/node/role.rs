//! The two kinds of leg. (Its own module: the engine, the codec tables and the legs all need it,
//! and none of them should need another for it.)

/// Which way media flows on a leg, from the relay's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegRole {
    /// The participant's own media arrives here.
    Publish,
    /// Everybody else's media leaves here.
    Subscribe,
}

impl LegRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LegRole::Publish => "publish",
            LegRole::Subscribe => "subscribe",
        }
    }
}
