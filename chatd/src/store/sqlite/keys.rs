//! SQLite: device-key statements.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::error::StoreError;
use crate::store::time::now_secs;
use crate::store::types::{ActiveKey, KeyCheck, KeyRow};

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
                    tracing::warn!(error = %e, user = ?user, "cannot update a device key's last-seen time");
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

/// Revokes a key and drops what was stored for it and the vouches by or for it; false if `user` has no such key.
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
    super::vouches::drop_key(&tx, user, fingerprint)?;
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
