//! Who is in the cluster as this node sees it: the other nodes heard lately (with the
//! presence change of ours each acknowledged), incarnations declared gone, and whether this
//! node itself is cut off.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::wire::NodeId;

/// Incarnations declared gone that are remembered (a message from one is never delivered).
const GONE_KEPT: usize = 1024;

/// Another node.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) incarnation: u64,
    pub(super) last_heard: Instant,
    /// The last of our presence changes it acknowledged.
    pub(super) acked: u64,
    /// The `seq` of the whole presence we sent it when it appeared, until acknowledged.
    pub(super) sync_seq: Option<u64>,
}

/// What [`Members::heard`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Heard {
    /// Known and alive.
    Known,
    /// New (or a new incarnation, replacing `replaced` if that was alive).
    New {
        /// The node's previous incarnation was still counted alive.
        replaced: bool,
    },
    /// An incarnation declared gone: ignore, never deliver.
    Gone,
}

/// The membership table.
#[derive(Debug)]
pub(super) struct Members {
    pub(super) peers: BTreeMap<String, Peer>,
    gone: VecDeque<NodeId>,
    /// This node's latest heartbeat that came back, on its monotonic clock.
    pub(super) last_echo: Instant,
    /// Cut off: no heartbeat of ours came back for too long.
    pub(super) cut_off: bool,
    /// When this node (re)joined: logins wait for the others to have heard it.
    pub(super) joined_at: Instant,
    /// Incarnations already reported as speaking another version of the bus.
    other_versions: VecDeque<NodeId>,
}

impl Members {
    pub(super) fn new(now: Instant) -> Self {
        Members {
            peers: BTreeMap::new(),
            gone: VecDeque::new(),
            last_echo: now,
            cut_off: false,
            joined_at: now,
            other_versions: VecDeque::new(),
        }
    }

    /// True the first time `from` is found speaking another version of the bus.
    pub(super) fn note_other_version(&mut self, from: &NodeId) -> bool {
        if self.other_versions.contains(from) {
            return false;
        }
        if self.other_versions.len() >= GONE_KEPT {
            self.other_versions.pop_front();
        }
        self.other_versions.push_back(from.clone());
        true
    }

    /// `from` sent something now.
    pub(super) fn heard(&mut self, from: &NodeId, now: Instant) -> Heard {
        if self.gone.contains(from) {
            return Heard::Gone;
        }
        match self.peers.get_mut(&from.name) {
            Some(p) if p.incarnation == from.incarnation => {
                p.last_heard = now;
                Heard::Known
            }
            Some(p) => {
                let old = NodeId {
                    name: from.name.clone(),
                    incarnation: p.incarnation,
                };
                self.remember_gone(old);
                self.insert(from, now);
                Heard::New { replaced: true }
            }
            None => {
                self.insert(from, now);
                Heard::New { replaced: false }
            }
        }
    }

    fn insert(&mut self, from: &NodeId, now: Instant) {
        self.peers.insert(
            from.name.clone(),
            Peer {
                incarnation: from.incarnation,
                last_heard: now,
                acked: 0,
                sync_seq: None,
            },
        );
    }

    fn remember_gone(&mut self, id: NodeId) {
        if self.gone.len() >= GONE_KEPT {
            self.gone.pop_front();
        }
        self.gone.push_back(id);
    }

    /// True when `from` is an incarnation this node counts alive.
    pub(super) fn is_live(&self, from: &NodeId) -> bool {
        self.peers
            .get(&from.name)
            .is_some_and(|p| p.incarnation == from.incarnation)
    }

    /// Nodes not heard for `timeout`: forgotten, and remembered as gone.
    pub(super) fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<String> {
        let silent: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_heard) > timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for name in &silent {
            if let Some(p) = self.peers.remove(name) {
                self.remember_gone(NodeId {
                    name: name.clone(),
                    incarnation: p.incarnation,
                });
            }
        }
        silent
    }

    /// Forgets every other node without declaring it gone (this node was cut off: they may
    /// well be alive, and come back under the same incarnation).
    pub(super) fn forget_all(&mut self) -> Vec<String> {
        std::mem::take(&mut self.peers).into_keys().collect()
    }

    /// `from` acknowledged our presence up to `seq`; true when that was the whole presence
    /// we sent it when it appeared.
    pub(super) fn acked(&mut self, from: &NodeId, seq: u64) -> bool {
        let Some(p) = self.peers.get_mut(&from.name) else {
            return false;
        };
        if p.incarnation != from.incarnation {
            return false;
        }
        p.acked = p.acked.max(seq);
        match p.sync_seq {
            Some(s) if seq >= s => {
                p.sync_seq = None;
                true
            }
            _ => false,
        }
    }

    /// True when every live node acknowledged our presence up to `seq`.
    pub(super) fn all_acked(&self, seq: u64) -> bool {
        self.peers.values().all(|p| p.acked >= seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, incarnation: u64) -> NodeId {
        NodeId {
            name: name.into(),
            incarnation,
        }
    }

    #[test]
    fn a_gone_incarnation_never_comes_back_but_a_new_one_does() {
        let t0 = Instant::now();
        let mut m = Members::new(t0);
        assert_eq!(m.heard(&id("b", 1), t0), Heard::New { replaced: false });
        assert_eq!(m.heard(&id("b", 1), t0), Heard::Known);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            m.expire(later, Duration::from_secs(3)),
            vec!["b".to_string()]
        );
        assert!(!m.is_live(&id("b", 1)));
        assert_eq!(m.heard(&id("b", 1), later), Heard::Gone);
        assert_eq!(m.heard(&id("b", 2), later), Heard::New { replaced: false });
        assert!(m.is_live(&id("b", 2)));
        // A restart seen before the old incarnation expired replaces it.
        assert_eq!(m.heard(&id("b", 3), later), Heard::New { replaced: true });
        assert_eq!(m.heard(&id("b", 2), later), Heard::Gone);
    }

    #[test]
    fn acks_count_per_incarnation_and_the_sync_is_noticed_once() {
        let t0 = Instant::now();
        let mut m = Members::new(t0);
        m.heard(&id("b", 1), t0);
        m.heard(&id("c", 1), t0);
        if let Some(p) = m.peers.get_mut("b") {
            p.sync_seq = Some(5);
        }
        assert!(!m.all_acked(5));
        assert!(!m.acked(&id("b", 9), 7), "another incarnation's ack");
        assert!(m.acked(&id("b", 1), 5));
        assert!(
            !m.acked(&id("b", 1), 6),
            "the sync was acknowledged already"
        );
        assert!(!m.all_acked(5));
        m.acked(&id("c", 1), 5);
        assert!(m.all_acked(5));
        assert!(!m.all_acked(7));
    }
}
