//! Rooms as the hub mirrors them from the database: members (online or not), topic, owner,
//! invite-only; the notices of joins, parts, kicks and topics; delivery to a room.

use std::collections::{BTreeMap, BTreeSet};

use chatd_proto::frame::{RoomEvent, RoomState, RoomSummary, ServerFrame};

use super::outgoing::{Outgoing, serialize};
use super::sessions::Sessions;

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
    fn state(&self, name: &str) -> RoomState {
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

    /// The rooms `user` is in.
    pub(super) fn of(&self, user: &str) -> impl Iterator<Item = (&String, &Room)> {
        self.map
            .iter()
            .filter(move |(_, r)| r.members.contains(user))
    }

    /// The state of every room `user` is in, for `login_ok`.
    pub(super) fn states_of(&self, user: &str) -> Vec<RoomState> {
        self.of(user).map(|(name, r)| r.state(name)).collect()
    }

    /// Queues `line` for every session of the members of `room`; returns how many.
    pub(super) fn deliver(
        &self,
        room: &str,
        line: &impl Outgoing,
        sessions: &mut Sessions,
    ) -> usize {
        // Every logged-in user is in the default room: no member lookups on the busiest path.
        if room == self.default {
            return sessions.deliver_all(line, None);
        }
        let Some(r) = self.map.get(room) else {
            return 0;
        };
        let members: Vec<&str> = r.members.iter().map(String::as_str).collect();
        sessions.deliver_users(&members, line)
    }

    /// Records a new room (already stored).
    pub(super) fn created(&mut self, name: &str, owner: Option<&str>, invite_only: bool) {
        self.map.entry(name.to_string()).or_insert_with(|| Room {
            owner: owner.map(str::to_string),
            invite_only,
            ..Room::default()
        });
    }

    /// `user` joined `room` (see `Hub::room_joined`).
    pub(super) fn joined(&mut self, room: &str, user: &str, sessions: &mut Sessions) {
        let is_default = self.default == room;
        let Some(r) = self.map.get_mut(room) else {
            return;
        };
        if !r.members.insert(user.to_string()) || is_default {
            return;
        }
        let state = r.state(room);
        let others: Vec<&str> = r
            .members
            .iter()
            .map(String::as_str)
            .filter(|m| *m != user)
            .collect();
        let event = ServerFrame::Room {
            room: room.to_string(),
            user: user.to_string(),
            event: RoomEvent::Join,
            by: None,
        };
        // The others hear of the newcomer; the newcomer gets the whole state instead.
        if let Some(line) = serialize(&event) {
            sessions.deliver_users(&others, &line);
        }
        if let Some(line) = serialize(&ServerFrame::Members { room: state }) {
            sessions.deliver_users(&[user], &line);
        }
    }

    /// `user` left `room`, or was kicked `by` someone (see `Hub::room_parted`).
    pub(super) fn parted(
        &mut self,
        room: &str,
        user: &str,
        by: Option<&str>,
        sessions: &mut Sessions,
    ) {
        let is_default = self.default == room;
        let Some(r) = self.map.get_mut(room) else {
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
            self.deliver(room, &line, sessions);
            sessions.deliver_users(&[user], &line);
        }
        if empty {
            self.map.remove(room);
        }
    }

    /// The topic of `room` changed (see `Hub::topic_set`).
    pub(super) fn topic_set(&mut self, room: &str, topic: &str, by: &str, sessions: &mut Sessions) {
        let Some(r) = self.map.get_mut(room) else {
            return;
        };
        r.topic = topic.to_string();
        let frame = ServerFrame::Topic {
            room: room.to_string(),
            topic: topic.to_string(),
            by: by.to_string(),
        };
        if let Some(line) = serialize(&frame) {
            self.deliver(room, &line, sessions);
        }
    }

    /// Rooms `user` may see: every room that is not invite-only, and those they are in.
    pub(super) fn list(&self, user: &str) -> Vec<RoomSummary> {
        self.map
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
