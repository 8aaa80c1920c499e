//! Which server frames reach the user, and how often: a frame naming a user or room that
//! cannot exist is refused whole, and a state the server repeats is said once.
//!
//! Shared by the line mode and the TUI, and run before anything else looks at a frame.

use std::collections::{BTreeSet, HashMap};

use chatd_proto::ServerFrame;
use chatd_proto::conversation::ALL;
use chatd_proto::frame::PresenceEvent;
use chatd_proto::names::{validate_room, validate_username};

use crate::secure::{Event, Warning};

/// What to do with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Handle and show it.
    Show,
    /// Handle it, but it says nothing new: show nothing.
    Quiet,
    /// Ignore it; show this instead.
    Refused(Event),
}

/// What was already said, per session.
#[derive(Debug, Default)]
pub struct Screen {
    /// Per conversation, the users last reported as offline by a `held` frame.
    held: HashMap<String, BTreeSet<String>>,
}

impl Screen {
    /// A new session: nothing said yet.
    pub fn new() -> Self {
        Screen::default()
    }

    /// Judges `frame`; keeps what it needs to say the next one only if it changed something.
    pub fn check(&mut self, frame: &ServerFrame) -> Verdict {
        if let Some((kind, name)) = bad_name(frame) {
            return Verdict::Refused(Event::Warning(Warning::BadName {
                frame: kind,
                name: name.to_string(),
            }));
        }
        match frame {
            ServerFrame::Held {
                conversation,
                users,
                ..
            } if conversation != ALL => {
                let users: BTreeSet<String> = users.iter().cloned().collect();
                match self.held.insert(conversation.clone(), users.clone()) {
                    Some(before) if before == users => Verdict::Quiet,
                    _ => Verdict::Show,
                }
            }
            // Back online: the offline set of their conversations changed, so the next
            // `held` of each is news, whoever it names.
            ServerFrame::Presence {
                user,
                event: PresenceEvent::Join,
                ..
            } => {
                self.held.retain(|_, offline| !offline.contains(user));
                Verdict::Show
            }
            _ => Verdict::Show,
        }
    }
}

/// The first name in `frame` that no user (or room) can have, with the frame's type.
fn bad_name(frame: &ServerFrame) -> Option<(&'static str, &str)> {
    fn users<'a>(
        kind: &'static str,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Option<(&'static str, &'a str)> {
        names
            .into_iter()
            .find(|u| validate_username(u).is_err())
            .map(|u| (kind, u.as_str()))
    }
    fn rooms<'a>(
        kind: &'static str,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Option<(&'static str, &'a str)> {
        names
            .into_iter()
            .find(|r| validate_room(r).is_err())
            .map(|r| (kind, r.as_str()))
    }
    match frame {
        ServerFrame::Room { room, user, by, .. } => {
            rooms("room", [room]).or_else(|| users("room", std::iter::once(user).chain(by)))
        }
        ServerFrame::Members { room } => rooms("members", [&room.name])
            .or_else(|| users("members", room.members.iter().chain(room.owner.iter()))),
        ServerFrame::Topic { room, by, .. } => {
            rooms("topic", [room]).or_else(|| users("topic", [by]))
        }
        ServerFrame::Rooms { rooms: list } => rooms("rooms", list.iter().map(|r| &r.name)),
        ServerFrame::Presence { user, .. } => users("presence", [user]),
        ServerFrame::Device { user, .. } => users("device", [user]),
        ServerFrame::Users { users: list } => users("users", list.iter().map(|u| &u.user)),
        ServerFrame::Whois {
            user, rooms: list, ..
        } => users("whois", [user]).or_else(|| rooms("whois", list)),
        ServerFrame::Held { users: list, .. } => users("held", list),
        ServerFrame::Envelope { from, .. } => users("envelope", [from]),
        ServerFrame::Chain { from, .. } => users("chain", [from]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::frame::{OnlineUser, RoomEvent, RoomState};

    fn held(users: &[&str]) -> ServerFrame {
        ServerFrame::Held {
            message: "00".repeat(16),
            conversation: "#lobby".into(),
            users: users.iter().map(|u| u.to_string()).collect(),
        }
    }

    #[test]
    fn the_offline_set_is_said_when_it_changes() {
        let mut s = Screen::new();
        assert_eq!(s.check(&held(&["bob", "carol"])), Verdict::Show);
        for _ in 0..30 {
            assert_eq!(s.check(&held(&["carol", "bob"])), Verdict::Quiet);
        }
        assert_eq!(s.check(&held(&["bob"])), Verdict::Show);
        assert_eq!(s.check(&held(&["bob"])), Verdict::Quiet);
        // Another conversation is its own story.
        let whisper = ServerFrame::Held {
            message: "00".repeat(16),
            conversation: "alice,bob".into(),
            users: vec!["bob".into()],
        };
        assert_eq!(s.check(&whisper), Verdict::Show);
        // Bob comes back and leaves again: news again.
        let back = ServerFrame::Presence {
            user: "bob".into(),
            event: PresenceEvent::Join,
            reason: None,
        };
        assert_eq!(s.check(&back), Verdict::Show);
        assert_eq!(s.check(&held(&["bob"])), Verdict::Show);
        assert_eq!(s.check(&whisper), Verdict::Show);
        // Carol comes back: the lobby's offline set is now bob alone, which is news.
        assert_eq!(s.check(&held(&["bob", "carol"])), Verdict::Show);
        let carol_back = ServerFrame::Presence {
            user: "carol".into(),
            event: PresenceEvent::Join,
            reason: None,
        };
        assert_eq!(s.check(&carol_back), Verdict::Show);
        assert_eq!(s.check(&held(&["bob"])), Verdict::Show);
        assert_eq!(s.check(&whisper), Verdict::Quiet);
    }

    fn refused(s: &mut Screen, frame: &ServerFrame) -> (&'static str, String) {
        match s.check(frame) {
            Verdict::Refused(Event::Warning(Warning::BadName { frame, name })) => (frame, name),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invisible_and_look_alike_names_refuse_the_frame() {
        let mut s = Screen::new();
        let zwsp = "bob\u{200b}";
        let lobby_zw = "lobby\u{200b}";
        let room = |name: &str, members: &[&str]| ServerFrame::Members {
            room: RoomState {
                name: name.into(),
                topic: String::new(),
                members: members.iter().map(|m| m.to_string()).collect(),
                invite_only: false,
                owner: None,
            },
        };
        assert_eq!(
            refused(&mut s, &room(lobby_zw, &["alice"])),
            ("members", lobby_zw.to_string())
        );
        assert_eq!(
            refused(&mut s, &room("ops", &["alice", zwsp])),
            ("members", zwsp.to_string())
        );
        assert_eq!(s.check(&room("ops", &["alice", "bob"])), Verdict::Show);
        let presence = ServerFrame::Presence {
            user: zwsp.into(),
            event: PresenceEvent::Join,
            reason: None,
        };
        assert_eq!(refused(&mut s, &presence).0, "presence");
        let join = ServerFrame::Room {
            room: "ops".into(),
            user: "\u{430}lice".into(),
            event: RoomEvent::Join,
            by: None,
        };
        assert_eq!(refused(&mut s, &join).0, "room");
        let kick = ServerFrame::Room {
            room: "ops".into(),
            user: "bob".into(),
            event: RoomEvent::Kick,
            by: Some("al\u{1b}[2Jice".into()),
        };
        assert_eq!(refused(&mut s, &kick).0, "room");
        let users = ServerFrame::Users {
            users: vec![OnlineUser {
                user: "Bob".into(),
                sessions: 1,
                away: None,
            }],
        };
        assert_eq!(refused(&mut s, &users).0, "users");
        let device = ServerFrame::Device {
            user: zwsp.into(),
            fingerprint: chatd_proto::Fingerprint::from_bytes([1; 32]),
            key: None,
            event: chatd_proto::frame::DeviceEvent::Offline,
            vouches: Vec::new(),
        };
        assert_eq!(refused(&mut s, &device).0, "device");
        let whois = ServerFrame::Whois {
            user: "bob".into(),
            sessions: 1,
            away: None,
            admin: false,
            devices: vec![],
            rooms: vec![lobby_zw.into()],
        };
        assert_eq!(refused(&mut s, &whois).0, "whois");
        let topic = ServerFrame::Topic {
            room: "#ops".into(),
            topic: "t".into(),
            by: "bob".into(),
        };
        assert_eq!(refused(&mut s, &topic).0, "topic");
        assert_eq!(refused(&mut s, &held(&["bob", zwsp])).0, "held");
        // Free text is not a name: it is sanitized when shown, not refused.
        let notice = ServerFrame::Notice {
            text: "bob\u{200b} \u{1b}]0;title\u{7}".into(),
        };
        assert_eq!(s.check(&notice), Verdict::Show);
    }
}
