//! The offline writer: stores lines for devices that are offline, in the order the hub
//! routed them, and tells each sender what happened.
//!
//! One task owns all offline writes, so jobs commit in hub order and a single number (the
//! last committed job, published on a watch channel) tells a logging-in session when every
//! line routed before its registration is in the database. Jobs that arrive together are
//! stored in one transaction. A sender hears `held` only after the commit: that frame is the
//! durable acknowledgement.
//!
//! The job channel is bounded (`offline_jobs_max`): the hub never waits on it under its lock,
//! it refuses a line that does not fit and tells the sender (hub/offline.rs), so a flood of
//! lines for offline devices costs a bounded amount of memory. Each stored line counts
//! against its sender's share of each device's queue (`offline_queue_per_sender`) as well as
//! the queue's total (`offline_queue_max`); a sender over either is told.

use std::sync::Arc;
use std::time::Duration;

use chatd_proto::ErrorCode;
use chatd_proto::frame::ServerFrame;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::hub::{Hub, Notify, OfflineJob, Sender};
use crate::live::Live;
use crate::store::{Caps, OfflineLine, Store, Stored};

/// Jobs stored per transaction at most.
const BATCH: usize = 256;
/// How often expired lines are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new channel pair for the hub and the writer, holding `max` jobs, and the
/// committed-job watch.
pub fn channels(
    max: usize,
) -> (
    mpsc::Sender<OfflineJob>,
    mpsc::Receiver<OfflineJob>,
    watch::Sender<u64>,
    watch::Receiver<u64>,
) {
    let (tx, rx) = mpsc::channel(max.max(1));
    let (done_tx, done_rx) = watch::channel(0);
    (tx, rx, done_tx, done_rx)
}

/// What the offline writer works with.
pub struct Writer {
    /// Where senders are told what happened.
    pub hub: Arc<Hub>,
    /// Where lines are stored.
    pub store: Store,
    /// The configuration in force (the queue cap and time to live).
    pub config: Arc<Live<Config>>,
}

/// Stores jobs until the hub lets go of the sending side (shutdown), then returns.
pub async fn run(
    shared: Writer,
    mut rx: mpsc::Receiver<OfflineJob>,
    committed: watch::Sender<u64>,
) {
    purge(&shared).await;
    let mut purge_timer = tokio::time::interval(PURGE_EVERY);
    purge_timer.tick().await; // the first tick is immediate; we just purged
    let mut jobs = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut jobs, BATCH) => {
                if n == 0 {
                    return;
                }
                let last = jobs.last().map_or(0, |j: &OfflineJob| j.seq);
                store_jobs(&shared, std::mem::take(&mut jobs)).await;
                committed.send_replace(last);
            }
            _ = purge_timer.tick() => purge(&shared).await,
        }
    }
}

/// Who to tell what became of a job: its sender's session (refusals), and the envelope's
/// `held` note.
type Told = (Option<Sender>, Option<Notify>);

async fn store_jobs(shared: &Writer, jobs: Vec<OfflineJob>) {
    let limits = &shared.config.limits;
    let caps = Caps {
        total: limits.offline_queue_max.get(),
        per_sender: limits.offline_share(),
    };
    let mut told: Vec<Told> = Vec::with_capacity(jobs.len());
    let mut lines: Vec<OfflineLine> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let targets = job
            .targets
            .iter()
            .map(|(user, fp)| (user.clone(), *fp.as_bytes()))
            .collect();
        lines.push(OfflineLine {
            line: job.line,
            targets,
            sender: job.sender.as_ref().map(|s| s.user.clone()),
        });
        told.push((job.sender, job.notify));
    }
    let started = std::time::Instant::now();
    let result = shared.store.store_offline(lines, caps, now_ms()).await;
    match result {
        Ok(stored) => {
            let lines = stored.iter().filter(|st| !st.held.is_empty()).count();
            crate::metrics::get().offline_committed(lines, started.elapsed());
            let (mut full, mut over_share) = (0usize, 0usize);
            for ((sender, note), st) in told.into_iter().zip(stored) {
                full += usize::from(!st.full.is_empty());
                over_share += usize::from(!st.over_share.is_empty());
                tell_sender(shared, sender, note, st, caps);
            }
            // One line per batch, not per line: a flood must not flood the log.
            if full > 0 {
                tracing::warn!(
                    lines = full,
                    cap = caps.total,
                    "offline queue full; lines were not stored"
                );
            }
            if over_share > 0 {
                tracing::info!(
                    lines = over_share,
                    share = caps.per_sender,
                    "a sender's share of an offline queue is used up; lines were not stored"
                );
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store lines for offline devices; they are lost");
            let sessions = told
                .into_iter()
                .filter_map(|(sender, note)| note.map(|n| n.session).or(sender.map(|s| s.session)));
            for session in sessions {
                shared.hub.send_to(
                    session,
                    &ServerFrame::error(
                        ErrorCode::Internal,
                        "the server could not store your message for members who are offline \
                         (storage error); they will not receive it",
                    ),
                );
            }
        }
    }
}

/// Tells the sender what became of its line: `held` for an envelope stored for someone,
/// and an error for each kind of refusal.
fn tell_sender(
    shared: &Writer,
    sender: Option<Sender>,
    note: Option<Notify>,
    st: Stored,
    caps: Caps,
) {
    let Some(session) = note
        .as_ref()
        .map(|n| n.session)
        .or(sender.map(|s| s.session))
    else {
        return;
    };
    if let Some(note) = note {
        if !st.held.is_empty() {
            shared.hub.send_to(
                session,
                &ServerFrame::Held {
                    message: note.message,
                    conversation: note.conversation,
                    users: st.held,
                },
            );
        }
    }
    if !st.over_share.is_empty() {
        shared.hub.send_to(
            session,
            &ServerFrame::error(
                ErrorCode::OfflineQueueFull,
                format!(
                    "not stored for {}: {} of your messages already wait in their offline \
                     queue, the most one sender may have there; they will not receive this one",
                    st.over_share.join(", "),
                    caps.per_sender
                ),
            ),
        );
    }
    if !st.full.is_empty() {
        shared.hub.send_to(
            session,
            &ServerFrame::error(
                ErrorCode::OfflineQueueFull,
                format!(
                    "not stored for {}: their offline queue is full ({} messages); \
                     they will not receive this message",
                    st.full.join(", "),
                    caps.total
                ),
            ),
        );
    }
}

/// Deletes lines older than `offline_ttl_secs`.
async fn purge(shared: &Writer) {
    let ttl_ms = shared.config.limits.offline_ttl_secs.get() as i64 * 1000;
    let before = now_ms().saturating_sub(ttl_ms);
    match shared.store.expire(before).await {
        Ok(0) => {}
        Ok(n) => {
            crate::metrics::get().offline_expired(n);
            tracing::info!(lines = n, "expired stored offline messages");
        }
        Err(e) => tracing::warn!(error = %e, "cannot purge expired offline messages"),
    }
}
