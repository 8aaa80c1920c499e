//! Lines for devices that are offline: which devices those are, and numbering each line
//! ([`OfflineJob`]) under the hub's lock for the offline writer, which stores them in that order.

use bytes::Bytes;
use chatd_proto::Fingerprint;
use tokio::sync::mpsc;

use super::{Hub, Inner, SessionId};

/// A line to store for devices that are offline, numbered in routing order.
#[derive(Debug)]
pub struct OfflineJob {
    /// 1, 2, 3, ... in the order the hub routed them.
    pub seq: u64,
    /// The serialized frame.
    pub line: Bytes,
    /// (user, device) of each offline recipient.
    pub targets: Vec<(String, Fingerprint)>,
    /// Who to tell once it is stored.
    pub notify: Option<Notify>,
}

/// The sender of an envelope, to be told (`held`) once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The sending session.
    pub session: SessionId,
    /// The envelope's message id, hex.
    pub message: String,
    /// The envelope's conversation name.
    pub conversation: String,
}

/// The way to the offline writer, and the number of the last job handed to it.
#[derive(Default)]
pub(super) struct OfflineQueue {
    tx: Option<mpsc::UnboundedSender<OfflineJob>>,
    /// Number of the last [`OfflineJob`] handed out.
    pub(super) seq: u64,
}

impl Inner {
    /// Registered devices of `users` with no session that takes lines now (none, or all
    /// closing: a line they missed is stored rather than lost).
    pub(super) fn offline_devices<'a>(
        &self,
        users: impl Iterator<Item = &'a String>,
    ) -> Vec<(String, Fingerprint)> {
        let mut out = Vec::new();
        for user in users {
            for k in self.directory.known.get(user).into_iter().flatten() {
                if !self.sessions.reachable(&k.fingerprint) {
                    out.push((user.clone(), k.fingerprint));
                }
            }
        }
        out
    }

    /// Every registered device without a reachable session, after a delivery to all sessions
    /// that reached `reached` of them. The busiest path (a message for everyone) scans the
    /// devices only when something changed since the last scan or a session refused the line.
    pub(super) fn everyone_offline(&mut self, reached: usize) -> Vec<(String, Fingerprint)> {
        if reached != self.sessions.map.len() {
            // Some session is closing or full: its device may need the line stored.
            return self.offline_devices(self.directory.known.keys());
        }
        if self.directory.everyone_offline.is_none() {
            self.directory.everyone_offline =
                Some(self.offline_devices(self.directory.known.keys()));
        }
        self.directory.everyone_offline.clone().unwrap_or_default()
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
        let queue = &mut self.offline;
        let Some(tx) = &queue.tx else {
            tracing::warn!(
                devices = targets.len(),
                "a line for offline devices arrived after the offline writer stopped"
            );
            return false;
        };
        queue.seq += 1;
        let job = OfflineJob {
            seq: queue.seq,
            line: line.clone(),
            targets,
            notify,
        };
        tx.send(job).is_ok()
    }
}

impl Hub {
    /// Connects the offline writer; lines for offline devices go to `tx` from now on.
    pub fn attach_offline(&self, tx: mpsc::UnboundedSender<OfflineJob>) {
        self.lock().offline.tx = Some(tx);
    }

    /// Disconnects the offline writer (shutdown), so it can finish what it has.
    pub fn detach_offline(&self) {
        self.lock().offline.tx = None;
    }

    /// Number of the last offline job handed out; a session that registered after it waits
    /// for the writer to commit it before reading its queue.
    pub fn offline_seq(&self) -> u64 {
        self.lock().offline.seq
    }
}
