//! Stored lines being replayed, held once however many sessions replay them.
//!
//! A message for all of an account's devices is stored once (one `offline_messages` row
//! queued for each device). Without this, each replaying session read its own copy, and 16
//! sessions of one account that did not read held 16 copies of the same backlog (332 MiB for
//! 970 stored 16 KiB lines). Here a session that pages in a message another session still
//! holds gets the same bytes; the entry lives only as long as some queue or page holds it (a
//! `Weak`), so nothing is cached past its use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

/// Entries kept at least before dead ones are swept out.
const SWEEP_AT_LEAST: usize = 256;

#[derive(Default)]
struct Table {
    lines: HashMap<i64, Weak<Vec<u8>>>,
    /// Sweep dead entries when the table reaches this size (twice the live ones at the last
    /// sweep), so sweeping costs O(1) per insert.
    sweep_at: usize,
}

/// A shared line's bytes. In an `Arc<Vec<u8>>`, not an `Arc<[u8]>`: a `Weak` keeps the
/// `Arc`'s allocation alive, and the table's `Weak`s must not keep the bytes.
struct Line(Arc<Vec<u8>>);

impl AsRef<[u8]> for Line {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Stored messages some session holds, by message id.
#[derive(Default)]
pub struct StoredLines {
    table: Mutex<Table>,
}

impl StoredLines {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding it leaves a valid map.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes of stored message `message` if a session still holds them.
    pub fn get(&self, message: i64) -> Option<Bytes> {
        let line = self.lock().lines.get(&message)?.upgrade()?;
        Some(Bytes::from_owner(Line(line)))
    }

    /// Shares `line`, just read as stored message `message`: the bytes another session
    /// shared meanwhile, or these.
    pub fn share(&self, message: i64, line: Vec<u8>) -> Bytes {
        let mut t = self.lock();
        if let Some(held) = t.lines.get(&message).and_then(Weak::upgrade) {
            return Bytes::from_owner(Line(held));
        }
        let line = Arc::new(line);
        t.lines.insert(message, Arc::downgrade(&line));
        if t.lines.len() >= t.sweep_at {
            t.lines.retain(|_, w| w.strong_count() > 0);
            t.sweep_at = t.lines.len().saturating_mul(2).max(SWEEP_AT_LEAST);
        }
        Bytes::from_owner(Line(line))
    }

    /// Entries in the table, live or not yet swept.
    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_while_held_and_none_after() {
        let t = StoredLines::new();
        assert!(t.get(1).is_none());
        let a = t.share(1, b"line\n".to_vec());
        let b = t.get(1).unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes");
        let c = t.share(1, b"line\n".to_vec());
        assert_eq!(a.as_ptr(), c.as_ptr(), "a second read is dropped");
        drop((a, b, c));
        assert!(t.get(1).is_none(), "nobody holds it: gone");
    }

    #[test]
    fn dead_entries_are_swept() {
        let t = StoredLines::new();
        for i in 0..10_000 {
            drop(t.share(i, vec![0; 8]));
        }
        assert!(t.len() <= SWEEP_AT_LEAST, "{}", t.len());
        let kept: Vec<Bytes> = (0..1000).map(|i| t.share(i, vec![1; 8])).collect();
        assert!(t.len() >= 1000);
        assert!(t.get(999).is_some());
        drop(kept);
    }
}
