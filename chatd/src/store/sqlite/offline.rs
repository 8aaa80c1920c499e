//! SQLite: the offline queues, one per device, ordered, capped, expiring.

use rusqlite::{Connection, params};

use crate::store::error::StoreError;
use crate::store::types::{Caps, OfflineLine, PageSize, Stored};

/// Stores `lines` in one transaction, each for its targets whose queue holds fewer than
/// `caps.total` lines, and fewer than `caps.per_sender` of the line's sender.
pub fn store(
    c: &Connection,
    lines: &[OfflineLine],
    caps: Caps,
    now_ms: i64,
) -> Result<Vec<Stored>, StoreError> {
    let tx = c.unchecked_transaction()?;
    let mut out = Vec::with_capacity(lines.len());
    {
        let mut count = tx
            .prepare_cached("SELECT COUNT(*) FROM offline_queue WHERE user = ?1 AND device = ?2")?;
        let mut count_sender = tx.prepare_cached(
            "SELECT COUNT(*) FROM offline_queue WHERE user = ?1 AND device = ?2 AND sender = ?3",
        )?;
        let mut message =
            tx.prepare_cached("INSERT INTO offline_messages (line, created_ms) VALUES (?1, ?2)")?;
        let mut queue = tx.prepare_cached(
            "INSERT INTO offline_queue (user, device, message, sender) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for l in lines {
            let mut result = Stored::default();
            let mut id = None;
            for (user, device) in &l.targets {
                // The total first: a full queue is full for everyone, whoever filled it.
                let n: i64 = count.query_row(params![user, &device[..]], |r| r.get(0))?;
                if n.max(0) as usize >= caps.total {
                    Stored::push_once(&mut result.full, user);
                    continue;
                }
                if let Some(sender) = &l.sender {
                    let n: i64 =
                        count_sender.query_row(params![user, &device[..], sender], |r| r.get(0))?;
                    if n.max(0) as usize >= caps.per_sender {
                        Stored::push_once(&mut result.over_share, user);
                        continue;
                    }
                }
                let msg = match id {
                    Some(m) => m,
                    None => {
                        message.execute(params![&l.line[..], now_ms])?;
                        let m = tx.last_insert_rowid();
                        id = Some(m);
                        m
                    }
                };
                queue.execute(params![user, &device[..], msg, l.sender])?;
                Stored::push_once(&mut result.held, user);
            }
            out.push(result);
        }
    }
    tx.commit()?;
    Ok(out)
}

/// A stored line of a page: the caller's copy of it, or its bytes read from the database.
#[derive(Debug)]
pub enum PageLine<T> {
    /// [`load_page`]'s `reuse` had it; the database's copy was not read.
    Reused(T),
    /// Read from the database.
    Read(Vec<u8>),
}

/// A line of a page: (queue id, message id, line).
pub type PageRow<T> = (i64, i64, PageLine<T>);

/// One page of the lines queued for `user`'s `device` after queue id `after`, oldest first,
/// skipping expired ones (stored before `not_before_ms`): (queue id, message id, line) each,
/// and whether more follow. A line whose message `reuse` returns is not read from the
/// database, so sessions replaying the same messages can share one copy.
#[allow(clippy::too_many_arguments)]
pub fn load_page<T>(
    c: &Connection,
    user: &str,
    device: &[u8; 32],
    after: i64,
    size: PageSize,
    not_before_ms: i64,
    mut reuse: impl FnMut(i64) -> Option<T>,
) -> Result<(Vec<PageRow<T>>, bool), StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT q.id, m.id, length(m.line), m.line FROM offline_queue q
         JOIN offline_messages m ON m.id = q.message
         WHERE q.user = ?1 AND q.device = ?2 AND q.id > ?3 AND m.created_ms >= ?4
         ORDER BY q.id",
    )?;
    let mut rows = stmt.query(params![user, &device[..], after, not_before_ms])?;
    let (mut page, mut bytes) = (Vec::new(), 0usize);
    while let Some(row) = rows.next()? {
        if page.len() >= size.lines.max(1) || (!page.is_empty() && bytes >= size.bytes) {
            // A row past the page: more follow (its line is not read).
            return Ok((page, true));
        }
        let (queue_id, message): (i64, i64) = (row.get(0)?, row.get(1)?);
        let len: i64 = row.get(2)?;
        bytes = bytes.saturating_add(usize::try_from(len).unwrap_or(0));
        let line = match reuse(message) {
            Some(t) => PageLine::Reused(t),
            // Only now is the line itself read.
            None => PageLine::Read(row.get(3)?),
        };
        page.push((queue_id, message, line));
    }
    Ok((page, false))
}

/// Deletes what `user`'s `device` acknowledged (queue ids up to `upto`); returns how many.
pub fn ack(c: &Connection, user: &str, device: &[u8; 32], upto: i64) -> Result<usize, StoreError> {
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
