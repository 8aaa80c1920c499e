//! Routing: a conversation's lines to its members' online sessions and, for their devices
//! that are offline, to the offline writer; a sender's envelopes checked and routed under
//! one lock; chains to one device.

use bytes::Bytes;
use chatd_proto::conversation::Conversation;
use chatd_proto::frame::ServerFrame;
use chatd_proto::{ErrorCode, Fingerprint};

use super::offline::{Handed, offline_devices};
use super::outgoing::{EnvelopeLines, EnvelopeRun, Notify, Outgoing, Sender, Targets, serialize};
use super::remote::Payload;
use super::tables::Tables;

/// Where `Hub::route_to_device` put a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Queued for at least one session.
    Online,
    /// Handed to the offline writer.
    Stored,
    /// Not stored: the offline writer is behind (its sender was told).
    Refused,
    /// No registered device has that key.
    Unknown,
}

/// Why `Hub::route_envelopes` routed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefused {
    /// The sender is not a member of this room (a kick can cross a message in flight).
    NotInRoom(String),
    /// The other side of a whisper has no device key: no such user, or never logged in.
    NoDevices(String),
}

/// What `Hub::route_envelopes` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Sessions reached now.
    pub reached: usize,
    /// The other side of a whisper and their away message, when they are away.
    pub away: Option<(String, String)>,
}

impl Tables {
    /// Queues `line` for the online sessions of `conversation`'s members and hands `store`
    /// the devices that are offline.
    fn route(
        &mut self,
        conversation: &Conversation,
        line: &impl Outgoing,
        payload: impl Fn() -> Payload,
        store: impl FnOnce(&mut Tables, Targets),
    ) -> usize {
        let (reached, offline) = match conversation {
            Conversation::All => {
                let reached = self.sessions.deliver_all(line, None);
                (reached, self.everyone_offline(reached))
            }
            Conversation::Pair(a, b) => {
                let members = if a == b { vec![a] } else { vec![a, b] };
                let reached = self.sessions.deliver_users(&[a.as_str(), b.as_str()], line);
                let offline = offline_devices(
                    &self.directory,
                    &self.sessions,
                    &self.remote,
                    members.into_iter(),
                );
                (reached, offline.into())
            }
            Conversation::Room(room) => {
                let reached = self.rooms.deliver(room, line, &mut self.sessions);
                let offline = match self.rooms.map.get(room) {
                    // Everyone with a device key has joined the default room at login.
                    Some(_) if *room == self.rooms.default => self.everyone_offline(reached),
                    Some(r) => offline_devices(
                        &self.directory,
                        &self.sessions,
                        &self.remote,
                        r.members.iter(),
                    )
                    .into(),
                    None => Targets::from([]),
                };
                (reached, offline)
            }
        };
        let offline = match self.remote.nodes.is_empty() {
            true => offline,
            false => self.route_remote(conversation, offline, payload),
        };
        store(self, offline);
        reached
    }

    /// Hands the bus one line per other node that has sessions of `conversation`'s members;
    /// `offline` and the devices the bus could not take, to be stored.
    fn route_remote(
        &mut self,
        conversation: &Conversation,
        offline: Targets,
        payload: impl Fn() -> Payload,
    ) -> Targets {
        let Tables { remote, rooms, .. } = self;
        let refused = match conversation {
            Conversation::All => remote.route_everyone(payload),
            Conversation::Room(room) if *room == rooms.default => remote.route_everyone(payload),
            Conversation::Room(room) => match rooms.map.get(room) {
                Some(r) => remote.route(|user, _| r.members.contains(user), payload),
                None => Vec::new(),
            },
            Conversation::Pair(a, b) => remote.route(|user, _| user == a || user == b, payload),
        };
        if refused.is_empty() {
            return offline;
        }
        offline.iter().cloned().chain(refused).collect()
    }

    /// Hands a line to the offline writer for `targets`; when its queue is full, tells
    /// `sender` (if any) that the line was not stored. What became of the line.
    fn store(
        &mut self,
        line: &Bytes,
        targets: Targets,
        sender: Option<&Sender>,
        notify: Option<Notify>,
    ) -> Handed {
        let handed = self.offline.store_for(line, targets, sender, notify);
        if let (Handed::Busy(targets), Some(sender)) = (&handed, sender) {
            let mut users: Vec<&str> = targets.iter().map(|(u, _)| u.as_str()).collect();
            users.dedup();
            let frame = ServerFrame::error(
                ErrorCode::OfflineQueueFull,
                format!(
                    "not stored for {}: the server is busy storing messages for offline \
                     devices; they will not receive this (send it again in a moment)",
                    users.join(", ")
                ),
            );
            if let Some(line) = serialize(&frame) {
                self.sessions.deliver(sender.session, &line);
            }
        }
        handed
    }

    /// Routes a conversation's line (see `Hub::route_conversation`).
    pub(super) fn route_line(
        &mut self,
        conversation: &Conversation,
        line: &impl Outgoing,
        sender: Option<&Sender>,
        notify: Option<Notify>,
    ) -> usize {
        // Stored as JSON: any client can take that form, whatever it negotiates next time.
        let payload = || Payload::Envelopes(vec![line.lines()]);
        self.route(conversation, line, payload, |inner, offline| {
            inner.store(line.for_session(false), offline, sender, notify);
        })
    }

    /// Routes a sender's envelopes (see `Hub::route_batch`), joined beforehand.
    pub(super) fn route_batch(
        &mut self,
        conversation: &Conversation,
        batch: Batch,
        sender: Option<&Sender>,
    ) -> usize {
        match batch {
            Batch::Empty => 0,
            Batch::One(lines, note) => self.route_line(conversation, &lines, sender, Some(note)),
            Batch::Run(run, notes) => {
                let payload = || Payload::Envelopes(run.each.clone());
                self.route(conversation, &run, payload, |tables, offline| {
                    for (lines, note) in run.each.iter().zip(notes) {
                        tables.store(&lines.json, Targets::clone(&offline), sender, Some(note));
                    }
                })
            }
        }
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

    /// Every registered device without a reachable session (see
    /// [`super::offline::OfflineQueue::everyone_offline`]).
    fn everyone_offline(&mut self, reached: usize) -> Targets {
        self.offline
            .everyone_offline(reached, &self.directory, &self.sessions, &self.remote)
    }

    /// A sender's envelopes to one conversation (see `Hub::route_envelopes`).
    pub(super) fn route_envelopes(
        &mut self,
        sender: &str,
        conversation: &Conversation,
        batch: Batch,
    ) -> Result<Sent, SendRefused> {
        self.may_send(sender, conversation)?;
        // The session to tell is the one `held` would go to.
        let from = batch.session().map(|session| Sender {
            user: sender.to_string(),
            session,
        });
        let envelopes = batch.len();
        let reached = self.route_batch(conversation, batch, from.as_ref());
        // Once per batch: two atomic adds, whatever the fan-out.
        crate::metrics::get().routed(envelopes, reached);
        let away = conversation
            .peer_of(sender)
            .filter(|peer| *peer != sender)
            .and_then(|peer| Some((peer.to_string(), self.sessions.away.get(peer)?.clone())));
        Ok(Sent { reached, away })
    }

    /// A `rekey` for `device`: to its sessions that can read one (an older client of that
    /// key gets nothing), or stored while it has none.
    pub(super) fn route_rekey(
        &mut self,
        device: &Fingerprint,
        line: &Bytes,
        sender: Option<&Sender>,
    ) -> Routed {
        let remote = self.route_device_remote(device, || Payload::Rekey(line.clone()));
        match self.sessions.deliver_device_rekey(device, line) {
            Some(_) => Routed::Online,
            None if remote => Routed::Online,
            None => self.store_for_device(device, line, sender),
        }
    }

    /// Routes a line for one device key (see `Hub::route_to_device`).
    pub(super) fn route_to_device(
        &mut self,
        device: &Fingerprint,
        line: &Bytes,
        sender: Option<&Sender>,
    ) -> Routed {
        let remote = self.route_device_remote(device, || Payload::Device(line.clone()));
        if self.sessions.deliver_device(device, line) > 0 || remote {
            return Routed::Online;
        }
        self.store_for_device(device, line, sender)
    }

    /// Hands the bus `payload` for `device`'s sessions on other nodes; true when it has any
    /// and the bus took the line for each.
    fn route_device_remote(&mut self, device: &Fingerprint, payload: impl Fn() -> Payload) -> bool {
        if !self.remote.device_online(device) {
            return false;
        }
        self.remote.route_device(device, payload)
    }

    /// Stores a line for `device`, which has no session anywhere.
    fn store_for_device(
        &mut self,
        device: &Fingerprint,
        line: &Bytes,
        sender: Option<&Sender>,
    ) -> Routed {
        // Offline, or its sessions are closing: store it for the next login. Every
        // registered key of that fingerprint (normally one user's).
        let owners = self.directory.owners_of(device);
        if owners.is_empty() {
            return Routed::Unknown;
        }
        match self.store(line, owners.into(), sender, None) {
            Handed::Queued => Routed::Stored,
            Handed::Busy(_) => Routed::Refused,
            Handed::NoTargets | Handed::Stopped => Routed::Unknown,
        }
    }
}

/// A sender's envelopes to one conversation, ready to route: two or more are joined into one
/// queue entry per wire form before the hub's lock is taken.
pub(super) enum Batch {
    /// Nothing to route.
    Empty,
    /// A single envelope, queued as it is.
    One(EnvelopeLines, Notify),
    /// A run, queued as one entry, and who to tell of each envelope.
    Run(EnvelopeRun, Vec<Notify>),
}

impl Batch {
    /// The sending session (every envelope of a batch comes from one).
    fn session(&self) -> Option<u64> {
        match self {
            Batch::Empty => None,
            Batch::One(_, note) => Some(note.session),
            Batch::Run(_, notes) => notes.first().map(|note| note.session),
        }
    }

    /// Envelopes in the batch.
    pub(super) fn len(&self) -> usize {
        match self {
            Batch::Empty => 0,
            Batch::One(..) => 1,
            Batch::Run(run, _) => run.each.len(),
        }
    }

    /// `each` (in order) as a batch.
    pub(super) fn new(each: Vec<(EnvelopeLines, Notify)>) -> Batch {
        if each.len() >= 2 {
            let (lines, notes) = each.into_iter().unzip();
            return Batch::Run(EnvelopeRun::new(lines), notes);
        }
        match each.into_iter().next() {
            Some((lines, note)) => Batch::One(lines, note),
            None => Batch::Empty,
        }
    }
}
