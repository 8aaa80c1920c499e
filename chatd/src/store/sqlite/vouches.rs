//! SQLite: device vouches: one row per (vouched key, voucher key) of a user, the latest kept; deleted
//! with either key (revocation here, account deletion by cascade).

use rusqlite::{Connection, params};

use crate::store::error::StoreError;
use crate::store::time::now_secs;
use crate::store::types::VouchRow;

/// Stores `data`, `user`'s vouch by `voucher` for `vouched`, replacing an earlier one by the
/// same voucher. False (nothing stored) unless both keys are registered and unrevoked: a key
/// revoked since the session checked it gets no vouch.
pub fn put(
    c: &Connection,
    user: &str,
    vouched: &[u8; 32],
    voucher: &[u8; 32],
    data: &[u8],
) -> Result<bool, StoreError> {
    let n = c.execute(
        "INSERT INTO device_vouches (user, vouched, voucher, data, created_at)
         SELECT ?1, ?2, ?3, ?4, ?5
         WHERE (SELECT COUNT(*) FROM device_keys WHERE user = ?1 AND revoked_at IS NULL
                AND fingerprint IN (?2, ?3)) = 2
         ON CONFLICT (user, vouched, voucher) DO UPDATE SET data = ?4, created_at = ?5",
        params![user, &vouched[..], &voucher[..], data, now_secs()],
    )?;
    Ok(n > 0)
}

/// Deletes every vouch by or for `user`'s key `fingerprint` (inside the revocation).
pub(super) fn drop_key(
    c: &Connection,
    user: &str,
    fingerprint: &[u8; 32],
) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM device_vouches WHERE user = ?1 AND (vouched = ?2 OR voucher = ?2)",
        params![user, &fingerprint[..]],
    )?;
    Ok(())
}

/// Every stored vouch, oldest first.
pub fn all(c: &Connection) -> Result<Vec<VouchRow>, StoreError> {
    let mut stmt = c.prepare(
        "SELECT user, vouched, voucher, data FROM device_vouches ORDER BY created_at, rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (user, vouched, voucher, data) = row?;
        // Written only by put, always 32 bytes; skip a damaged row.
        if let (Ok(vouched), Ok(voucher)) = (
            <[u8; 32]>::try_from(vouched.as_slice()),
            <[u8; 32]>::try_from(voucher.as_slice()),
        ) {
            out.push((user, vouched, voucher, data));
        }
    }
    Ok(out)
}
