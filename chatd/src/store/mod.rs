//! Persistent state: accounts, their device public keys and the vouches between them, rooms,
//! and the sealed lines stored for devices that are offline — one interface, two backends.
//!
//! [`Store`] is an enum over the backends (SQLite, the embedded default; PostgreSQL, the basis
//! of clusters) with one async method per operation, dispatched by `match`. An enum rather than
//! a `dyn` trait: async methods in a trait object need a boxed future per call, and the hot
//! paths (the offline writer, replay pages, login credentials) are called per message or login;
//! a `match` costs nothing and the set of backends is closed. Operations that must be atomic
//! (the offline writer's batch, registering a key within the device limit, an invitation of an
//! existing user, revocation and what goes with it) are single methods, so each backend makes
//! them one transaction. A temporary failure (disk full, database locked or unreachable) is
//! counted in the metrics here, once for both backends.

use std::sync::Arc;

mod error;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;
mod time;
mod types;

pub use error::{StoreError, Unavailable};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use time::now_secs;
pub use types::*;

use crate::stored_lines::StoredLines;

/// A handle to the database, whichever backend holds it; cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// One SQLite file in the state directory.
    Sqlite(SqliteStore),
    /// A PostgreSQL database (`[cluster] database`), which several nodes can share.
    Postgres(PgStore),
}

/// Runs `$e` with `$s` bound to the backend.
macro_rules! on {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

/// Counts a temporary failure in the metrics, passing the result on (also for the login
/// throttle's own calls to [`PgStore`], which are not part of this interface).
pub(crate) fn observe<T>(result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(e) = &result {
        if let Some(why) = e.unavailable() {
            crate::metrics::get().storage_unavailable(why);
        }
    }
    result
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub fn open_sqlite(
        path: &std::path::Path,
        busy: std::time::Duration,
    ) -> Result<Store, StoreError> {
        SqliteStore::open(path, busy).map(Store::Sqlite)
    }

    /// Connects to the PostgreSQL database at `url` with at most `pool_size` connections,
    /// and migrates it.
    pub async fn connect_postgres(
        url: &str,
        password: Option<&str>,
        pool_size: usize,
    ) -> Result<Store, StoreError> {
        PgStore::connect(url, password, pool_size)
            .await
            .map(Store::Postgres)
    }

    /// Opens the store `config` names: PostgreSQL when `[cluster] database` is set (with
    /// its password, which [`crate::config::ClusterConfig::password`] reads), else the
    /// SQLite file `chatd.db` in the state dir. Returns it with what it is, for the log
    /// (`postgresql node=... database=URL` or `sqlite path=...`; the URL holds no password).
    pub async fn open(
        config: &crate::config::Config,
        password: Option<&str>,
    ) -> Result<(Store, String), StoreError> {
        match &config.cluster.database {
            Some(url) => {
                let store =
                    Store::connect_postgres(url, password, config.cluster.database_pool).await?;
                let what = format!(
                    "postgresql node={} database={url} pool={}",
                    config.cluster.node_name(),
                    config.cluster.database_pool
                );
                Ok((store, what))
            }
            None => {
                let path = config.server.state_dir.join("chatd.db");
                let store = Store::open_sqlite(&path, config.limits.db_busy_timeout())?;
                Ok((store, format!("sqlite path={}", path.display())))
            }
        }
    }

    /// An in-memory SQLite database, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        SqliteStore::open_in_memory().map(Store::Sqlite)
    }

    /// Makes what is written durable in the backend's own files; called on clean shutdown
    /// (SQLite: checkpoints the WAL into the main file; PostgreSQL does its own).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.checkpoint(),
            Store::Postgres(_) => Ok(()),
        }
    }

    /// Creates an account; [`StoreError::UserExists`] if the name is taken.
    pub async fn add_user(&self, name: &str, hash: &str, admin: bool) -> Result<(), StoreError> {
        observe(on!(self, s => s.add_user(name, hash, admin).await))
    }

    /// Deletes an account with its keys, vouches, memberships and stored lines; false if
    /// there was none.
    pub async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        observe(on!(self, s => s.delete_user(name).await))
    }

    /// Replaces the password hash; false if no such account.
    pub async fn set_password(&self, name: &str, hash: &str) -> Result<bool, StoreError> {
        observe(on!(self, s => s.set_password(name, hash).await))
    }

    /// Locks or unlocks; false if no such account.
    pub async fn set_locked(&self, name: &str, locked: bool) -> Result<bool, StoreError> {
        observe(on!(self, s => s.set_locked(name, locked).await))
    }

    /// Bans until `until` (seconds since the epoch) or, with None, unbans; false if no such
    /// account.
    pub async fn set_ban(&self, name: &str, until: Option<i64>) -> Result<bool, StoreError> {
        observe(on!(self, s => s.set_ban(name, until).await))
    }

    /// Lifts any ban; the ban's end as it was (`Some(None)`: never banned), or None if no
    /// such account.
    pub async fn unban(&self, name: &str) -> Result<Option<Option<i64>>, StoreError> {
        observe(on!(self, s => s.unban(name).await))
    }

    /// What login needs, or None for an unknown user.
    pub async fn credentials(&self, name: &str) -> Result<Option<Credentials>, StoreError> {
        observe(on!(self, s => s.credentials(name).await))
    }

    /// True if the account exists.
    pub async fn user_exists(&self, name: &str) -> Result<bool, StoreError> {
        observe(on!(self, s => s.user_exists(name).await))
    }

    /// Every account, sorted by name.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        observe(on!(self, s => s.list_users().await))
    }

    /// For status: (accounts, stored lines, queue entries).
    pub async fn counts(&self) -> Result<(usize, u64, u64), StoreError> {
        observe(on!(self, s => s.counts().await))
    }

    /// Records a login with `spki`: registers it if new, within `max_devices` unrevoked keys.
    pub async fn check_and_register(
        &self,
        user: &str,
        fingerprint: &[u8; 32],
        spki: &[u8],
        bits: u32,
        max_devices: usize,
    ) -> Result<KeyCheck, StoreError> {
        observe(
            on!(self, s => s.check_and_register(user, fingerprint, spki, bits, max_devices).await),
        )
    }

    /// Registered keys of `user` (or everyone), by user then age; None if `user` does not
    /// exist.
    pub async fn list_keys(&self, user: Option<&str>) -> Result<Option<Vec<KeyRow>>, StoreError> {
        observe(on!(self, s => s.list_keys(user).await))
    }

    /// Revokes a key and drops what was stored for it and the vouches by or for it; false if
    /// `user` has no such key. Revoking twice keeps the first time.
    pub async fn revoke_key(&self, user: &str, fingerprint: &[u8; 32]) -> Result<bool, StoreError> {
        observe(on!(self, s => s.revoke_key(user, fingerprint).await))
    }

    /// Every unrevoked key, by user then age.
    pub async fn active_keys(&self) -> Result<Vec<ActiveKey>, StoreError> {
        observe(on!(self, s => s.active_keys().await))
    }

    /// Stores `data`, `user`'s vouch by `voucher` for `vouched`, replacing an earlier one by
    /// the same voucher. False (nothing stored) unless both keys are registered and unrevoked.
    pub async fn put_vouch(
        &self,
        user: &str,
        vouched: &[u8; 32],
        voucher: &[u8; 32],
        data: &[u8],
    ) -> Result<bool, StoreError> {
        observe(on!(self, s => s.put_vouch(user, vouched, voucher, data).await))
    }

    /// Every stored vouch, oldest first.
    pub async fn vouches(&self) -> Result<Vec<VouchRow>, StoreError> {
        observe(on!(self, s => s.vouches().await))
    }

    /// At start: creates the default room, puts every account in it, deletes other empty
    /// rooms, and returns every room with its members.
    pub async fn prepare_rooms(&self, default: &str) -> Result<Vec<RoomRow>, StoreError> {
        observe(on!(self, s => s.prepare_rooms(default).await))
    }

    /// Every room with its members, by name.
    pub async fn rooms(&self) -> Result<Vec<RoomRow>, StoreError> {
        observe(on!(self, s => s.rooms().await))
    }

    /// Creates the room unless it exists; true if created.
    pub async fn create_room(
        &self,
        room: &str,
        owner: Option<&str>,
        invite_only: bool,
    ) -> Result<bool, StoreError> {
        observe(on!(self, s => s.create_room(room, owner, invite_only).await))
    }

    /// Adds a member (and uses up an invitation); false if already a member.
    pub async fn join_room(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        observe(on!(self, s => s.join_room(room, user).await))
    }

    /// Removes a member; a room left empty is deleted unless it is `keep` (the default
    /// room). Returns whether `user` was a member.
    pub async fn part_room(&self, room: &str, user: &str, keep: &str) -> Result<bool, StoreError> {
        observe(on!(self, s => s.part_room(room, user, keep).await))
    }

    /// Sets the topic.
    pub async fn set_topic(&self, room: &str, topic: &str) -> Result<(), StoreError> {
        observe(on!(self, s => s.set_topic(room, topic).await))
    }

    /// Records an invitation of `user` to `room`; false (nothing recorded) if no such user.
    pub async fn invite(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        observe(on!(self, s => s.invite(room, user).await))
    }

    /// Whether `user` holds an invitation to `room`.
    pub async fn invited(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        observe(on!(self, s => s.invited(room, user).await))
    }

    /// Stores `lines` in one transaction, each for its targets whose queue holds fewer than
    /// `caps.total` lines, and fewer than `caps.per_sender` of the line's sender.
    pub async fn store_offline(
        &self,
        lines: Vec<OfflineLine>,
        caps: Caps,
        now_ms: i64,
    ) -> Result<Vec<Stored>, StoreError> {
        observe(on!(self, s => s.store_offline(lines, caps, now_ms).await))
    }

    /// One page of the lines queued for `user`'s `device` after queue id `after`, oldest
    /// first, skipping expired ones (stored before `not_before_ms`). A line `lines` holds
    /// (another session is replaying it) is not read again: sessions share one copy.
    pub async fn replay_page(
        &self,
        user: &str,
        device: &[u8; 32],
        after: i64,
        size: PageSize,
        not_before_ms: i64,
        lines: Arc<StoredLines>,
    ) -> Result<Page, StoreError> {
        observe(
            on!(self, s => s.replay_page(user, device, after, size, not_before_ms, lines).await),
        )
    }

    /// Deletes what `user`'s `device` acknowledged (queue ids up to `upto`); returns how
    /// many.
    pub async fn ack(&self, user: &str, device: &[u8; 32], upto: i64) -> Result<usize, StoreError> {
        observe(on!(self, s => s.ack(user, device, upto).await))
    }

    /// Deletes lines stored before `before_ms` from every queue; returns how many lines.
    pub async fn expire(&self, before_ms: i64) -> Result<usize, StoreError> {
        observe(on!(self, s => s.expire(before_ms).await))
    }
}
