//! Persistent state in SQLite: accounts, their device public keys and the vouches between them,
//! rooms, and the sealed lines stored for devices that are offline.
//!
//! WAL mode with `synchronous=FULL`, so a change is on disk before its caller is answered.
//! The schema version is SQLite's `user_version`; [`MIGRATIONS`] brings any older file up to date.
//! Calls run on tokio's blocking pool through [`Store::run`] so the reactor never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

mod error;
pub mod keys;
pub mod offline;
pub mod rooms;
#[cfg(test)]
mod tests;
mod time;
pub use time::now_secs;
pub mod users;
pub mod vouches;

pub use error::{StoreError, Unavailable};
pub use keys::{ActiveKey, KeyCheck, KeyRow};
pub use offline::{Caps, DeviceTarget, OfflineLine, Stored};
pub use rooms::RoomRow;
pub use users::{Credentials, UserRow};

/// Schema migrations; entry `i` moves a database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts.
    "CREATE TABLE users (
        name          TEXT PRIMARY KEY NOT NULL,
        password_hash TEXT NOT NULL,
        admin         INTEGER NOT NULL DEFAULT 0,
        locked        INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    ) STRICT;",
    // 2: device public keys, registered on first login with each key.
    "CREATE TABLE device_keys (
        user        TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        fingerprint BLOB NOT NULL,
        spki        BLOB NOT NULL,
        bits        INTEGER NOT NULL,
        created_at  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        revoked_at  INTEGER,
        PRIMARY KEY (user, fingerprint)
    ) STRICT;",
    // 3: lines (sealed envelopes, wrapped chains) stored for offline devices. A line for many
    // devices is stored once; each device's queue is ordered by `offline_queue.id`.
    "CREATE TABLE offline_messages (
        id         INTEGER PRIMARY KEY,
        line       BLOB NOT NULL,
        created_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE offline_queue (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        user    TEXT NOT NULL,
        device  BLOB NOT NULL,
        message INTEGER NOT NULL REFERENCES offline_messages(id) ON DELETE CASCADE,
        FOREIGN KEY (user, device) REFERENCES device_keys(user, fingerprint) ON DELETE CASCADE
    ) STRICT;
    CREATE INDEX offline_queue_by_device ON offline_queue(user, device, id);
    CREATE INDEX offline_queue_by_message ON offline_queue(message);
    CREATE INDEX offline_messages_by_age ON offline_messages(created_ms);",
    // 4: rooms and their members (the default room is created at start).
    "CREATE TABLE rooms (
        name        TEXT PRIMARY KEY NOT NULL,
        topic       TEXT NOT NULL DEFAULT '',
        invite_only INTEGER NOT NULL DEFAULT 0,
        owner       TEXT REFERENCES users(name) ON DELETE SET NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE room_members (
        room      TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
        user      TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (room, user)
    ) STRICT;
    CREATE INDEX room_members_by_user ON room_members(user);
    CREATE TABLE room_invites (
        room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        PRIMARY KEY (room, user)
    ) STRICT;",
    // 5: device vouches (one key of a user signs for another), the latest per pair.
    "CREATE TABLE device_vouches (
        user       TEXT NOT NULL,
        vouched    BLOB NOT NULL,
        voucher    BLOB NOT NULL,
        data       BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user, vouched, voucher),
        FOREIGN KEY (user, vouched) REFERENCES device_keys(user, fingerprint) ON DELETE CASCADE,
        FOREIGN KEY (user, voucher) REFERENCES device_keys(user, fingerprint) ON DELETE CASCADE
    ) STRICT;",
    // 6: a ban (`chatctl kick --ban`): logins refused until then, seconds since the epoch.
    "ALTER TABLE users ADD COLUMN banned_until INTEGER;",
    // 7: who sent each stored line (NULL: the server, or stored before this), so one sender's
    // share of a device's queue can be counted (`offline_queue_per_sender`).
    "ALTER TABLE offline_queue ADD COLUMN sender TEXT;
    CREATE INDEX offline_queue_by_sender ON offline_queue(user, device, sender);",
];

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let result = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (transactions
            // roll back), so a poisoned lock is safe to reuse.
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        if let Err(e) = &result {
            if let Some(why) = e.unavailable() {
                crate::metrics::get().storage_unavailable(why == Unavailable::DiskFull);
            }
        }
        result
    }

    /// Runs `f` synchronously (for startup and tests).
    pub fn run_sync<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Checkpoints the WAL into the main file; called on clean shutdown.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.run_sync(|c| {
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
