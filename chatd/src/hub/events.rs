//! State changes as [`Event`]s: applied to this node's tables the same way whether they were
//! made here (and then handed to the bus for the other nodes) or arrived from another node.

use bytes::Bytes;

use super::remote::{BusOut, Event};
use super::tables::Tables;

impl Tables {
    /// Applies `event` to this node's tables and tells this node's sessions; what it
    /// reached (sessions told or closed; for a vouch, 1 when both keys are still known).
    pub(super) fn apply_event(&mut self, event: &Event) -> usize {
        match event {
            Event::RoomCreated {
                room,
                owner,
                invite_only,
            } => {
                self.rooms.created(room, owner.as_deref(), *invite_only);
                0
            }
            Event::RoomJoined { room, user } => {
                self.rooms.joined(room, user, &mut self.sessions);
                0
            }
            Event::RoomParted { room, user, by } => {
                self.rooms
                    .parted(room, user, by.as_deref(), &mut self.sessions);
                0
            }
            Event::Topic { room, topic, by } => {
                self.rooms.topic_set(room, topic, by, &mut self.sessions);
                0
            }
            Event::ForgetDevice { user, device } => {
                self.forget_device(user, device);
                0
            }
            Event::ForgetUser { user } => {
                self.forget_user(user);
                0
            }
            Event::Vouch {
                user,
                vouched,
                voucher,
                data,
            } => usize::from(self.add_vouch(user, vouched, voucher, data.clone())),
            Event::Away { user, text } => usize::from(self.sessions.set_away(user, text.clone())),
            Event::CloseUser { user, reason } => self.sessions.close_user(user, reason),
            Event::CloseDevice {
                user,
                device,
                reason,
            } => self.sessions.close_device(user, device, reason),
            Event::ToUser { user, line } => {
                let line = Bytes::copy_from_slice(line.as_bytes());
                self.sessions.deliver_users(&[user.as_str()], &line)
            }
            Event::ToRoom { room, line } => {
                let line = Bytes::copy_from_slice(line.as_bytes());
                self.rooms.deliver(room, &line, &mut self.sessions)
            }
            Event::ToAll { line } => {
                let line = Bytes::copy_from_slice(line.as_bytes());
                self.sessions.deliver_all(&line, None)
            }
        }
    }

    /// Applies `event` made on this node, and hands it to the bus for the others.
    pub(super) fn local_event(&mut self, event: Event) -> usize {
        let reached = self.apply_event(&event);
        if self.remote.bus.is_some() {
            self.remote.send(BusOut::Event(event));
        }
        reached
    }

    /// An event from `node`: applied here (away messages are kept per node).
    pub(super) fn remote_event(&mut self, node: &str, event: &Event) -> usize {
        if let Event::Away { user, text } = event {
            self.remote.set_away(node, user, text.clone());
            return 0;
        }
        self.apply_event(event)
    }
}
