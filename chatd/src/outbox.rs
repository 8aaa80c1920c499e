//! A session's outbound queue of serialized lines.
//!
//! Many producers push (the hub, for every room message to every member session; the session
//! itself), one writer takes. A push is a short lock and a `Vec` push; the writer takes
//! everything queued with one lock and writes it with one TLS write. A room message is pushed
//! to hundreds of queues, so the per-push cost is what fan-out pays per delivery: a channel
//! (a semaphore permit, a linked block list, a lock-free slot per line) cost a third of
//! chatd's CPU in the fan-out benchmark (docs/PERFORMANCE.md, "Why it is fast").
//!
//! The queue is bounded in frames (`[limits] outbound_queue`) and in bytes
//! (`outbound_queue_bytes`), and a push never waits: a full queue is the caller's signal that
//! the client is too slow. An entry may hold several frames (a run of envelopes routed
//! together, see crate::hub) and counts as that many. The byte count also covers the batch the
//! writer took and is still writing (until its next take), so a client that stops reading pins
//! at most the byte limit plus one entry, not a full queue behind a full batch; counting it
//! costs the push one addition and the take nothing more than it did. Only the session's own
//! replay of stored lines waits for room, with [`Outbox::send`] and [`Outbox::wait_room`].
//!
//! While the queue is empty it keeps at most a few slots (128 bytes), so an idle connection
//! costs next to nothing here, and a message now and then allocates nothing.

use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

/// Why a line was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue holds its limit of lines: the client is not keeping up.
    #[error("outbound queue full")]
    Full,
    /// The session is finishing or its writer is gone: nothing more will be written.
    #[error("outbound queue closed")]
    Closed,
}

/// Queue slots an idle connection keeps (a `Bytes` each, 32 bytes): as many as a first
/// allocation makes, so one message at a time never allocates.
const IDLE_LINES: usize = 4;

#[derive(Default)]
struct State {
    lines: Vec<Bytes>,
    /// Frames in `lines` (an entry holds one or more).
    frames: usize,
    /// Bytes in `lines`.
    bytes: usize,
    /// Bytes the writer took at its last take and may still be writing: freed when it comes
    /// back for more (it takes only once the previous batch is written).
    in_flight: usize,
    /// No more lines are taken in: [`Outbox::finish`] was called or the writer is gone.
    closed: bool,
    /// Lines were queued quietly ([`Outbox::push_quiet`]) and nobody has woken the writer
    /// for them yet.
    unwoken: bool,
    /// A push found the queue full since the last take, so someone may wait for room: the
    /// next take wakes them. Set in the same critical section as the full check, so a
    /// waiter is never missed; without it every take paid for a wake-up of nobody.
    space_wanted: bool,
}

/// A bounded queue of lines for one connection's writer.
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer when the queue stops being empty, or closes. There is one writer, so
    /// a single waker slot does (two atomic operations, where a `Notify` locks its waiter list
    /// on both sides for every message a quiet session gets).
    ready: AtomicWaker,
    /// Wakes [`Outbox::send`] and [`Outbox::wait_room`] when the writer took lines.
    space: Notify,
    cap: usize,
    /// Most bytes queued and in flight together (see the module doc).
    cap_bytes: usize,
}

impl Outbox {
    /// An empty queue that holds at most `cap` frames (at least 1), however many bytes.
    pub fn new(cap: usize) -> Self {
        Self::with_bytes(cap, usize::MAX)
    }

    /// An empty queue that holds at most `cap` frames and `cap_bytes` bytes (counting what the
    /// writer is still writing); an empty queue takes any one entry, however large.
    pub fn with_bytes(cap: usize, cap_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            ready: AtomicWaker::new(),
            space: Notify::new(),
            cap: cap.max(1),
            cap_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves a valid Vec and flag.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `line` (one frame) unless the queue is full or closed; never waits.
    pub fn push(&self, line: Bytes) -> Result<(), PushError> {
        self.push_frames(line, 1)
    }

    /// Queues `entry`, which holds `frames` frames, unless that would take the queue past its
    /// limits or it is closed; never waits. An empty queue takes any entry, so an entry larger
    /// than the limit is not refused forever.
    pub fn push_frames(&self, entry: Bytes, frames: usize) -> Result<(), PushError> {
        let mut s = self.enqueue(entry, frames)?;
        // The writer empties the queue each time it takes, so only the first line after
        // that needs to wake it (a permit is kept if it is not waiting yet), or the first
        // one after lines queued quietly.
        let wake = s.lines.len() == 1 || s.unwoken;
        s.unwoken = false;
        drop(s);
        if wake {
            self.ready.wake();
        }
        Ok(())
    }

    /// Queues `entry` like [`Outbox::push_frames`] but does not wake a sleeping writer: it
    /// goes out with the next line that does, or at [`Outbox::flush_quiet`]. Ok(true) when
    /// it waits for one of those.
    pub fn push_quiet(&self, entry: Bytes, frames: usize) -> Result<bool, PushError> {
        let mut s = self.enqueue(entry, frames)?;
        // Behind other lines, the writer was woken for those and takes this one too.
        if s.lines.len() == 1 {
            s.unwoken = true;
        }
        Ok(s.unwoken)
    }

    /// Queues `entry` (`frames` frames) unless that would take the queue past its limit or
    /// it is closed; the lock stays held for the caller to decide about waking the writer.
    fn enqueue(&self, entry: Bytes, frames: usize) -> Result<MutexGuard<'_, State>, PushError> {
        let mut s = self.lock();
        if s.closed {
            return Err(PushError::Closed);
        }
        let bytes = s.bytes.saturating_add(entry.len());
        if s.frames > 0
            && (s.frames.saturating_add(frames) > self.cap
                || bytes.saturating_add(s.in_flight) > self.cap_bytes)
        {
            s.space_wanted = true;
            return Err(PushError::Full);
        }
        s.lines.push(entry);
        s.frames = s.frames.saturating_add(frames);
        s.bytes = bytes;
        Ok(s)
    }

    /// Queues `entry` (`frames` frames) if it fits now: Ok(false), and nothing queued, when the
    /// queue is full. For lines that may wait elsewhere (held during a replay).
    pub fn push_if_room(&self, entry: Bytes, frames: usize) -> Result<bool, PushError> {
        match self.push_frames(entry, frames) {
            Ok(()) => Ok(true),
            Err(PushError::Full) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wakes the writer for lines queued quietly, if any still wait.
    pub fn flush_quiet(&self) {
        let wake = std::mem::take(&mut self.lock().unwoken);
        if wake {
            self.ready.wake();
        }
    }

    /// Queues `line`, waiting for room while the queue is full; fails once it is closed.
    pub async fn send(&self, line: Bytes) -> Result<(), PushError> {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            // Registered before the attempt, so a take in between is not missed.
            space.as_mut().enable();
            match self.push(line.clone()) {
                Err(PushError::Full) => space.await,
                done => return done,
            }
        }
    }

    /// Frames that can be pushed now without filling the queue.
    pub fn free(&self) -> usize {
        let s = self.lock();
        if s.closed {
            0
        } else {
            self.cap - s.frames.min(self.cap)
        }
    }

    /// Bytes queued and in flight (see the module doc).
    pub fn bytes(&self) -> usize {
        let s = self.lock();
        s.bytes.saturating_add(s.in_flight)
    }

    /// Waits until the queue has room for a frame of `bytes` bytes (an empty queue always
    /// has: `usize::MAX` waits for the writer's next take); fails once the queue is closed.
    pub async fn wait_room(&self, bytes: usize) -> Result<(), PushError> {
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut s = self.lock();
                if s.closed {
                    return Err(PushError::Closed);
                }
                let total = s.bytes.saturating_add(s.in_flight).saturating_add(bytes);
                if s.frames == 0 || (s.frames < self.cap && total <= self.cap_bytes) {
                    return Ok(());
                }
                s.space_wanted = true;
            }
            space.await;
        }
    }

    /// Takes no more lines; the writer writes what is queued and then ends.
    pub fn finish(&self) {
        self.lock().closed = true;
        self.ready.wake();
        self.space.notify_waiters();
    }

    /// The writer is gone: drops what is queued and refuses everything from now on.
    pub fn abandon(&self) {
        let dropped = {
            let mut s = self.lock();
            s.closed = true;
            s.frames = 0;
            s.bytes = 0;
            s.in_flight = 0;
            std::mem::take(&mut s.lines)
        };
        drop(dropped);
        self.space.notify_waiters();
    }

    /// For the writer: waits for lines and moves all of them into `batch` (which must be
    /// empty). False when the queue is closed and nothing is left to write.
    pub async fn take(&self, batch: &mut Vec<Bytes>) -> bool {
        debug_assert!(batch.is_empty());
        std::future::poll_fn(|cx| {
            // Registered before looking, so a push that comes after the look wakes us.
            self.ready.register(cx.waker());
            let mut s = self.lock();
            if !s.lines.is_empty() {
                // The writer's emptied Vec goes back in, so a busy queue reuses its
                // allocation instead of growing a new one each time.
                std::mem::swap(&mut s.lines, batch);
                s.frames = 0;
                // The previous batch is written: what is taken now is what may be pending.
                s.in_flight = std::mem::take(&mut s.bytes);
                s.unwoken = false;
                let wanted = std::mem::take(&mut s.space_wanted);
                drop(s);
                if wanted {
                    self.space.notify_waiters();
                }
                return Poll::Ready(true);
            }
            if s.closed {
                return Poll::Ready(false);
            }
            // Everything taken before is written; a sender waiting on those bytes may go on.
            s.in_flight = 0;
            if std::mem::take(&mut s.space_wanted) {
                self.space.notify_waiters();
            }
            // About to sleep: the writer's emptied buffer goes back to the queue, kept only
            // while small. A paced room (a message now and then to each member) would
            // otherwise allocate on every push and free on every take, on two different
            // threads; an idle connection keeps at most IDLE_LINES slots. (After a wake-up
            // with nothing queued, `batch` is already empty: keep the better of the two.)
            let spare = std::mem::take(batch);
            if s.lines.capacity() > IDLE_LINES {
                s.lines = Vec::new();
            }
            if spare.capacity() <= IDLE_LINES && spare.capacity() > s.lines.capacity() {
                s.lines = spare;
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::Arc;

    fn line(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test]
    async fn full_at_the_cap_and_free_again_after_a_take() {
        let q = Outbox::new(2);
        assert_eq!(q.free(), 2);
        q.push(line("a")).unwrap();
        q.push(line("b")).unwrap();
        assert_eq!(q.push(line("c")), Err(PushError::Full));
        assert_eq!(q.free(), 0);
        let mut batch = Vec::new();
        assert!(q.take(&mut batch).await);
        assert_eq!(batch, vec![line("a"), line("b")]);
        assert_eq!(q.free(), 2);
        q.push(line("c")).unwrap();
    }

    #[tokio::test]
    async fn an_entry_counts_as_its_frames_and_an_empty_queue_takes_any() {
        let q = Outbox::new(4);
        q.push_frames(line("abc"), 3).unwrap();
        assert_eq!(q.free(), 1);
        assert_eq!(q.push_frames(line("de"), 2), Err(PushError::Full));
        q.push(line("d")).unwrap();
        assert_eq!(q.free(), 0);
        let mut batch = Vec::new();
        assert!(q.take(&mut batch).await);
        assert_eq!(batch, vec![line("abc"), line("d")]);
        assert_eq!(q.free(), 4);
        // Larger than the whole limit: refused only while something else is queued.
        q.push_frames(line("abcdefgh"), 8).unwrap();
        assert_eq!(q.free(), 0);
        assert_eq!(q.push(line("i")), Err(PushError::Full));
    }

    #[tokio::test]
    async fn bytes_count_until_the_writer_comes_back_and_an_empty_queue_takes_any() {
        // 10 bytes at most, frames plenty.
        let q = Outbox::with_bytes(100, 10);
        q.push(line("aaaa")).unwrap();
        q.push(line("bbbb")).unwrap();
        assert_eq!(q.push(line("ccc")), Err(PushError::Full), "8 + 3 > 10");
        q.push(line("cc")).unwrap();
        assert_eq!(q.bytes(), 10, "exactly at the limit");
        let mut batch = Vec::new();
        assert!(q.take(&mut batch).await);
        // Taken but maybe not written: still counted, yet the empty queue takes one entry.
        assert_eq!(q.bytes(), 10);
        q.push(line("dddddddddddd")).unwrap();
        assert_eq!(q.push(line("e")), Err(PushError::Full));
        assert_eq!(q.push_if_room(line("e"), 1), Ok(false));
        // The writer comes back for more: the first batch is written, the second in flight.
        batch.clear();
        assert!(q.take(&mut batch).await);
        assert_eq!(q.bytes(), 12);
        q.push(line("e")).unwrap();
        batch.clear();
        assert!(q.take(&mut batch).await);
        // Nothing queued when the writer looks again: nothing in flight either.
        batch.clear();
        assert!(q.take(&mut batch).now_or_never().is_none());
        assert_eq!(q.bytes(), 0);
    }

    #[tokio::test]
    async fn room_for_a_page_waits_for_the_writer() {
        let q = Arc::new(Outbox::with_bytes(100, 10));
        q.push(line("aaaaaa")).unwrap();
        assert_eq!(q.wait_room(4).now_or_never(), Some(Ok(())));
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.wait_room(5).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "6 + 5 > 10");
        let mut batch = Vec::new();
        assert!(q.take(&mut batch).await);
        assert_eq!(waiter.await.unwrap(), Ok(()), "an empty queue has room");
    }

    #[tokio::test]
    async fn a_quiet_line_waits_for_the_next_wake_up_or_a_flush() {
        let q = Arc::new(Outbox::new(8));
        let (took, mut taken) = tokio::sync::mpsc::unbounded_channel();
        let writer = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                let mut batch = Vec::new();
                while q.take(&mut batch).await {
                    let _ = took.send(std::mem::take(&mut batch));
                }
            })
        };
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert_eq!(q.push_quiet(line("p1"), 1), Ok(true));
        assert_eq!(q.push_quiet(line("p2"), 1), Ok(true), "still waiting");
        settle().await;
        assert!(taken.try_recv().is_err(), "nobody woke the writer");
        // A line that wakes the writer takes the quiet ones along, in order.
        q.push(line("m1")).unwrap();
        assert_eq!(
            taken.recv().await,
            Some(vec![line("p1"), line("p2"), line("m1")])
        );
        // Or the flush does.
        assert_eq!(q.push_quiet(line("p3"), 1), Ok(true));
        settle().await;
        assert!(taken.try_recv().is_err());
        q.flush_quiet();
        assert_eq!(taken.recv().await, Some(vec![line("p3")]));
        // Behind a line the writer was woken for, a quiet one does not wait.
        q.push(line("m2")).unwrap();
        assert_eq!(q.push_quiet(line("p4"), 1), Ok(false));
        assert_eq!(taken.recv().await, Some(vec![line("m2"), line("p4")]));
        q.finish();
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_push_and_ends_after_finish_once_drained() {
        let q = Arc::new(Outbox::new(8));
        let writer = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                let mut all = Vec::new();
                let mut batch = Vec::new();
                while q.take(&mut batch).await {
                    all.append(&mut batch);
                }
                all
            })
        };
        tokio::task::yield_now().await;
        q.push(line("1")).unwrap();
        tokio::task::yield_now().await;
        q.push(line("2")).unwrap();
        q.finish();
        assert_eq!(q.push(line("3")), Err(PushError::Closed));
        assert_eq!(writer.await.unwrap(), vec![line("1"), line("2")]);
    }

    #[tokio::test]
    async fn send_waits_for_room_and_fails_when_abandoned() {
        let q = Arc::new(Outbox::new(1));
        q.push(line("a")).unwrap();
        let sender = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.send(line("b")).await })
        };
        tokio::task::yield_now().await;
        assert!(!sender.is_finished(), "waits while full");
        let mut batch = Vec::new();
        assert!(q.take(&mut batch).await);
        assert_eq!(sender.await.unwrap(), Ok(()));

        let blocked = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.send(line("c")).await })
        };
        tokio::task::yield_now().await;
        q.abandon();
        assert_eq!(blocked.await.unwrap(), Err(PushError::Closed));
        assert_eq!(q.wait_room(0).await, Err(PushError::Closed));
        assert_eq!(q.free(), 0);
    }

    #[tokio::test]
    async fn every_waiter_for_room_wakes_on_the_next_take() {
        let q = Arc::new(Outbox::new(1));
        q.push(line("a")).unwrap();
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.wait_room(0).await })
        };
        let sender = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.send(line("b")).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished() && !sender.is_finished());
        let mut batch = Vec::new();
        assert!(q.take(&mut batch).await);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(sender.await.unwrap(), Ok(()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sender_at_the_cap_never_misses_a_take() {
        // Queue of one line, sender and writer on two threads: a lost wake-up hangs here.
        const LINES: usize = 20_000;
        let q = Arc::new(Outbox::new(1));
        let writer = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                let (mut batch, mut n) = (Vec::new(), 0);
                while q.take(&mut batch).await {
                    n += batch.len();
                    batch.clear();
                }
                n
            })
        };
        let sending = async {
            for _ in 0..LINES {
                q.send(line("x")).await.unwrap();
            }
            q.finish();
            writer.await.unwrap()
        };
        let taken = tokio::time::timeout(std::time::Duration::from_secs(60), sending).await;
        assert_eq!(taken.ok(), Some(LINES));
    }

    #[tokio::test]
    async fn an_idle_queue_keeps_no_large_allocation() {
        let q = Arc::new(Outbox::new(1024));
        for _ in 0..100 {
            q.push(line("x")).unwrap();
        }
        let mut batch = Vec::new();
        assert!(q.take(&mut batch).await);
        batch.clear();
        let writer = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                let mut batch = batch;
                q.take(&mut batch).await;
                batch.capacity()
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(q.lock().lines.capacity(), 0, "a burst's buffer is freed");
        q.finish();
        assert_eq!(writer.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn one_line_at_a_time_reuses_one_small_buffer() {
        let q = Arc::new(Outbox::new(1024));
        let (took, mut taken) = tokio::sync::mpsc::unbounded_channel();
        let writer = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                let mut batch = Vec::new();
                while q.take(&mut batch).await {
                    let _ = took.send(batch.len());
                    batch.clear();
                }
                batch.capacity()
            })
        };
        let mut buffers = std::collections::HashSet::new();
        for _ in 0..10 {
            q.push(line("x")).unwrap();
            assert_eq!(taken.recv().await, Some(1));
            // Let the writer find the queue empty and go to sleep.
            tokio::task::yield_now().await;
            let s = q.lock();
            assert!(s.lines.is_empty());
            assert!((1..=IDLE_LINES).contains(&s.lines.capacity()));
            buffers.insert(s.lines.as_ptr() as usize);
        }
        assert_eq!(
            buffers.len(),
            1,
            "the same buffer every time: no allocation per line"
        );
        q.finish();
        assert_eq!(
            writer.await.unwrap(),
            0,
            "the writer keeps none while asleep"
        );
    }
}
