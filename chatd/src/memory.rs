//! Gives memory chatd freed back to the system after a burst, so RSS comes back near its
//! baseline once an attack (or any peak) is over.
//!
//! glibc's malloc keeps freed memory in its arenas, one per thread that allocated (tokio's
//! workers and the blocking pool), and returns only the top of the main heap by itself: 16
//! sessions replaying a backlog left 243 MB resident after they closed. Every
//! [`CHECK_EVERY`] this task compares the anonymous resident memory with what the allocator
//! says is in use; when the difference (freed pages still resident) has grown by [`SLACK`]
//! since the last look, it calls `malloc_trim` (crate `chatd-heap`), which releases the free
//! pages of every arena. A check costs a read of /proc and one `mallinfo2`; a trim takes each
//! arena's lock in turn for about a millisecond, so it runs on the blocking pool, and only
//! after memory was freed, not on every tick. Other allocators need none of this, and the
//! calls do nothing there.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often resident and used memory are compared.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Growth of freed-but-resident memory that is worth a trim.
pub const SLACK: usize = 2 * 1024 * 1024;

/// Anonymous resident memory (heap, stacks) in bytes, from /proc/self/status; None if it
/// cannot be read (no /proc).
pub fn rss_anon() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

/// Resident memory the program does not use: anonymous RSS less what the allocator has in
/// use (stacks and the allocator's own overhead are part of it, and stay about the same).
fn idle() -> Option<usize> {
    let rss = rss_anon()?;
    Some(rss.saturating_sub(chatd_heap::usage().in_use))
}

/// Decides when to trim: when idle memory grew by [`SLACK`] over the lowest seen since the
/// last trim (or what the last trim left: fragments it cannot release do not trigger it again).
#[derive(Debug, Default)]
pub struct Trigger {
    mark: Option<usize>,
}

impl Trigger {
    /// True when `idle` bytes warrant a trim now.
    pub fn check(&mut self, idle: usize) -> bool {
        let mark = self.mark.map_or(idle, |m| m.min(idle));
        self.mark = Some(mark);
        idle > mark.saturating_add(SLACK)
    }

    /// What a trim left: the new mark.
    pub fn trimmed(&mut self, idle: usize) {
        self.mark = Some(idle);
    }
}

/// Runs until `shutdown`: every [`CHECK_EVERY`], gives freed memory back if enough piled up.
pub async fn trim_loop(shutdown: CancellationToken) {
    if idle().is_none() {
        tracing::debug!("no /proc/self/status: freed memory is left to the allocator");
        return;
    }
    let mut trigger = Trigger::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(before) = idle() else { return };
        if !trigger.check(before) {
            continue;
        }
        let trimmed = tokio::task::spawn_blocking(|| {
            chatd_heap::release();
            idle()
        })
        .await;
        if let Ok(Some(after)) = trimmed {
            tracing::debug!(
                released_kib = before.saturating_sub(after) / 1024,
                idle_kib = after / 1024,
                "gave freed memory back to the system"
            );
            trigger.trimmed(after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_idle_memory_grew_by_the_slack_and_not_again_for_what_stays() {
        let mut t = Trigger::default();
        assert!(!t.check(10 << 20), "the first look sets the mark");
        assert!(!t.check((10 << 20) + SLACK), "exactly the slack: not yet");
        assert!(t.check((10 << 20) + SLACK + 1));
        // The trim could not release everything: what it left is the new mark.
        t.trimmed(12 << 20);
        assert!(!t.check(12 << 20));
        assert!(!t.check((12 << 20) + SLACK));
        // Lower later (reused): the mark follows it down.
        assert!(!t.check(8 << 20));
        assert!(t.check((8 << 20) + SLACK + 1));
    }

    #[test]
    fn resident_memory_is_read() {
        assert!(rss_anon().is_some_and(|b| b > 0));
    }
}
