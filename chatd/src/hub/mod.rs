//! Who is online and how to reach them.
//!
//! Each session registers an outbound queue of pre-serialized lines. A frame for many
//! receivers is serialized once and the same `Bytes` is queued for each. Queues are
//! bounded and never awaited: a receiver whose queue is full is closed as too slow
//! ([`crate::mailbox`]), so one stalled client cannot slow anyone else.
//!
//! The hub also knows every registered device key. A line for a member device that is not
//! online becomes an [`OfflineJob`], numbered under the hub's lock and sent to the offline
//! writer (crate::offline), which stores jobs in that order. A session that logs in is held
//! (its live lines buffered here) while it replays what was stored; see [`Hub::register`].
//!
//! One lock guards four tables ([`tables`]), each in a file of its own with its methods:
//! `sessions` (the session table and delivery), `directory` (device keys, `login_ok`,
//! `/whois`), `rooms`, and `offline` (lines for offline devices); in a cluster a fifth,
//! `remote`, holds the other nodes' devices and the way out to the bus. `route` and `presence`
//! work across them; `events` applies state changes made here or on another node; `nodes`
//! is what the cluster task calls; `outgoing` is what the hub hands out. This file is the
//! public face: each method takes the lock and calls into them. The lock is never held
//! across an `.await`.

mod directory;
mod events;
mod nodes;
mod offline;
#[cfg(test)]
mod offline_tests;
mod outgoing;
mod presence;
mod remote;
mod rooms;
mod route;
mod sessions;
mod tables;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::control::SessionInfo;
use chatd_proto::conversation::Conversation;
use chatd_proto::frame::{OnlineUser, RoomSummary, ServerFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::mailbox::Closer;
pub use directory::Whois;
pub use outgoing::{
    EnvelopeLines, EnvelopeRun, Notify, OfflineJob, Outgoing, Sender, SessionId, Targets,
};
pub use remote::{BusOut, BusTx, DeviceOnNode, Event, Payload};
pub use rooms::Room;
pub use route::{Routed, SendRefused, Sent};
pub use sessions::{HubError, NewSession};

use outgoing::serialize;
use tables::Tables;

/// A frame as one line of text, for an [`Event`] (None, logged, if it cannot be serialized).
fn serialize_text(frame: &ServerFrame) -> Option<String> {
    let line = serialize(frame)?;
    String::from_utf8(line.to_vec()).ok()
}

/// The routing table; shared by every session and the control socket.
pub struct Hub {
    inner: Mutex<Tables>,
    next_id: AtomicU64,
    max_sessions_per_user: usize,
    /// Tells [`Hub::flush_quiet`] that quiet lines wait.
    quiet_queued: tokio::sync::Notify,
}

impl Hub {
    /// An empty hub; a replaying session may hold `held_max` live lines.
    pub fn new(max_sessions_per_user: usize, held_max: usize) -> Self {
        Hub {
            inner: Mutex::new(Tables::new(held_max)),
            next_id: AtomicU64::new(1),
            max_sessions_per_user,
            quiet_queued: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Nothing in Tables can be left half-updated by a panic that matters more than availability.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the flusher when quiet lines wait for it.
    fn quiet_queued(&self, tables: &Tables) {
        if tables.sessions.quiet_pending() {
            self.quiet_queued.notify_one();
        }
    }

    /// Wakes, `delay` after quiet lines were queued (presence and device notices of logins
    /// and logouts), the writers of the sessions they wait in, unless a line since has. Until
    /// `stop` fires; quiet lines are queued like any other when this does not run.
    ///
    /// A login or logout tells every member session; woken for it on its own, each pays a
    /// wake-up, a TLS record and a `send`. Waiting, it rides with the next message, or goes
    /// with the notices of other logins in the same window.
    pub async fn flush_quiet(&self, delay: std::time::Duration, stop: CancellationToken) {
        self.lock().sessions.set_quiet_flusher(true);
        loop {
            tokio::select! {
                () = self.quiet_queued.notified() => {}
                () = stop.cancelled() => break,
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => break,
            }
            self.lock().sessions.wake_quiet();
        }
        let mut tables = self.lock();
        tables.sessions.set_quiet_flusher(false);
        tables.sessions.wake_quiet();
    }

    // Sessions.

    /// Adds a logged-in session and queues its `login_ok` (so nothing routed to it can
    /// arrive first); tells everyone else about a new user and a new device key.
    ///
    /// Returns the session id and [`Hub::offline_seq`] as of registration: every line for
    /// this device routed before it was handed to the offline writer, every one after it
    /// reaches the session (held until [`Hub::end_replay`] when `replay` is set).
    pub fn register(&self, new: NewSession) -> Result<(SessionId, u64), HubError> {
        let replay = new.replay;
        let (id, snapshot, offline_seq) = {
            let mut tables = self.lock();
            let count = tables.sessions.count(&new.user);
            if count >= self.max_sessions_per_user {
                return Err(HubError::TooManySessions(self.max_sessions_per_user));
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (snapshot, seq) = tables.register(id, count, new);
            self.quiet_queued(&tables);
            (id, snapshot, seq)
        };
        // Every registered device key goes into login_ok: O(devices) of copying, which the
        // fan-out would wait for under the lock.
        let line = snapshot.line();
        self.lock().sessions.login_ok(id, line, replay);
        Ok((id, offline_seq))
    }

    /// Ends session `id`'s replay: moves the live lines it held into its queue while it has
    /// room. True when nothing is held any more and new lines go straight to the queue; false
    /// means call again once the writer took what is queued.
    pub fn end_replay(&self, id: SessionId) -> bool {
        // Under the hub lock nobody else queues for this session: a line that does not fit
        // stays held, in order, rather than closing the session.
        self.lock().sessions.end_replay(id)
    }

    /// Removes a session; tells everyone when its device key or its user goes offline.
    pub fn unregister(&self, id: SessionId, reason: &str) {
        let mut tables = self.lock();
        tables.unregister(id, reason);
        self.quiet_queued(&tables);
    }

    /// Sets (Some) or clears (None) `user`'s away message; false if `user` has no session
    /// on this node.
    pub fn set_away(&self, user: &str, text: Option<String>) -> bool {
        let mut tables = self.lock();
        if !tables.sessions.set_away(user, text.clone()) {
            return false;
        }
        if tables.remote.bus.is_some() {
            let user = user.to_string();
            tables
                .remote
                .send(BusOut::Event(Event::Away { user, text }));
        }
        true
    }

    /// True if `user` has at least one session, on any node.
    pub fn is_online(&self, user: &str) -> bool {
        self.session_count(user) > 0
    }

    /// Number of sessions `user` has, on every node.
    pub fn session_count(&self, user: &str) -> usize {
        let tables = self.lock();
        tables.sessions.count(user) + tables.remote.user_sessions(user) as usize
    }

    /// Everyone online on any node, sorted by name.
    pub fn online(&self) -> Vec<OnlineUser> {
        let tables = self.lock();
        let mut users = tables.sessions.online();
        for user in &mut users {
            user.sessions += tables.remote.user_sessions(&user.user);
        }
        for (name, n) in tables.remote.users() {
            if tables.sessions.count(name) == 0 {
                users.push(OnlineUser {
                    user: name.clone(),
                    sessions: *n,
                    away: tables.remote.away(name).cloned(),
                });
            }
        }
        users.sort_by(|a, b| a.user.cmp(&b.user));
        users
    }

    /// Every session, oldest first.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.lock().sessions.list()
    }

    /// (sessions, distinct users) online.
    pub fn counts(&self) -> (usize, usize) {
        let tables = self.lock();
        (tables.sessions.len(), tables.sessions.by_user.len())
    }

    /// Asks every session of `user` using device key `device` to close, on every node;
    /// returns how many there are here.
    pub fn close_device(&self, user: &str, device: &Fingerprint, reason: &str) -> usize {
        self.lock().local_event(Event::CloseDevice {
            user: user.to_string(),
            device: *device,
            reason: reason.to_string(),
        })
    }

    /// Sessions using each device key, for `chatctl key list`.
    pub fn device_sessions(&self) -> HashMap<(String, Fingerprint), usize> {
        self.lock().sessions.per_device()
    }

    /// Asks every session of `user` to close, on every node; returns how many there are.
    pub fn close_user(&self, user: &str, reason: &str) -> usize {
        let mut tables = self.lock();
        let remote = tables.remote.user_sessions(user) as usize;
        let here = tables.local_event(Event::CloseUser {
            user: user.to_string(),
            reason: reason.to_string(),
        });
        here + remote
    }

    // Device keys.

    /// Sets the registered device keys (at startup): (user, fingerprint, base64 SPKI DER).
    pub fn set_known(&self, keys: impl IntoIterator<Item = (String, Fingerprint, String)>) {
        let mut tables = self.lock();
        tables.offline.changed();
        tables.directory.set(keys);
    }

    /// Sets the stored vouches (at startup, after [`Hub::set_known`]): (user, vouched,
    /// voucher, base64 vouch).
    pub fn set_vouches(
        &self,
        vouches: impl IntoIterator<Item = (String, Fingerprint, Fingerprint, String)>,
    ) {
        let mut tables = self.lock();
        for (user, vouched, voucher, data) in vouches {
            tables.directory.add_vouch(&user, &vouched, &voucher, data);
        }
    }

    /// The device key session `id` logged in with (None once it is gone).
    pub fn session_device(&self, id: SessionId) -> Option<Fingerprint> {
        self.lock().sessions.device_of(id)
    }

    /// How many distinct device keys are registered (a client starting a chain in a room
    /// everyone is in wraps it for each).
    pub fn device_count(&self) -> usize {
        self.lock().directory.device_count()
    }

    /// True when `user` has the registered, unrevoked device key `device`.
    pub fn has_device(&self, user: &str, device: &Fingerprint) -> bool {
        self.lock().directory.get(user, device).is_some()
    }

    /// Records a vouch the store has (see `store::vouches::put`) and sends it to every
    /// session that asked for vouches; false when either key is gone meanwhile.
    pub fn add_vouch(
        &self,
        user: &str,
        vouched: &Fingerprint,
        voucher: &Fingerprint,
        data: String,
    ) -> bool {
        let event = Event::Vouch {
            user: user.to_string(),
            vouched: *vouched,
            voucher: *voucher,
            data,
        };
        self.lock().local_event(event) > 0
    }

    /// Forgets a revoked device key and tells everyone to encrypt nothing more to it.
    pub fn forget_device(&self, user: &str, device: &Fingerprint) {
        self.lock().local_event(Event::ForgetDevice {
            user: user.to_string(),
            device: *device,
        });
    }

    /// Forgets every device key and room membership of a deleted account, telling everyone.
    pub fn forget_user(&self, user: &str) {
        self.lock().local_event(Event::ForgetUser {
            user: user.to_string(),
        });
    }

    /// What `/whois` shows of `user`: sessions, away message, device keys with their state.
    /// `rooms` are those `user` is in that `asker` may see (not invite-only, or shared).
    pub fn whois(&self, user: &str, asker: &str) -> Whois {
        let tables = self.lock();
        tables
            .directory
            .whois(user, asker, &tables.sessions, &tables.rooms, &tables.remote)
    }

    // Rooms.

    /// Sets every room (at startup) and which one is the default.
    pub fn set_rooms(&self, rooms: impl IntoIterator<Item = (String, Room)>, default_room: &str) {
        let mut tables = self.lock();
        tables.rooms.map = rooms.into_iter().collect();
        tables.rooms.default = default_room.to_string();
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
        let tables = self.lock();
        (tables.rooms.map.len(), tables.rooms.of(user).count())
    }

    /// True when `user` is a member of `room`.
    pub fn is_member(&self, room: &str, user: &str) -> bool {
        self.lock().rooms.is_member(room, user)
    }

    /// Records a new room (already stored).
    pub fn room_created(&self, name: &str, owner: Option<&str>, invite_only: bool) {
        self.lock().local_event(Event::RoomCreated {
            room: name.to_string(),
            owner: owner.map(str::to_string),
            invite_only,
        });
    }

    /// `user` joined `room` (already stored): the members hear of it, the newcomer gets the
    /// room's state. Before any later message to the room, so clients encrypt to the new
    /// member from then on.
    ///
    /// Joining the default room is silent: everyone is in it (a user joins it at their first
    /// login, before their device key is announced), so clients count every user as a member.
    pub fn room_joined(&self, room: &str, user: &str) {
        self.lock().local_event(Event::RoomJoined {
            room: room.to_string(),
            user: user.to_string(),
        });
    }

    /// `user` left (or, with `by`, was kicked from) `room` (already stored): members and
    /// the user hear of it; an empty room other than the default one is forgotten.
    pub fn room_parted(&self, room: &str, user: &str, by: Option<&str>) {
        self.lock().local_event(Event::RoomParted {
            room: room.to_string(),
            user: user.to_string(),
            by: by.map(str::to_string),
        });
    }

    /// The topic of `room` changed (already stored); its members hear of it.
    pub fn topic_set(&self, room: &str, topic: &str, by: &str) {
        self.lock().local_event(Event::Topic {
            room: room.to_string(),
            topic: topic.to_string(),
            by: by.to_string(),
        });
    }

    /// Rooms `user` may see: every room that is not invite-only, and those they are in.
    pub fn room_list(&self, user: &str) -> Vec<RoomSummary> {
        self.lock().rooms.list(user)
    }

    // Routing.

    /// Routes a conversation's line: to every online session of its members, and to the
    /// offline writer for each of their registered devices that is offline (`notify` names
    /// the session to tell once stored). Returns the sessions reached now.
    pub fn route_conversation(
        &self,
        conversation: &Conversation,
        line: &impl Outgoing,
        notify: Option<Notify>,
    ) -> usize {
        self.lock().route_line(conversation, line, None, notify)
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
        let batch = route::Batch::new(each);
        self.lock().route_batch(conversation, batch, None)
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
        let batch = route::Batch::new(each);
        self.lock().route_envelopes(sender, conversation, batch)
    }

    /// Routes a line for one device key: to its sessions, or stored when it is offline
    /// (`sender`, if any, is told when it is not).
    pub fn route_to_device(
        &self,
        device: &Fingerprint,
        line: &Bytes,
        sender: Option<&Sender>,
    ) -> Routed {
        self.lock().route_to_device(device, line, sender)
    }

    /// Queues a `rekey` line for `device`'s sessions that asked for the feature, or stores
    /// it while the device has no session.
    pub fn route_rekey(
        &self,
        device: &Fingerprint,
        line: &Bytes,
        sender: Option<&Sender>,
    ) -> Routed {
        self.lock().route_rekey(device, line, sender)
    }

    /// Queues `frame` for every session of `user`, on every node; returns how many here.
    pub fn send_to_user(&self, user: &str, frame: &ServerFrame) -> usize {
        let Some(line) = serialize_text(frame) else {
            return 0;
        };
        let user = user.to_string();
        self.lock().local_event(Event::ToUser { user, line })
    }

    /// Queues `frame` for every session of `room`'s members, on every node; returns how many
    /// here.
    pub fn send_to_room(&self, room: &str, frame: &ServerFrame) -> usize {
        let Some(line) = serialize_text(frame) else {
            return 0;
        };
        let room = room.to_string();
        self.lock().local_event(Event::ToRoom { room, line })
    }

    /// Queues `frame` for session `id` alone.
    pub fn send_to(&self, id: SessionId, frame: &ServerFrame) -> bool {
        match serialize(frame) {
            Some(line) => self.lock().sessions.deliver(id, &line),
            None => false,
        }
    }

    /// Sends `frame` to every session except `except`, on every node; returns how many got
    /// it here.
    pub fn broadcast(&self, frame: &ServerFrame, except: Option<SessionId>) -> usize {
        let Some(line) = serialize(frame) else {
            return 0;
        };
        let mut tables = self.lock();
        let reached = tables.sessions.deliver_all(&line, except);
        if tables.remote.bus.is_some() {
            let line = String::from_utf8_lossy(&line).into_owned();
            tables.remote.send(BusOut::Event(Event::ToAll { line }));
        }
        reached
    }

    // The offline writer.

    /// Connects the offline writer; lines for offline devices go to `tx` from now on (never
    /// awaited: when it is full, a line is refused and its sender told).
    pub fn attach_offline(&self, tx: mpsc::Sender<OfflineJob>) {
        self.lock().offline.tx = Some(tx);
    }

    /// Disconnects the offline writer (shutdown), so it can finish what it has.
    pub fn detach_offline(&self) {
        self.lock().offline.tx = None;
    }

    /// Number of the last offline job handed out; a session that registered after it waits
    /// for the writer to commit it before reading its queue.
    pub fn offline_seq(&self) -> u64 {
        self.lock().offline.seq
    }
}
