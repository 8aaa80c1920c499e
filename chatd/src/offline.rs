//! The offline writer: stores lines for devices that are offline, in the order the hub
//! routed them, and tells each sender what happened.
//!
//! One task owns all offline writes, so jobs commit in hub order and a single number (the
//! last committed job, published on a watch channel) tells a logging-in session when every
//! line routed before its registration is in the database. Jobs that arrive together are
//! stored in one transaction. A sender hears `held` only after the commit: that frame is the
//! durable acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatd_proto::ErrorCode;
use chatd_proto::frame::ServerFrame;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::hub::{Hub, Notify, OfflineJob};
use crate::live::Live;
use crate::store::{DeviceTarget, OfflineLine, Store, Stored, offline};

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

/// A new channel pair for the hub and the writer, and the committed-job watch.
pub fn channels() -> (
    mpsc::UnboundedSender<OfflineJob>,
    mpsc::UnboundedReceiver<OfflineJob>,
    watch::Sender<u64>,
    watch::Receiver<u64>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
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
    mut rx: mpsc::UnboundedReceiver<OfflineJob>,
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

async fn store_jobs(shared: &Writer, jobs: Vec<OfflineJob>) {
    let cap = shared.config.limits.offline_queue_max.get();
    let mut notify: Vec<Option<Notify>> = Vec::with_capacity(jobs.len());
    let mut owned: Vec<(Bytes, Vec<DeviceTarget>)> = Vec::with_capacity(jobs.len());
    for job in jobs {
        notify.push(job.notify);
        let targets = job
            .targets
            .into_iter()
            .map(|(user, fp)| (user, *fp.as_bytes()))
            .collect();
        owned.push((job.line, targets));
    }
    let started = std::time::Instant::now();
    let result = shared
        .store
        .run(move |c| {
            let lines: Vec<OfflineLine<'_>> = owned
                .iter()
                .map(|(line, targets)| OfflineLine { line, targets })
                .collect();
            offline::store(c, &lines, cap, now_ms())
        })
        .await;
    match result {
        Ok(stored) => {
            let lines = stored.iter().filter(|st| !st.held.is_empty()).count();
            crate::metrics::get().offline_committed(lines, started.elapsed());
            for (note, st) in notify.into_iter().zip(stored) {
                if !st.full.is_empty() {
                    tracing::warn!(users = ?st.full, cap, "offline queue full; a line was not stored");
                }
                if let Some(note) = note {
                    tell_sender(shared, note, st, cap);
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store lines for offline devices; they are lost");
            for note in notify.into_iter().flatten() {
                shared.hub.send_to(
                    note.session,
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

fn tell_sender(shared: &Writer, note: Notify, st: Stored, cap: usize) {
    if !st.held.is_empty() {
        shared.hub.send_to(
            note.session,
            &ServerFrame::Held {
                message: note.message,
                conversation: note.conversation,
                users: st.held,
            },
        );
    }
    if !st.full.is_empty() {
        shared.hub.send_to(
            note.session,
            &ServerFrame::error(
                ErrorCode::OfflineQueueFull,
                format!(
                    "not stored for {}: their offline queue is full ({cap} messages); \
                     they will not receive this message",
                    st.full.join(", ")
                ),
            ),
        );
    }
}

/// Deletes lines older than `offline_ttl_secs`.
async fn purge(shared: &Writer) {
    let ttl_ms = shared.config.limits.offline_ttl_secs.get() as i64 * 1000;
    let before = now_ms().saturating_sub(ttl_ms);
    match shared.store.run(move |c| offline::expire(c, before)).await {
        Ok(0) => {}
        Ok(n) => {
            crate::metrics::get().offline_expired(n);
            tracing::info!(lines = n, "expired stored offline messages");
        }
        Err(e) => tracing::warn!(error = %e, "cannot purge expired offline messages"),
    }
}
