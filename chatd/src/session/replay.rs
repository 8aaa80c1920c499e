//! Replay at login: the lines stored for this device while it was offline, in batches each
//! ended by a `backlog` marker, then the live lines the hub held meanwhile.
//!
//! Stored lines are paged from the database as the client reads: a page (bounded in lines and
//! bytes) is read only once the outbound queue has room for it, so a session that does not
//! read holds at most its queue's byte limit plus one page. Lines are shared through
//! [`StoredLines`]: sessions replaying the same messages (an account's devices) hold one copy.

use chatd_proto::ErrorCode;
use chatd_proto::Fingerprint;
use chatd_proto::frame::{self, ServerFrame};

use crate::hub::SessionId;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::store::PageSize;

/// Stored lines per `backlog` batch, at most.
const REPLAY_BATCH: usize = 256;

/// Bytes of stored lines per batch: a batch ends with the line that reaches them (so a line
/// of any length makes a batch of its own).
pub(crate) const REPLAY_PAGE_BYTES: usize = 256 * 1024;

/// Sends what was stored for this device while it was offline, in batches each ended by a
/// `backlog` marker, then lets the live lines the hub held meanwhile through. False when the
/// connection is gone.
pub(super) async fn replay(
    shared: &Shared,
    outbox: &Outbox,
    id: SessionId,
    seq: u64,
    user: &str,
    device: Fingerprint,
) -> bool {
    // Lines routed before registration may still be on their way to the database.
    let mut committed = shared.offline_committed.clone();
    if committed.wait_for(|done| *done >= seq).await.is_err() {
        tracing::debug!("offline writer gone; replaying what is stored");
    }
    // And on every other node: each has stored what it routed before it knew this device.
    if let Some(cluster) = &shared.cluster {
        cluster.login_settled(shared.hub.presence_seq()).await;
    }
    let ttl_ms = shared.config.limits.offline_ttl_secs.get() as i64 * 1000;
    let not_before = crate::offline::now_ms().saturating_sub(ttl_ms);
    let fp = *device.as_bytes();
    let size = PageSize {
        lines: REPLAY_BATCH,
        bytes: REPLAY_PAGE_BYTES,
    };
    let mut after = 0i64;
    let mut total = 0usize;
    loop {
        // Read the next page only once the queue can take it: a client that does not read
        // costs its queue, not its whole backlog.
        if outbox.wait_room(REPLAY_PAGE_BYTES).await.is_err() {
            return false;
        }
        let lines = std::sync::Arc::clone(&shared.stored_lines);
        let page = shared
            .store
            .replay_page(user, &fp, after, size, not_before, lines)
            .await;
        let (rows, more) = match page {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "cannot read stored lines; they stay for the next login");
                let text =
                    "the server could not read the messages stored for you; they stay stored";
                if let Ok(line) = frame::encode(&ServerFrame::error(ErrorCode::Internal, text)) {
                    let _ = outbox.send(line).await;
                }
                break;
            }
        };
        let count = rows.len();
        if count == 0 {
            break;
        }
        for (qid, line) in rows {
            after = qid;
            if outbox.send(line).await.is_err() {
                return false;
            }
        }
        total += count;
        let marker = ServerFrame::Backlog {
            upto: after.max(0) as u64,
            count: count as u32,
            more,
        };
        if let Ok(line) = frame::encode(&marker) {
            if outbox.send(line).await.is_err() {
                return false;
            }
        }
        if !more {
            break;
        }
    }
    if total > 0 {
        crate::metrics::get().offline_delivered(total);
        tracing::info!(lines = total, "delivered stored lines");
    }
    while !shared.hub.end_replay(id) {
        // The queue is full of the backlog: wait until the writer took it.
        if outbox.wait_room(usize::MAX).await.is_err() {
            return false;
        }
    }
    true
}
