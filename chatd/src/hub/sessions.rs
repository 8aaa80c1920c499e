//! The session table: who is online on which device, each session's mailbox and away
//! message, and delivery to them (held while a session replays, quiet notices, the
//! slow-consumer rule via [`Mailbox`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::control::SessionInfo;
use chatd_proto::frame::OnlineUser;

use super::outgoing::{Outgoing, SessionId};
use crate::mailbox::{Closer, Mailbox, Refused};
use crate::outbox::Outbox;

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
    /// Hold live lines until `Hub::end_replay` (the session replays stored lines first).
    pub replay: bool,
    /// Negotiated binary envelope frames.
    pub binary: bool,
    /// Asked for the `vouch` feature: gets `vouch` frames and vouches in `device` frames.
    pub vouch: bool,
    /// Asked for the `rekey` feature: gets `rekey` frames.
    pub rekey: bool,
}

/// What the hub keeps per session.
pub(super) struct Entry {
    user: String,
    device: Fingerprint,
    peer: SocketAddr,
    since: u64,
    mailbox: Mailbox,
    /// Negotiated binary envelope frames in its `hello`.
    binary: bool,
    /// Asked for the `vouch` feature in its `hello`.
    vouch: bool,
    /// Asked for the `rekey` feature in its `hello`.
    rekey: bool,
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
    /// `Hub::flush_quiet` runs: quiet lines may wait for it.
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
                tracing::warn!(session = id, user = ?self.user, "too much arrived during replay; disconnecting slow client");
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
            tracing::warn!(session = id, user = ?self.user, "outbound queue full; disconnecting slow client");
        }
        false
    }

    /// Moves the held lines into the queue while it has room (in frames and bytes); true when
    /// none is held any more and new lines go straight to the queue.
    fn move_held(&mut self, id: SessionId) -> bool {
        let Some(lines) = self.held.as_mut() else {
            return true;
        };
        let mut moved = 0;
        for line in lines.iter() {
            match self.mailbox.offer(line.clone(), 1) {
                Ok(true) => moved += 1,
                Ok(false) => break,
                Err(refused) => {
                    self.refused(id, refused);
                    return false;
                }
            }
        }
        lines.drain(..moved);
        if lines.is_empty() {
            self.held = None;
            return true;
        }
        false
    }
}

/// Every session, by id, user and device key.
pub(super) struct Sessions {
    map: BTreeMap<SessionId, Entry>,
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

    /// Queues `plain` for every session but `except`, or `vouched` for those that asked for
    /// the `vouch` feature; returns how many took it.
    pub(super) fn deliver_all_split(
        &mut self,
        plain: &impl Outgoing,
        vouched: &impl Outgoing,
        except: Option<SessionId>,
    ) -> usize {
        let policy = self.policy;
        let pending = &mut self.quiet_pending;
        let mut reached = 0;
        for (id, entry) in &mut self.map {
            if Some(*id) == except {
                continue;
            }
            let took = if entry.vouch {
                entry.deliver(*id, vouched, policy, pending)
            } else {
                entry.deliver(*id, plain, policy, pending)
            };
            if took {
                reached += 1;
            }
        }
        reached
    }

    /// Queues `line` for every session that asked for the `vouch` feature.
    pub(super) fn deliver_vouchers(&mut self, line: &impl Outgoing) -> usize {
        let policy = self.policy;
        let pending = &mut self.quiet_pending;
        let mut reached = 0;
        for (id, entry) in &mut self.map {
            if entry.vouch && entry.deliver(*id, line, policy, pending) {
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

    /// Queues `line` for every session of device key `device`; returns how many took it.
    pub(super) fn deliver_device(&mut self, device: &Fingerprint, line: &impl Outgoing) -> usize {
        let ids = self.by_device.get(device).cloned().unwrap_or_default();
        ids.into_iter().filter(|id| self.deliver(*id, line)).count()
    }

    /// Queues `line` for the sessions of device key `device` that asked for the `rekey`
    /// feature; None when the device has no session at all.
    pub(super) fn deliver_device_rekey(
        &mut self,
        device: &Fingerprint,
        line: &impl Outgoing,
    ) -> Option<usize> {
        let ids = self.by_device.get(device).cloned()?;
        let askers: Vec<SessionId> = ids
            .into_iter()
            .filter(|id| self.map.get(id).is_some_and(|e| e.rekey))
            .collect();
        Some(
            askers
                .into_iter()
                .filter(|id| self.deliver(*id, line))
                .count(),
        )
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
    pub(super) fn wake_quiet(&mut self) {
        if !std::mem::take(&mut self.quiet_pending) {
            return;
        }
        for entry in self.map.values_mut() {
            if std::mem::take(&mut entry.quiet_waiting) {
                entry.mailbox.outbox().flush_quiet();
            }
        }
    }

    /// Sets whether `Hub::flush_quiet` runs (quiet lines may wait for it).
    pub(super) fn set_quiet_flusher(&mut self, on: bool) {
        self.policy.quiet_flusher = on;
    }

    /// True when quiet lines wait for the flusher.
    pub(super) fn quiet_pending(&self) -> bool {
        self.quiet_pending
    }

    /// Number of sessions.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Sessions `user` has.
    pub(super) fn count(&self, user: &str) -> usize {
        self.by_user.get(user).map_or(0, Vec::len)
    }

    /// The device key session `id` logged in with.
    pub(super) fn device_of(&self, id: SessionId) -> Option<Fingerprint> {
        self.map.get(&id).map(|e| e.device)
    }

    /// True when some session uses device key `device`.
    pub(super) fn device_online(&self, device: &Fingerprint) -> bool {
        self.by_device.contains_key(device)
    }

    /// Adds session `id`, holding its live lines until [`Sessions::login_ok`] (login_ok is
    /// built after the hub's lock is let go, and whatever is routed to it meanwhile must
    /// come after it). True when it is the first session of its device key.
    pub(super) fn insert(&mut self, id: SessionId, new: NewSession) -> bool {
        let first_of_device = !self.by_device.contains_key(&new.device);
        self.by_user.entry(new.user.clone()).or_default().push(id);
        self.by_device.entry(new.device).or_default().push(id);
        self.map.insert(
            id,
            Entry {
                user: new.user,
                device: new.device,
                peer: new.peer,
                since: now_secs(),
                mailbox: Mailbox::new(new.outbox, new.closer),
                binary: new.binary,
                vouch: new.vouch,
                rekey: new.rekey,
                held: Some(Vec::new()),
                quiet_waiting: false,
            },
        );
        first_of_device
    }

    /// Queues session `id`'s `login_ok` (None: it could not be built, so the session is
    /// closed) ahead of what was held meanwhile, and lets the held lines go unless it replays.
    pub(super) fn login_ok(&mut self, id: SessionId, line: Option<Bytes>, replay: bool) {
        // Gone already if it was kicked meanwhile.
        let Some(entry) = self.map.get_mut(&id) else {
            return;
        };
        let queued = match line {
            Some(line) => entry.push(id, line, 1),
            None => {
                entry.mailbox.closer().close("internal error");
                false
            }
        };
        if queued && !replay && !entry.move_held(id) {
            // Nobody ends a replay for it: what did not fit cannot wait.
            entry.mailbox.too_slow();
        }
    }

    /// Moves held lines of session `id` into its queue while it has room; true when nothing
    /// is held any more (see `Hub::end_replay`).
    pub(super) fn end_replay(&mut self, id: SessionId) -> bool {
        self.map
            .get_mut(&id)
            .is_none_or(|entry| entry.move_held(id))
    }

    /// Removes session `id`: its user and device key, and whether it was the last session
    /// of its device key and of its user (whose away message then goes too).
    pub(super) fn remove(&mut self, id: SessionId) -> Option<(String, Fingerprint, bool, bool)> {
        let entry = self.map.remove(&id)?;
        let last_of_device = take_id(&mut self.by_device, &entry.device, id);
        let last_of_user = take_id(&mut self.by_user, &entry.user, id);
        if last_of_user {
            self.away.remove(&entry.user);
        }
        Some((entry.user, entry.device, last_of_device, last_of_user))
    }

    /// Sets (Some) or clears (None) `user`'s away message; false if `user` is not online.
    pub(super) fn set_away(&mut self, user: &str, text: Option<String>) -> bool {
        if !self.by_user.contains_key(user) {
            return false;
        }
        match text {
            Some(t) => self.away.insert(user.to_string(), t),
            None => self.away.remove(user),
        };
        true
    }

    /// Everyone online, sorted by name.
    pub(super) fn online(&self) -> Vec<OnlineUser> {
        let mut users: Vec<OnlineUser> = self
            .by_user
            .iter()
            .map(|(user, ids)| OnlineUser {
                user: user.clone(),
                sessions: ids.len() as u32,
                away: self.away.get(user).cloned(),
            })
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        users
    }

    /// Every session, oldest first.
    pub(super) fn list(&self) -> Vec<SessionInfo> {
        self.map
            .iter()
            .map(|(id, e)| SessionInfo {
                id: *id,
                user: e.user.clone(),
                peer: e.peer.to_string(),
                device: e.device,
                since: e.since,
                node: None,
            })
            .collect()
    }

    /// Asks every session of `user` using device key `device` to close; returns how many.
    pub(super) fn close_device(&self, user: &str, device: &Fingerprint, reason: &str) -> usize {
        let Some(ids) = self.by_device.get(device) else {
            return 0;
        };
        ids.iter()
            .filter_map(|id| self.map.get(id))
            .filter(|e| e.user == user)
            .inspect(|e| e.mailbox.closer().close(reason))
            .count()
    }

    /// The user of a device key's sessions here.
    pub(super) fn user_of_device(&self, device: &Fingerprint) -> Option<String> {
        let id = self.by_device.get(device)?.first()?;
        self.map.get(id).map(|e| e.user.clone())
    }

    /// Asks every session to close; returns how many.
    pub(super) fn close_all(&self, reason: &str) -> usize {
        for e in self.map.values() {
            e.mailbox.closer().close(reason);
        }
        self.map.len()
    }

    /// Sessions using each device key, for `chatctl key list`.
    pub(super) fn per_device(&self) -> HashMap<(String, Fingerprint), usize> {
        let mut out = HashMap::new();
        for e in self.map.values() {
            *out.entry((e.user.clone(), e.device)).or_insert(0) += 1;
        }
        out
    }

    /// Asks every session of `user` to close; returns how many.
    pub(super) fn close_user(&self, user: &str, reason: &str) -> usize {
        let ids = self.by_user.get(user).map_or(&[][..], Vec::as_slice);
        for id in ids {
            if let Some(e) = self.map.get(id) {
                e.mailbox.closer().close(reason);
            }
        }
        ids.len()
    }
}

/// Removes `id` from `key`'s sessions in `index`; true when none is left (the key goes too).
fn take_id<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, Vec<SessionId>>,
    key: &K,
    id: SessionId,
) -> bool {
    let Some(ids) = index.get_mut(key) else {
        return true;
    };
    ids.retain(|s| *s != id);
    if ids.is_empty() {
        index.remove(key);
        return true;
    }
    false
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
