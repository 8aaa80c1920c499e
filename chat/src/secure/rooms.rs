//! Which rooms this user is in, who is in them, and where plain text goes.

use std::collections::BTreeSet;

use chatd_proto::conversation::Conversation;
use chatd_proto::frame::{DeviceInfo, RoomState};

use super::{Event, Secure};

impl Secure {
    /// The devices registered at login, online or not: messages are encrypted to all of
    /// them (the server stores them for the offline ones); the rooms this user is in.
    pub fn on_login(
        &mut self,
        devices: &[DeviceInfo],
        default_room: &str,
        rooms: &[RoomState],
    ) -> Vec<Event> {
        self.default_room = default_room.to_string();
        self.rooms = rooms
            .iter()
            .map(|r| (r.name.clone(), r.members.iter().cloned().collect()))
            .collect();
        // Back in the room we were talking in, if we are still in it.
        if !self.rooms.contains_key(&self.current_room) {
            self.current_room = default_room.to_string();
        }
        self.devices_listed(devices)
    }

    /// The room every user is in.
    pub fn default_room(&self) -> &str {
        &self.default_room
    }

    /// Where plain text goes now (a room name without `#`).
    pub fn current_room(&self) -> &str {
        &self.current_room
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

    /// A room's full state (after joining it, or `/members`): its members from now on.
    /// Returns true when this user just joined it (it becomes the current room).
    pub fn room_state(&mut self, room: &RoomState) -> bool {
        if !room.members.contains(&self.me) {
            return false;
        }
        let members: BTreeSet<String> = room.members.iter().cloned().collect();
        let joined = self.rooms.insert(room.name.clone(), members).is_none();
        if joined {
            self.current_room = room.name.clone();
        }
        joined
    }

    /// Someone joined or left a room this user is in. A member who leaves makes our chain
    /// for the room stale, so the next message goes out under a new one they never get.
    pub fn room_event(&mut self, room: &str, user: &str, joined: bool) {
        if user == self.me && !joined {
            self.rooms.remove(room);
            self.senders.remove(&format!("#{room}"));
            if self.current_room == room {
                self.current_room = self.default_room.clone();
            }
            return;
        }
        let Some(members) = self.rooms.get_mut(room) else {
            return;
        };
        if joined {
            members.insert(user.to_string());
        } else if members.remove(user) {
            if let Some(out) = self.senders.get_mut(&format!("#{room}")) {
                out.stale = true;
            }
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
