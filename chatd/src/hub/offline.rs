//! Lines for devices that are offline: which devices those are, and numbering each line
//! ([`OfflineJob`]) under the hub's lock for the offline writer, which stores them in that order.

use bytes::Bytes;
use chatd_proto::Fingerprint;
use tokio::sync::mpsc;

use super::directory::Directory;
use super::outgoing::{Notify, OfflineJob};
use super::sessions::Sessions;

/// The way to the offline writer, the number of the last job handed to it, and which
/// devices are offline as of the last change.
#[derive(Default)]
pub(super) struct OfflineQueue {
    pub(super) tx: Option<mpsc::UnboundedSender<OfflineJob>>,
    /// Number of the last [`OfflineJob`] handed out.
    pub(super) seq: u64,
    /// Registered devices with no session, as of the last change to sessions or keys; only
    /// trusted after a delivery that every session accepted (then none is closing).
    everyone: Option<Vec<(String, Fingerprint)>>,
}

/// Registered devices of `users` with no session that takes lines now (none, or all
/// closing: a line they missed is stored rather than lost).
pub(super) fn offline_devices<'a>(
    directory: &Directory,
    sessions: &Sessions,
    users: impl Iterator<Item = &'a String>,
) -> Vec<(String, Fingerprint)> {
    let mut out = Vec::new();
    for user in users {
        for k in directory.known.get(user).into_iter().flatten() {
            if !sessions.reachable(&k.fingerprint()) {
                out.push((user.clone(), k.fingerprint()));
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
    ) -> Vec<(String, Fingerprint)> {
        if reached != sessions.len() {
            // Some session is closing or full: its device may need the line stored.
            return offline_devices(directory, sessions, directory.known.keys());
        }
        self.everyone
            .get_or_insert_with(|| offline_devices(directory, sessions, directory.known.keys()))
            .clone()
    }

    /// Numbers and hands a line to the offline writer; false when there are no targets or
    /// the writer is gone (shutting down).
    pub(super) fn store_for(
        &mut self,
        line: &Bytes,
        targets: Vec<(String, Fingerprint)>,
        notify: Option<Notify>,
    ) -> bool {
        if targets.is_empty() {
            return false;
        }
        let Some(tx) = &self.tx else {
            tracing::warn!(
                devices = targets.len(),
                "a line for offline devices arrived after the offline writer stopped"
            );
            return false;
        };
        self.seq += 1;
        let job = OfflineJob {
            seq: self.seq,
            line: line.clone(),
            targets,
            notify,
        };
        tx.send(job).is_ok()
    }
}
