//! Conversation names as they appear in e2e headers and decide routing.
//!
//! `all` is the broadcast to everyone online; a whisper between two users is the pair of
//! names, sorted and joined by a comma (`alice,bob`). User names cannot contain a comma, so
//! every name has one reading.

use crate::names::validate_username;

/// The broadcast conversation's name.
pub const ALL: &str = "all";

/// Who a conversation is between.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conversation {
    /// Everyone online.
    All,
    /// Two users (possibly the same one twice: a note to one's own devices), sorted.
    Pair(String, String),
}

/// The name is neither `all` nor a sorted pair of valid user names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown conversation {0:?}")]
pub struct BadConversation(pub String);

impl Conversation {
    /// The whisper conversation between `a` and `b`, in either order.
    pub fn pair(a: &str, b: &str) -> Self {
        if a <= b {
            Conversation::Pair(a.to_string(), b.to_string())
        } else {
            Conversation::Pair(b.to_string(), a.to_string())
        }
    }

    /// Reads a header's conversation; only the canonical (sorted) spelling is accepted.
    pub fn parse(name: &str) -> Result<Self, BadConversation> {
        if name == ALL {
            return Ok(Conversation::All);
        }
        let bad = || BadConversation(name.chars().take(80).collect());
        let (a, b) = name.split_once(',').ok_or_else(bad)?;
        if validate_username(a).is_err() || validate_username(b).is_err() || a > b {
            return Err(bad());
        }
        Ok(Conversation::Pair(a.to_string(), b.to_string()))
    }

    /// The canonical name.
    pub fn name(&self) -> String {
        match self {
            Conversation::All => ALL.to_string(),
            Conversation::Pair(a, b) => format!("{a},{b}"),
        }
    }

    /// True when `user` takes part (everyone takes part in `all`).
    pub fn includes(&self, user: &str) -> bool {
        match self {
            Conversation::All => true,
            Conversation::Pair(a, b) => a == user || b == user,
        }
    }

    /// For a pair: the member who is not `me` (or `me` for a note to oneself).
    pub fn peer_of(&self, me: &str) -> Option<&str> {
        match self {
            Conversation::All => None,
            Conversation::Pair(a, b) if a == me => Some(b),
            Conversation::Pair(a, b) if b == me => Some(a),
            Conversation::Pair(..) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_canonical_parses() {
        assert_eq!(Conversation::parse("all").unwrap(), Conversation::All);
        let p = Conversation::pair("bob", "alice");
        assert_eq!(p.name(), "alice,bob");
        assert_eq!(Conversation::parse("alice,bob").unwrap(), p);
        assert_eq!(
            Conversation::parse("alice,alice").unwrap().name(),
            "alice,alice"
        );
        for bad in [
            "bob,alice",
            "alice",
            "alice,bob,carol",
            "Alice,bob",
            "",
            "all,",
            ",bob",
        ] {
            assert!(Conversation::parse(bad).is_err(), "{bad}");
        }
        assert!(p.includes("alice") && p.includes("bob") && !p.includes("carol"));
        assert!(Conversation::All.includes("carol"));
        assert_eq!(p.peer_of("alice"), Some("bob"));
        assert_eq!(p.peer_of("carol"), None);
    }
}
