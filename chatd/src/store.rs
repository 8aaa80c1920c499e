//! Persistent state in SQLite: accounts and their device public keys.
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
    pub fn delete(c: &Connection, name: &str) -> Result<bool, StoreError> {
        Ok(c.execute("DELETE FROM users WHERE name = ?1", [name])? > 0)
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

    /// Revokes a key; false if `user` has no such key. Revoking twice keeps the first time.
    pub fn revoke(c: &Connection, user: &str, fingerprint: &[u8; 32]) -> Result<bool, StoreError> {
        let n = c.execute(
            "UPDATE device_keys SET revoked_at = COALESCE(revoked_at, ?3)
             WHERE user = ?1 AND fingerprint = ?2",
            params![user, &fingerprint[..], now_secs()],
        )?;
        Ok(n > 0)
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
}
