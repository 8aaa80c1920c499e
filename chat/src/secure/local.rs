//! The client-side state the session keeps beside its keys: the `/ignore` list, `/ping`s
//! in flight, and what Tab completion may offer (rooms, pinned fingerprints, own devices).

use chatd_proto::Fingerprint;

use super::{ChatMessage, Event, Notice, Secure, Warning};
use crate::ignore::Ignored;
use crate::peers::KeyStatus;

impl Secure {
    /// Uses `ignored` (loaded from its file) as the `/ignore` list.
    pub fn set_ignored(&mut self, ignored: Ignored) {
        self.ignored = ignored;
    }

    /// Whether `user`'s lines are hidden.
    pub fn is_ignored(&self, user: &str) -> bool {
        self.ignored.contains(user)
    }

    /// The ignored users, sorted.
    pub fn ignored_users(&self) -> Vec<String> {
        self.ignored.list()
    }

    /// `/ignore [USER]`.
    pub fn ignore(&mut self, user: Option<&str>) -> Vec<Event> {
        let Some(user) = user else {
            return vec![Event::Notice(Notice::Ignoring {
                users: self.ignored.list(),
            })];
        };
        match self.ignored.add(user, &self.me) {
            Ok(changed) => vec![Event::Notice(Notice::IgnoreChanged {
                user: user.to_string(),
                ignored: true,
                changed,
            })],
            Err(e) => vec![Event::Warning(Warning::Ignore { why: e.to_string() })],
        }
    }

    /// `/unignore USER`.
    pub fn unignore(&mut self, user: &str) -> Vec<Event> {
        match self.ignored.remove(user) {
            Ok(changed) => vec![Event::Notice(Notice::IgnoreChanged {
                user: user.to_string(),
                ignored: false,
                changed,
            })],
            Err(e) => vec![Event::Warning(Warning::Ignore { why: e.to_string() })],
        }
    }

    /// `events` without the messages and whispers of ignored users.
    pub fn drop_ignored(&self, mut events: Vec<Event>) -> Vec<Event> {
        events.retain(|e| match e {
            Event::Message(ChatMessage { from, .. }) => !self.ignored.contains(from),
            _ => true,
        });
        events
    }

    /// `/ping` is about to be sent: its nonce.
    pub fn ping_nonce(&mut self) -> u64 {
        self.pings.start()
    }

    /// A `pong`: the notice with the round trip if it answers our `/ping`.
    pub fn pong(&mut self, nonce: u64) -> Vec<Event> {
        self.pings
            .pong(nonce)
            .map(|rtt| {
                Event::Notice(Notice::Pong {
                    micros: u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
                })
            })
            .into_iter()
            .collect()
    }

    /// The rooms this user is in (the default one included), sorted.
    pub fn known_rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.rooms.keys().cloned().collect();
        if !self.default_room.is_empty() {
            rooms.push(self.default_room.clone());
        }
        rooms.sort();
        rooms.dedup();
        rooms
    }

    /// `user`'s pinned keys that are not revoked.
    pub fn pinned_fingerprints(&self, user: &str) -> Vec<Fingerprint> {
        self.peers
            .keys(user)
            .iter()
            .filter(|k| k.status != KeyStatus::Revoked)
            .map(|k| k.fingerprint)
            .collect()
    }

    /// This account's other device keys that are not revoked (what `/devices approve|revoke`
    /// may name).
    pub fn own_devices(&self) -> Vec<Fingerprint> {
        let mut fps = self.pinned_fingerprints(&self.me);
        fps.retain(|fp| *fp != self.device);
        fps
    }
}
