//! The session table: who is online on which device, each session's mailbox, and delivery
//! to them (held while a session replays, quiet notices, the slow-consumer rule via
//! [`Mailbox`]); registering and unregistering sessions.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::control::SessionInfo;
use chatd_proto::frame::{DeviceEvent, OnlineUser, PresenceEvent, ServerFrame};

use super::directory::{Known, device_line};
use super::outgoing::{Outgoing, Quiet, concat_lines, serialize};
use super::{Hub, Inner};
use crate::mailbox::{Closer, Mailbox, Refused};
use crate::outbox::Outbox;

/// Identifies a session while the server runs.
pub type SessionId = u64;

/// Why registration failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    /// The user is at `max_sessions_per_user`.
    #[error("too many sessions for this user (limit {0})")]
    TooManySessions(usize),
}

/// A session that has just logged in.
pub struct NewSession {
    /// Account.
    pub user: String,
    /// Fingerprint of the device key it logged in with.
    pub device: Fingerprint,
    /// That key, base64 SPKI DER.
    pub key: Arc<str>,
    /// Remote address.
    pub peer: SocketAddr,
    /// Its outbound queue.
    pub outbox: Arc<Outbox>,
    /// How to end it.
    pub closer: Closer,
    /// Hold live lines until [`Hub::end_replay`] (the session replays stored lines first).
    pub replay: bool,
    /// Negotiated binary envelope frames.
    pub binary: bool,
}

/// What the hub keeps per session.
pub(super) struct Entry {
    pub(super) user: String,
    pub(super) device: Fingerprint,
    peer: SocketAddr,
    since: u64,
    mailbox: Mailbox,
    /// Negotiated binary envelope frames in its `hello`.
    binary: bool,
    /// While the session replays its stored lines: live lines wait here, in order.
    held: Option<Vec<Bytes>>,
    /// Quiet lines wait in its queue that no wake-up has covered yet.
    quiet_waiting: bool,
}

/// How lines are queued: the same for every session at a time.
#[derive(Clone, Copy)]
struct Policy {
    /// Live lines a replaying session may hold before it counts as too slow.
    held_max: usize,
    /// [`Hub::flush_quiet`] runs: quiet lines may wait for it.
    quiet_flusher: bool,
}

impl Entry {
    /// Queues `line` for this session (`id`): held while it replays, quietly if `line` may
    /// wait; false when it is closing or its queue refused (which closes it).
    fn deliver(
        &mut self,
        id: SessionId,
        line: &impl Outgoing,
        policy: Policy,
        quiet_pending: &mut bool,
    ) -> bool {
        if self.mailbox.closer().is_closed() {
            // Closing (too slow, kicked, ...): nothing more, so a dropped client sees no gap
            // before its `bye`, and a slow one is reported once, not once per broadcast.
            return false;
        }
        if let Some(held) = self.held.as_mut() {
            if held.len().saturating_add(line.frames()) > policy.held_max {
                tracing::warn!(session = id, user = %self.user, "too much arrived during replay; disconnecting slow client");
                self.mailbox.too_slow();
                return false;
            }
            line.each_frame(self.binary, &mut |frame| held.push(frame.clone()));
            return true;
        }
        let bytes = line.for_session(self.binary).clone();
        if line.quiet() && policy.quiet_flusher {
            return match self.mailbox.push_quiet(bytes, line.frames()) {
                Ok(wait) => {
                    if wait {
                        self.quiet_waiting = true;
                        *quiet_pending = true;
                    }
                    true
                }
                Err(refused) => self.refused(id, refused),
            };
        }
        self.push(id, bytes, line.frames())
    }

    /// Queues `entry` (`frames` frames) straight into the session's queue.
    fn push(&self, id: SessionId, entry: Bytes, frames: usize) -> bool {
        match self.mailbox.push(entry, frames) {
            Ok(()) => true,
            Err(refused) => self.refused(id, refused),
        }
    }

    /// Logs a slow client the mailbox closed; always false (the line was not queued).
    fn refused(&self, id: SessionId, refused: Refused) -> bool {
        if refused == Refused::TooSlow {
            tracing::warn!(session = id, user = %self.user, "outbound queue full; disconnecting slow client");
        }
        false
    }

    /// Moves up to `limit` of the held lines into the queue; true when none is held any more
    /// and new lines go straight to the queue.
    fn move_held(&mut self, id: SessionId, limit: usize) -> bool {
        let Some(lines) = self.held.as_mut() else {
            return true;
        };
        let n = limit.min(lines.len());
        let moving: Vec<Bytes> = lines.drain(..n).collect();
        for line in moving {
            if !self.push(id, line, 1) {
                return false;
            }
        }
        if self.held.as_ref().is_some_and(Vec::is_empty) {
            self.held = None;
            return true;
        }
        false
    }
}

/// Every session, by id, user and device key.
pub(super) struct Sessions {
    pub(super) map: BTreeMap<SessionId, Entry>,
    pub(super) by_user: HashMap<String, Vec<SessionId>>,
    pub(super) by_device: HashMap<Fingerprint, Vec<SessionId>>,
    /// Away messages of users online (cleared when their last session ends).
    pub(super) away: HashMap<String, String>,
    policy: Policy,
    /// Some session has [`Entry::quiet_waiting`].
    quiet_pending: bool,
}

impl Sessions {
    pub(super) fn new(held_max: usize) -> Self {
        Sessions {
            map: BTreeMap::new(),
            by_user: HashMap::new(),
            by_device: HashMap::new(),
            away: HashMap::new(),
            policy: Policy {
                held_max,
                quiet_flusher: false,
            },
            quiet_pending: false,
        }
    }

    /// Queues `line` for session `id`; a full queue closes that session.
    pub(super) fn deliver(&mut self, id: SessionId, line: &impl Outgoing) -> bool {
        let policy = self.policy;
        self.map
            .get_mut(&id)
            .is_some_and(|entry| entry.deliver(id, line, policy, &mut self.quiet_pending))
    }

    /// Queues `line` for every session but `except`; returns how many took it.
    pub(super) fn deliver_all(&mut self, line: &impl Outgoing, except: Option<SessionId>) -> usize {
        let policy = self.policy;
        let pending = &mut self.quiet_pending;
        let mut reached = 0;
        for (id, entry) in &mut self.map {
            if Some(*id) != except && entry.deliver(*id, line, policy, pending) {
                reached += 1;
            }
        }
        reached
    }

    /// Queues `line` for every session of each of `users`, each once; returns how many took it.
    pub(super) fn deliver_users(&mut self, users: &[&str], line: &impl Outgoing) -> usize {
        self.sessions_of(users)
            .into_iter()
            .filter(|id| self.deliver(*id, line))
            .count()
    }

    /// Every session of each of `users`, each once.
    fn sessions_of(&self, users: &[&str]) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = users
            .iter()
            .filter_map(|u| self.by_user.get(*u))
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// True when some session with device key `fp` still takes lines (is not closing).
    pub(super) fn reachable(&self, fp: &Fingerprint) -> bool {
        self.by_device.get(fp).is_some_and(|ids| {
            ids.iter().any(|id| {
                self.map
                    .get(id)
                    .is_some_and(|e| !e.mailbox.closer().is_closed())
            })
        })
    }

    /// Wakes the writers of the sessions whose quiet lines no wake-up has covered yet.
    fn wake_quiet(&mut self) {
        if !std::mem::take(&mut self.quiet_pending) {
            return;
        }
        for entry in self.map.values_mut() {
            if std::mem::take(&mut entry.quiet_waiting) {
                entry.mailbox.outbox().flush_quiet();
            }
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Hub {
    /// Wakes, `delay` after quiet lines were queued (presence and device notices of logins
    /// and logouts), the writers of the sessions they wait in, unless a line since has. Until
    /// `stop` fires; quiet lines are queued like any other when this does not run.
    ///
    /// A login or logout tells every member session; woken for it on its own, each pays a
    /// wake-up, a TLS record and a `send` (a login storm's main cost to the chat, see
    /// docs/PERFORMANCE.md). Waiting, it rides with the next message, or goes with the
    /// notices of other logins in the same window.
    pub async fn flush_quiet(
        &self,
        delay: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        self.lock().sessions.policy.quiet_flusher = true;
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
        let mut inner = self.lock();
        inner.sessions.policy.quiet_flusher = false;
        inner.sessions.wake_quiet();
    }

    /// Tells the flusher when quiet lines wait for it.
    fn quiet_queued(&self, inner: &Inner) {
        if inner.sessions.quiet_pending {
            self.quiet_queued.notify_one();
        }
    }

    /// Adds a logged-in session and queues its `login_ok` (so nothing routed to it can
    /// arrive first); tells everyone else about a new user and a new device key.
    ///
    /// Returns the session id and [`Hub::offline_seq`] as of registration: every line for
    /// this device routed before it was handed to the offline writer, every one after it
    /// reaches the session (held until [`Hub::end_replay`] when `replay` is set).
    pub fn register(&self, new: NewSession) -> Result<(SessionId, u64), HubError> {
        let (id, snapshot, offline_seq) = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            let count = inner.sessions.by_user.get(&new.user).map_or(0, Vec::len);
            if count >= self.max_sessions_per_user {
                return Err(HubError::TooManySessions(self.max_sessions_per_user));
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            inner.directory.everyone_offline = None;
            let sessions = &mut inner.sessions;
            let first_of_device = !sessions.by_device.contains_key(&new.device);
            let (user, device, key) = (new.user.clone(), new.device, Arc::clone(&new.key));
            sessions.map.insert(
                id,
                Entry {
                    user: new.user,
                    device: new.device,
                    peer: new.peer,
                    since: now_secs(),
                    mailbox: Mailbox::new(new.outbox, new.closer),
                    binary: new.binary,
                    // Held from the start: login_ok is built after the lock is let go, and
                    // whatever is routed to this session meanwhile must come after it.
                    held: Some(Vec::new()),
                    quiet_waiting: false,
                },
            );
            sessions.by_user.entry(user.clone()).or_default().push(id);
            sessions.by_device.entry(device).or_default().push(id);
            let keys = inner.directory.known.entry(user.clone()).or_default();
            if !keys.iter().any(|k| k.fingerprint == device) {
                keys.push(Known::new(&user, device, &key));
            }
            let join = (count == 0).then(|| {
                serialize(&ServerFrame::Presence {
                    user: user.clone(),
                    event: PresenceEvent::Join,
                    reason: None,
                })
            });
            let online = first_of_device
                .then(|| device_line(&user, device, Some(&key), DeviceEvent::Online));
            if let Some(lines) = concat_lines([join.flatten(), online.flatten()]) {
                inner.sessions.deliver_all(&Quiet(lines), Some(id));
                self.quiet_queued(inner);
            }
            (
                id,
                inner.login_snapshot(user, id, device),
                inner.offline.seq,
            )
        };
        // Every registered device key goes into login_ok: O(devices) of copying, which the
        // fan-out would wait for under the lock.
        let line = snapshot.line();
        let mut inner = self.lock();
        // Gone already if it was kicked meanwhile.
        if let Some(entry) = inner.sessions.map.get_mut(&id) {
            let queued = match line {
                Some(line) => entry.push(id, line, 1),
                None => {
                    entry.mailbox.closer().close("internal error");
                    false
                }
            };
            if queued && !new.replay {
                entry.move_held(id, usize::MAX);
            }
        }
        Ok((id, offline_seq))
    }

    /// Ends session `id`'s replay: moves the live lines it held into its queue, as many as
    /// `room` (its queue's free slots). True when nothing is held any more and new lines go
    /// straight to the queue; false means call again once the queue has drained a little.
    pub fn end_replay(&self, id: SessionId, room: usize) -> bool {
        // Under the hub lock nobody else queues for this session, and `room` slots were
        // free, so these cannot fail for lack of room.
        self.lock()
            .sessions
            .map
            .get_mut(&id)
            .is_none_or(|entry| entry.move_held(id, room))
    }

    /// Removes a session; tells everyone when its device key or its user goes offline.
    pub fn unregister(&self, id: SessionId, reason: &str) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let sessions = &mut inner.sessions;
        let Some(entry) = sessions.map.remove(&id) else {
            return;
        };
        inner.directory.everyone_offline = None;
        let last_of_device = match sessions.by_device.get_mut(&entry.device) {
            Some(ids) => {
                ids.retain(|s| *s != id);
                ids.is_empty()
            }
            None => true,
        };
        let mut offline = None;
        if last_of_device {
            sessions.by_device.remove(&entry.device);
            offline = device_line(&entry.user, entry.device, None, DeviceEvent::Offline);
        }
        let last = match sessions.by_user.get_mut(&entry.user) {
            Some(ids) => {
                ids.retain(|s| *s != id);
                ids.is_empty()
            }
            None => true,
        };
        let mut leave = None;
        if last {
            sessions.by_user.remove(&entry.user);
            sessions.away.remove(&entry.user);
            leave = serialize(&ServerFrame::Presence {
                user: entry.user,
                event: PresenceEvent::Leave,
                reason: Some(reason.to_string()),
            });
        }
        if let Some(lines) = concat_lines([offline, leave]) {
            sessions.deliver_all(&Quiet(lines), None);
            self.quiet_queued(inner);
        }
    }

    /// Sets (Some) or clears (None) `user`'s away message; false if `user` is not online.
    pub fn set_away(&self, user: &str, text: Option<String>) -> bool {
        let mut inner = self.lock();
        let sessions = &mut inner.sessions;
        if !sessions.by_user.contains_key(user) {
            return false;
        }
        match text {
            Some(t) => sessions.away.insert(user.to_string(), t),
            None => sessions.away.remove(user),
        };
        true
    }

    /// `user`'s away message, if set.
    pub fn away(&self, user: &str) -> Option<String> {
        self.lock().sessions.away.get(user).cloned()
    }

    /// True if `user` has at least one session.
    pub fn is_online(&self, user: &str) -> bool {
        self.lock().sessions.by_user.contains_key(user)
    }

    /// Number of sessions `user` has.
    pub fn session_count(&self, user: &str) -> usize {
        self.lock().sessions.by_user.get(user).map_or(0, Vec::len)
    }

    /// Everyone online, sorted by name.
    pub fn online(&self) -> Vec<OnlineUser> {
        let inner = self.lock();
        let sessions = &inner.sessions;
        let mut users: Vec<OnlineUser> = sessions
            .by_user
            .iter()
            .map(|(user, ids)| OnlineUser {
                user: user.clone(),
                sessions: ids.len() as u32,
                away: sessions.away.get(user).cloned(),
            })
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        users
    }

    /// Every session, oldest first.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.lock()
            .sessions
            .map
            .iter()
            .map(|(id, e)| SessionInfo {
                id: *id,
                user: e.user.clone(),
                peer: e.peer.to_string(),
                device: e.device,
                since: e.since,
            })
            .collect()
    }

    /// (sessions, distinct users) online.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.sessions.map.len(), inner.sessions.by_user.len())
    }

    /// Asks every session of `user` using device key `device` to close; returns how many.
    pub fn close_device(&self, user: &str, device: &Fingerprint, reason: &str) -> usize {
        let inner = self.lock();
        let Some(ids) = inner.sessions.by_device.get(device) else {
            return 0;
        };
        ids.iter()
            .filter_map(|id| inner.sessions.map.get(id))
            .filter(|e| e.user == user)
            .inspect(|e| e.mailbox.closer().close(reason))
            .count()
    }

    /// Sessions using each device key, for `chatctl key list`.
    pub fn device_sessions(&self) -> HashMap<(String, Fingerprint), usize> {
        let inner = self.lock();
        let mut out = HashMap::new();
        for e in inner.sessions.map.values() {
            *out.entry((e.user.clone(), e.device)).or_insert(0) += 1;
        }
        out
    }

    /// Asks every session of `user` to close; returns how many.
    pub fn close_user(&self, user: &str, reason: &str) -> usize {
        let inner = self.lock();
        let ids = inner
            .sessions
            .by_user
            .get(user)
            .cloned()
            .unwrap_or_default();
        for id in &ids {
            if let Some(e) = inner.sessions.map.get(id) {
                e.mailbox.closer().close(reason);
            }
        }
        ids.len()
    }
}
