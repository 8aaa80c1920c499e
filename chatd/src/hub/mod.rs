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
//! One lock guards four tables, each in a file of its own with the `Hub` methods that use
//! it: `sessions` (the session table and delivery), `directory` (device keys, `login_ok`,
//! `/whois`), `rooms`, and `offline` (lines for offline devices); `route` routes across
//! them, `outgoing` is what gets queued. The lock is never held across an `.await`.

mod directory;
mod offline;
mod outgoing;
mod rooms;
mod route;
mod sessions;
#[cfg(test)]
mod tests;

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

pub use crate::mailbox::Closer;
pub use directory::Whois;
pub use offline::{Notify, OfflineJob};
pub use outgoing::{EnvelopeLines, Outgoing};
pub use rooms::Room;
pub use route::{Routed, SendRefused, Sent};
pub use sessions::{HubError, NewSession, SessionId};

/// Everything the hub's lock guards.
struct Inner {
    sessions: sessions::Sessions,
    directory: directory::Directory,
    rooms: rooms::Rooms,
    offline: offline::OfflineQueue,
}

/// The routing table; shared by every session and the control socket.
pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    max_sessions_per_user: usize,
    /// Tells [`Hub::flush_quiet`] that quiet lines wait.
    quiet_queued: tokio::sync::Notify,
}

impl Hub {
    /// An empty hub; a replaying session may hold `held_max` live lines.
    pub fn new(max_sessions_per_user: usize, held_max: usize) -> Self {
        Hub {
            inner: Mutex::new(Inner {
                sessions: sessions::Sessions::new(held_max),
                directory: directory::Directory::default(),
                rooms: rooms::Rooms::default(),
                offline: offline::OfflineQueue::default(),
            }),
            next_id: AtomicU64::new(1),
            max_sessions_per_user,
            quiet_queued: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing in Inner can be left half-updated by a panic that matters more than availability.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
