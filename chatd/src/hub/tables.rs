//! Everything the hub's lock guards: the four tables and the view of other nodes, each with its own methods; what needs
//! more than one of them lives in `route.rs` and `presence.rs`.

use super::directory::Directory;
use super::offline::OfflineQueue;
use super::remote::Remote;
use super::rooms::Rooms;
use super::sessions::Sessions;

/// The hub's state under its one lock.
pub(super) struct Tables {
    pub(super) sessions: Sessions,
    pub(super) directory: Directory,
    pub(super) rooms: Rooms,
    pub(super) offline: OfflineQueue,
    /// The other nodes of a cluster (empty on one node).
    pub(super) remote: Remote,
}

impl Tables {
    /// Empty tables; a replaying session may hold `held_max` live lines.
    pub(super) fn new(held_max: usize) -> Self {
        Tables {
            sessions: Sessions::new(held_max),
            directory: Directory::default(),
            rooms: Rooms::default(),
            offline: OfflineQueue::default(),
            remote: Remote::default(),
        }
    }
}
