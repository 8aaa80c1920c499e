//! Lines for devices that are offline: which devices those are, and numbering each line
//! ([`OfflineJob`]) under the hub's lock for the offline writer, which stores them in that order.
//!
//! The way to the writer is bounded (`offline_jobs_max`) and never awaited under the lock:
//! a line that does not fit is not numbered, and its sender is told it was not stored.

use bytes::Bytes;
use chatd_proto::Fingerprint;
use tokio::sync::mpsc;

use super::directory::Directory;
use super::outgoing::{Notify, OfflineJob, Sender, Targets};
use super::remote::Remote;
use super::sessions::Sessions;

/// The way to the offline writer, the number of the last job handed to it, and which
/// devices are offline as of the last change.
#[derive(Default)]
pub(super) struct OfflineQueue {
    pub(super) tx: Option<mpsc::Sender<OfflineJob>>,
    /// Number of the last [`OfflineJob`] handed out.
    pub(super) seq: u64,
    /// Registered devices with no session, as of the last change to sessions or keys; only
    /// trusted after a delivery that every session accepted (then none is closing).
    everyone: Option<Targets>,
    /// Lines refused since the writer's queue was last found with room.
    busy: u64,
}

/// What [`OfflineQueue::store_for`] did with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Handed {
    /// Nobody is offline: nothing to store.
    NoTargets,
    /// Handed to the writer.
    Queued,
    /// The writer's queue is full: not stored for these targets.
    Busy(Targets),
    /// The writer is gone (shutting down): not stored.
    Stopped,
}

/// Registered devices of `users` with no session that takes lines now (none, or all
/// closing: a line they missed is stored rather than lost), here or on another node.
pub(super) fn offline_devices<'a>(
    directory: &Directory,
    sessions: &Sessions,
    remote: &Remote,
    users: impl Iterator<Item = &'a String>,
) -> Vec<(String, Fingerprint)> {
    let mut out = Vec::new();
    for user in users {
        for k in directory.known.get(user).into_iter().flatten() {
            let fp = k.fingerprint();
            if !sessions.reachable(&fp) && !remote.device_online(&fp) {
                out.push((user.clone(), fp));
            }
        }
    }
    out
}

impl OfflineQueue {
    /// Sessions or device keys changed: the next delivery to everyone scans again.
    pub(super) fn changed(&mut self) {
        self.everyone = None;
    }

    /// Every registered device without a reachable session, after a delivery to all sessions
    /// that reached `reached` of them. The busiest path (a message for everyone) scans the
    /// devices only when something changed since the last scan or a session refused the line.
    pub(super) fn everyone_offline(
        &mut self,
        reached: usize,
        directory: &Directory,
        sessions: &Sessions,
        remote: &Remote,
    ) -> Targets {
        let users = directory.known.keys();
        if reached != sessions.len() {
            // Some session is closing or full: its device may need the line stored.
            return offline_devices(directory, sessions, remote, users).into();
        }
        let everyone = self
            .everyone
            .get_or_insert_with(|| offline_devices(directory, sessions, remote, users).into());
        Targets::clone(everyone)
    }

    /// Numbers and hands a line to the offline writer, unless its queue is full.
    pub(super) fn store_for(
        &mut self,
        line: &Bytes,
        targets: Targets,
        sender: Option<&Sender>,
        notify: Option<Notify>,
    ) -> Handed {
        if targets.is_empty() {
            return Handed::NoTargets;
        }
        let Some(tx) = &self.tx else {
            tracing::warn!(
                devices = targets.len(),
                "a line for offline devices arrived after the offline writer stopped"
            );
            return Handed::Stopped;
        };
        let permit = match tx.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                self.busy += 1;
                if self.busy == 1 {
                    // Once per episode, counted when it ends: a flood must not flood the log.
                    tracing::warn!(
                        "the offline writer is behind; refusing lines for offline devices"
                    );
                }
                return Handed::Busy(targets);
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Handed::Stopped,
        };
        if self.busy > 0 {
            tracing::info!(refused = self.busy, "the offline writer caught up");
            self.busy = 0;
        }
        // Numbered only once it surely goes: a logging-in session waits for its number.
        self.seq += 1;
        permit.send(OfflineJob {
            seq: self.seq,
            line: line.clone(),
            targets,
            sender: sender.cloned(),
            notify,
        });
        Handed::Queued
    }
}
