//! Which rooms this user is in, who is in them, and where plain text goes.
//!
//! The server keeps the rosters, but it must not be able to steer our text silently, so
//! (PROTOCOL.md, "End-to-end messages"):
//!
//! - the current room changes only by the user's own `/join` (or `/part`);
//! - a `members` frame puts us in a room only as the answer to a `/join` we sent;
//! - for a room we are in, only members announced by a `room` join event (shown to the
//!   user as `-- X joined #room`) are added, so a recipient never appears silently.

use std::collections::{BTreeSet, HashMap};

use chatd_proto::conversation::Conversation;
use chatd_proto::frame::{DeviceInfo, RoomState};
use chatd_proto::names::{validate_room, validate_username};

use super::{Event, Notice, Secure, Warning};
use crate::history::History;

/// What we asked the server about rooms and what we already told the user.
#[derive(Debug, Default)]
pub(super) struct Asked {
    /// Rooms we sent `/join` for that have not answered yet.
    joining: BTreeSet<String>,
    /// Rooms we sent `/part` for that have not answered yet.
    parting: BTreeSet<String>,
    /// Per room, the unannounced members last reported, so each change is said once.
    reported: HashMap<String, BTreeSet<String>>,
}

impl Secure {
    /// The devices registered at login, online or not: messages are encrypted to all of
    /// them (the server stores them for the offline ones); the rooms this user is in.
    /// Entries naming an invalid user or room are left out, with a warning.
    pub fn on_login(
        &mut self,
        devices: &[DeviceInfo],
        default_room: &str,
        rooms: &[RoomState],
    ) -> Vec<Event> {
        // The history first (once), before anything the server replays.
        let mut events = self
            .history
            .as_mut()
            .map(History::intro)
            .unwrap_or_default();
        // A default room whose name only looks right gets no text: sealing to "" is refused.
        self.default_room = match validate_room(default_room) {
            Ok(()) => default_room.to_string(),
            Err(_) => {
                events.push(Event::Warning(Warning::BadName {
                    frame: "login_ok",
                    name: default_room.to_string(),
                }));
                String::new()
            }
        };
        self.rooms = rooms
            .iter()
            .filter(|r| match bad_room_state(r) {
                Some(w) => {
                    events.push(Event::Warning(w));
                    false
                }
                None => true,
            })
            .map(|r| (r.name.clone(), r.members.iter().cloned().collect()))
            .collect();
        self.asked = Asked::default();
        // Back in the room we were talking in, if we are still in it. (Not in it any more:
        // plain text is refused until the user picks a room, rather than sent elsewhere.)
        if self.current_room.is_empty() {
            self.current_room = self.default_room.clone();
        }
        let mut valid = Vec::with_capacity(devices.len());
        for d in devices {
            if validate_username(&d.user).is_err() {
                events.push(Event::Warning(Warning::BadName {
                    frame: "login_ok",
                    name: d.user.clone(),
                }));
                continue;
            }
            valid.push(d.clone());
        }
        events.extend(self.devices_listed(&valid));
        events
    }

    /// Where plain text goes now (a room name without `#`).
    pub fn current_room(&self) -> &str {
        &self.current_room
    }

    /// The room everyone is in (without `#`; empty before login).
    pub fn default_room(&self) -> &str {
        &self.default_room
    }

    /// The rooms this user is in, other than the default one (sorted).
    pub fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .rooms
            .keys()
            .filter(|r| **r != self.default_room)
            .cloned()
            .collect();
        rooms.sort();
        rooms
    }

    /// The members of `room` this client accepted (announced ones), sorted; None if this
    /// user is not in it. The default room's are all users, so None for it too.
    pub fn room_members(&self, room: &str) -> Option<Vec<String>> {
        if room == self.default_room {
            return None;
        }
        self.rooms.get(room).map(|m| m.iter().cloned().collect())
    }

    /// Whether this user is in `room` (as far as this client accepted).
    pub fn in_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Makes `room` (one this user is in) the current room; false if not in it.
    pub fn switch_room(&mut self, room: &str) -> bool {
        if self.rooms.contains_key(room) {
            self.current_room = room.to_string();
            true
        } else {
            false
        }
    }

    /// The user is looking at `room`'s buffer: plain text goes there now. False (and
    /// nothing changes) if this user is not in it.
    pub fn talk_in(&mut self, room: &str) -> bool {
        if room == self.default_room && !room.is_empty() {
            self.current_room = room.to_string();
            return true;
        }
        self.switch_room(room)
    }

    /// We sent `/join room`: its `members` answer may put us in it.
    pub fn asking_to_join(&mut self, room: &str) {
        self.asked.joining.insert(room.to_string());
    }

    /// The `/join room` we sent was answered without a `members` frame (refused). The user
    /// meant what follows for that room: it stays the current room, where text is refused,
    /// until the user picks another, however late a script's next lines are read.
    pub fn join_unanswered(&mut self, room: &str) {
        self.asked.joining.remove(room);
        self.current_room = room.to_string();
    }

    /// We sent `/part room`: its `room` part event moves us back to the default room.
    pub fn asking_to_part(&mut self, room: &str) {
        self.asked.parting.insert(room.to_string());
    }

    /// A room's full state (the answer to our `/join`, or to `/members`).
    ///
    /// For a room we asked to join, it is the roster we start with, and the room becomes the
    /// current one (a `Joined` notice). For a room we are in, it may drop members (the
    /// server can always hide one) but adds none that no `room` join event announced: those
    /// are reported once and not encrypted to. For any other room it changes nothing, and a
    /// frame claiming we are in it is reported.
    pub fn room_state(&mut self, room: &RoomState) -> Vec<Event> {
        if let Some(w) = bad_room_state(room) {
            return vec![Event::Warning(w)];
        }
        let name = &room.name;
        let listed: BTreeSet<String> = room.members.iter().cloned().collect();
        let with_me = listed.contains(&self.me);
        // (A room we are in already keeps its roster rules, whatever we asked.)
        if with_me && !self.rooms.contains_key(name) && self.asked.joining.remove(name) {
            self.rooms.insert(name.clone(), listed);
            self.asked.reported.remove(name);
            self.current_room = name.clone();
            return vec![Event::Notice(Notice::Joined {
                room: name.clone(),
                default_room: self.default_room.clone(),
            })];
        }
        // Everyone is in the default room: its roster is all users with a device key.
        if *name == self.default_room {
            return Vec::new();
        }
        let Some(members) = self.rooms.get_mut(name) else {
            if with_me {
                return vec![Event::Warning(Warning::RosterNotAsked {
                    room: name.clone(),
                })];
            }
            return Vec::new();
        };
        if !with_me {
            // Not how the server says we left (that is a `room` part or kick event).
            return vec![Event::Warning(Warning::RosterNotAsked {
                room: name.clone(),
            })];
        }
        let gone: Vec<String> = members.difference(&listed).cloned().collect();
        for user in &gone {
            members.remove(user);
        }
        let unannounced: BTreeSet<String> = listed.difference(members).cloned().collect();
        if !gone.is_empty() {
            self.chain_stale(name);
        }
        let said = self.asked.reported.entry(name.clone()).or_default();
        if unannounced.is_empty() || *said == unannounced {
            if unannounced.is_empty() {
                said.clear();
            }
            return Vec::new();
        }
        *said = unannounced.clone();
        vec![Event::Warning(Warning::UnannouncedMembers {
            room: name.clone(),
            users: unannounced.into_iter().collect(),
        })]
    }

    /// Someone joined or left a room this user is in. A member who leaves makes our chain
    /// for the room stale, so the next message goes out under a new one they never get.
    ///
    /// Our own part moves us back to the default room only if we asked for it; removed by
    /// someone else (or by a forged event), the current room stays, and text for it is
    /// refused until the user picks another, rather than sent to a room they did not pick.
    pub fn room_event(&mut self, room: &str, user: &str, joined: bool) {
        // Nobody leaves the default room (the server refuses it): a claim otherwise is false.
        if room == self.default_room {
            return;
        }
        if user == self.me && !joined {
            self.rooms.remove(room);
            self.asked.reported.remove(room);
            self.senders.remove(&format!("#{room}"));
            if self.asked.parting.remove(room) && self.current_room == room {
                self.current_room = self.default_room.clone();
            }
            return;
        }
        let Some(members) = self.rooms.get_mut(room) else {
            return;
        };
        if joined {
            members.insert(user.to_string());
            if let Some(said) = self.asked.reported.get_mut(room) {
                said.remove(user);
            }
        } else if members.remove(user) {
            self.chain_stale(room);
        }
    }

    /// The next message to `room` goes out under a new chain.
    fn chain_stale(&mut self, room: &str) {
        if let Some(out) = self.senders.get_mut(&format!("#{room}")) {
            out.stale = true;
        }
    }

    /// Everyone is in the default room (the server joins each user at login), so its
    /// members are all users with a device key; other rooms have the members announced.
    pub(super) fn member(&self, room: &str, user: &str) -> bool {
        room == self.default_room || self.rooms.get(room).is_some_and(|m| m.contains(user))
    }

    /// The room name to show with a message: None for the default room and non-rooms.
    pub(super) fn shown_room(&self, conversation: &Conversation) -> Option<String> {
        conversation
            .room()
            .filter(|r| *r != self.default_room)
            .map(str::to_string)
    }
}

/// A room state naming an invalid room, member or owner, as a warning.
fn bad_room_state(room: &RoomState) -> Option<Warning> {
    let bad = |name: &String| Warning::BadName {
        frame: "members",
        name: name.clone(),
    };
    if validate_room(&room.name).is_err() {
        return Some(bad(&room.name));
    }
    room.members
        .iter()
        .chain(room.owner.iter())
        .find(|u| validate_username(u).is_err())
        .map(bad)
}

#[cfg(test)]
#[path = "rooms_tests.rs"]
mod tests;
