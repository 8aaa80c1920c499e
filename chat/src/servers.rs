//! A list of chatd nodes that serve one deployment (`--server a:8443,b:8443`): parsing it,
//! which node to try next and after how long, and the rule that one list is one server.
//!
//! One list is one server identity (see [`crate::identity`]): this device's key, pins and
//! state are shared by all its nodes. A node is accepted only as that identity: through its
//! own pin whose id is the list's, or by presenting a certificate pinned for the list (the
//! recommended setup: every node has the same certificate and key, and becomes an alias
//! without a question). A node whose certificate is pinned as another server, or not pinned at
//! all once the list's identity is known, is refused: a device key is never used against two
//! servers by way of one list.
//!
//! Reconnecting walks the list: after a failure the next node is tried, at once (with a little
//! jitter) until every node was tried once in this round; then the next round waits
//! [`ROUND_MIN`] doubling per round up to `reconnect_max_secs` (config, 30 s by default), each
//! wait drawn from its upper half
//! so that many clients of one dead node do not come back in lockstep.

use std::fmt;
use std::time::Duration;

use anyhow::{Result, bail};
use chatd_proto::Fingerprint;

use crate::conn::ServerAddr;
use crate::identity::ServerId;
use crate::trust::KnownServers;

/// The first wait between two rounds (the first retry after a loss waits this too).
pub const ROUND_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two nodes of one round.
pub const NEXT_NODE_MAX: Duration = Duration::from_millis(500);

/// The nodes, in the order given; never empty, no node twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList(Vec<ServerAddr>);

impl ServerList {
    /// Parses `HOST:PORT[,HOST:PORT...]`; an empty, bad or repeated entry is an error naming it.
    pub fn parse(s: &str) -> Result<ServerList> {
        let mut nodes: Vec<ServerAddr> = Vec::new();
        for entry in s.split(',') {
            if entry.trim().is_empty() {
                bail!("empty entry in the server list {s:?}");
            }
            let addr = ServerAddr::parse(entry)?;
            if nodes.contains(&addr) {
                bail!("{addr} is listed twice in the server list {s:?}");
            }
            nodes.push(addr);
        }
        Ok(ServerList(nodes))
    }

    /// The nodes in order.
    pub fn nodes(&self) -> &[ServerAddr] {
        &self.0
    }

    /// The first node (the list is never empty).
    pub fn first(&self) -> &ServerAddr {
        // Built only by `parse`, which refuses an empty list (`split` yields one entry).
        &self.0[0]
    }

    /// More than one node.
    pub fn is_many(&self) -> bool {
        self.0.len() > 1
    }

    /// The node after `index`, wrapping.
    pub fn next_index(&self, index: usize) -> usize {
        (index + 1) % self.0.len()
    }

    /// The list's identity given the id the connection found: a pinned id as it is; a node a
    /// CA vouched for stands for the list, named by its first entry (one name for the key and
    /// state whichever node answered; a single server keeps its own name).
    pub fn list_id(&self, found: ServerId) -> ServerId {
        match found {
            ServerId::Pinned(fp) => ServerId::Pinned(fp),
            ServerId::Named(_) => ServerId::Named(self.first().clone()),
        }
    }

    /// The identity the known-servers file gives the list, if any node is pinned: an error
    /// when two nodes are pinned as different servers.
    pub fn pinned_id(&self, known: &KnownServers) -> Result<Option<Fingerprint>> {
        let mut found: Option<(&ServerAddr, Fingerprint)> = None;
        for node in &self.0 {
            let Some(pin) = known.lookup(&node.to_string()) else {
                continue;
            };
            match found {
                Some((first, id)) if id != pin.id => bail!(
                    "{first} and {node} are pinned as two different servers ({id} and {}) in {}; \
                     the nodes of one --server list must be one server (see SERVER LISTS in chat's manual)",
                    pin.id,
                    known.path().display()
                ),
                Some(_) => {}
                None => found = Some((node, pin.id)),
            }
        }
        Ok(found.map(|(_, id)| id))
    }

    /// Checks that `node`, which the connection found to be `found`, is the list's server
    /// `expected`.
    pub fn check_same(
        &self,
        node: &ServerAddr,
        expected: &ServerId,
        found: &ServerId,
    ) -> Result<()> {
        let found = self.list_id(found.clone());
        if &found != expected {
            bail!(
                "{node} is not the same server as the rest of the list: it is {found}, the list is {expected}; \
                 refusing to use this device's key there (one --server list must be one server)"
            );
        }
        Ok(())
    }
}

impl fmt::Display for ServerList {
    /// `a:8443,b:8443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for node in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            node.fmt(f)?;
        }
        Ok(())
    }
}

/// Where reconnecting is: the node to try, and how many failed in this round.
#[derive(Debug, Clone)]
pub struct Walk {
    /// Index of the node to try next.
    pub node: usize,
    /// Nodes that failed in this round.
    failed_in_round: usize,
    /// Rounds that failed since the connection was lost.
    rounds: u32,
}

impl Walk {
    /// The connection to node `index` was lost: it is tried again first (a restart or a blip
    /// is the common case), after [`ROUND_MIN`] with jitter.
    pub fn lost(index: usize) -> Walk {
        Walk {
            node: index,
            failed_in_round: 0,
            rounds: 0,
        }
    }

    /// The first wait after a loss.
    pub fn first_wait(&self, random: u64) -> Duration {
        upper_half(ROUND_MIN, random)
    }

    /// The try of the current node failed: moves to the next node and returns the wait before
    /// trying it, a round's wait at most `max`. `random` is any random number (the jitter).
    pub fn failed(&mut self, list: &ServerList, max: Duration, random: u64) -> Duration {
        self.node = list.next_index(self.node);
        self.failed_in_round += 1;
        if self.failed_in_round < list.nodes().len() {
            // The next node of this round, right away but not all clients in one instant.
            let ms = u64::try_from(NEXT_NODE_MAX.as_millis()).unwrap_or(u64::MAX);
            return Duration::from_millis(random % (ms + 1));
        }
        self.failed_in_round = 0;
        self.rounds = self.rounds.saturating_add(1);
        let doubled = ROUND_MIN
            .checked_mul(1u32.checked_shl(self.rounds.min(16)).unwrap_or(u32::MAX))
            .unwrap_or(max);
        upper_half(doubled.min(max), random)
    }
}

/// A wait between half of `full` and `full` ("equal jitter"): never much shorter than the
/// backoff asks, and spread enough that clients lost together do not retry together.
fn upper_half(full: Duration, random: u64) -> Duration {
    let ms = u64::try_from(full.as_millis()).unwrap_or(u64::MAX);
    let half = ms / 2;
    Duration::from_millis(half + random % (ms - half + 1))
}

/// A random number for the jitter (0 if the system has none to give: then no jitter).
pub fn random() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const ROUND_MAX: Duration = Duration::from_secs(30);

    #[test]
    fn lists_parse_in_order_and_bad_entries_are_named() {
        let l = ServerList::parse("a.example:8443, b.example:9000,[::1]:7").unwrap();
        let names: Vec<String> = l.nodes().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["a.example:8443", "b.example:9000", "[::1]:7"]);
        assert_eq!(l.to_string(), "a.example:8443,b.example:9000,[::1]:7");
        assert!(l.is_many());
        let one = ServerList::parse("solo").unwrap();
        assert_eq!(one.to_string(), "solo:8443");
        assert!(!one.is_many());
        let e = ServerList::parse("a:1,b:0").unwrap_err().to_string();
        assert!(e.contains("\"b:0\"") && e.contains("bad port"), "{e}");
        let e = ServerList::parse("a:1,,b:2").unwrap_err().to_string();
        assert!(e.contains("empty entry"), "{e}");
        let e = ServerList::parse("a:1,").unwrap_err().to_string();
        assert!(e.contains("empty entry"), "{e}");
        let e = ServerList::parse("").unwrap_err().to_string();
        assert!(e.contains("empty entry"), "{e}");
        let e = ServerList::parse("A:1,a:1").unwrap_err().to_string();
        assert!(e.contains("a:1 is listed twice"), "{e}");
        // The default port makes `a` and `a:8443` the same node.
        assert!(ServerList::parse("a,a:8443").is_err());
    }

    #[test]
    fn a_walk_tries_each_node_then_backs_off_with_jitter() {
        let l = ServerList::parse("a:1,b:2,c:3").unwrap();
        let mut w = Walk::lost(1);
        assert_eq!(w.node, 1);
        for r in [0, 999, u64::MAX] {
            let d = w.first_wait(r);
            assert!(d >= ROUND_MIN / 2 && d <= ROUND_MIN, "{d:?}");
        }
        // Within a round: the next node at once, with at most NEXT_NODE_MAX of jitter.
        assert!(w.failed(&l, ROUND_MAX, u64::MAX) <= NEXT_NODE_MAX);
        assert_eq!(w.node, 2);
        assert!(w.failed(&l, ROUND_MAX, 7) <= NEXT_NODE_MAX);
        assert_eq!(w.node, 0);
        // Every node failed once: the round's wait, doubling, in its upper half.
        let mut full = ROUND_MIN;
        for _ in 0..8 {
            full = (full * 2).min(ROUND_MAX);
            let lo = w.failed(&l, ROUND_MAX, 0);
            assert_eq!(lo, full / 2, "the least jitter");
            assert!(w.failed(&l, ROUND_MAX, 3) <= NEXT_NODE_MAX);
            assert!(w.failed(&l, ROUND_MAX, 3) <= NEXT_NODE_MAX);
        }
        assert_eq!(full, ROUND_MAX);
        let hi = w.failed(&l, ROUND_MAX, u64::MAX);
        assert!(hi >= ROUND_MAX / 2 && hi <= ROUND_MAX, "{hi:?}");
        // The waits are spread, not one value for everybody.
        let waits: std::collections::BTreeSet<Duration> = (0..50)
            .map(|_| {
                let mut w = Walk::lost(0);
                let one = ServerList::parse("a:1").unwrap();
                w.failed(&one, ROUND_MAX, random())
            })
            .collect();
        assert!(waits.len() > 10, "{waits:?}");
        assert!(waits.iter().all(|d| *d >= ROUND_MIN && *d <= ROUND_MIN * 2));
    }

    #[test]
    fn a_single_server_backs_off_as_before() {
        let l = ServerList::parse("a:1").unwrap();
        let mut w = Walk::lost(0);
        let fulls: Vec<Duration> = (0..7).map(|_| w.failed(&l, ROUND_MAX, 0) * 2).collect();
        let secs: Vec<u64> = fulls.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(w.node, 0);
        // reconnect_max_secs at its low edge: one doubling, then it stays there (1000 ms: the
        // largest jitter of a 2 s wait).
        let mut w = Walk::lost(0);
        let low = Duration::from_secs(2);
        let waits: Vec<Duration> = (0..4).map(|_| w.failed(&l, low, 1000)).collect();
        assert_eq!(waits, [low; 4]);
        let mut w = Walk::lost(0);
        assert_eq!(w.failed(&l, low, 0), low / 2);
    }

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::of(&[n])
    }

    #[test]
    fn one_list_is_one_server() {
        let l = ServerList::parse("a:1,b:2,c:3").unwrap();
        let none = KnownServers::parse(Path::new("/k"), "");
        assert_eq!(l.pinned_id(&none).unwrap(), None);
        // Aliases (same id) are one server, whichever node is pinned.
        let same = KnownServers::parse(
            Path::new("/k"),
            &format!(
                "b:2 {}\nc:3 {} id={}\nother:9 {}\n",
                fp(1),
                fp(1),
                fp(1),
                fp(5)
            ),
        );
        assert_eq!(l.pinned_id(&same).unwrap(), Some(fp(1)));
        // A node with its own certificate joined to the server by `id=`.
        let joined = KnownServers::parse(
            Path::new("/k"),
            &format!("a:1 {}\nb:2 {} id={}\n", fp(1), fp(2), fp(1)),
        );
        assert_eq!(l.pinned_id(&joined).unwrap(), Some(fp(1)));
        let two = KnownServers::parse(Path::new("/k"), &format!("a:1 {}\nc:3 {}\n", fp(1), fp(2)));
        let e = l.pinned_id(&two).unwrap_err().to_string();
        assert!(
            e.contains("a:1 and c:3 are pinned as two different servers"),
            "{e}"
        );

        let expected = ServerId::Pinned(fp(1));
        let node = &l.nodes()[1];
        l.check_same(node, &expected, &ServerId::Pinned(fp(1)))
            .unwrap();
        let e = l
            .check_same(node, &expected, &ServerId::Pinned(fp(2)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("b:2 is not the same server"), "{e}");
        // CA-verified nodes are the list, named by its first entry; never a pinned one.
        let named = l.list_id(ServerId::Named(node.clone()));
        assert_eq!(named, ServerId::Named(l.first().clone()));
        l.check_same(node, &named, &ServerId::Named(node.clone()))
            .unwrap();
        assert!(
            l.check_same(node, &expected, &ServerId::Named(node.clone()))
                .is_err()
        );
    }
}
