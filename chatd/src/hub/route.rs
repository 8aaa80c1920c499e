//! Routing: a conversation's lines to its members' online sessions and, for their devices
//! that are offline, to the offline writer; a sender's envelopes checked and routed under
//! one lock; chains to one device; notices to a user, a room, a session or everyone.

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::conversation::Conversation;
use chatd_proto::frame::ServerFrame;

use super::offline::Notify;
use super::outgoing::{EnvelopeLines, EnvelopeRun, Outgoing, serialize};
use super::{Hub, Inner, SessionId};

/// Where [`Hub::route_to_device`] put a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Queued for at least one session.
    Online,
    /// Handed to the offline writer.
    Stored,
    /// No registered device has that key.
    Unknown,
}

/// Why [`Hub::route_envelopes`] routed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefused {
    /// The sender is not a member of this room (a kick can cross a message in flight).
    NotInRoom(String),
    /// The other side of a whisper has no device key: no such user, or never logged in.
    NoDevices(String),
}

/// What [`Hub::route_envelopes`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Sessions reached now.
    pub reached: usize,
    /// The other side of a whisper and their away message, when they are away.
    pub away: Option<(String, String)>,
}

impl Inner {
    /// Queues `line` for the online sessions of `conversation`'s members and hands `store`
    /// the devices that are offline.
    fn route(
        &mut self,
        conversation: &Conversation,
        line: &impl Outgoing,
        store: impl FnOnce(&mut Inner, Vec<(String, Fingerprint)>),
    ) -> usize {
        let (reached, offline) = match conversation {
            Conversation::All => {
                let reached = self.sessions.deliver_all(line, None);
                (reached, self.everyone_offline(reached))
            }
            Conversation::Pair(a, b) => {
                let members = if a == b { vec![a] } else { vec![a, b] };
                let reached = self.sessions.deliver_users(&[a.as_str(), b.as_str()], line);
                (reached, self.offline_devices(members.into_iter()))
            }
            Conversation::Room(room) => {
                let reached = self.deliver_room(room, line);
                let offline = match self.rooms.map.get(room) {
                    // Everyone with a device key has joined the default room at login.
                    Some(_) if *room == self.rooms.default => self.everyone_offline(reached),
                    Some(r) => self.offline_devices(r.members.iter()),
                    None => Vec::new(),
                };
                (reached, offline)
            }
        };
        store(self, offline);
        reached
    }

    /// [`Hub::route_conversation`] under a lock already held.
    fn route_line(
        &mut self,
        conversation: &Conversation,
        line: &impl Outgoing,
        notify: Option<Notify>,
    ) -> usize {
        // Stored as JSON: any client can take that form, whatever it negotiates next time.
        self.route(conversation, line, |inner, offline| {
            inner.store_for(line.for_session(false), offline, notify);
        })
    }

    /// [`Hub::route_batch`] under a lock already held; `run` joined `each` beforehand.
    fn route_run(
        &mut self,
        conversation: &Conversation,
        each: Vec<(EnvelopeLines, Notify)>,
        run: Option<EnvelopeRun>,
    ) -> usize {
        let Some(run) = run else {
            return each.into_iter().next().map_or(0, |(lines, note)| {
                self.route_line(conversation, &lines, Some(note))
            });
        };
        self.route(conversation, &run, |inner, offline| {
            for (lines, note) in &run.each {
                inner.store_for(&lines.json, offline.clone(), Some(note.clone()));
            }
        })
    }

    /// Whether `sender` may send to `conversation` now.
    fn may_send(&self, sender: &str, conversation: &Conversation) -> Result<(), SendRefused> {
        match conversation {
            Conversation::Room(room) if !self.rooms.is_member(room, sender) => {
                Err(SendRefused::NotInRoom(room.clone()))
            }
            Conversation::Pair(a, _) => {
                let other = conversation.peer_of(sender).unwrap_or(a.as_str());
                if self.directory.has_devices(other) {
                    Ok(())
                } else {
                    Err(SendRefused::NoDevices(other.to_string()))
                }
            }
            _ => Ok(()),
        }
    }
}

/// Joins two or more envelopes into one queue entry; None for a single one.
fn joined(each: &[(EnvelopeLines, Notify)]) -> Option<EnvelopeRun> {
    (each.len() >= 2).then(|| EnvelopeRun::new(each.to_vec()))
}

impl Hub {
    /// Routes a conversation's line: to every online session of its members, and to the
    /// offline writer for each of their registered devices that is offline (`notify` names
    /// the session to tell once stored). Returns the sessions reached now.
    pub fn route_conversation(
        &self,
        conversation: &Conversation,
        line: &impl Outgoing,
        notify: Option<Notify>,
    ) -> usize {
        self.lock().route_line(conversation, line, notify)
    }

    /// Routes a sender's run of envelopes to one conversation, in order, as
    /// [`Hub::route_conversation`] would one by one, but each online member session gets the
    /// run as one queue entry. Offline devices get each envelope stored on its own, and each
    /// `Notify` is told on its own. Returns the sessions reached now.
    pub fn route_batch(
        &self,
        conversation: &Conversation,
        each: Vec<(EnvelopeLines, Notify)>,
    ) -> usize {
        // Joined before the lock is taken.
        let run = joined(&each);
        self.lock().route_run(conversation, each, run)
    }

    /// A sender's envelopes to one conversation (see [`Hub::route_batch`]), with everything
    /// routing them asks of the hub under one lock: may `sender` send there (a member of the
    /// room; the other side of a whisper has a device key), and is that other side away.
    pub fn route_envelopes(
        &self,
        sender: &str,
        conversation: &Conversation,
        each: Vec<(EnvelopeLines, Notify)>,
    ) -> Result<Sent, SendRefused> {
        let run = joined(&each);
        let mut inner = self.lock();
        inner.may_send(sender, conversation)?;
        let reached = inner.route_run(conversation, each, run);
        let away = conversation
            .peer_of(sender)
            .filter(|peer| *peer != sender)
            .and_then(|peer| Some((peer.to_string(), inner.sessions.away.get(peer)?.clone())));
        Ok(Sent { reached, away })
    }

    /// Routes a line for one device key: to its sessions, or stored when it is offline.
    pub fn route_to_device(&self, device: &Fingerprint, line: &Bytes) -> Routed {
        let mut inner = self.lock();
        if let Some(ids) = inner.sessions.by_device.get(device).cloned() {
            if ids
                .iter()
                .filter(|id| inner.sessions.deliver(**id, line))
                .count()
                > 0
            {
                return Routed::Online;
            }
            // Its sessions are closing: store it for the next login.
        }
        // Every registered key of that fingerprint (normally one user's).
        let owners: Vec<(String, Fingerprint)> = inner
            .directory
            .known
            .iter()
            .filter(|(_, keys)| keys.iter().any(|k| k.fingerprint == *device))
            .map(|(user, _)| (user.clone(), *device))
            .collect();
        if owners.is_empty() {
            return Routed::Unknown;
        }
        if inner.store_for(line, owners, None) {
            Routed::Stored
        } else {
            Routed::Unknown
        }
    }

    /// Queues `frame` for every session of `user`; returns how many.
    pub fn send_to_user(&self, user: &str, frame: &ServerFrame) -> usize {
        let Some(line) = serialize(frame) else {
            return 0;
        };
        self.lock().sessions.deliver_users(&[user], &line)
    }

    /// Queues `frame` for every session of `room`'s members; returns how many.
    pub fn send_to_room(&self, room: &str, frame: &ServerFrame) -> usize {
        match serialize(frame) {
            Some(line) => self.lock().deliver_room(room, &line),
            None => 0,
        }
    }

    /// Queues `frame` for session `id` alone.
    pub fn send_to(&self, id: SessionId, frame: &ServerFrame) -> bool {
        match serialize(frame) {
            Some(line) => self.lock().sessions.deliver(id, &line),
            None => false,
        }
    }

    /// Sends `frame` to every session except `except`; returns how many got it.
    pub fn broadcast(&self, frame: &ServerFrame, except: Option<SessionId>) -> usize {
        let Some(line) = serialize(frame) else {
            return 0;
        };
        self.lock().sessions.deliver_all(&line, except)
    }
}
