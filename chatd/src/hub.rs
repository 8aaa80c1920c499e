//! Who is online and how to reach them.
//!
//! Each session registers an outbound queue of pre-serialized lines. A frame for many
//! receivers is serialized once and the same `Bytes` is queued for each. Queues are
//! bounded and never awaited: a receiver whose queue is full is closed as too slow, so
//! one stalled client cannot slow anyone else.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::control::SessionInfo;
use chatd_proto::frame::{self, DeviceEvent, DeviceInfo, OnlineUser, PresenceEvent, ServerFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
pub struct Closer {
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Closer {
    /// Asks the session to end; the first reason given wins.
    pub fn close(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        drop(r);
        self.token.cancel();
    }

    /// Resolves once [`Closer::close`] was called.
    pub async fn closed(&self) {
        self.token.cancelled().await
    }

    /// True once [`Closer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The reason given to [`Closer::close`], if any.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the hub keeps per session.
struct Entry {
    user: String,
    device: Fingerprint,
    /// Base64 SPKI DER, shared with every frame that announces it.
    key: Arc<str>,
    peer: SocketAddr,
    since: u64,
    tx: mpsc::Sender<Bytes>,
    closer: Closer,
}

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<SessionId, Entry>,
    by_user: HashMap<String, Vec<SessionId>>,
    by_device: HashMap<Fingerprint, Vec<SessionId>>,
}

/// The routing table; shared by every session and the control socket.
pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    max_sessions_per_user: usize,
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
    pub tx: mpsc::Sender<Bytes>,
    /// How to end it.
    pub closer: Closer,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Inner {
    /// Queues `line` for session `id`; a full queue closes that session.
    fn deliver(&self, id: SessionId, line: &Bytes) -> bool {
        let Some(entry) = self.sessions.get(&id) else {
            return false;
        };
        if entry.closer.is_closed() {
            // Closing (too slow, kicked, ...): nothing more, so a dropped client sees no gap
            // before its `bye`, and a slow one is reported once, not once per broadcast.
            return false;
        }
        match entry.tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(session = id, user = %entry.user, "outbound queue full; disconnecting slow client");
                entry.closer.close("too slow: outbound queue full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn deliver_all(&self, line: &Bytes, except: Option<SessionId>) -> usize {
        self.sessions
            .keys()
            .filter(|id| Some(**id) != except)
            .filter(|id| self.deliver(**id, line))
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

    /// One entry per device key online (a key open in two sessions counts once).
    fn devices(&self) -> Vec<DeviceInfo> {
        let mut out: Vec<DeviceInfo> = self
            .by_device
            .values()
            .filter_map(|ids| ids.first())
            .filter_map(|id| self.sessions.get(id))
            .map(|e| DeviceInfo {
                user: e.user.clone(),
                fingerprint: e.device,
                key: e.key.to_string(),
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.user, a.fingerprint.as_bytes()).cmp(&(&b.user, b.fingerprint.as_bytes()))
        });
        out
    }
}

fn serialize(frame: &ServerFrame) -> Option<Bytes> {
    match frame::encode(frame) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize frame");
            None
        }
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(max_sessions_per_user: usize) -> Self {
        Hub {
            inner: Mutex::new(Inner::default()),
            next_id: AtomicU64::new(1),
            max_sessions_per_user,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing in Inner can be left half-updated by a panic that matters more than availability.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a logged-in session and queues its `login_ok` (so nothing routed to it can
    /// arrive first); tells everyone else about a new user and a new device key.
    pub fn register(&self, new: NewSession) -> Result<SessionId, HubError> {
        let mut inner = self.lock();
        let count = inner.by_user.get(&new.user).map_or(0, Vec::len);
        if count >= self.max_sessions_per_user {
            return Err(HubError::TooManySessions(self.max_sessions_per_user));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let first_of_device = !inner.by_device.contains_key(&new.device);
        let (user, device, key) = (new.user.clone(), new.device, Arc::clone(&new.key));
        inner.sessions.insert(
            id,
            Entry {
                user: new.user,
                device: new.device,
                key: new.key,
                peer: new.peer,
                since: now_secs(),
                tx: new.tx,
                closer: new.closer,
            },
        );
        inner.by_user.entry(user.clone()).or_default().push(id);
        inner.by_device.entry(device).or_default().push(id);
        let mut online: Vec<String> = inner.by_user.keys().cloned().collect();
        online.sort();
        let ok = ServerFrame::LoginOk {
            user: user.clone(),
            session: id,
            device,
            online,
            devices: inner.devices(),
        };
        if let Some(line) = serialize(&ok) {
            inner.deliver(id, &line);
        }
        if count == 0 {
            let join = ServerFrame::Presence {
                user: user.clone(),
                event: PresenceEvent::Join,
                reason: None,
            };
            if let Some(line) = serialize(&join) {
                inner.deliver_all(&line, Some(id));
            }
        }
        if first_of_device {
            let online = ServerFrame::Device {
                user,
                fingerprint: device,
                key: Some(key.to_string()),
                event: DeviceEvent::Online,
            };
            if let Some(line) = serialize(&online) {
                inner.deliver_all(&line, Some(id));
            }
        }
        Ok(id)
    }

    /// Removes a session; tells everyone when its device key or its user goes offline.
    pub fn unregister(&self, id: SessionId, reason: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.remove(&id) else {
            return;
        };
        let last_of_device = match inner.by_device.get_mut(&entry.device) {
            Some(ids) => {
                ids.retain(|s| *s != id);
                ids.is_empty()
            }
            None => true,
        };
        if last_of_device {
            inner.by_device.remove(&entry.device);
            let offline = ServerFrame::Device {
                user: entry.user.clone(),
                fingerprint: entry.device,
                key: None,
                event: DeviceEvent::Offline,
            };
            if let Some(line) = serialize(&offline) {
                inner.deliver_all(&line, None);
            }
        }
        let last = match inner.by_user.get_mut(&entry.user) {
            Some(ids) => {
                ids.retain(|s| *s != id);
                ids.is_empty()
            }
            None => true,
        };
        if last {
            inner.by_user.remove(&entry.user);
            let leave = ServerFrame::Presence {
                user: entry.user,
                event: PresenceEvent::Leave,
                reason: Some(reason.to_string()),
            };
            if let Some(line) = serialize(&leave) {
                inner.deliver_all(&line, None);
            }
        }
    }

    /// Queues an already serialized line for every session; returns how many got it.
    pub fn broadcast_line(&self, line: &Bytes) -> usize {
        self.lock().deliver_all(line, None)
    }

    /// Queues an already serialized line for every session of each of `users`.
    pub fn send_line_to_users(&self, users: &[&str], line: &Bytes) -> usize {
        let inner = self.lock();
        inner
            .sessions_of(users)
            .into_iter()
            .filter(|id| inner.deliver(*id, line))
            .count()
    }

    /// Queues a line for every session logged in with device key `device`.
    pub fn send_line_to_device(&self, device: &Fingerprint, line: &Bytes) -> usize {
        let inner = self.lock();
        let Some(ids) = inner.by_device.get(device) else {
            return 0;
        };
        ids.iter().filter(|id| inner.deliver(**id, line)).count()
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

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    fn device_of(user: &str, n: u8) -> Fingerprint {
        Fingerprint::of(format!("{user}{n}").as_bytes())
    }

    fn new_session(user: &str, n: u8, tx: mpsc::Sender<Bytes>, closer: Closer) -> NewSession {
        NewSession {
            user: user.to_string(),
            device: device_of(user, n),
            key: Arc::from(format!("key-of-{user}{n}")),
            peer: peer(),
            tx,
            closer,
        }
    }

    /// Registers a session with device `n` and swallows its own `login_ok`.
    fn join_dev(
        hub: &Hub,
        user: &str,
        n: u8,
        cap: usize,
    ) -> (SessionId, mpsc::Receiver<Bytes>, Closer) {
        let (tx, mut rx) = mpsc::channel(cap);
        let closer = Closer::default();
        let id = hub
            .register(new_session(user, n, tx, closer.clone()))
            .unwrap();
        assert!(text(&rx.try_recv().unwrap()).contains(r#""type":"login_ok""#));
        (id, rx, closer)
    }

    fn join(hub: &Hub, user: &str, cap: usize) -> (SessionId, mpsc::Receiver<Bytes>, Closer) {
        join_dev(hub, user, 0, cap)
    }

    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<String> {
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
        let hub = Hub::new(4);
        let (_a, mut ra, _) = join(&hub, "alice", 8);
        let (b1, _rb1, _) = join_dev(&hub, "bob", 1, 8);
        let seen = drain(&mut ra);
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
        let seen = drain(&mut ra);
        assert!(seen[0].contains(r#""event":"offline""#));
        assert!(seen[1].contains(r#""event":"leave""#) && seen[1].contains("disconnected"));
        assert_eq!(hub.online().len(), 1);
    }

    #[test]
    fn full_queue_closes_only_the_slow_session() {
        let hub = Hub::new(4);
        let (_s, mut rs, slow) = join(&hub, "slow", 2);
        let (_f, mut rf, fast) = join(&hub, "fast", 64);
        // fast saw nothing yet; slow's queue is now full with fast's join and device.
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
        let hub = Hub::new(2);
        let (_a1, mut r1, _) = join(&hub, "alice", 8);
        let (_a2, mut r2, _) = join(&hub, "alice", 8);
        let _ = drain(&mut r1);
        let (tx, _rx) = mpsc::channel(1);
        assert_eq!(
            hub.register(new_session("alice", 3, tx, Closer::default()))
                .err(),
            Some(HubError::TooManySessions(2))
        );
        let line = serialize(&ServerFrame::Notice { text: "hi".into() }).unwrap();
        let n = hub.send_line_to_users(&["alice", "alice", "nobody"], &line);
        assert_eq!(n, 2);
        assert!(r1.try_recv().is_ok() && r2.try_recv().is_ok());
        // Both alice sessions use device 0: the device is routed to both, once each.
        let line = Bytes::from_static(b"x\n");
        assert_eq!(hub.send_line_to_device(&device_of("alice", 0), &line), 2);
        assert_eq!(hub.send_line_to_device(&device_of("bob", 0), &line), 0);
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
}
