//! Rooms as the hub mirrors them from the database: members (online or not), topic, owner,
//! invite-only; the notices of joins, parts, kicks and topics; delivery to a room.

use std::collections::{BTreeMap, BTreeSet};

use chatd_proto::frame::{RoomEvent, RoomState, RoomSummary, ServerFrame};

use super::outgoing::{Outgoing, serialize};
use super::{Hub, Inner};

/// A room: who is in it (online or not) and its settings.
#[derive(Debug, Clone, Default)]
pub struct Room {
    /// Topic (empty: none).
    pub topic: String,
    /// Joining needs an invitation.
    pub invite_only: bool,
    /// Creator, while that account exists.
    pub owner: Option<String>,
    /// Members, online or not.
    pub members: BTreeSet<String>,
}

impl Room {
    pub(super) fn state(&self, name: &str) -> RoomState {
        RoomState {
            name: name.to_string(),
            topic: self.topic.clone(),
            members: self.members.iter().cloned().collect(),
            invite_only: self.invite_only,
            owner: self.owner.clone(),
        }
    }
}

/// Every room, by name (without `#`), and which one everybody is in.
#[derive(Default)]
pub(super) struct Rooms {
    pub(super) map: BTreeMap<String, Room>,
    /// The room every user is in.
    pub(super) default: String,
}

impl Rooms {
    /// True when `user` is a member of `room`.
    pub(super) fn is_member(&self, room: &str, user: &str) -> bool {
        self.map.get(room).is_some_and(|r| r.members.contains(user))
    }
}

impl Inner {
    /// Queues `line` for every session of the members of `room`; returns how many.
    pub(super) fn deliver_room(&mut self, room: &str, line: &impl Outgoing) -> usize {
        // Every logged-in user is in the default room: no member lookups on the busiest path.
        if room == self.rooms.default {
            return self.sessions.deliver_all(line, None);
        }
        let Some(r) = self.rooms.map.get(room) else {
            return 0;
        };
        let members: Vec<&str> = r.members.iter().map(String::as_str).collect();
        self.sessions.deliver_users(&members, line)
    }
}

impl Hub {
    /// Sets every room (at startup) and which one is the default.
    pub fn set_rooms(&self, rooms: impl IntoIterator<Item = (String, Room)>, default_room: &str) {
        let mut inner = self.lock();
        inner.rooms.map = rooms.into_iter().collect();
        inner.rooms.default = default_room.to_string();
    }

    /// The default room's name.
    pub fn default_room(&self) -> String {
        self.lock().rooms.default.clone()
    }

    /// A copy of a room, if it exists.
    pub fn room(&self, name: &str) -> Option<Room> {
        self.lock().rooms.map.get(name).cloned()
    }

    /// Number of rooms, and of rooms `user` is in.
    pub fn room_counts(&self, user: &str) -> (usize, usize) {
        let inner = self.lock();
        let rooms = &inner.rooms.map;
        let mine = rooms.values().filter(|r| r.members.contains(user)).count();
        (rooms.len(), mine)
    }

    /// True when `user` is a member of `room`.
    pub fn is_member(&self, room: &str, user: &str) -> bool {
        self.lock().rooms.is_member(room, user)
    }

    /// The rooms `user` is in.
    pub(super) fn rooms_of(&self, user: &str) -> Vec<String> {
        self.lock()
            .rooms
            .map
            .iter()
            .filter(|(_, r)| r.members.contains(user))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Records a new room (already stored).
    pub fn room_created(&self, name: &str, owner: Option<&str>, invite_only: bool) {
        self.lock()
            .rooms
            .map
            .entry(name.to_string())
            .or_insert_with(|| Room {
                owner: owner.map(str::to_string),
                invite_only,
                ..Room::default()
            });
    }

    /// `user` joined `room` (already stored): the members hear of it, the newcomer gets the
    /// room's state. Before any later message to the room, so clients encrypt to the new
    /// member from then on.
    ///
    /// Joining the default room is silent: everyone is in it (a user joins it at their first
    /// login, before their device key is announced), so clients count every user as a member.
    pub fn room_joined(&self, room: &str, user: &str) {
        let mut inner = self.lock();
        let is_default = inner.rooms.default == room;
        let Some(r) = inner.rooms.map.get_mut(room) else {
            return;
        };
        if !r.members.insert(user.to_string()) || is_default {
            return;
        }
        let state = r.state(room);
        let others: Vec<String> = r.members.iter().filter(|m| *m != user).cloned().collect();
        let event = ServerFrame::Room {
            room: room.to_string(),
            user: user.to_string(),
            event: RoomEvent::Join,
            by: None,
        };
        // The others hear of the newcomer; the newcomer gets the whole state instead.
        if let Some(line) = serialize(&event) {
            let others: Vec<&str> = others.iter().map(String::as_str).collect();
            inner.sessions.deliver_users(&others, &line);
        }
        if let Some(line) = serialize(&ServerFrame::Members { room: state }) {
            inner.sessions.deliver_users(&[user], &line);
        }
    }

    /// `user` left (or, with `by`, was kicked from) `room` (already stored): members and
    /// the user hear of it; an empty room other than the default one is forgotten.
    pub fn room_parted(&self, room: &str, user: &str, by: Option<&str>) {
        let mut inner = self.lock();
        let is_default = inner.rooms.default == room;
        let Some(r) = inner.rooms.map.get_mut(room) else {
            return;
        };
        if !r.members.remove(user) || is_default {
            // Leaving the default room (account deleted) is silent, like joining it.
            return;
        }
        let empty = r.members.is_empty();
        let event = ServerFrame::Room {
            room: room.to_string(),
            user: user.to_string(),
            event: if by.is_some() {
                RoomEvent::Kick
            } else {
                RoomEvent::Part
            },
            by: by.map(str::to_string),
        };
        if let Some(line) = serialize(&event) {
            inner.deliver_room(room, &line);
            inner.sessions.deliver_users(&[user], &line);
        }
        if empty && !is_default {
            inner.rooms.map.remove(room);
        }
    }

    /// The topic of `room` changed (already stored); its members hear of it.
    pub fn topic_set(&self, room: &str, topic: &str, by: &str) {
        let mut inner = self.lock();
        let Some(r) = inner.rooms.map.get_mut(room) else {
            return;
        };
        r.topic = topic.to_string();
        let frame = ServerFrame::Topic {
            room: room.to_string(),
            topic: topic.to_string(),
            by: by.to_string(),
        };
        if let Some(line) = serialize(&frame) {
            inner.deliver_room(room, &line);
        }
    }

    /// Rooms `user` may see: every room that is not invite-only, and those they are in.
    pub fn room_list(&self, user: &str) -> Vec<RoomSummary> {
        self.lock()
            .rooms
            .map
            .iter()
            .filter(|(_, r)| !r.invite_only || r.members.contains(user))
            .map(|(name, r)| RoomSummary {
                name: name.clone(),
                members: r.members.len() as u32,
                topic: r.topic.clone(),
                invite_only: r.invite_only,
                joined: r.members.contains(user),
            })
            .collect()
    }
}
