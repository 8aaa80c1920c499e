//! Persistent state in SQLite: accounts, their device public keys, and the sealed lines
//! stored for devices that are offline.
//!
//! WAL mode with `synchronous=FULL`, so a change is on disk before its caller is answered.
//! The schema version is SQLite's `user_version`; [`MIGRATIONS`] brings any older file up to date.
//! Calls run on tokio's blocking pool through [`Store::run`] so the reactor never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

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
];

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error (disk full, locked, corrupt, ...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer chatd.
    #[error("database schema version {found} is newer than this chatd understands ({known})")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// The user already exists.
    #[error("user {0} already exists")]
    UserExists(String),
    /// The blocking task died.
    #[error("database task failed: {0}")]
    Task(String),
}

/// A temporary storage condition: nothing was written, and the same change may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The file system holding the state dir is full (SQLITE_FULL).
    DiskFull,
    /// Another process held the database locked past the busy timeout (SQLITE_BUSY/LOCKED).
    Locked,
}

impl StoreError {
    /// The temporary condition behind this error, if it is one (so callers can say so
    /// instead of "internal error"). SQLite rolls back the failed statement: the database
    /// stays as it was before the change.
    pub fn unavailable(&self) -> Option<Unavailable> {
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

/// What login needs to know about an account.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// PHC string (argon2id).
    pub password_hash: String,
    /// Logins refused.
    pub locked: bool,
    /// Has the admin role.
    pub admin: bool,
}

/// One account, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// Name.
    pub name: String,
    /// Has the admin role.
    pub admin: bool,
    /// Logins refused.
    pub locked: bool,
    /// Seconds since the epoch.
    pub created_at: u64,
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (transactions
            // roll back), so a poisoned lock is safe to reuse.
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
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

/// Account operations; free functions over a connection so they compose inside [`Store::run`].
pub mod users {
    use super::*;

    /// Creates an account.
    pub fn add(c: &Connection, name: &str, hash: &str, admin: bool) -> Result<(), StoreError> {
        let now = now_secs();
        let res = c.execute(
            "INSERT INTO users (name, password_hash, admin, locked, created_at, updated_at)
             VALUES (?1, ?2, ?3, 0, ?4, ?4)",
            params![name, hash, admin, now],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::UserExists(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an account; false if there was none.
    /// Keys and stored lines go with it (foreign keys cascade).
    pub fn delete(c: &Connection, name: &str) -> Result<bool, StoreError> {
        let tx = c.unchecked_transaction()?;
        let n = tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
        super::offline::drop_orphans(&tx)?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Replaces the password hash; false if no such account.
    pub fn set_password(c: &Connection, name: &str, hash: &str) -> Result<bool, StoreError> {
        Ok(c.execute(
            "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, hash, now_secs()],
        )? > 0)
    }

    /// Locks or unlocks; false if no such account.
    pub fn set_locked(c: &Connection, name: &str, locked: bool) -> Result<bool, StoreError> {
        Ok(c.execute(
            "UPDATE users SET locked = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, locked, now_secs()],
        )? > 0)
    }

    /// What login needs, or None for an unknown user.
    pub fn credentials(c: &Connection, name: &str) -> Result<Option<Credentials>, StoreError> {
        Ok(c.query_row(
            "SELECT password_hash, locked, admin FROM users WHERE name = ?1",
            [name],
            |r| {
                Ok(Credentials {
                    password_hash: r.get(0)?,
                    locked: r.get(1)?,
                    admin: r.get(2)?,
                })
            },
        )
        .optional()?)
    }

    /// True if the account exists.
    pub fn exists(c: &Connection, name: &str) -> Result<bool, StoreError> {
        Ok(
            c.query_row("SELECT 1 FROM users WHERE name = ?1", [name], |_| Ok(()))
                .optional()?
                .is_some(),
        )
    }

    /// Every account, sorted by name.
    pub fn list(c: &Connection) -> Result<Vec<UserRow>, StoreError> {
        let mut stmt =
            c.prepare("SELECT name, admin, locked, created_at FROM users ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(UserRow {
                name: r.get(0)?,
                admin: r.get(1)?,
                locked: r.get(2)?,
                created_at: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of accounts.
    pub fn count(c: &Connection) -> Result<usize, StoreError> {
        let n: i64 = c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        Ok(n.max(0) as usize)
    }
}

/// How a login's device key relates to what the account has registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// Known and not revoked; `last_seen` updated.
    Known,
    /// Newly registered.
    Registered,
    /// Revoked by an administrator.
    Revoked,
    /// The account is at its device limit.
    TooMany,
}

/// One registered device key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Owner.
    pub user: String,
    /// SHA-256 of `spki`.
    pub fingerprint: [u8; 32],
    /// Modulus size.
    pub bits: u32,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Seconds since the epoch.
    pub last_seen: u64,
    /// Seconds since the epoch, if revoked.
    pub revoked_at: Option<u64>,
}

/// Device-key operations.
pub mod keys {
    use super::*;

    /// Records a login with `spki`: registers it if new (within `max_devices` unrevoked keys).
    pub fn check_and_register(
        c: &Connection,
        user: &str,
        fingerprint: &[u8; 32],
        spki: &[u8],
        bits: u32,
        max_devices: usize,
    ) -> Result<KeyCheck, StoreError> {
        let now = now_secs();
        let existing: Option<Option<i64>> = c
            .query_row(
                "SELECT revoked_at FROM device_keys WHERE user = ?1 AND fingerprint = ?2",
                params![user, &fingerprint[..]],
                |r| r.get(0),
            )
            .optional()?;
        match existing {
            Some(Some(_)) => Ok(KeyCheck::Revoked),
            Some(None) => {
                let seen = c.execute(
                    "UPDATE device_keys SET last_seen = ?3 WHERE user = ?1 AND fingerprint = ?2",
                    params![user, &fingerprint[..], now],
                );
                match seen.map_err(StoreError::from) {
                    Ok(_) => {}
                    // Disk full or locked: a known key needs no write to log in, and a stale
                    // last-seen time is not worth refusing one.
                    Err(e) if e.unavailable().is_some() => {
                        tracing::warn!(error = %e, %user, "cannot update a device key's last-seen time");
                    }
                    Err(e) => return Err(e),
                }
                Ok(KeyCheck::Known)
            }
            None => {
                let active: i64 = c.query_row(
                    "SELECT COUNT(*) FROM device_keys WHERE user = ?1 AND revoked_at IS NULL",
                    [user],
                    |r| r.get(0),
                )?;
                if active.max(0) as usize >= max_devices {
                    return Ok(KeyCheck::TooMany);
                }
                c.execute(
                    "INSERT INTO device_keys (user, fingerprint, spki, bits, created_at, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![user, &fingerprint[..], spki, bits, now],
                )?;
                Ok(KeyCheck::Registered)
            }
        }
    }

    /// Registered keys of `user` (or everyone), by user then age.
    pub fn list(c: &Connection, user: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
        let mut stmt = c.prepare(
            "SELECT user, fingerprint, bits, created_at, last_seen, revoked_at FROM device_keys
             WHERE ?1 IS NULL OR user = ?1 ORDER BY user, created_at, fingerprint",
        )?;
        let rows = stmt.query_map([user], |r| {
            let fp: Vec<u8> = r.get(1)?;
            let mut fingerprint = [0u8; 32];
            // Written only by check_and_register, always 32 bytes; a damaged row shows as zeros.
            if fp.len() == 32 {
                fingerprint.copy_from_slice(&fp);
            }
            Ok(KeyRow {
                user: r.get(0)?,
                fingerprint,
                bits: r.get(2)?,
                created_at: r.get::<_, i64>(3)?.max(0) as u64,
                last_seen: r.get::<_, i64>(4)?.max(0) as u64,
                revoked_at: r.get::<_, Option<i64>>(5)?.map(|t| t.max(0) as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a key and drops what was stored for it; false if `user` has no such key.
    /// Revoking twice keeps the first time.
    pub fn revoke(c: &Connection, user: &str, fingerprint: &[u8; 32]) -> Result<bool, StoreError> {
        let tx = c.unchecked_transaction()?;
        let n = tx.execute(
            "UPDATE device_keys SET revoked_at = COALESCE(revoked_at, ?3)
             WHERE user = ?1 AND fingerprint = ?2",
            params![user, &fingerprint[..], now_secs()],
        )?;
        tx.execute(
            "DELETE FROM offline_queue WHERE user = ?1 AND device = ?2",
            params![user, &fingerprint[..]],
        )?;
        super::offline::drop_orphans(&tx)?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Every unrevoked key: (user, fingerprint, SPKI DER), by user then age.
    pub fn active(c: &Connection) -> Result<Vec<ActiveKey>, StoreError> {
        let mut stmt = c.prepare(
            "SELECT user, fingerprint, spki FROM device_keys WHERE revoked_at IS NULL
             ORDER BY user, created_at, fingerprint",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (user, fp, spki) = row?;
            // Written only by check_and_register, always 32 bytes; skip a damaged row.
            if let Ok(fingerprint) = <[u8; 32]>::try_from(fp.as_slice()) {
                out.push((user, fingerprint, spki));
            }
        }
        Ok(out)
    }
}

/// An unrevoked key: (user, fingerprint, SPKI DER).
pub type ActiveKey = (String, [u8; 32], Vec<u8>);

/// A device a stored line is for: (user, fingerprint).
pub type DeviceTarget = (String, [u8; 32]);

/// A room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    /// Name, without `#`.
    pub name: String,
    /// Topic (empty: none).
    pub topic: String,
    /// Joining needs an invitation.
    pub invite_only: bool,
    /// Creator, while that account exists.
    pub owner: Option<String>,
    /// Members, sorted.
    pub members: Vec<String>,
}

/// Rooms, memberships and invitations.
pub mod rooms {
    use super::*;

    /// Every room with its members.
    pub fn all(c: &Connection) -> Result<Vec<RoomRow>, StoreError> {
        let mut stmt =
            c.prepare("SELECT name, topic, invite_only, owner FROM rooms ORDER BY name")?;
        let mut rooms: Vec<RoomRow> = stmt
            .query_map([], |r| {
                Ok(RoomRow {
                    name: r.get(0)?,
                    topic: r.get(1)?,
                    invite_only: r.get(2)?,
                    owner: r.get(3)?,
                    members: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = c.prepare("SELECT room, user FROM room_members ORDER BY room, user")?;
        let pairs = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for pair in pairs {
            let (room, user) = pair?;
            if let Some(row) = rooms.iter_mut().find(|r| r.name == room) {
                row.members.push(user);
            }
        }
        Ok(rooms)
    }

    /// Creates the room unless it exists; true if created.
    pub fn create(
        c: &Connection,
        name: &str,
        owner: Option<&str>,
        invite_only: bool,
    ) -> Result<bool, StoreError> {
        Ok(c.execute(
            "INSERT OR IGNORE INTO rooms (name, invite_only, owner, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, invite_only, owner, now_secs()],
        )? > 0)
    }

    /// Adds a member (and uses up an invitation); false if already a member.
    pub fn join(c: &Connection, room: &str, user: &str) -> Result<bool, StoreError> {
        let tx = c.unchecked_transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO room_members (room, user, joined_at) VALUES (?1, ?2, ?3)",
            params![room, user, now_secs()],
        )?;
        tx.execute(
            "DELETE FROM room_invites WHERE room = ?1 AND user = ?2",
            params![room, user],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Removes a member; a room left empty is deleted unless it is `keep` (the default room).
    /// Returns whether `user` was a member.
    pub fn part(c: &Connection, room: &str, user: &str, keep: &str) -> Result<bool, StoreError> {
        let tx = c.unchecked_transaction()?;
        let n = tx.execute(
            "DELETE FROM room_members WHERE room = ?1 AND user = ?2",
            params![room, user],
        )?;
        if room != keep {
            tx.execute(
                "DELETE FROM rooms WHERE name = ?1 AND NOT EXISTS
                 (SELECT 1 FROM room_members WHERE room = ?1)",
                [room],
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Sets the topic.
    pub fn set_topic(c: &Connection, room: &str, topic: &str) -> Result<(), StoreError> {
        c.execute(
            "UPDATE rooms SET topic = ?2 WHERE name = ?1",
            params![room, topic],
        )?;
        Ok(())
    }

    /// Records an invitation of `user` to `room`.
    pub fn invite(c: &Connection, room: &str, user: &str) -> Result<(), StoreError> {
        c.execute(
            "INSERT OR IGNORE INTO room_invites (room, user) VALUES (?1, ?2)",
            params![room, user],
        )?;
        Ok(())
    }

    /// Whether `user` holds an invitation to `room`.
    pub fn invited(c: &Connection, room: &str, user: &str) -> Result<bool, StoreError> {
        Ok(c.query_row(
            "SELECT 1 FROM room_invites WHERE room = ?1 AND user = ?2",
            params![room, user],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
    }

    /// Deletes rooms without members, except `keep` (the default room).
    pub fn drop_empty(c: &Connection, keep: &str) -> Result<usize, StoreError> {
        Ok(c.execute(
            "DELETE FROM rooms WHERE name != ?1 AND NOT EXISTS
             (SELECT 1 FROM room_members m WHERE m.room = rooms.name)",
            [keep],
        )?)
    }

    /// Every user's membership of the default room (each login also joins it).
    pub fn join_all_users(c: &Connection, room: &str) -> Result<(), StoreError> {
        c.execute(
            "INSERT OR IGNORE INTO room_members (room, user, joined_at)
             SELECT ?1, name, ?2 FROM users",
            params![room, now_secs()],
        )?;
        Ok(())
    }
}

/// A line to store for devices that are offline.
pub struct OfflineLine<'a> {
    /// The serialized frame, newline included, exactly as it will be delivered.
    pub line: &'a [u8],
    /// (user, device fingerprint) of each offline recipient.
    pub targets: &'a [DeviceTarget],
}

/// What storing one [`OfflineLine`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Users for whom it was stored (each once, in target order).
    pub held: Vec<String>,
    /// Users with a device whose queue was full: not stored for that device.
    pub full: Vec<String>,
}

/// The offline queues: one per device, ordered, capped, expiring.
pub mod offline {
    use super::*;

    fn push_once(v: &mut Vec<String>, user: &str) {
        if !v.iter().any(|u| u == user) {
            v.push(user.to_string());
        }
    }

    /// Stores `lines` in one transaction, each for its targets whose queue holds fewer than
    /// `cap` lines.
    pub fn store(
        c: &Connection,
        lines: &[OfflineLine<'_>],
        cap: usize,
        now_ms: i64,
    ) -> Result<Vec<Stored>, StoreError> {
        let tx = c.unchecked_transaction()?;
        let mut out = Vec::with_capacity(lines.len());
        {
            let mut count = tx.prepare_cached(
                "SELECT COUNT(*) FROM offline_queue WHERE user = ?1 AND device = ?2",
            )?;
            let mut message = tx.prepare_cached(
                "INSERT INTO offline_messages (line, created_ms) VALUES (?1, ?2)",
            )?;
            let mut queue = tx.prepare_cached(
                "INSERT INTO offline_queue (user, device, message) VALUES (?1, ?2, ?3)",
            )?;
            for l in lines {
                let mut result = Stored::default();
                let mut id = None;
                for (user, device) in l.targets {
                    let n: i64 = count.query_row(params![user, &device[..]], |r| r.get(0))?;
                    if n.max(0) as usize >= cap {
                        push_once(&mut result.full, user);
                        continue;
                    }
                    let msg = match id {
                        Some(m) => m,
                        None => {
                            message.execute(params![l.line, now_ms])?;
                            let m = tx.last_insert_rowid();
                            id = Some(m);
                            m
                        }
                    };
                    queue.execute(params![user, &device[..], msg])?;
                    push_once(&mut result.held, user);
                }
                out.push(result);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Up to `limit` lines queued for `user`'s `device` after queue id `after`, oldest
    /// first, skipping lines stored before `not_before_ms` (expired).
    pub fn load(
        c: &Connection,
        user: &str,
        device: &[u8; 32],
        after: i64,
        limit: usize,
        not_before_ms: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let mut stmt = c.prepare_cached(
            "SELECT q.id, m.line FROM offline_queue q JOIN offline_messages m ON m.id = q.message
             WHERE q.user = ?1 AND q.device = ?2 AND q.id > ?3 AND m.created_ms >= ?4
             ORDER BY q.id LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![user, &device[..], after, not_before_ms, limit as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes what `user`'s `device` acknowledged (queue ids up to `upto`); returns how many.
    pub fn ack(
        c: &Connection,
        user: &str,
        device: &[u8; 32],
        upto: i64,
    ) -> Result<usize, StoreError> {
        let tx = c.unchecked_transaction()?;
        let n = tx.execute(
            "DELETE FROM offline_queue WHERE user = ?1 AND device = ?2 AND id <= ?3",
            params![user, &device[..], upto],
        )?;
        drop_orphans(&tx)?;
        tx.commit()?;
        Ok(n)
    }

    /// Deletes lines stored before `before_ms` from every queue; returns how many lines.
    pub fn expire(c: &Connection, before_ms: i64) -> Result<usize, StoreError> {
        Ok(c.execute(
            "DELETE FROM offline_messages WHERE created_ms < ?1",
            [before_ms],
        )?)
    }

    /// Lines stored and queue entries, for status.
    pub fn counts(c: &Connection) -> Result<(u64, u64), StoreError> {
        let lines: i64 = c.query_row("SELECT COUNT(*) FROM offline_messages", [], |r| r.get(0))?;
        let queued: i64 = c.query_row("SELECT COUNT(*) FROM offline_queue", [], |r| r.get(0))?;
        Ok((lines.max(0) as u64, queued.max(0) as u64))
    }

    /// Lines no queue refers to any more (all their devices acknowledged or were removed).
    pub(crate) fn drop_orphans(c: &Connection) -> Result<(), StoreError> {
        c.execute(
            "DELETE FROM offline_messages WHERE NOT EXISTS
             (SELECT 1 FROM offline_queue q WHERE q.message = offline_messages.id)",
            [],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_register_limit_revoke_and_cascade() {
        let s = Store::open_in_memory().unwrap();
        s.run_sync(|c| {
            users::add(c, "alice", "h", false)?;
            let k = |i: u8| [i; 32];
            assert_eq!(
                keys::check_and_register(c, "alice", &k(1), b"spki1", 2048, 2)?,
                KeyCheck::Registered
            );
            assert_eq!(
                keys::check_and_register(c, "alice", &k(1), b"spki1", 2048, 2)?,
                KeyCheck::Known
            );
            assert_eq!(
                keys::check_and_register(c, "alice", &k(2), b"spki2", 3072, 2)?,
                KeyCheck::Registered
            );
            // At the limit of 2: a third key is refused, known ones still work.
            assert_eq!(
                keys::check_and_register(c, "alice", &k(3), b"spki3", 2048, 2)?,
                KeyCheck::TooMany
            );
            assert_eq!(
                keys::check_and_register(c, "alice", &k(2), b"spki2", 3072, 2)?,
                KeyCheck::Known
            );
            assert!(keys::revoke(c, "alice", &k(1))?);
            assert!(!keys::revoke(c, "alice", &k(9))?);
            assert!(!keys::revoke(c, "bob", &k(2))?);
            assert_eq!(
                keys::check_and_register(c, "alice", &k(1), b"spki1", 2048, 2)?,
                KeyCheck::Revoked
            );
            // A revoked key frees its slot.
            assert_eq!(
                keys::check_and_register(c, "alice", &k(3), b"spki3", 2048, 2)?,
                KeyCheck::Registered
            );
            let rows = keys::list(c, Some("alice"))?;
            assert_eq!(rows.len(), 3);
            assert!(
                rows.iter()
                    .any(|r| r.fingerprint == k(1) && r.revoked_at.is_some())
            );
            assert_eq!(keys::list(c, None)?.len(), 3);
            assert!(users::delete(c, "alice")?);
            assert!(keys::list(c, None)?.is_empty());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn users_crud() {
        let s = Store::open_in_memory().unwrap();
        s.run_sync(|c| {
            users::add(c, "alice", "h1", false)?;
            assert!(matches!(
                users::add(c, "alice", "h2", false),
                Err(StoreError::UserExists(_))
            ));
            assert!(users::exists(c, "alice")?);
            assert!(users::set_locked(c, "alice", true)?);
            let cred = users::credentials(c, "alice")?.unwrap();
            assert!(cred.locked && cred.password_hash == "h1");
            assert!(users::set_password(c, "alice", "h3")?);
            assert!(!users::set_password(c, "bob", "h3")?);
            assert_eq!(users::list(c)?.len(), 1);
            assert!(users::delete(c, "alice")?);
            assert!(!users::delete(c, "alice")?);
            assert_eq!(users::count(c)?, 0);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn reopen_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatd.db");
        let s = Store::open(&path).unwrap();
        s.run_sync(|c| users::add(c, "bob", "h", true)).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        let v: i64 = s
            .run_sync(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        assert!(
            s.run_sync(|c| users::credentials(c, "bob"))
                .unwrap()
                .unwrap()
                .admin
        );
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatd.db");
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn offline_queues_store_once_cap_order_ack_expire_and_cascade() {
        let s = Store::open_in_memory().unwrap();
        s.run_sync(|c| {
            for u in ["alice", "bob"] {
                users::add(c, u, "h", false)?;
            }
            let (a, b1, b2) = ([1u8; 32], [2u8; 32], [3u8; 32]);
            keys::check_and_register(c, "alice", &a, b"a", 2048, 4)?;
            keys::check_and_register(c, "bob", &b1, b"b1", 2048, 4)?;
            keys::check_and_register(c, "bob", &b2, b"b2", 2048, 4)?;
            let both = [("bob".to_string(), b1), ("bob".to_string(), b2)];
            let alice = [("alice".to_string(), a)];
            let lines: Vec<String> = (0..4).map(|i| format!("line{i}\n")).collect();
            let batch: Vec<OfflineLine<'_>> = lines
                .iter()
                .map(|l| OfflineLine {
                    line: l.as_bytes(),
                    targets: &both,
                })
                .collect();
            // Cap 3 per device: the fourth line is refused for both of bob's devices.
            let out = offline::store(c, &batch, 3, 1_000)?;
            assert_eq!(out[0].held, ["bob"]);
            assert!(out[2].full.is_empty());
            assert_eq!(
                out[3],
                Stored {
                    held: vec![],
                    full: vec!["bob".into()]
                }
            );
            // A line for two devices is stored once.
            assert_eq!(offline::counts(c)?, (3, 6));
            offline::store(
                c,
                &[OfflineLine {
                    line: b"late\n",
                    targets: &alice,
                }],
                3,
                5_000,
            )?;
            let got = offline::load(c, "bob", &b1, 0, 2, 0)?;
            let texts: Vec<&[u8]> = got.iter().map(|(_, l)| l.as_slice()).collect();
            assert_eq!(texts, [b"line0\n".as_slice(), b"line1\n"]);
            let rest = offline::load(c, "bob", &b1, got[1].0, 10, 0)?;
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].1, b"line2\n");
            // Only bob's device 1 acknowledges: its entries go, the lines stay for device 2.
            assert_eq!(offline::ack(c, "bob", &b1, rest[0].0)?, 3);
            assert!(offline::load(c, "bob", &b1, 0, 10, 0)?.is_empty());
            assert_eq!(offline::counts(c)?, (4, 4));
            // Revoking device 2 drops its queue and the lines nobody needs any more.
            keys::revoke(c, "bob", &b2)?;
            assert_eq!(offline::counts(c)?, (1, 1));
            // Expired lines are neither loaded nor kept.
            assert!(offline::load(c, "alice", &a, 0, 10, 6_000)?.is_empty());
            assert_eq!(offline::load(c, "alice", &a, 0, 10, 5_000)?.len(), 1);
            assert_eq!(offline::expire(c, 6_000)?, 1);
            assert_eq!(offline::counts(c)?, (0, 0));
            // Deleting an account takes its queue along.
            offline::store(
                c,
                &[OfflineLine {
                    line: b"x\n",
                    targets: &alice,
                }],
                3,
                7_000,
            )?;
            users::delete(c, "alice")?;
            assert_eq!(offline::counts(c)?, (0, 0));
            Ok(())
        })
        .unwrap();
    }
}
