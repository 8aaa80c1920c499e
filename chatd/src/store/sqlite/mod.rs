//! The SQLite backend: one file, WAL mode with `synchronous=FULL`, so a change is on disk
//! before its caller is answered. The schema version is SQLite's `user_version`;
//! [`MIGRATIONS`] brings any older file up to date. Statements are free functions over a
//! connection (one file per table) so an interface method can run several in one
//! transaction; they run on tokio's blocking pool so the reactor never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::Connection;

use super::error::{StoreError, Unavailable};
use super::types::*;
use crate::stored_lines::StoredLines;

pub mod keys;
pub mod offline;
pub mod rooms;
pub mod users;
pub mod vouches;

/// Schema migrations; entry `i` moves a database from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
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

/// A handle to the SQLite database; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, waiting up to `busy` for a lock
    /// another process holds, and migrates it.
    pub fn open(path: &Path, busy: Duration) -> Result<SqliteStore, StoreError> {
        Self::setup(Connection::open(path)?, busy)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Self::setup(Connection::open_in_memory()?, Duration::from_secs(5))
    }

    fn setup(mut conn: Connection, busy: Duration) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(busy)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (transactions
            // roll back), so a poisoned lock is safe to reuse.
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs `f` synchronously (shutdown and tests).
    pub(crate) fn run_sync<T>(
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

    /// The schema version of the file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.run_sync(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
    }

    // The interface (see `Store`); each method is one `run`, so one trip to the blocking
    // pool, and a method of several statements is one transaction.

    pub(super) async fn add_user(
        &self,
        name: &str,
        hash: &str,
        admin: bool,
    ) -> Result<(), StoreError> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.run(move |c| users::add(c, &name, &hash, admin)).await
    }

    pub(super) async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| users::delete(c, &name)).await
    }

    pub(super) async fn set_password(&self, name: &str, hash: &str) -> Result<bool, StoreError> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.run(move |c| users::set_password(c, &name, &hash))
            .await
    }

    pub(super) async fn set_locked(&self, name: &str, locked: bool) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| users::set_locked(c, &name, locked)).await
    }

    pub(super) async fn set_ban(&self, name: &str, until: Option<i64>) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| users::set_ban(c, &name, until)).await
    }

    pub(super) async fn unban(&self, name: &str) -> Result<Option<Option<i64>>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            let tx = c.unchecked_transaction()?;
            let Some(creds) = users::credentials(&tx, &name)? else {
                return Ok(None);
            };
            users::set_ban(&tx, &name, None)?;
            tx.commit()?;
            Ok(Some(creds.banned_until))
        })
        .await
    }

    pub(super) async fn credentials(&self, name: &str) -> Result<Option<Credentials>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| users::credentials(c, &name)).await
    }

    pub(super) async fn user_exists(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| users::exists(c, &name)).await
    }

    pub(super) async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        self.run(users::list).await
    }

    pub(super) async fn counts(&self) -> Result<(usize, u64, u64), StoreError> {
        self.run(|c| {
            let (lines, queued) = offline::counts(c)?;
            Ok((users::count(c)?, lines, queued))
        })
        .await
    }

    pub(super) async fn check_and_register(
        &self,
        user: &str,
        fingerprint: &[u8; 32],
        spki: &[u8],
        bits: u32,
        max_devices: usize,
    ) -> Result<KeyCheck, StoreError> {
        let (user, fp, spki) = (user.to_owned(), *fingerprint, spki.to_vec());
        self.run(move |c| keys::check_and_register(c, &user, &fp, &spki, bits, max_devices))
            .await
    }

    pub(super) async fn list_keys(
        &self,
        user: Option<&str>,
    ) -> Result<Option<Vec<KeyRow>>, StoreError> {
        let user = user.map(str::to_owned);
        self.run(move |c| {
            if let Some(name) = &user {
                if !users::exists(c, name)? {
                    return Ok(None);
                }
            }
            keys::list(c, user.as_deref()).map(Some)
        })
        .await
    }

    pub(super) async fn revoke_key(
        &self,
        user: &str,
        fingerprint: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let (user, fp) = (user.to_owned(), *fingerprint);
        self.run(move |c| keys::revoke(c, &user, &fp)).await
    }

    pub(super) async fn active_keys(&self) -> Result<Vec<ActiveKey>, StoreError> {
        self.run(keys::active).await
    }

    pub(super) async fn put_vouch(
        &self,
        user: &str,
        vouched: &[u8; 32],
        voucher: &[u8; 32],
        data: &[u8],
    ) -> Result<bool, StoreError> {
        let (user, vouched, voucher, data) = (user.to_owned(), *vouched, *voucher, data.to_vec());
        self.run(move |c| vouches::put(c, &user, &vouched, &voucher, &data))
            .await
    }

    pub(super) async fn vouches(&self) -> Result<Vec<VouchRow>, StoreError> {
        self.run(vouches::all).await
    }

    pub(super) async fn prepare_rooms(&self, default: &str) -> Result<Vec<RoomRow>, StoreError> {
        let default = default.to_owned();
        self.run(move |c| {
            let tx = c.unchecked_transaction()?;
            rooms::create(&tx, &default, None, false)?;
            rooms::join_all_users(&tx, &default)?;
            rooms::drop_empty(&tx, &default)?;
            let all = rooms::all(&tx)?;
            tx.commit()?;
            Ok(all)
        })
        .await
    }

    pub(super) async fn rooms(&self) -> Result<Vec<RoomRow>, StoreError> {
        self.run(rooms::all).await
    }

    pub(super) async fn create_room(
        &self,
        room: &str,
        owner: Option<&str>,
        invite_only: bool,
    ) -> Result<bool, StoreError> {
        let (room, owner) = (room.to_owned(), owner.map(str::to_owned));
        self.run(move |c| rooms::create(c, &room, owner.as_deref(), invite_only))
            .await
    }

    pub(super) async fn join_room(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.run(move |c| rooms::join(c, &room, &user)).await
    }

    pub(super) async fn part_room(
        &self,
        room: &str,
        user: &str,
        keep: &str,
    ) -> Result<bool, StoreError> {
        let (room, user, keep) = (room.to_owned(), user.to_owned(), keep.to_owned());
        self.run(move |c| rooms::part(c, &room, &user, &keep)).await
    }

    pub(super) async fn set_topic(&self, room: &str, topic: &str) -> Result<(), StoreError> {
        let (room, topic) = (room.to_owned(), topic.to_owned());
        self.run(move |c| rooms::set_topic(c, &room, &topic)).await
    }

    pub(super) async fn invite(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.run(move |c| {
            let tx = c.unchecked_transaction()?;
            if !users::exists(&tx, &user)? {
                return Ok(false);
            }
            rooms::invite(&tx, &room, &user)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn invited(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.run(move |c| rooms::invited(c, &room, &user)).await
    }

    pub(super) async fn store_offline(
        &self,
        lines: Vec<OfflineLine>,
        caps: Caps,
        now_ms: i64,
    ) -> Result<Vec<Stored>, StoreError> {
        self.run(move |c| offline::store(c, &lines, caps, now_ms))
            .await
    }

    pub(super) async fn replay_page(
        &self,
        user: &str,
        device: &[u8; 32],
        after: i64,
        size: PageSize,
        not_before_ms: i64,
        lines: Arc<StoredLines>,
    ) -> Result<Page, StoreError> {
        let (user, device) = (user.to_owned(), *device);
        self.run(move |c| {
            let (rows, more) =
                offline::load_page(c, &user, &device, after, size, not_before_ms, |m| {
                    lines.get(m)
                })?;
            let rows: Vec<(i64, Bytes)> = rows
                .into_iter()
                .map(|(qid, message, line)| match line {
                    offline::PageLine::Reused(b) => (qid, b),
                    offline::PageLine::Read(v) => (qid, lines.share(message, v)),
                })
                .collect();
            Ok((rows, more))
        })
        .await
    }

    pub(super) async fn ack(
        &self,
        user: &str,
        device: &[u8; 32],
        upto: i64,
    ) -> Result<usize, StoreError> {
        let (user, device) = (user.to_owned(), *device);
        self.run(move |c| offline::ack(c, &user, &device, upto))
            .await
    }

    pub(super) async fn expire(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.run(move |c| offline::expire(c, before_ms)).await
    }
}

impl StoreError {
    /// The temporary SQLite condition behind this error, if it is one.
    pub(super) fn sqlite_unavailable(&self) -> Option<Unavailable> {
        let StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) = self else {
            return None;
        };
        match e.code {
            rusqlite::ErrorCode::DiskFull => Some(Unavailable::DiskFull),
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                Some(Unavailable::Locked)
            }
            _ => None,
        }
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
