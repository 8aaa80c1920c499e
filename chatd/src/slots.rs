//! Connection slots: at most `max_connections` at once. When every slot is taken, a new
//! connection takes the slot of the oldest one that has not logged in yet (still in its TLS
//! handshake first, then waiting at login), so connections that never finish cannot keep
//! everyone out. A connection is only closed for room once it is `evict_unfinished_after_ms`
//! old: that is the time a newcomer is sure to have for its handshake however fast others
//! reconnect (closing the oldest at once let a crowd reopening at a thousand a second close
//! a real client's handshake before it finished). Logged-in sessions are never closed to make
//! room: with only those, a new connection waits for a slot in the kernel's backlog as before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How far a connection that holds a slot has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Accepted, TLS handshake not finished: the first to make room.
    Handshake,
    /// TLS done, not logged in yet.
    Login,
}

#[derive(Debug, Default)]
struct Unfinished {
    next: u64,
    /// By connection number, so the first of a phase is its oldest.
    open: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    phase: Phase,
    since: Instant,
    evict: CancellationToken,
}

/// What a full server can do for a newcomer.
enum Room {
    /// An unfinished connection was told to close; its slot comes back soon.
    Made,
    /// The oldest unfinished connection may be closed at this instant.
    At(Instant),
    /// Every slot holds a logged-in session.
    None,
}

/// The slots and the connections holding one that may be closed to make room.
#[derive(Debug, Clone)]
pub struct Slots {
    permits: Arc<Semaphore>,
    unfinished: Arc<Mutex<Unfinished>>,
    grace: Duration,
}

/// One connection's slot; given back when dropped.
#[derive(Debug)]
pub struct Claim {
    id: u64,
    evict: CancellationToken,
    unfinished: Arc<Mutex<Unfinished>>,
    _permit: OwnedSemaphorePermit,
}

fn lock(unfinished: &Mutex<Unfinished>) -> MutexGuard<'_, Unfinished> {
    // Each update is one insert, change or remove: a poisoned map is still consistent.
    unfinished.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slots {
    /// `max` slots; an unfinished connection may be closed for room once `grace` old.
    pub fn new(max: usize, grace: Duration) -> Slots {
        Slots {
            permits: Arc::new(Semaphore::new(max)),
            unfinished: Arc::default(),
            grace,
        }
    }

    /// A slot for a connection just accepted. When none is free, the oldest unfinished
    /// connection is told to close (see [`Claim::evicted`]), once old enough, and this waits
    /// for its slot; with none to close, it waits for any session to end.
    pub async fn claim(&self) -> Option<Claim> {
        let permit = loop {
            if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
                break permit;
            }
            let acquire = Arc::clone(&self.permits).acquire_owned();
            match self.make_room(Instant::now()) {
                Room::Made | Room::None => break acquire.await.ok()?,
                Room::At(when) => tokio::select! {
                    permit = acquire => break permit.ok()?,
                    _ = tokio::time::sleep_until(when) => {}
                },
            }
        };
        let evict = CancellationToken::new();
        let mut unfinished = lock(&self.unfinished);
        let id = unfinished.next;
        unfinished.next += 1;
        let entry = Entry {
            phase: Phase::Handshake,
            since: Instant::now(),
            evict: evict.clone(),
        };
        unfinished.open.insert(id, entry);
        Some(Claim {
            id,
            evict,
            unfinished: Arc::clone(&self.unfinished),
            _permit: permit,
        })
    }

    /// Tells the oldest connection of the earliest phase to close if it is old enough.
    fn make_room(&self, now: Instant) -> Room {
        let mut unfinished = lock(&self.unfinished);
        let oldest = unfinished
            .open
            .iter()
            .min_by_key(|(id, entry)| (entry.phase, **id))
            .map(|(id, entry)| (*id, entry.since + self.grace));
        let Some((id, due)) = oldest else {
            return Room::None;
        };
        if due > now {
            return Room::At(due);
        }
        // Out of the map at once, so the next newcomer picks another one.
        if let Some(entry) = unfinished.open.remove(&id) {
            entry.evict.cancel();
            tracing::debug!("server full: closing the oldest unfinished connection");
        }
        Room::Made
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

impl Claim {
    /// Cancelled when this connection must close to make room for a newer one.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evict
    }

    /// The TLS handshake is done: only closed to make room after every connection still in
    /// its handshake.
    pub fn handshake_done(&self) {
        if let Some(entry) = lock(&self.unfinished).open.get_mut(&self.id) {
            entry.phase = Phase::Login;
        }
    }

    /// Logged in: this connection keeps its slot until it ends.
    pub fn logged_in(&self) {
        lock(&self.unfinished).open.remove(&self.id);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.unfinished).open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_server_makes_room_by_closing_the_oldest_unfinished() {
        let slots = Slots::new(3, Duration::ZERO);
        let a = slots.claim().await.unwrap();
        let b = slots.claim().await.unwrap();
        let c = slots.claim().await.unwrap();
        a.handshake_done();
        c.logged_in();
        assert_eq!(slots.available(), 0);
        // Full: the oldest still in its handshake (b) goes first, even though a is older.
        let evicted = b.evicted().clone();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.claim().await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), evicted.cancelled())
            .await
            .unwrap();
        assert!(!a.evicted().is_cancelled() && !c.evicted().is_cancelled());
        drop(b);
        let d = waiting.await.unwrap().unwrap();
        // Next, the one waiting at login; the logged-in one never.
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.claim().await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), d.evicted().cancelled())
            .await
            .unwrap();
        drop(d);
        let e = waiting.await.unwrap().unwrap();
        e.logged_in();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.claim().await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), a.evicted().cancelled())
            .await
            .unwrap();
        drop(a);
        let f = waiting.await.unwrap().unwrap();
        f.logged_in();
        // Only logged-in sessions: a newcomer waits for one to end.
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.claim().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        assert!(!c.evicted().is_cancelled() && !e.evicted().is_cancelled());
        drop(c);
        let g = waiting.await.unwrap().unwrap();
        drop((e, f, g));
        assert_eq!(slots.available(), 3);
        assert!(slots.unfinished.lock().unwrap().open.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn only_connections_older_than_the_grace_are_closed_for_room() {
        let grace = Duration::from_millis(2000);
        let slots = Slots::new(1, grace);
        let old = slots.claim().await.unwrap();
        tokio::time::advance(Duration::from_millis(500)).await;
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.claim().await }
        });
        // Just under the grace: the newcomer waits, nobody is closed.
        tokio::time::advance(Duration::from_millis(1499)).await;
        tokio::task::yield_now().await;
        assert!(!old.evicted().is_cancelled());
        assert!(!waiting.is_finished());
        // At the grace, the old one is told to close; its slot goes to the newcomer.
        tokio::time::advance(Duration::from_millis(1)).await;
        tokio::time::timeout(Duration::from_secs(1), old.evicted().cancelled())
            .await
            .unwrap();
        drop(old);
        let new = waiting.await.unwrap().unwrap();
        assert!(!new.evicted().is_cancelled());
    }
}
