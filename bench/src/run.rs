//! The state every client of one run shares: what each receiver expects, when each message
//! was sent, how far every receiver has got (for the send window), and the stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// State every client task of one run shares.
pub struct Run {
    /// Origin of every timestamp in [`Run::sent_ns`].
    pub origin: Instant,
    /// Messages each receiver should get.
    pub expected: u64,
    /// Number of senders (sender ids are `0..senders`).
    pub senders: usize,
    /// Receivers that got everything.
    pub complete: AtomicUsize,
    /// Receivers that stopped early (bye, error, end of stream).
    pub ended: AtomicUsize,
    /// Nanoseconds since `origin` when the last receiver completed.
    pub last_complete_ns: AtomicU64,
    /// Receivers (every logged-in client).
    pub receivers: usize,
    /// Per sender, a ring of per-sequence-number delivery counts (slot `seq % len`); empty
    /// without a send window.
    pub acks: Vec<Vec<AtomicUsize>>,
    /// Per sender: every message up to this sequence number reached every receiver.
    pub delivered_through: Vec<AtomicU64>,
    /// Per sender: woken when `delivered_through` moves or a receiver ends.
    pub progress: Vec<Notify>,
    /// Per sender and chain index: when it was written, nanoseconds since `origin` (0: not
    /// yet). The send time cannot travel in the message any more (it is encrypted), so the
    /// in-process senders publish it here for the receivers.
    pub sent_ns: Vec<Vec<AtomicU64>>,
    /// Login-storm mode: messages from this chain index on were sent during the storm, and
    /// receivers keep their latency apart from the quiet phase's. None: one phase.
    pub storm_from: Option<u32>,
    /// Tells readers and senders to stop; private, so that only [`Run::finish`] cancels it
    /// (receivers read [`Run::stopping`], which it sets first).
    stop: CancellationToken,
    /// Set by [`Run::finish`] just before `stop` is cancelled: receivers read this, not the
    /// token, on every read.
    stopping: AtomicBool,
}

impl Run {
    /// Shared state for `receivers` clients each expecting `expected` messages from `senders`
    /// senders of `messages` messages; a send window needs a ring of `window + 1` counters.
    /// With `storm_from`, latency is kept per phase (see [`Run::storm_from`]).
    pub fn new(
        expected: u64,
        senders: usize,
        messages: usize,
        receivers: usize,
        window: Option<u64>,
        storm_from: Option<u32>,
    ) -> Arc<Run> {
        let ring = window.map_or(0, |w| usize::try_from(w).unwrap_or(usize::MAX - 1) + 1);
        Arc::new(Run {
            origin: Instant::now(),
            expected,
            senders,
            complete: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            last_complete_ns: AtomicU64::new(0),
            receivers,
            acks: (0..senders)
                .map(|_| (0..ring).map(|_| AtomicUsize::new(0)).collect())
                .collect(),
            delivered_through: (0..senders).map(|_| AtomicU64::new(0)).collect(),
            progress: (0..senders).map(|_| Notify::new()).collect(),
            sent_ns: (0..senders)
                .map(|_| (0..messages).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            storm_from,
            stop: CancellationToken::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Stops the run: readers return their stats, senders and window waits end.
    pub fn finish(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.cancel();
    }

    /// Whether [`Run::finish`] was called.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// A token cancelled by [`Run::finish`], for a reader to be woken by (it then reads
    /// [`Run::stopping`]).
    pub(crate) fn stop_signal(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Counts `count` deliveries of `seq` from `sender` for the send window.
    pub(crate) fn ack(&self, sender: usize, seq: u64, count: usize) {
        let Some(ring) = self.acks.get(sender).filter(|r| !r.is_empty()) else {
            return;
        };
        let slot = usize::try_from(seq % ring.len() as u64).unwrap_or(0);
        let before = ring[slot].fetch_add(count, Ordering::AcqRel);
        if before < self.receivers && before + count >= self.receivers {
            // Every session gets one sender's messages in order, so sequence numbers
            // complete in order too.
            if let (Some(through), Some(p)) = (
                self.delivered_through.get(sender),
                self.progress.get(sender),
            ) {
                through.fetch_max(seq, Ordering::AcqRel);
                p.notify_one();
            }
        }
    }

    /// Waits until `sender` may send `seq` under `window`: every message up to `seq - window`
    /// reached every receiver (or some receiver ended, which ends flow control).
    pub(crate) async fn wait_window(&self, sender: usize, seq: u64, window: u64) {
        let (Some(ring), Some(through), Some(progress)) = (
            self.acks.get(sender),
            self.delivered_through.get(sender),
            self.progress.get(sender),
        ) else {
            return;
        };
        loop {
            let notified = progress.notified();
            if seq <= through.load(Ordering::Acquire) + window
                || self.ended.load(Ordering::Acquire) > 0
            {
                break;
            }
            tokio::select! {
                () = notified => {}
                () = self.stop.cancelled() => return,
            }
        }
        // The slot last held seq - len <= seq - window, which every receiver has counted.
        if !ring.is_empty() {
            let slot = usize::try_from(seq % ring.len() as u64).unwrap_or(0);
            ring[slot].store(0, Ordering::Release);
        }
    }

    /// Tells the run that a receiver stopped reading before the end (a `bye`, an error, the
    /// end of the stream): the run stops waiting for it, and so do senders in a send window.
    pub(crate) fn receiver_ended(&self) {
        self.ended.fetch_add(1, Ordering::AcqRel);
        for p in &self.progress {
            p.notify_one();
        }
    }

    /// Nanoseconds since `origin`.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
