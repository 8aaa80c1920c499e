//! Replay at login: the lines stored for this device while it was offline, in batches each
//! ended by a `backlog` marker, then the live lines the hub held meanwhile.

use bytes::Bytes;
use chatd_proto::ErrorCode;
use chatd_proto::Fingerprint;
use chatd_proto::frame::{self, ServerFrame};

use crate::hub::SessionId;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::store::offline;

/// Stored lines per `backlog` batch.
const REPLAY_BATCH: usize = 256;

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
    let ttl_ms = shared.config.limits.offline_ttl_secs.get() as i64 * 1000;
    let not_before = crate::offline::now_ms().saturating_sub(ttl_ms);
    let fp = *device.as_bytes();
    let mut after = 0i64;
    let mut total = 0usize;
    loop {
        let who = user.to_string();
        let rows = shared
            .store
            .run(move |c| offline::load(c, &who, &fp, after, REPLAY_BATCH + 1, not_before))
            .await;
        let rows = match rows {
            Ok(rows) => rows,
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
        // One more row than a batch was asked for: it says whether another batch follows.
        let more = rows.len() > REPLAY_BATCH;
        let count = rows.len().min(REPLAY_BATCH);
        if count == 0 {
            break;
        }
        for (qid, line) in rows.into_iter().take(REPLAY_BATCH) {
            after = qid;
            if outbox.send(Bytes::from(line)).await.is_err() {
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
    while !shared.hub.end_replay(id, outbox.free()) {
        // The queue is full of the backlog: wait until the writer frees a slot.
        if outbox.wait_space().await.is_err() {
            return false;
        }
    }
    true
}
