//! Who is online and how to reach them.
//!
//! Each session registers an outbound queue of pre-serialized lines. A frame for many
//! receivers is serialized once and the same `Bytes` is queued for each. Queues are
//! bounded and never awaited: a receiver whose queue is full is closed as too slow, so
//! one stalled client cannot slow anyone else.
//!
//! The hub also knows every registered device key. A line for a member device that is not
//! online becomes an [`OfflineJob`], numbered under the hub's lock and sent to the offline
//! writer (crate::offline), which stores jobs in that order. A session that logs in is held
//! (its live lines buffered here) while it replays what was stored; see [`Hub::register`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::control::SessionInfo;
use chatd_proto::conversation::Conversation;
use chatd_proto::frame::{
    self, DeviceEvent, DeviceInfo, OnlineUser, PresenceEvent, RoomEvent, RoomState, RoomSummary,
    ServerFrame, WhoisDevice,
};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Outbox, PushError};

/// Identifies a session while the server runs.
pub type SessionId = u64;

/// Why registration failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    /// The user is at `max_sessions_per_user`.
    #[error("too many sessions for this user (limit {0})")]
    TooManySessions(usize),
}

/// How to end a session from outside its task, and why.
#[derive(Clone, Default)]
pub struct Closer(Arc<CloserState>);

#[derive(Default)]
struct CloserState {
    token: CancellationToken,
    /// Mirrors the token: fan-out checks it for every delivery, and the token's own check
    /// takes a lock.
    closed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Closer {
    /// Asks the session to end; the first reason given wins.
    pub fn close(&self, reason: &str) {
        let mut r = self.0.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        drop(r);
        self.0.closed.store(true, Ordering::Release);
        self.0.token.cancel();
    }

    /// Resolves once [`Closer::close`] was called.
    pub async fn closed(&self) {
        self.0.token.cancelled().await
    }

    /// True once [`Closer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// The reason given to [`Closer::close`], if any.
    pub fn reason(&self) -> Option<String> {
        self.0
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the hub keeps per session.
struct Entry {
    user: String,
    device: Fingerprint,
    peer: SocketAddr,
    since: u64,
    outbox: Arc<Outbox>,
    closer: Closer,
    /// Negotiated binary envelope frames in its `hello`.
    binary: bool,
    /// While the session replays its stored lines: live lines wait here, in order.
    held: RefCell<Option<Vec<Bytes>>>,
}

/// What the hub queues for sessions: one line for all, an envelope in both wire forms, or a
/// run of envelopes queued as one entry.
pub trait Outgoing {
    /// The bytes for a session that did (`true`) or did not negotiate binary envelope frames.
    fn for_session(&self, binary: bool) -> &Bytes;

    /// How many frames [`Outgoing::for_session`] holds (what it counts for in a queue).
    fn frames(&self) -> usize {
        1
    }

    /// Hands each frame of [`Outgoing::for_session`] to `f` on its own: what a replaying
    /// session holds back, one frame per slot.
    fn each_frame(&self, binary: bool, f: &mut dyn FnMut(&Bytes)) {
        f(self.for_session(binary));
    }

    /// May wait for a wake-up it can share (see [`Hub::flush_quiet`]).
    fn quiet(&self) -> bool {
        false
    }
}

/// Notices that may wait a moment for a wake-up they can share (see [`Hub::flush_quiet`]).
struct Quiet(Bytes);

impl Outgoing for Quiet {
    fn for_session(&self, _binary: bool) -> &Bytes {
        &self.0
    }

    fn quiet(&self) -> bool {
        true
    }
}

impl Outgoing for Bytes {
    fn for_session(&self, _binary: bool) -> &Bytes {
        self
    }
}

/// An envelope serialized once per wire form, each shared by every session that takes it
/// (docs/PROTOCOL.md, binary envelope frames).
#[derive(Debug, Clone)]
pub struct EnvelopeLines {
    /// The JSON `envelope` line; also what is stored for offline devices.
    pub json: Bytes,
    /// The binary `envelope` frame.
    pub binary: Bytes,
}

impl Outgoing for EnvelopeLines {
    fn for_session(&self, binary: bool) -> &Bytes {
        if binary { &self.binary } else { &self.json }
    }
}

/// Envelopes of one conversation routed together: each member session gets them as one queue
/// entry (one lock, one wake-up and one slice of a TLS write for the run, instead of one per
/// envelope). A sender that pipelines its messages produces such runs; see `route_batch`.
#[derive(Debug, Clone)]
pub struct EnvelopeRun {
    /// Every envelope's lines, joined, per wire form.
    joined: EnvelopeLines,
    /// The envelopes one by one, for replaying sessions and offline storage.
    each: Vec<(EnvelopeLines, Notify)>,
}

impl EnvelopeRun {
    /// Joins `each` (at least two envelopes, in order) into one entry per wire form.
    fn new(each: Vec<(EnvelopeLines, Notify)>) -> Self {
        let join = |binary: bool| {
            let parts: Vec<&[u8]> = each
                .iter()
                .map(|(l, _)| &l.for_session(binary)[..])
                .collect();
            Bytes::from(parts.concat())
        };
        let joined = EnvelopeLines {
            json: join(false),
            binary: join(true),
        };
        EnvelopeRun { joined, each }
    }
}

impl Outgoing for EnvelopeRun {
    fn for_session(&self, binary: bool) -> &Bytes {
        self.joined.for_session(binary)
    }

    fn frames(&self) -> usize {
        self.each.len()
    }

    fn each_frame(&self, binary: bool, f: &mut dyn FnMut(&Bytes)) {
        for (lines, _) in &self.each {
            f(lines.for_session(binary));
        }
    }
}

/// A registered, unrevoked device key.
struct Known {
    fingerprint: Fingerprint,
    /// This key's entry in `login_ok`, serialized once: offline, then online. None if it
    /// could not be (a session that would list it is closed instead, see [`LoginSnapshot`]).
    listed: Option<Listed>,
}

/// A device key's `login_ok` entry ([`DeviceInfo`]) as JSON, offline and online.
type Listed = Arc<[Box<RawValue>; 2]>;

impl Known {
    /// `user`'s key `key` (base64 SPKI DER), whose SHA-256 is `fingerprint`.
    fn new(user: &str, fingerprint: Fingerprint, key: &str) -> Known {
        let info = |online| DeviceInfo {
            user: user.to_string(),
            fingerprint,
            key: key.to_string(),
            online,
        };
        let listed = serde_json::value::to_raw_value(&info(false))
            .and_then(|offline| Ok([offline, serde_json::value::to_raw_value(&info(true))?]));
        let listed = match listed {
            Ok(both) => Some(Arc::new(both)),
            Err(e) => {
                tracing::error!(error = %e, %user, "cannot serialize a device key");
                None
            }
        };
        Known {
            fingerprint,
            listed,
        }
    }
}

/// A line to store for devices that are offline, numbered in routing order.
#[derive(Debug)]
pub struct OfflineJob {
    /// 1, 2, 3, ... in the order the hub routed them.
    pub seq: u64,
    /// The serialized frame.
    pub line: Bytes,
    /// (user, device) of each offline recipient.
    pub targets: Vec<(String, Fingerprint)>,
    /// Who to tell once it is stored.
    pub notify: Option<Notify>,
}

/// The sender of an envelope, to be told (`held`) once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The sending session.
    pub session: SessionId,
    /// The envelope's message id, hex.
    pub message: String,
    /// The envelope's conversation name.
    pub conversation: String,
}

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

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<SessionId, Entry>,
    by_user: HashMap<String, Vec<SessionId>>,
    by_device: HashMap<Fingerprint, Vec<SessionId>>,
    known: BTreeMap<String, Vec<Known>>,
    /// Away messages of users online (cleared when their last session ends).
    away: HashMap<String, String>,
    /// Every room, by name (without `#`).
    rooms: BTreeMap<String, Room>,
    /// The room every user is in.
    default_room: String,
    offline: Option<mpsc::UnboundedSender<OfflineJob>>,
    /// Registered devices with no session, as of the last change to sessions or keys; only
    /// trusted after a delivery that every session accepted (then none is closing).
    everyone_offline: Option<Vec<(String, Fingerprint)>>,
    /// Number of the last [`OfflineJob`] handed out.
    offline_seq: u64,
    /// Live lines a replaying session may hold before it counts as too slow.
    held_max: usize,
    /// [`Hub::flush_quiet`] runs: quiet lines may wait for it.
    quiet_flusher: bool,
    /// Sessions with quiet lines that no wake-up has covered yet, for the next flush.
    quiet_waiting: RefCell<Vec<SessionId>>,
}

/// The routing table; shared by every session and the control socket.
pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    max_sessions_per_user: usize,
    /// Tells [`Hub::flush_quiet`] that quiet lines wait.
    quiet_queued: tokio::sync::Notify,
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

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Inner {
    /// Queues `line` for session `id`; a full queue closes that session.
    fn deliver(&self, id: SessionId, line: &impl Outgoing) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|entry| self.deliver_to(id, entry, line))
    }

    /// [`Inner::deliver`] for an entry already at hand (fan-out walks the map once).
    fn deliver_to(&self, id: SessionId, entry: &Entry, line: &impl Outgoing) -> bool {
        if entry.closer.is_closed() {
            // Closing (too slow, kicked, ...): nothing more, so a dropped client sees no gap
            // before its `bye`, and a slow one is reported once, not once per broadcast.
            return false;
        }
        if let Some(held) = entry.held.borrow_mut().as_mut() {
            if held.len().saturating_add(line.frames()) > self.held_max {
                tracing::warn!(session = id, user = %entry.user, "too much arrived during replay; disconnecting slow client");
                entry.closer.close("too slow: outbound queue full");
                return false;
            }
            line.each_frame(entry.binary, &mut |frame| held.push(frame.clone()));
            return true;
        }
        let bytes = line.for_session(entry.binary).clone();
        if line.quiet() && self.quiet_flusher {
            let pushed = entry.outbox.push_quiet(bytes, line.frames());
            if pushed == Ok(true) {
                self.quiet_waiting.borrow_mut().push(id);
            }
            return match pushed {
                Ok(_) => true,
                Err(e) => close_for(id, entry, e),
            };
        }
        push_or_close(id, entry, bytes, line.frames())
    }

    /// Wakes the writers of the sessions whose quiet lines no wake-up has covered yet.
    fn wake_quiet(&self) {
        let waiting = std::mem::take(&mut *self.quiet_waiting.borrow_mut());
        for id in waiting {
            if let Some(entry) = self.sessions.get(&id) {
                entry.outbox.flush_quiet();
            }
        }
    }

    /// True when some session with device key `fp` still takes lines (is not closing).
    fn reachable(&self, fp: &Fingerprint) -> bool {
        self.by_device.get(fp).is_some_and(|ids| {
            ids.iter()
                .any(|id| self.sessions.get(id).is_some_and(|e| !e.closer.is_closed()))
        })
    }

    fn deliver_all(&self, line: &impl Outgoing, except: Option<SessionId>) -> usize {
        self.sessions
            .iter()
            .filter(|(id, entry)| Some(**id) != except && self.deliver_to(**id, entry, line))
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

    /// What `login_ok` tells session `id` of `user`, copied under the lock and serialized
    /// after it: every registered device key (by user, then registration) with whether it
    /// is online.
    fn login_snapshot(&self, user: String, id: SessionId, device: Fingerprint) -> LoginSnapshot {
        let rooms = self
            .rooms
            .iter()
            .filter(|(_, r)| r.members.contains(&user))
            .map(|(name, r)| r.state(name))
            .collect();
        LoginSnapshot {
            online: self.by_user.keys().cloned().collect(),
            devices: self
                .known
                .values()
                .flatten()
                .map(|k| {
                    let online = self.by_device.contains_key(&k.fingerprint);
                    Some((Arc::clone(k.listed.as_ref()?), online))
                })
                .collect(),
            room: self.default_room.clone(),
            rooms,
            user,
            id,
            device,
        }
    }

    /// Queues `line` for every session of the members of `room`; returns how many.
    fn deliver_room(&self, room: &str, line: &impl Outgoing) -> usize {
        // Every logged-in user is in the default room: no member lookups on the busiest path.
        if room == self.default_room {
            return self.deliver_all(line, None);
        }
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let members: Vec<&str> = r.members.iter().map(String::as_str).collect();
        self.sessions_of(&members)
            .into_iter()
            .filter(|id| self.deliver(*id, line))
            .count()
    }

    /// Registered devices of `users` with no session that takes lines now (none, or all
    /// closing: a line they missed is stored rather than lost).
    fn offline_devices<'a>(
        &self,
        users: impl Iterator<Item = &'a String>,
    ) -> Vec<(String, Fingerprint)> {
        let mut out = Vec::new();
        for user in users {
            for k in self.known.get(user).into_iter().flatten() {
                if !self.reachable(&k.fingerprint) {
                    out.push((user.clone(), k.fingerprint));
                }
            }
        }
        out
    }

    /// Every registered device without a reachable session, after a delivery to all sessions
    /// that reached `reached` of them. The busiest path (a message for everyone) scans the
    /// devices only when something changed since the last scan or a session refused the line.
    fn everyone_offline(&mut self, reached: usize) -> Vec<(String, Fingerprint)> {
        if reached != self.sessions.len() {
            // Some session is closing or full: its device may need the line stored.
            return self.offline_devices(self.known.keys());
        }
        if self.everyone_offline.is_none() {
            self.everyone_offline = Some(self.offline_devices(self.known.keys()));
        }
        self.everyone_offline.clone().unwrap_or_default()
    }

    /// Numbers and hands a line to the offline writer; false when there are no targets or
    /// the writer is gone (shutting down).
    fn store_for(
        &mut self,
        line: &Bytes,
        targets: Vec<(String, Fingerprint)>,
        notify: Option<Notify>,
    ) -> bool {
        if targets.is_empty() {
            return false;
        }
        let Some(tx) = &self.offline else {
            tracing::warn!(
                devices = targets.len(),
                "a line for offline devices arrived after the offline writer stopped"
            );
            return false;
        };
        self.offline_seq += 1;
        let job = OfflineJob {
            seq: self.offline_seq,
            line: line.clone(),
            targets,
            notify,
        };
        tx.send(job).is_ok()
    }

    /// Tells every session (except `except`) about a device event.
    fn announce_device(
        &self,
        user: &str,
        fingerprint: Fingerprint,
        event: DeviceEvent,
        except: Option<SessionId>,
    ) {
        if let Some(line) = device_line(user, fingerprint, None, event) {
            self.deliver_all(&line, except);
        }
    }
}

/// A serialized `device` frame.
fn device_line(
    user: &str,
    fingerprint: Fingerprint,
    key: Option<&str>,
    event: DeviceEvent,
) -> Option<Bytes> {
    serialize(&ServerFrame::Device {
        user: user.to_string(),
        fingerprint,
        key: key.map(str::to_string),
        event,
    })
}

/// Joins serialized lines into one queue entry: a login's or logout's `presence` and `device`
/// notices then cost each member one wake-up, TLS record and write instead of two.
fn concat_lines(lines: impl IntoIterator<Item = Option<Bytes>>) -> Option<Bytes> {
    let lines: Vec<Bytes> = lines.into_iter().flatten().collect();
    match lines.len() {
        0 => None,
        1 => lines.into_iter().next(),
        _ => Some(Bytes::from(lines.concat())),
    }
}

/// What `/whois` shows of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whois {
    /// Sessions logged in now.
    pub sessions: u32,
    /// Away message, if set.
    pub away: Option<String>,
    /// Registered device keys and whether each is online.
    pub devices: Vec<WhoisDevice>,
    /// Rooms the asker may see the user in.
    pub rooms: Vec<String>,
}

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

/// Queues `line` (`frames` frames) for session `id`: a full queue closes the session as too
/// slow, a closed one (its writer is gone) as disconnected.
fn push_or_close(id: SessionId, entry: &Entry, line: Bytes, frames: usize) -> bool {
    match entry.outbox.push_frames(line, frames) {
        Ok(()) => true,
        Err(e) => close_for(id, entry, e),
    }
}

/// Closes session `id` for a failed push: a full queue as too slow, a closed one (its writer
/// is gone) as disconnected. Always false (the line was not queued).
fn close_for(id: SessionId, entry: &Entry, failed: PushError) -> bool {
    match failed {
        PushError::Full => {
            tracing::warn!(session = id, user = %entry.user, "outbound queue full; disconnecting slow client");
            entry.closer.close("too slow: outbound queue full");
        }
        PushError::Closed => {
            // The writer is gone (the connection failed): unreachable from now on, so
            // lines for its device are stored instead.
            entry.closer.close("disconnected");
        }
    }
    false
}

/// Moves up to `limit` of the lines held for session `id` into its queue (see
/// [`push_or_close`]); true when none is held any more and new lines go straight to the queue.
fn move_held(id: SessionId, entry: &Entry, limit: usize) -> bool {
    let mut held = entry.held.borrow_mut();
    let Some(lines) = held.as_mut() else {
        return true;
    };
    let n = limit.min(lines.len());
    for line in lines.drain(..n) {
        if !push_or_close(id, entry, line, 1) {
            return false;
        }
    }
    if lines.is_empty() {
        *held = None;
        true
    } else {
        false
    }
}

/// The state a `login_ok` reports, copied under the hub lock; the device keys' entries are
/// shared, serialized once per key ([`Known::listed`]).
struct LoginSnapshot {
    user: String,
    id: SessionId,
    device: Fingerprint,
    online: Vec<String>,
    /// Every device key's entry and whether it is online; None if one has no entry.
    devices: Option<Vec<(Listed, bool)>>,
    room: String,
    rooms: Vec<RoomState>,
}

/// [`ServerFrame::LoginOk`] as it serializes, with the device entries written as they are:
/// `login_ok` lists every registered key (~260 KB with 500 users), and serializing that
/// anew for each login (JSON escaping, a copy of every key) was most of a login's work on
/// the tokio workers. A test holds the two byte for byte.
#[derive(Serialize)]
#[serde(tag = "type", rename = "login_ok")]
struct LoginOkLine<'a> {
    user: &'a str,
    session: SessionId,
    device: Fingerprint,
    online: &'a [String],
    devices: Vec<&'a RawValue>,
    room: &'a str,
    rooms: &'a [RoomState],
}

impl LoginSnapshot {
    /// The `login_ok` line; None (logged) if it cannot be serialized.
    fn line(mut self) -> Option<Bytes> {
        self.online.sort();
        let Some(devices) = &self.devices else {
            tracing::error!(user = %self.user, "login_ok lacks a device key's entry");
            return None;
        };
        serialize(&LoginOkLine {
            user: &self.user,
            session: self.id,
            device: self.device,
            online: &self.online,
            devices: devices
                .iter()
                .map(|(listed, online)| &*listed[usize::from(*online)])
                .collect(),
            room: &self.room,
            rooms: &self.rooms,
        })
    }
}

fn serialize(frame: &impl Serialize) -> Option<Bytes> {
    match frame::encode(frame) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize frame");
            None
        }
    }
}

impl Hub {
    /// An empty hub; a replaying session may hold `held_max` live lines.
    pub fn new(max_sessions_per_user: usize, held_max: usize) -> Self {
        Hub {
            inner: Mutex::new(Inner {
                held_max,
                ..Inner::default()
            }),
            next_id: AtomicU64::new(1),
            max_sessions_per_user,
            quiet_queued: tokio::sync::Notify::new(),
        }
    }

    /// Wakes, `delay` after quiet lines were queued (presence and device notices of logins
    /// and logouts), the writers of the sessions they wait in, unless a line since has. Until
    /// `stop` fires; quiet lines are queued like any other when this does not run.
    ///
    /// A login or logout tells every member session; woken for it on its own, each pays a
    /// wake-up, a TLS record and a `send` (a login storm's main cost to the chat, see
    /// docs/PERFORMANCE.md). Waiting, it rides with the next message, or goes with the
    /// notices of other logins in the same window.
    pub async fn flush_quiet(&self, delay: std::time::Duration, stop: CancellationToken) {
        self.lock().quiet_flusher = true;
        loop {
            tokio::select! {
                () = self.quiet_queued.notified() => {}
                () = stop.cancelled() => break,
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => break,
            }
            self.lock().wake_quiet();
        }
        let mut inner = self.lock();
        inner.quiet_flusher = false;
        inner.wake_quiet();
    }

    /// Sets the registered device keys (at startup): (user, fingerprint, base64 SPKI DER).
    pub fn set_known(&self, keys: impl IntoIterator<Item = (String, Fingerprint, String)>) {
        let mut inner = self.lock();
        inner.everyone_offline = None;
        inner.known.clear();
        for (user, fingerprint, key) in keys {
            let known = Known::new(&user, fingerprint, &key);
            inner.known.entry(user).or_default().push(known);
        }
    }

    /// Connects the offline writer; lines for offline devices go to `tx` from now on.
    pub fn attach_offline(&self, tx: mpsc::UnboundedSender<OfflineJob>) {
        self.lock().offline = Some(tx);
    }

    /// Disconnects the offline writer (shutdown), so it can finish what it has.
    pub fn detach_offline(&self) {
        self.lock().offline = None;
    }

    /// Number of the last offline job handed out; a session that registered after it waits
    /// for the writer to commit it before reading its queue.
    pub fn offline_seq(&self) -> u64 {
        self.lock().offline_seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing in Inner can be left half-updated by a panic that matters more than availability.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a logged-in session and queues its `login_ok` (so nothing routed to it can
    /// arrive first); tells everyone else about a new user and a new device key.
    ///
    /// Returns the session id and [`Hub::offline_seq`] as of registration: every line for
    /// this device routed before it was handed to the offline writer, every one after it
    /// reaches the session (held until [`Hub::end_replay`] when `replay` is set).
    pub fn register(&self, new: NewSession) -> Result<(SessionId, u64), HubError> {
        let (id, snapshot, offline_seq) = {
            let mut inner = self.lock();
            let count = inner.by_user.get(&new.user).map_or(0, Vec::len);
            if count >= self.max_sessions_per_user {
                return Err(HubError::TooManySessions(self.max_sessions_per_user));
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            inner.everyone_offline = None;
            let first_of_device = !inner.by_device.contains_key(&new.device);
            let (user, device, key) = (new.user.clone(), new.device, Arc::clone(&new.key));
            inner.sessions.insert(
                id,
                Entry {
                    user: new.user,
                    device: new.device,
                    peer: new.peer,
                    since: now_secs(),
                    outbox: new.outbox,
                    closer: new.closer,
                    binary: new.binary,
                    // Held from the start: login_ok is built after the lock is let go, and
                    // whatever is routed to this session meanwhile must come after it.
                    held: RefCell::new(Some(Vec::new())),
                },
            );
            let keys = inner.known.entry(user.clone()).or_default();
            if !keys.iter().any(|k| k.fingerprint == device) {
                keys.push(Known::new(&user, device, &key));
            }
            inner.by_user.entry(user.clone()).or_default().push(id);
            inner.by_device.entry(device).or_default().push(id);
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
                inner.deliver_all(&Quiet(lines), Some(id));
                self.quiet_queued(&inner);
            }
            (
                id,
                inner.login_snapshot(user, id, device),
                inner.offline_seq,
            )
        };
        // Every registered device key goes into login_ok: O(devices) of copying, which the
        // fan-out would wait for under the lock.
        let line = snapshot.line();
        let inner = self.lock();
        // Gone already if it was kicked meanwhile.
        if let Some(entry) = inner.sessions.get(&id) {
            let queued = match line {
                Some(line) => push_or_close(id, entry, line, 1),
                None => {
                    entry.closer.close("internal error");
                    false
                }
            };
            if queued && !new.replay {
                move_held(id, entry, usize::MAX);
            }
        }
        Ok((id, offline_seq))
    }

    /// Ends session `id`'s replay: moves the live lines it held into its queue, as many as
    /// `room` (its queue's free slots). True when nothing is held any more and new lines go
    /// straight to the queue; false means call again once the queue has drained a little.
    pub fn end_replay(&self, id: SessionId, room: usize) -> bool {
        let inner = self.lock();
        // Under the hub lock nobody else queues for this session, and `room` slots were
        // free, so these cannot fail for lack of room.
        inner
            .sessions
            .get(&id)
            .is_none_or(|entry| move_held(id, entry, room))
    }

    /// Queues `frame` for every session of `user`; returns how many.
    pub fn send_to_user(&self, user: &str, frame: &ServerFrame) -> usize {
        let Some(line) = serialize(frame) else {
            return 0;
        };
        let inner = self.lock();
        inner
            .sessions_of(&[user])
            .into_iter()
            .filter(|id| inner.deliver(*id, &line))
            .count()
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
            Some(line) => self.lock().deliver(id, &line),
            None => false,
        }
    }

    /// Routes a conversation's line: to every online session of its members, and to the
    /// offline writer for each of their registered devices that is offline (`notify` names
    /// the session to tell once stored). Returns the sessions reached now.
    pub fn route_conversation(
        &self,
        conversation: &Conversation,
        line: &impl Outgoing,
        notify: Option<Notify>,
    ) -> usize {
        // Stored as JSON: any client can take that form, whatever it negotiates next time.
        self.route(conversation, line, |inner, offline| {
            inner.store_for(line.for_session(false), offline, notify);
        })
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
        if each.len() < 2 {
            return each.into_iter().next().map_or(0, |(lines, note)| {
                self.route_conversation(conversation, &lines, Some(note))
            });
        }
        // Joined before the lock is taken.
        let run = EnvelopeRun::new(each);
        self.route(conversation, &run, |inner, offline| {
            for (lines, note) in &run.each {
                inner.store_for(&lines.json, offline.clone(), Some(note.clone()));
            }
        })
    }

    /// Queues `line` for the online sessions of `conversation`'s members and hands `store`
    /// the devices that are offline, all under one lock.
    fn route(
        &self,
        conversation: &Conversation,
        line: &impl Outgoing,
        store: impl FnOnce(&mut Inner, Vec<(String, Fingerprint)>),
    ) -> usize {
        let mut inner = self.lock();
        let (reached, offline) = match conversation {
            Conversation::All => {
                let reached = inner.deliver_all(line, None);
                (reached, inner.everyone_offline(reached))
            }
            Conversation::Pair(a, b) => {
                let members = if a == b { vec![a] } else { vec![a, b] };
                let reached = inner
                    .sessions_of(&[a, b])
                    .into_iter()
                    .filter(|id| inner.deliver(*id, line))
                    .count();
                (reached, inner.offline_devices(members.into_iter()))
            }
            Conversation::Room(room) => {
                let reached = inner.deliver_room(room, line);
                let offline = match inner.rooms.get(room) {
                    // Everyone with a device key has joined the default room at login.
                    Some(_) if *room == inner.default_room => inner.everyone_offline(reached),
                    Some(r) => inner.offline_devices(r.members.iter()),
                    None => Vec::new(),
                };
                (reached, offline)
            }
        };
        store(&mut inner, offline);
        reached
    }

    /// Sets (Some) or clears (None) `user`'s away message; false if `user` is not online.
    pub fn set_away(&self, user: &str, text: Option<String>) -> bool {
        let mut inner = self.lock();
        if !inner.by_user.contains_key(user) {
            return false;
        }
        match text {
            Some(t) => inner.away.insert(user.to_string(), t),
            None => inner.away.remove(user),
        };
        true
    }

    /// `user`'s away message, if set.
    pub fn away(&self, user: &str) -> Option<String> {
        self.lock().away.get(user).cloned()
    }

    /// What `/whois` shows of `user`: sessions, away message, device keys with their state.
    /// `rooms` are those `user` is in that `asker` may see (not invite-only, or shared).
    pub fn whois(&self, user: &str, asker: &str) -> Whois {
        let inner = self.lock();
        let sessions = inner.by_user.get(user).map_or(0, Vec::len) as u32;
        let devices = inner
            .known
            .get(user)
            .into_iter()
            .flatten()
            .map(|k| WhoisDevice {
                fingerprint: k.fingerprint,
                online: inner.by_device.contains_key(&k.fingerprint),
            })
            .collect();
        let rooms = inner
            .rooms
            .iter()
            .filter(|(_, r)| r.members.contains(user))
            .filter(|(_, r)| !r.invite_only || r.members.contains(asker))
            .map(|(name, _)| name.clone())
            .collect();
        Whois {
            sessions,
            away: inner.away.get(user).cloned(),
            devices,
            rooms,
        }
    }

    /// Sets every room (at startup) and which one is the default.
    pub fn set_rooms(&self, rooms: impl IntoIterator<Item = (String, Room)>, default_room: &str) {
        let mut inner = self.lock();
        inner.rooms = rooms.into_iter().collect();
        inner.default_room = default_room.to_string();
    }

    /// The default room's name.
    pub fn default_room(&self) -> String {
        self.lock().default_room.clone()
    }

    /// A copy of a room, if it exists.
    pub fn room(&self, name: &str) -> Option<Room> {
        self.lock().rooms.get(name).cloned()
    }

    /// Number of rooms, and of rooms `user` is in.
    pub fn room_counts(&self, user: &str) -> (usize, usize) {
        let inner = self.lock();
        let mine = inner
            .rooms
            .values()
            .filter(|r| r.members.contains(user))
            .count();
        (inner.rooms.len(), mine)
    }

    /// True when `user` is a member of `room`.
    pub fn is_member(&self, room: &str, user: &str) -> bool {
        self.lock()
            .rooms
            .get(room)
            .is_some_and(|r| r.members.contains(user))
    }

    /// Records a new room (already stored).
    pub fn room_created(&self, name: &str, owner: Option<&str>, invite_only: bool) {
        self.lock()
            .rooms
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
        let is_default = inner.default_room == room;
        let Some(r) = inner.rooms.get_mut(room) else {
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
            for id in inner.sessions_of(&others) {
                inner.deliver(id, &line);
            }
        }
        if let Some(line) = serialize(&ServerFrame::Members { room: state }) {
            for id in inner.sessions_of(&[user]) {
                inner.deliver(id, &line);
            }
        }
    }

    /// `user` left (or, with `by`, was kicked from) `room` (already stored): members and
    /// the user hear of it; an empty room other than the default one is forgotten.
    pub fn room_parted(&self, room: &str, user: &str, by: Option<&str>) {
        let mut inner = self.lock();
        let is_default = inner.default_room == room;
        let Some(r) = inner.rooms.get_mut(room) else {
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
            for id in inner.sessions_of(&[user]) {
                inner.deliver(id, &line);
            }
        }
        if empty && !is_default {
            inner.rooms.remove(room);
        }
    }

    /// The topic of `room` changed (already stored); its members hear of it.
    pub fn topic_set(&self, room: &str, topic: &str, by: &str) {
        let mut inner = self.lock();
        let Some(r) = inner.rooms.get_mut(room) else {
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

    /// True when `user` has at least one registered, unrevoked device key.
    pub fn has_devices(&self, user: &str) -> bool {
        self.lock().known.get(user).is_some_and(|k| !k.is_empty())
    }

    /// Routes a line for one device key: to its sessions, or stored when it is offline.
    pub fn route_to_device(&self, device: &Fingerprint, line: &Bytes) -> Routed {
        let mut inner = self.lock();
        if let Some(ids) = inner.by_device.get(device) {
            if ids.iter().filter(|id| inner.deliver(**id, line)).count() > 0 {
                return Routed::Online;
            }
            // Its sessions are closing: store it for the next login.
        }
        // Every registered key of that fingerprint (normally one user's).
        let owners: Vec<(String, Fingerprint)> = inner
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

    /// Forgets a revoked device key and tells everyone to encrypt nothing more to it.
    pub fn forget_device(&self, user: &str, device: &Fingerprint) {
        let mut inner = self.lock();
        inner.everyone_offline = None;
        let Some(keys) = inner.known.get_mut(user) else {
            return;
        };
        let before = keys.len();
        keys.retain(|k| k.fingerprint != *device);
        if keys.len() != before {
            inner.announce_device(user, *device, DeviceEvent::Removed, None);
        }
    }

    /// Forgets every device key and room membership of a deleted account, telling everyone.
    pub fn forget_user(&self, user: &str) {
        let rooms: Vec<String> = {
            let inner = self.lock();
            inner
                .rooms
                .iter()
                .filter(|(_, r)| r.members.contains(user))
                .map(|(n, _)| n.clone())
                .collect()
        };
        for room in rooms {
            self.room_parted(&room, user, None);
        }
        let mut inner = self.lock();
        inner.everyone_offline = None;
        let keys = inner.known.remove(user).unwrap_or_default();
        for k in keys {
            inner.announce_device(user, k.fingerprint, DeviceEvent::Removed, None);
        }
    }

    /// Removes a session; tells everyone when its device key or its user goes offline.
    pub fn unregister(&self, id: SessionId, reason: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.remove(&id) else {
            return;
        };
        inner.everyone_offline = None;
        let last_of_device = match inner.by_device.get_mut(&entry.device) {
            Some(ids) => {
                ids.retain(|s| *s != id);
                ids.is_empty()
            }
            None => true,
        };
        let mut offline = None;
        if last_of_device {
            inner.by_device.remove(&entry.device);
            offline = device_line(&entry.user, entry.device, None, DeviceEvent::Offline);
        }
        let last = match inner.by_user.get_mut(&entry.user) {
            Some(ids) => {
                ids.retain(|s| *s != id);
                ids.is_empty()
            }
            None => true,
        };
        let mut leave = None;
        if last {
            inner.by_user.remove(&entry.user);
            inner.away.remove(&entry.user);
            leave = serialize(&ServerFrame::Presence {
                user: entry.user,
                event: PresenceEvent::Leave,
                reason: Some(reason.to_string()),
            });
        }
        if let Some(lines) = concat_lines([offline, leave]) {
            inner.deliver_all(&Quiet(lines), None);
            self.quiet_queued(&inner);
        }
    }

    /// Tells the flusher when quiet lines wait for it.
    fn quiet_queued(&self, inner: &Inner) {
        if !inner.quiet_waiting.borrow().is_empty() {
            self.quiet_queued.notify_one();
        }
    }

    /// Sends `frame` to every session except `except`; returns how many got it.
    pub fn broadcast(&self, frame: &ServerFrame, except: Option<SessionId>) -> usize {
        let Some(line) = serialize(frame) else {
            return 0;
        };
        self.lock().deliver_all(&line, except)
    }

    /// True if `user` has at least one session.
    pub fn is_online(&self, user: &str) -> bool {
        self.lock().by_user.contains_key(user)
    }

    /// Number of sessions `user` has.
    pub fn session_count(&self, user: &str) -> usize {
        self.lock().by_user.get(user).map_or(0, Vec::len)
    }

    /// Everyone online, sorted by name.
    pub fn online(&self) -> Vec<OnlineUser> {
        let inner = self.lock();
        let mut users: Vec<OnlineUser> = inner
            .by_user
            .iter()
            .map(|(user, ids)| OnlineUser {
                user: user.clone(),
                sessions: ids.len() as u32,
                away: inner.away.get(user).cloned(),
            })
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        users
    }

    /// Every session, oldest first.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.lock()
            .sessions
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
        (inner.sessions.len(), inner.by_user.len())
    }

    /// Asks every session of `user` using device key `device` to close; returns how many.
    pub fn close_device(&self, user: &str, device: &Fingerprint, reason: &str) -> usize {
        let inner = self.lock();
        let Some(ids) = inner.by_device.get(device) else {
            return 0;
        };
        ids.iter()
            .filter_map(|id| inner.sessions.get(id))
            .filter(|e| e.user == user)
            .inspect(|e| e.closer.close(reason))
            .count()
    }

    /// Sessions using each device key, for `chatctl key list`.
    pub fn device_sessions(&self) -> HashMap<(String, Fingerprint), usize> {
        let inner = self.lock();
        let mut out = HashMap::new();
        for e in inner.sessions.values() {
            *out.entry((e.user.clone(), e.device)).or_insert(0) += 1;
        }
        out
    }

    /// Asks every session of `user` to close; returns how many.
    pub fn close_user(&self, user: &str, reason: &str) -> usize {
        let inner = self.lock();
        let ids = inner.by_user.get(user).cloned().unwrap_or_default();
        for id in &ids {
            if let Some(e) = inner.sessions.get(id) {
                e.closer.close(reason);
            }
        }
        ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// The writer's side of an [`Outbox`], a line at a time, never waiting.
    struct Rx {
        q: Arc<Outbox>,
        pending: std::collections::VecDeque<Bytes>,
    }

    impl Rx {
        fn try_recv(&mut self) -> Result<Bytes, ()> {
            if self.pending.is_empty() {
                let mut batch = Vec::new();
                if let Some(true) = self.q.take(&mut batch).now_or_never() {
                    self.pending.extend(batch);
                }
            }
            self.pending.pop_front().ok_or(())
        }
    }

    fn channel(cap: usize) -> (Arc<Outbox>, Rx) {
        let q = Arc::new(Outbox::new(cap));
        let rx = Rx {
            q: Arc::clone(&q),
            pending: Default::default(),
        };
        (q, rx)
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    fn device_of(user: &str, n: u8) -> Fingerprint {
        Fingerprint::of(format!("{user}{n}").as_bytes())
    }

    fn new_session(user: &str, n: u8, tx: Arc<Outbox>, closer: Closer) -> NewSession {
        NewSession {
            user: user.to_string(),
            device: device_of(user, n),
            key: Arc::from(format!("key-of-{user}{n}")),
            peer: peer(),
            outbox: tx,
            closer,
            replay: false,
            binary: false,
        }
    }

    /// Registers a session with device `n` and swallows its own `login_ok`.
    fn join_dev(hub: &Hub, user: &str, n: u8, cap: usize) -> (SessionId, Rx, Closer) {
        let (tx, mut rx) = channel(cap);
        let closer = Closer::default();
        let (id, _) = hub
            .register(new_session(user, n, tx, closer.clone()))
            .unwrap();
        assert!(text(&rx.try_recv().unwrap()).contains(r#""type":"login_ok""#));
        (id, rx, closer)
    }

    fn join(hub: &Hub, user: &str, cap: usize) -> (SessionId, Rx, Closer) {
        join_dev(hub, user, 0, cap)
    }

    /// The lines queued for a session, as its client reads them.
    fn drain(rx: &mut Rx) -> Vec<String> {
        drain_entries(rx)
            .iter()
            .flat_map(|e| e.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    /// The queue entries themselves (one wake-up and write each).
    fn drain_entries(rx: &mut Rx) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(text(&b));
        }
        out
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn presence_only_on_first_and_last_session() {
        let hub = Hub::new(4, 8);
        let (_a, mut ra, _) = join(&hub, "alice", 8);
        let (b1, _rb1, _) = join_dev(&hub, "bob", 1, 8);
        let entries = drain_entries(&mut ra);
        assert_eq!(
            entries.len(),
            1,
            "join and device share one entry: {entries:?}"
        );
        let seen: Vec<&str> = entries[0].lines().collect();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].contains(r#""event":"join""#));
        assert!(seen[1].contains(r#""type":"device""#) && seen[1].contains("key-of-bob1"));
        let (b2, _rb2, _) = join_dev(&hub, "bob", 2, 8);
        let seen = drain(&mut ra);
        assert_eq!(seen.len(), 1, "second device is not a new join: {seen:?}");
        assert!(seen[0].contains(r#""event":"online""#) && seen[0].contains("key-of-bob2"));
        hub.unregister(b1, "quit");
        let seen = drain(&mut ra);
        assert_eq!(seen.len(), 1, "bob is still online: {seen:?}");
        assert!(seen[0].contains(r#""event":"offline""#) && !seen[0].contains("key-of"));
        hub.unregister(b2, "disconnected");
        let entries = drain_entries(&mut ra);
        assert_eq!(
            entries.len(),
            1,
            "offline and leave share one entry: {entries:?}"
        );
        let seen: Vec<&str> = entries[0].lines().collect();
        assert!(seen[0].contains(r#""event":"offline""#));
        assert!(seen[1].contains(r#""event":"leave""#) && seen[1].contains("disconnected"));
        assert_eq!(hub.online().len(), 1);
    }

    /// alice online with JSON envelopes, bob with binary ones, carol's device offline;
    /// returns the offline jobs and the two queues.
    fn json_binary_and_offline(hub: &Hub) -> (mpsc::UnboundedReceiver<OfflineJob>, Rx, Rx) {
        let jobs = with_writer(hub);
        hub.set_known([(
            "carol".to_string(),
            device_of("carol", 1),
            "key-of-carol1".to_string(),
        )]);
        let (_a, ra, _) = join(hub, "alice", 8);
        let (tx, rb) = channel(8);
        let bob = NewSession {
            binary: true,
            ..new_session("bob", 1, tx, Closer::default())
        };
        hub.register(bob).unwrap();
        (jobs, ra, rb)
    }

    #[test]
    fn each_session_gets_the_envelope_form_it_negotiated_and_json_is_stored() {
        let hub = Hub::new(4, 8);
        let (mut jobs, mut ra, mut rb) = json_binary_and_offline(&hub);
        drain(&mut ra);
        drain(&mut rb);
        let lines = EnvelopeLines {
            json: Bytes::from_static(b"{\"type\":\"envelope\"}\n"),
            binary: Bytes::from_static(b"\x00E\x00\x00\x00\x00"),
        };
        let all = Conversation::All;
        assert_eq!(hub.route_conversation(&all, &lines, None), 2);
        assert_eq!(ra.try_recv().unwrap(), lines.json);
        assert_eq!(rb.try_recv().unwrap(), lines.binary);
        // carol is offline: what is stored is the JSON form, which every client reads.
        assert_eq!(jobs.try_recv().unwrap().line, lines.json);
    }

    /// Envelope `n` in both wire forms, and a sender's note for it.
    fn envelope(n: u8) -> (EnvelopeLines, Notify) {
        let lines = EnvelopeLines {
            json: Bytes::from(format!("{{\"envelope\":{n}}}\n")),
            binary: Bytes::from(vec![0, b'E', 0, 0, 0, 1, n]),
        };
        let note = Notify {
            session: 99,
            message: format!("m{n}"),
            conversation: "all".into(),
        };
        (lines, note)
    }

    #[test]
    fn a_run_is_one_entry_per_session_held_one_by_one_and_stored_one_by_one() {
        let hub = Hub::new(4, 8);
        let (mut jobs, mut ra, mut rb) = json_binary_and_offline(&hub);
        // dave is replaying what was stored for him: live lines wait, one frame per slot.
        let (tx, mut rd) = channel(8);
        let mut dave = new_session("dave", 1, tx, Closer::default());
        dave.replay = true;
        let (d, _) = hub.register(dave).unwrap();
        drain(&mut ra);
        drain(&mut rb);
        drain(&mut rd);

        let run: Vec<_> = (1..=3).map(envelope).collect();
        assert_eq!(hub.route_batch(&Conversation::All, run.clone()), 3);
        // One queue entry holding the three, in each session's form.
        assert_eq!(
            drain_entries(&mut ra),
            ["{\"envelope\":1}\n{\"envelope\":2}\n{\"envelope\":3}\n"]
        );
        assert_eq!(
            rb.try_recv().unwrap(),
            Bytes::from(vec![
                0, b'E', 0, 0, 0, 1, 1, 0, b'E', 0, 0, 0, 1, 2, 0, b'E', 0, 0, 0, 1, 3
            ])
        );
        assert!(rb.try_recv().is_err());
        // carol is offline: each envelope is stored on its own, with its own note, in order.
        for (lines, note) in &run {
            let job = jobs.try_recv().unwrap();
            assert_eq!((&job.line, job.notify.as_ref()), (&lines.json, Some(note)));
        }
        assert!(jobs.try_recv().is_err());
        // dave's held frames go to his queue one by one once his replay ends.
        assert!(rd.try_recv().is_err(), "held during replay");
        assert!(hub.end_replay(d, 8));
        assert_eq!(
            drain_entries(&mut rd),
            [
                "{\"envelope\":1}\n",
                "{\"envelope\":2}\n",
                "{\"envelope\":3}\n"
            ]
        );
        // A run of one is a plain envelope.
        assert_eq!(hub.route_batch(&Conversation::All, vec![envelope(4)]), 3);
        assert_eq!(drain_entries(&mut ra), ["{\"envelope\":4}\n"]);
    }

    #[test]
    fn a_run_counts_as_its_frames_against_the_queue_and_the_held_limit() {
        // Queues of 4 frames: a run of 3 fits once, not twice.
        let hub = Hub::new(4, 4);
        let (_a, _ra, alice) = join(&hub, "alice", 4);
        let (tx, _rb) = channel(8);
        let bob_closer = Closer::default();
        let mut bob = new_session("bob", 1, tx, bob_closer.clone());
        bob.replay = true;
        hub.register(bob).unwrap();
        let run: Vec<_> = (1..=3).map(envelope).collect();
        assert_eq!(hub.route_batch(&Conversation::All, run.clone()), 2);
        assert!(!alice.is_closed() && !bob_closer.is_closed());
        assert_eq!(hub.route_batch(&Conversation::All, run), 0);
        assert_eq!(
            alice.reason().as_deref(),
            Some("too slow: outbound queue full")
        );
        assert_eq!(
            bob_closer.reason().as_deref(),
            Some("too slow: outbound queue full")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn login_notices_wait_for_a_shared_wake_up_or_the_flush() {
        use tokio::time::{Duration, Instant};
        const DELAY: Duration = Duration::from_millis(25);
        let hub = Arc::new(Hub::new(4, 8));
        let stop = CancellationToken::new();
        let flusher = tokio::spawn({
            let (hub, stop) = (Arc::clone(&hub), stop.clone());
            async move { hub.flush_quiet(DELAY, stop).await }
        });
        tokio::task::yield_now().await;
        // alice's writer: each take, with when it happened.
        let (q, _) = channel(64);
        hub.register(new_session("alice", 0, Arc::clone(&q), Closer::default()))
            .unwrap();
        let (took, mut taken) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while q.take(&mut batch).await {
                let lines: Vec<String> = batch
                    .drain(..)
                    .flat_map(|b| text(&b).lines().map(str::to_string).collect::<Vec<_>>())
                    .collect();
                let _ = took.send((Instant::now(), lines));
            }
        });
        assert!(taken.recv().await.unwrap().1[0].contains("login_ok"));
        let kinds = |lines: &[String]| -> Vec<String> {
            lines
                .iter()
                .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
                .collect()
        };

        // bob's login notices wait for the flush.
        let t0 = Instant::now();
        hub.register(new_session("bob", 1, channel(64).0, Closer::default()))
            .unwrap();
        let (at, lines) = taken.recv().await.unwrap();
        assert_eq!(at - t0, DELAY);
        assert_eq!(
            kinds(&lines),
            [
                r#"{"type":"presence","user":"bob""#,
                r#"{"type":"device","user":"bob""#
            ]
        );
        // carol's go out at once with the message routed right after them.
        let t0 = Instant::now();
        hub.register(new_session("carol", 1, channel(64).0, Closer::default()))
            .unwrap();
        hub.route_conversation(
            &Conversation::All,
            &Bytes::from_static(b"{\"m\":1}\n"),
            None,
        );
        let (at, lines) = taken.recv().await.unwrap();
        assert_eq!(at, t0);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[2], r#"{"m":1}"#);
        // Without a flusher (stopped), they are queued like any other line.
        stop.cancel();
        flusher.await.unwrap();
        let t0 = Instant::now();
        hub.register(new_session("dave", 1, channel(64).0, Closer::default()))
            .unwrap();
        let (at, lines) = taken.recv().await.unwrap();
        assert_eq!((at, lines.len()), (t0, 2));
    }

    #[test]
    fn full_queue_closes_only_the_slow_session() {
        let hub = Hub::new(4, 8);
        let (_s, mut rs, slow) = join(&hub, "slow", 1);
        let (_f, mut rf, fast) = join(&hub, "fast", 64);
        // fast saw nothing yet; slow's queue is now full with fast's join and device (one entry).
        let msg = ServerFrame::Notice { text: "x".into() };
        // The slow client frees its slot after each broadcast; once closed it must get
        // nothing more, or it would see a gap before its bye.
        let mut fed_after_close = 0;
        for _ in 0..10 {
            let was_closed = slow.is_closed();
            hub.broadcast(&msg, None);
            while rs.try_recv().is_ok() {
                if was_closed {
                    fed_after_close += 1;
                }
            }
        }
        assert_eq!(
            slow.reason().as_deref(),
            Some("too slow: outbound queue full")
        );
        assert_eq!(fed_after_close, 0, "a closed session was still fed");
        assert!(fast.reason().is_none());
        let mut n = 0;
        while rf.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn session_cap_and_targeted_send() {
        let hub = Hub::new(2, 8);
        let (_a1, mut r1, _) = join(&hub, "alice", 8);
        let (_a2, mut r2, _) = join(&hub, "alice", 8);
        let _ = drain(&mut r1);
        let (tx, _rx) = channel(1);
        assert_eq!(
            hub.register(new_session("alice", 3, tx, Closer::default()))
                .err(),
            Some(HubError::TooManySessions(2))
        );
        let line = serialize(&ServerFrame::Notice { text: "hi".into() }).unwrap();
        let n = hub.route_conversation(&Conversation::pair("alice", "alice"), &line, None);
        assert_eq!(n, 2);
        assert!(r1.try_recv().is_ok() && r2.try_recv().is_ok());
        // Both alice sessions use device 0: the device is routed to both, once each.
        let line = Bytes::from_static(b"x\n");
        assert_eq!(
            hub.route_to_device(&device_of("alice", 0), &line),
            Routed::Online
        );
        assert!(r1.try_recv().is_ok() && r2.try_recv().is_ok());
        assert_eq!(
            hub.route_to_device(&device_of("bob", 0), &line),
            Routed::Unknown
        );
        assert_eq!(
            hub.close_device("alice", &device_of("alice", 9), "revoked"),
            0
        );
        assert_eq!(hub.close_user("alice", "kicked"), 2);
        assert_eq!(
            hub.session_count("alice"),
            2,
            "closing is the session's job"
        );
    }

    /// A hub with an offline writer channel; returns the job receiver.
    fn with_writer(hub: &Hub) -> mpsc::UnboundedReceiver<OfflineJob> {
        let (tx, rx) = mpsc::unbounded_channel();
        hub.attach_offline(tx);
        rx
    }

    #[test]
    fn offline_members_get_jobs_in_order_and_login_lists_every_device() {
        let hub = Hub::new(4, 8);
        let mut jobs = with_writer(&hub);
        hub.set_known([
            (
                "bob".to_string(),
                device_of("bob", 1),
                "key-of-bob1".to_string(),
            ),
            (
                "carol".to_string(),
                device_of("carol", 1),
                "key-of-carol1".to_string(),
            ),
        ]);
        let (a, mut ra, _) = join(&hub, "alice", 8);
        let line = Bytes::from_static(b"to-all\n");
        // alice is online; bob and carol are registered but offline.
        let note = Notify {
            session: a,
            message: "m1".into(),
            conversation: "all".into(),
        };
        assert_eq!(
            hub.route_conversation(&Conversation::All, &line, Some(note.clone())),
            1
        );
        let job = jobs.try_recv().unwrap();
        assert_eq!(job.seq, 1);
        assert_eq!(job.notify, Some(note));
        let users: Vec<&str> = job.targets.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(users, ["bob", "carol"]);
        let pair = Conversation::pair("alice", "bob");
        hub.route_conversation(&pair, &Bytes::from_static(b"whisper\n"), None);
        let job = jobs.try_recv().unwrap();
        assert_eq!((job.seq, job.targets.len()), (2, 1));
        assert_eq!(job.targets[0], ("bob".to_string(), device_of("bob", 1)));
        // A chain for an offline device is stored too; an unknown device is not.
        assert_eq!(
            hub.route_to_device(&device_of("carol", 1), &line),
            Routed::Stored
        );
        assert_eq!(jobs.try_recv().unwrap().seq, 3);
        assert_eq!(
            hub.route_to_device(&device_of("dave", 1), &line),
            Routed::Unknown
        );
        assert!(jobs.try_recv().is_err());
        assert_eq!(hub.offline_seq(), 3);
        // Nobody offline in the conversation: no job.
        hub.route_conversation(&Conversation::pair("alice", "alice"), &line, None);
        assert!(jobs.try_recv().is_err());
        let _ = drain(&mut ra);
        // bob logs in: login_ok lists all three devices with their state; the offline event
        // and the removal reach alice.
        let (tx, mut rb) = channel(8);
        let mut new = new_session("bob", 1, tx, Closer::default());
        new.replay = true;
        let (b, seq) = hub.register(new).unwrap();
        assert_eq!(
            seq, 3,
            "every job routed before bob's login is numbered <= seq"
        );
        let ok = text(&rb.try_recv().unwrap());
        assert!(
            ok.contains(r#""user":"carol""#) && ok.contains(r#""online":false"#),
            "{ok}"
        );
        assert!(
            ok.contains("key-of-alice0") && ok.contains(r#""online":true"#),
            "{ok}"
        );
        // While bob replays, live lines wait in the hub, in order, then go to his queue.
        hub.route_conversation(&pair, &Bytes::from_static(b"live1\n"), None);
        hub.route_conversation(&pair, &Bytes::from_static(b"live2\n"), None);
        assert!(jobs.try_recv().is_err(), "bob is online: nothing stored");
        assert!(rb.try_recv().is_err(), "held during replay");
        assert!(
            !hub.end_replay(b, 1),
            "one slot: one line moves, one stays held"
        );
        assert_eq!(text(&rb.try_recv().unwrap()), "live1\n");
        assert!(hub.end_replay(b, 8));
        assert_eq!(text(&rb.try_recv().unwrap()), "live2\n");
        hub.route_conversation(&pair, &Bytes::from_static(b"live3\n"), None);
        assert_eq!(text(&rb.try_recv().unwrap()), "live3\n");
        hub.forget_device("carol", &device_of("carol", 1));
        assert!(
            drain(&mut rb)
                .iter()
                .any(|l| l.contains(r#""event":"removed""#))
        );
        hub.route_conversation(&Conversation::All, &line, None);
        assert!(
            jobs.try_recv().is_err(),
            "a removed device gets nothing stored"
        );
    }

    #[test]
    fn a_device_whose_sessions_are_closing_gets_lines_stored() {
        let hub = Hub::new(4, 8);
        let mut jobs = with_writer(&hub);
        let (_a, _ra, _) = join(&hub, "alice", 8);
        let (_b, _rb, bob) = join(&hub, "bob", 8);
        bob.close("too slow: outbound queue full");
        let pair = Conversation::pair("alice", "bob");
        assert_eq!(
            hub.route_conversation(&pair, &Bytes::from_static(b"x\n"), None),
            1
        );
        let job = jobs.try_recv().unwrap();
        assert_eq!(job.targets, [("bob".to_string(), device_of("bob", 0))]);
        assert_eq!(
            hub.route_to_device(&device_of("bob", 0), &Bytes::from_static(b"c\n")),
            Routed::Stored
        );
        // The same for a message to everyone, whatever the last scan said.
        jobs.try_recv().unwrap();
        hub.route_conversation(&Conversation::All, &Bytes::from_static(b"a\n"), None);
        let job = jobs.try_recv().unwrap();
        assert_eq!(job.targets, [("bob".to_string(), device_of("bob", 0))]);
    }

    #[test]
    fn the_everyone_scan_is_redone_after_every_change() {
        let hub = Hub::new(4, 8);
        let mut jobs = with_writer(&hub);
        let all = |hub: &Hub| {
            hub.route_conversation(&Conversation::All, &Bytes::from_static(b"x\n"), None)
        };
        let (_a, _ra, _) = join(&hub, "alice", 64);
        let (b, _rb, _) = join(&hub, "bob", 64);
        all(&hub);
        assert!(jobs.try_recv().is_err(), "everyone online");
        hub.unregister(b, "quit");
        all(&hub);
        assert_eq!(jobs.try_recv().unwrap().targets[0].0, "bob");
        let (_b, _rb, _) = join(&hub, "bob", 64);
        all(&hub);
        assert!(jobs.try_recv().is_err(), "bob is back");
        hub.set_known([("carol".to_string(), device_of("carol", 0), "k".to_string())]);
        all(&hub);
        assert_eq!(jobs.try_recv().unwrap().targets[0].0, "carol");
        hub.forget_user("carol");
        all(&hub);
        assert!(jobs.try_recv().is_err(), "carol is gone");
    }

    #[test]
    fn login_ok_is_byte_for_byte_the_protocol_frame() {
        let hub = Hub::new(4, 64);
        hub.set_known([
            (
                "b\"ob".to_string(),
                device_of("b\"ob", 0),
                "k\\1/é".to_string(),
            ),
            ("alice".to_string(), device_of("alice", 0), "k2".to_string()),
        ]);
        hub.room_created("lobby", Some("alice"), false);
        hub.room_joined("lobby", "alice");
        let _bob = join(&hub, "b\"ob", 4);
        let (tx, mut rx) = channel(4);
        hub.register(new_session("alice", 1, tx, Closer::default()))
            .unwrap();
        let line = text(&rx.try_recv().unwrap());
        let frame: ServerFrame = frame::decode(line.trim_end()).unwrap();
        let ServerFrame::LoginOk {
            online,
            devices,
            rooms,
            ..
        } = &frame
        else {
            panic!("not login_ok: {line}");
        };
        assert_eq!(online, &["alice", "b\"ob"]);
        assert_eq!(rooms.len(), 1, "{line}");
        let listed: Vec<_> = devices
            .iter()
            .map(|d| (d.user.as_str(), d.key.as_str(), d.online))
            .collect();
        assert_eq!(
            listed,
            [
                ("alice", "k2", false),
                ("alice", "key-of-alice1", true),
                ("b\"ob", "k\\1/é", true),
            ]
        );
        assert_eq!(text(&frame::encode(&frame).unwrap()), line);
    }

    #[test]
    fn login_ok_comes_first_while_another_thread_broadcasts() {
        // login_ok is serialized after the hub lock is let go; what is routed meanwhile
        // must still reach the new session after it, in order, and none of it lost.
        const LOGINS: u64 = 50;
        const PER_LOGIN: u64 = 200;
        let hub = Arc::new(Hub::new(4, 1 << 16));
        hub.set_known((0..200u8).map(|n| {
            let user = format!("user{n}");
            let key = format!("key-of-{user}0");
            (user.clone(), device_of(&user, 0), key)
        }));
        // Logins and broadcasts take turns by the hundred, so they overlap throughout.
        let (sent, logged_in) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let broadcaster = {
            let (hub, sent, logged_in) =
                (Arc::clone(&hub), Arc::clone(&sent), Arc::clone(&logged_in));
            std::thread::spawn(move || {
                for n in 1..=(LOGINS + 1) * PER_LOGIN {
                    while n > (logged_in.load(Ordering::Acquire) + 1) * PER_LOGIN {
                        std::thread::yield_now();
                    }
                    let line = Bytes::from(format!("{n}\n"));
                    hub.route_conversation(&Conversation::All, &line, None);
                    sent.store(n, Ordering::Release);
                }
            })
        };
        let mut sessions = Vec::new();
        for i in 0..LOGINS {
            while sent.load(Ordering::Acquire) < i * PER_LOGIN + PER_LOGIN / 2 {
                // A broadcaster that panicked fails the test instead of hanging it.
                assert!(!broadcaster.is_finished(), "the broadcaster stopped early");
                std::thread::yield_now();
            }
            let (tx, rx) = channel(1 << 15);
            let closer = Closer::default();
            hub.register(new_session(&format!("new{i}"), 0, tx, closer.clone()))
                .unwrap();
            logged_in.store(i + 1, Ordering::Release);
            sessions.push((rx, closer));
        }
        broadcaster.join().unwrap();
        for (mut rx, closer) in sessions {
            let lines = drain(&mut rx);
            assert!(lines[0].contains(r#""type":"login_ok""#), "{}", lines[0]);
            let numbers: Vec<u64> = lines[1..].iter().filter_map(|l| l.parse().ok()).collect();
            assert_eq!(numbers.last(), Some(&((LOGINS + 1) * PER_LOGIN)));
            assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
            assert_eq!(closer.reason(), None);
        }
    }

    #[test]
    fn a_replaying_session_that_holds_too_much_is_closed() {
        let hub = Hub::new(4, 2);
        let (tx, _rb) = channel(8);
        let closer = Closer::default();
        let mut new = new_session("bob", 1, tx, closer.clone());
        new.replay = true;
        let (_b, _) = hub.register(new).unwrap();
        let pair = Conversation::pair("alice", "bob");
        for _ in 0..3 {
            hub.route_conversation(&pair, &Bytes::from_static(b"x\n"), None);
        }
        assert_eq!(
            closer.reason().as_deref(),
            Some("too slow: outbound queue full")
        );
    }
}
