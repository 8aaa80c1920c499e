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
use chatd_proto::control::SessionInfo;
use chatd_proto::frame::{self, OnlineUser, PresenceEvent, ServerFrame};
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
    peer: SocketAddr,
    since: u64,
    tx: mpsc::Sender<Bytes>,
    closer: Closer,
}

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<SessionId, Entry>,
    by_user: HashMap<String, Vec<SessionId>>,
}

/// The routing table; shared by every session and the control socket.
pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    max_sessions_per_user: usize,
}

/// A new session's place in the hub.
pub struct Registration {
    /// Its id.
    pub id: SessionId,
    /// Users online now, sorted, this one included.
    pub online: Vec<String>,
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

    /// Adds a logged-in session; tells everyone else if this is the user's first.
    pub fn register(
        &self,
        user: &str,
        peer: SocketAddr,
        tx: mpsc::Sender<Bytes>,
        closer: Closer,
    ) -> Result<Registration, HubError> {
        let mut inner = self.lock();
        let count = inner.by_user.get(user).map_or(0, Vec::len);
        if count >= self.max_sessions_per_user {
            return Err(HubError::TooManySessions(self.max_sessions_per_user));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        inner.sessions.insert(
            id,
            Entry {
                user: user.to_string(),
                peer,
                since: now_secs(),
                tx,
                closer,
            },
        );
        inner.by_user.entry(user.to_string()).or_default().push(id);
        if count == 0 {
            let join = ServerFrame::Presence {
                user: user.to_string(),
                event: PresenceEvent::Join,
                reason: None,
            };
            if let Some(line) = serialize(&join) {
                inner.deliver_all(&line, Some(id));
            }
        }
        let mut online: Vec<String> = inner.by_user.keys().cloned().collect();
        online.sort();
        Ok(Registration { id, online })
    }

    /// Removes a session; tells everyone if it was the user's last.
    pub fn unregister(&self, id: SessionId, reason: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.remove(&id) else {
            return;
        };
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

    /// Sends `frame` to every session except `except`; returns how many got it.
    pub fn broadcast(&self, frame: &ServerFrame, except: Option<SessionId>) -> usize {
        let Some(line) = serialize(frame) else {
            return 0;
        };
        self.lock().deliver_all(&line, except)
    }

    /// Sends `frame` to every session of each user in `users` (each session once).
    pub fn send_to_users(&self, users: &[&str], frame: &ServerFrame) -> usize {
        let Some(line) = serialize(frame) else {
            return 0;
        };
        let inner = self.lock();
        let mut ids: Vec<SessionId> = users
            .iter()
            .filter_map(|u| inner.by_user.get(*u))
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter(|id| inner.deliver(*id, &line))
            .count()
    }

    /// Sends `frame` to one session.
    pub fn send_to_session(&self, id: SessionId, frame: &ServerFrame) -> bool {
        let Some(line) = serialize(frame) else {
            return false;
        };
        self.lock().deliver(id, &line)
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
                since: e.since,
            })
            .collect()
    }

    /// (sessions, distinct users) online.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.sessions.len(), inner.by_user.len())
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

    fn join(hub: &Hub, user: &str, cap: usize) -> (SessionId, mpsc::Receiver<Bytes>, Closer) {
        let (tx, rx) = mpsc::channel(cap);
        let closer = Closer::default();
        let reg = hub.register(user, peer(), tx, closer.clone()).unwrap();
        (reg.id, rx, closer)
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn presence_only_on_first_and_last_session() {
        let hub = Hub::new(4);
        let (_a, mut ra, _) = join(&hub, "alice", 8);
        let (b1, _rb1, _) = join(&hub, "bob", 8);
        assert!(text(&ra.try_recv().unwrap()).contains(r#""event":"join""#));
        let (b2, _rb2, _) = join(&hub, "bob", 8);
        assert!(ra.try_recv().is_err(), "second device is not a new join");
        hub.unregister(b1, "quit");
        assert!(ra.try_recv().is_err(), "bob is still online");
        hub.unregister(b2, "disconnected");
        let leave = text(&ra.try_recv().unwrap());
        assert!(leave.contains(r#""event":"leave""#) && leave.contains("disconnected"));
        assert_eq!(hub.online().len(), 1);
    }

    #[test]
    fn full_queue_closes_only_the_slow_session() {
        let hub = Hub::new(4);
        let (_s, mut rs, slow) = join(&hub, "slow", 1);
        let (_f, mut rf, fast) = join(&hub, "fast", 64);
        let _ = rf.try_recv(); // fast saw nothing yet; slow's queue took fast's join
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
        let (tx, _rx) = mpsc::channel(1);
        assert_eq!(
            hub.register("alice", peer(), tx, Closer::default()).err(),
            Some(HubError::TooManySessions(2))
        );
        let n = hub.send_to_users(
            &["alice", "alice", "nobody"],
            &ServerFrame::Notice { text: "hi".into() },
        );
        assert_eq!(n, 2);
        assert!(r1.try_recv().is_ok() && r2.try_recv().is_ok());
        assert_eq!(hub.close_user("alice", "kicked"), 2);
        assert_eq!(
            hub.session_count("alice"),
            2,
            "closing is the session's job"
        );
    }
}
