//! Connection slots: at most `max_connections` at once. When every slot is taken, a new
//! connection takes the slot of the oldest one that has not logged in yet (still in its TLS
//! handshake first, then waiting at login), so connections that never finish cannot keep
//! everyone out. Logged-in sessions are never closed to make room: with only those, a new
//! connection waits for a slot in the kernel's backlog as before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
    open: BTreeMap<u64, (Phase, CancellationToken)>,
}

/// The slots and the connections holding one that may be closed to make room.
#[derive(Debug, Clone)]
pub struct Slots {
    permits: Arc<Semaphore>,
    unfinished: Arc<Mutex<Unfinished>>,
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
    /// `max` slots.
    pub fn new(max: usize) -> Slots {
        Slots {
            permits: Arc::new(Semaphore::new(max)),
            unfinished: Arc::default(),
        }
    }

    /// A slot for a connection just accepted. When none is free, the oldest unfinished
    /// connection is told to close (see [`Claim::evicted`]) and this waits for its slot; with
    /// none to close, it waits for any session to end.
    pub async fn claim(&self) -> Option<Claim> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.evict_oldest() {
                    tracing::debug!("server full: closing the oldest unfinished connection");
                }
                Arc::clone(&self.permits).acquire_owned().await.ok()?
            }
        };
        let evict = CancellationToken::new();
        let mut unfinished = lock(&self.unfinished);
        let id = unfinished.next;
        unfinished.next += 1;
        unfinished
            .open
            .insert(id, (Phase::Handshake, evict.clone()));
        Some(Claim {
            id,
            evict,
            unfinished: Arc::clone(&self.unfinished),
            _permit: permit,
        })
    }

    /// Tells the oldest connection of the earliest phase to close; false when there is none.
    fn evict_oldest(&self) -> bool {
        let mut unfinished = lock(&self.unfinished);
        let oldest = unfinished
            .open
            .iter()
            .min_by_key(|(id, (phase, _))| (*phase, **id))
            .map(|(id, _)| *id);
        // Out of the map at once, so the next connection picks another one.
        match oldest.and_then(|id| unfinished.open.remove(&id)) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
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
            entry.0 = Phase::Login;
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
        let slots = Slots::new(3);
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
}
