//! SQLite: account statements, free functions over a connection so they compose in one
//! transaction.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::error::StoreError;
use crate::store::time::now_secs;
use crate::store::types::{Credentials, UserRow};

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

/// Bans (until `until`, seconds since the epoch) or, with None, unbans; false if no such
/// account.
pub fn set_ban(c: &Connection, name: &str, until: Option<i64>) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE users SET banned_until = ?2, updated_at = ?3 WHERE name = ?1",
        params![name, until, now_secs()],
    )? > 0)
}

/// What login needs, or None for an unknown user.
pub fn credentials(c: &Connection, name: &str) -> Result<Option<Credentials>, StoreError> {
    Ok(c.query_row(
        "SELECT password_hash, locked, admin, banned_until FROM users WHERE name = ?1",
        [name],
        |r| {
            Ok(Credentials {
                password_hash: r.get(0)?,
                locked: r.get(1)?,
                admin: r.get(2)?,
                banned_until: r.get(3)?,
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
        c.prepare("SELECT name, admin, locked, created_at, banned_until FROM users ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(UserRow {
            name: r.get(0)?,
            admin: r.get(1)?,
            locked: r.get(2)?,
            created_at: r.get::<_, i64>(3)?.max(0) as u64,
            banned_until: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Number of accounts.
pub fn count(c: &Connection) -> Result<usize, StoreError> {
    let n: i64 = c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
    Ok(n.max(0) as usize)
}
