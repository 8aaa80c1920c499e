//! `/join ROOM` and the lines typed before its answer, for both interfaces.
//!
//! A line typed right after `/join ops` is meant for #ops, but until the server answers,
//! the current room is still the old one. So from the `/join` on, typed lines wait here
//! (in order, commands included) until the answer: a `members` frame for that room that
//! puts us in it (then they are handled as if typed now, in the joined room), or else the
//! `pong` to the `ping` sent right behind the `/join` — the server handles a session's
//! frames in order, so the join's answer precedes that `pong`, and a `pong` without it
//! means the join was refused: the waiting lines are dropped, and the user is told how
//! many.

use std::collections::VecDeque;

use chatd_proto::{ClientFrame, ServerFrame};

use crate::secure::{Event, Notice, Secure, Warning};

/// Most lines kept while a join is unanswered; the line mode stops reading stdin there.
pub const MAX_HELD: usize = 1000;

/// High bits of the `ping` nonces that mark a join (keepalive pings use 0).
const JOIN_NONCE: u64 = 0x6a6f_696e << 32;

/// The join waiting for its answer and the lines typed meanwhile.
#[derive(Debug, Default)]
pub struct Joins {
    /// The room asked for and the nonce of the `ping` sent behind the `/join`.
    waiting: Option<(String, u64)>,
    /// Lines typed since, oldest first.
    held: VecDeque<String>,
    /// The user was told that lines wait (once per join).
    said: bool,
    /// Joins started, for distinct nonces.
    count: u32,
}

impl Joins {
    /// Nothing waiting.
    pub fn new() -> Self {
        Joins::default()
    }

    /// `/join room` is about to be sent: returns the `ping` to send right after it.
    pub fn start(&mut self, room: &str, secure: &mut Secure) -> ClientFrame {
        self.count = self.count.wrapping_add(1);
        let nonce = JOIN_NONCE | u64::from(self.count);
        secure.asking_to_join(room);
        self.waiting = Some((room.to_string(), nonce));
        self.said = false;
        ClientFrame::Ping { nonce }
    }

    /// A join is unanswered, or lines wait to be handled: a typed line must be held.
    pub fn busy(&self) -> bool {
        self.waiting.is_some() || !self.held.is_empty()
    }

    /// No more lines can be held.
    pub fn full(&self) -> bool {
        self.held.len() >= MAX_HELD
    }

    /// Keeps a line typed while [`Joins::busy`]; the first one of a join gives a notice.
    /// A line over [`MAX_HELD`] is not kept.
    pub fn hold(&mut self, line: String) -> Option<Event> {
        if self.full() {
            return None;
        }
        self.held.push_back(line);
        match &self.waiting {
            Some((room, _)) if !self.said => {
                self.said = true;
                Some(Event::Notice(Notice::JoinWaiting { room: room.clone() }))
            }
            _ => None,
        }
    }

    /// The next held line to handle now (the join was answered), oldest first; None while
    /// a join waits (one of the held lines may have been another `/join`).
    pub fn next_line(&mut self) -> Option<String> {
        if self.waiting.is_some() {
            return None;
        }
        self.held.pop_front()
    }

    /// Looks at a frame after the end-to-end layer has (`secure` is up to date with it):
    /// it may answer the join. A refusal drops the held lines, and says so.
    pub fn answer(&mut self, frame: &ServerFrame, secure: &mut Secure) -> Option<Event> {
        let (room, nonce) = self.waiting.as_ref()?;
        match frame {
            ServerFrame::Members { room: state } if state.name == *room && secure.in_room(room) => {
                self.waiting = None;
                None
            }
            ServerFrame::Pong { nonce: n } if n == nonce => self.refused(secure),
            _ => None,
        }
    }

    /// The connection is gone: what waits for the join's answer is not sent.
    pub fn lost(&mut self, secure: &mut Secure) -> Option<Event> {
        if self.waiting.is_some() {
            return self.refused(secure);
        }
        None
    }

    fn refused(&mut self, secure: &mut Secure) -> Option<Event> {
        let (room, _) = self.waiting.take()?;
        secure.join_unanswered(&room);
        let dropped = self.held.len();
        self.held.clear();
        (dropped > 0).then_some(Event::Warning(Warning::JoinRefused { room, dropped }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::Peers;
    use chatd_proto::e2e::DeviceKey;
    use chatd_proto::frame::RoomState;

    fn alice() -> Secure {
        let key = DeviceKey::from_pkcs8_pem(include_str!("../../proto/src/e2e/testdata/alice.pem"))
            .unwrap();
        let mut s = Secure::new("alice", key, Peers::in_memory(), 60_000, 4096);
        s.on_login(&[], "lobby", &[]);
        s
    }

    fn members(room: &str, members: &[&str]) -> ServerFrame {
        ServerFrame::Members {
            room: RoomState {
                name: room.into(),
                topic: String::new(),
                members: members.iter().map(|m| m.to_string()).collect(),
                invite_only: false,
                owner: None,
            },
        }
    }

    /// What the dispatcher does with a frame, then the join's look at it.
    fn deliver(frame: &ServerFrame, joins: &mut Joins, secure: &mut Secure) -> Option<Event> {
        if let ServerFrame::Members { room } = frame {
            secure.room_state(room);
        }
        joins.answer(frame, secure)
    }

    #[test]
    fn lines_wait_for_the_join_and_then_go_in_order() {
        let mut secure = alice();
        let mut joins = Joins::new();
        assert!(!joins.busy());
        let ClientFrame::Ping { nonce } = joins.start("ops", &mut secure) else {
            panic!()
        };
        assert!(joins.busy());
        let notice = joins.hold("first".into());
        assert_eq!(
            notice,
            Some(Event::Notice(Notice::JoinWaiting { room: "ops".into() }))
        );
        assert_eq!(joins.hold("/join dev".into()), None);
        assert_eq!(joins.hold("third".into()), None);
        assert_eq!(joins.next_line(), None);
        // Other frames, another room's members and an old pong answer nothing.
        for other in [
            members("dev", &["alice", "bob"]),
            ServerFrame::Pong { nonce: 0 },
            ServerFrame::Pong { nonce: nonce + 1 },
            members("ops", &["bob"]),
        ] {
            assert_eq!(deliver(&other, &mut joins, &mut secure), None);
            assert_eq!(joins.next_line(), None);
        }
        assert_eq!(secure.current_room(), "lobby");
        assert_eq!(
            deliver(&members("ops", &["alice", "bob"]), &mut joins, &mut secure),
            None
        );
        assert_eq!(secure.current_room(), "ops");
        assert_eq!(joins.next_line().as_deref(), Some("first"));
        assert_eq!(joins.next_line().as_deref(), Some("/join dev"));
        // The held `/join dev` starts another wait: "third" waits for it.
        let ClientFrame::Ping { nonce } = joins.start("dev", &mut secure) else {
            panic!()
        };
        assert_eq!(joins.next_line(), None);
        assert!(joins.busy());
        // Its pong comes without a members frame: refused, "third" dropped and counted.
        assert_eq!(
            deliver(&ServerFrame::Pong { nonce }, &mut joins, &mut secure),
            Some(Event::Warning(Warning::JoinRefused {
                room: "dev".into(),
                dropped: 1
            }))
        );
        assert!(!joins.busy());
        // What is typed next was meant for #dev too: refused, not sent to #ops.
        assert_eq!(secure.current_room(), "dev");
        assert!(matches!(
            crate::dispatch::line("late", &mut secure),
            crate::dispatch::Step::Refused(_)
        ));
        // Refused means forgotten: a late members frame for it does not put us there.
        let late = members("dev", &["alice", "mallory"]);
        deliver(&late, &mut joins, &mut secure);
        assert!(!secure.in_room("dev"));
        assert_eq!(secure.current_room(), "dev");
    }

    #[test]
    fn a_refusal_with_nothing_typed_says_nothing_and_a_lost_connection_drops_the_lines() {
        let mut secure = alice();
        let mut joins = Joins::new();
        let ClientFrame::Ping { nonce } = joins.start("secret", &mut secure) else {
            panic!()
        };
        assert_eq!(
            deliver(&ServerFrame::Pong { nonce }, &mut joins, &mut secure),
            None
        );
        joins.start("secret", &mut secure);
        joins.hold("a".into());
        joins.hold("b".into());
        assert_eq!(
            joins.lost(&mut secure),
            Some(Event::Warning(Warning::JoinRefused {
                room: "secret".into(),
                dropped: 2
            }))
        );
        assert!(!joins.busy());
        for i in 0..MAX_HELD + 5 {
            joins.held.push_back(i.to_string());
        }
        assert!(joins.full());
        assert_eq!(joins.hold("more".into()), None);
        assert_eq!(joins.held.len(), MAX_HELD + 5);
    }
}
