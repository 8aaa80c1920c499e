//! Conversation names as they appear in e2e headers and decide routing.
//!
//! `all` is the broadcast to everyone; a whisper between two users is the pair of names,
//! sorted and joined by a comma (`alice,bob`); a room is `#` and its name (`#lobby`). User
//! names cannot contain a comma or `#`, so every name has one reading.

use crate::names::{validate_room, validate_username};

/// The broadcast conversation's name.
pub const ALL: &str = "all";

/// Who a conversation is between.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conversation {
    /// Everyone online.
    All,
    /// Two users (possibly the same one twice: a note to one's own devices), sorted.
    Pair(String, String),
    /// The members of a room (name without the `#`); who they are is the server's record,
    /// announced to members.
    Room(String),
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
        if let Some(room) = name.strip_prefix('#') {
            validate_room(room).map_err(|_| bad())?;
            return Ok(Conversation::Room(room.to_string()));
        }
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
            Conversation::Room(r) => format!("#{r}"),
        }
    }

    /// True when `user` takes part (everyone takes part in `all`); for a room, when
    /// `room_members` (the members as known) contains `user`.
    pub fn includes(&self, user: &str, room_members: impl FnOnce(&str) -> bool) -> bool {
        match self {
            Conversation::All => true,
            Conversation::Pair(a, b) => a == user || b == user,
            Conversation::Room(r) => room_members(r),
        }
    }

    /// For a pair: the member who is not `me` (or `me` for a note to oneself).
    pub fn peer_of(&self, me: &str) -> Option<&str> {
        match self {
            Conversation::All => None,
            Conversation::Pair(a, b) if a == me => Some(b),
            Conversation::Pair(a, b) if b == me => Some(a),
            Conversation::Pair(..) | Conversation::Room(_) => None,
        }
    }

    /// The room's name, for a room.
    pub fn room(&self) -> Option<&str> {
        match self {
            Conversation::Room(r) => Some(r),
            _ => None,
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
            "#",
            "#Lobby",
            "##x",
            "#a,b",
        ] {
            assert!(Conversation::parse(bad).is_err(), "{bad}");
        }
        let no = |_: &str| false;
        assert!(p.includes("alice", no) && p.includes("bob", no) && !p.includes("carol", no));
        assert!(Conversation::All.includes("carol", no));
        let room = Conversation::parse("#dev-ops_2").unwrap();
        assert_eq!(
            (room.name(), room.room()),
            ("#dev-ops_2".to_string(), Some("dev-ops_2"))
        );
        assert!(room.includes("carol", |r| r == "dev-ops_2") && !room.includes("carol", no));
        assert_eq!(room.peer_of("carol"), None);
        assert_eq!(p.peer_of("alice"), Some("bob"));
        assert_eq!(p.peer_of("carol"), None);
    }
}
