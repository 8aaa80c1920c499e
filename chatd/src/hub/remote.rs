//! The other nodes of a cluster as this hub sees them: which device keys have sessions on
//! which node (each known there by a compact handle), away messages there, and the way out
//! to the bus (crate::cluster) for what this hub sends them.
//!
//! Nothing here talks to the network: the hub hands [`BusOut`] items to a channel the cluster
//! task drains, and the cluster task calls back into the hub with what other nodes said.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use chatd_proto::Fingerprint;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::outgoing::{EnvelopeLines, Targets};

/// What a node sends another about one of its device keys: its sessions there now (0: none
/// left), and the handle routed lines name it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceOnNode {
    /// The account.
    pub user: String,
    /// The device key.
    pub device: Fingerprint,
    /// Base64 SPKI DER (the others may not have read it from the store yet).
    pub key: String,
    /// How the node names this device in routed lines; stable while the node runs.
    pub handle: u32,
    /// Sessions of this device on the node; 0 when it has none left.
    pub sessions: u32,
}

/// A state change made on one node that every node applies to its own tables, telling its
/// own sessions (the store already holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A room was created.
    RoomCreated {
        /// Name.
        room: String,
        /// Owner.
        owner: Option<String>,
        /// Invite only.
        invite_only: bool,
    },
    /// A user joined a room.
    RoomJoined {
        /// Room.
        room: String,
        /// User.
        user: String,
    },
    /// A user left or was kicked from a room.
    RoomParted {
        /// Room.
        room: String,
        /// User.
        user: String,
        /// Who kicked them.
        by: Option<String>,
    },
    /// A room's topic changed.
    Topic {
        /// Room.
        room: String,
        /// Topic.
        topic: String,
        /// Who set it.
        by: String,
    },
    /// A device key was revoked.
    ForgetDevice {
        /// Account.
        user: String,
        /// Key.
        device: Fingerprint,
    },
    /// An account was deleted.
    ForgetUser {
        /// Account.
        user: String,
    },
    /// A vouch was stored.
    Vouch {
        /// Account.
        user: String,
        /// The key vouched for.
        vouched: Fingerprint,
        /// The key that vouched.
        voucher: Fingerprint,
        /// Base64 vouch.
        data: String,
    },
    /// An away message was set or cleared.
    Away {
        /// Account.
        user: String,
        /// The message; None clears it.
        text: Option<String>,
    },
    /// Every session of a user is to close.
    CloseUser {
        /// Account.
        user: String,
        /// Told to the sessions.
        reason: String,
    },
    /// Every session of a user's device key is to close.
    CloseDevice {
        /// Account.
        user: String,
        /// Key.
        device: Fingerprint,
        /// Told to the sessions.
        reason: String,
    },
    /// A line for every session of a user.
    ToUser {
        /// Account.
        user: String,
        /// The serialized frame.
        line: String,
    },
    /// A line for every session of a room's members.
    ToRoom {
        /// Room.
        room: String,
        /// The serialized frame.
        line: String,
    },
    /// A line for every session.
    ToAll {
        /// The serialized frame.
        line: String,
    },
}

/// What a routed line carries across the bus.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Envelopes of one sender to one conversation, in order.
    Envelopes(Vec<EnvelopeLines>),
    /// A line for the sessions of the named devices (a chain, a device notice).
    Device(Bytes),
    /// A `rekey` line: for sessions that asked for the feature, else stored.
    Rekey(Bytes),
}

/// What the hub hands the bus.
#[derive(Debug, Clone)]
pub enum BusOut {
    /// A line for the devices `handles` names on `node`.
    Route {
        /// The node.
        node: String,
        /// Its handles of the devices.
        handles: Arc<[u32]>,
        /// The same devices, to store the line for if it cannot go.
        devices: Targets,
        /// The hub's bus epoch when it was routed: one routed before this node was last cut
        /// off must not go out afterwards (it is stored instead).
        epoch: u64,
        /// The line.
        payload: Payload,
    },
    /// A device key's sessions on this node changed; `seq` numbers the change.
    Presence {
        /// Numbers the changes of this node, 1, 2, 3...
        seq: u64,
        /// The device now.
        device: DeviceOnNode,
    },
    /// A change every node applies.
    Event(Event),
}

/// The way out to the bus, shared with the cluster task, which counts routed lines down as
/// it publishes them.
#[derive(Debug, Clone)]
pub struct BusTx {
    /// The channel the cluster task drains.
    pub tx: mpsc::UnboundedSender<BusOut>,
    /// Routed lines handed over and not yet published.
    pub queued: Arc<AtomicUsize>,
    /// At most this many routed lines wait (`cluster.bus_queue_max`).
    pub max: usize,
}

/// A node, its handles of the devices a line is for, and those devices.
type PerNode = (String, Arc<[u32]>, Targets);

/// What one other node has.
#[derive(Debug, Default)]
pub(super) struct NodeView {
    /// Device keys with sessions there: (user, handle, sessions).
    pub(super) devices: HashMap<Fingerprint, (String, u32, u32)>,
    /// Away messages of users there.
    pub(super) away: HashMap<String, String>,
}

/// The other nodes (those alive), this node's handles, and the way out to the bus.
#[derive(Debug, Default)]
pub(super) struct Remote {
    pub(super) nodes: BTreeMap<String, NodeView>,
    /// Sessions per user on other nodes.
    users: HashMap<String, u32>,
    /// On how many other nodes each device key has sessions.
    devices: HashMap<Fingerprint, u32>,
    /// This node's handle for each device key that had a session here.
    handles: HashMap<Fingerprint, u32>,
    /// The device key behind each handle.
    by_handle: HashMap<u32, (String, Fingerprint)>,
    /// Numbers presence changes ([`BusOut::Presence`]).
    pub(super) presence_seq: u64,
    /// Bumped whenever another node's devices change (caches compare it).
    pub(super) version: u64,
    /// Every other node's handles for a line to everyone, as of `version`.
    everyone: Option<(u64, Vec<PerNode>)>,
    pub(super) bus: Option<BusTx>,
    /// Lines not routed to another node because the bus was behind, since last logged.
    behind: u64,
    /// Bumped each time this node is cut off from the cluster.
    pub(super) epoch: u64,
}

impl Remote {
    /// Sessions `user` has on other nodes.
    pub(super) fn user_sessions(&self, user: &str) -> u32 {
        self.users.get(user).copied().unwrap_or(0)
    }

    /// True when device key `device` has a session on another node.
    pub(super) fn device_online(&self, device: &Fingerprint) -> bool {
        self.devices.contains_key(device)
    }

    /// Users with sessions on other nodes, and how many.
    pub(super) fn users(&self) -> impl Iterator<Item = (&String, &u32)> {
        self.users.iter()
    }

    /// `user`'s away message on another node.
    pub(super) fn away(&self, user: &str) -> Option<&String> {
        self.nodes.values().find_map(|n| n.away.get(user))
    }

    /// This node's handle for `device` of `user`, made on first use.
    pub(super) fn handle(&mut self, user: &str, device: Fingerprint) -> u32 {
        if let Some(h) = self.handles.get(&device) {
            return *h;
        }
        let h = u32::try_from(self.handles.len() + 1).unwrap_or(u32::MAX);
        self.handles.insert(device, h);
        self.by_handle.insert(h, (user.to_string(), device));
        h
    }

    /// The device key behind this node's handle `h`.
    pub(super) fn by_handle(&self, h: u32) -> Option<&(String, Fingerprint)> {
        self.by_handle.get(&h)
    }

    /// Hands `out` to the bus; false when there is no bus.
    pub(super) fn send(&mut self, out: BusOut) -> bool {
        match &self.bus {
            Some(bus) => bus.tx.send(out).is_ok(),
            None => false,
        }
    }

    /// Numbers and hands the bus a change of `device`'s sessions here.
    pub(super) fn presence(&mut self, device: DeviceOnNode) {
        if self.bus.is_none() {
            return;
        }
        self.presence_seq += 1;
        let seq = self.presence_seq;
        self.send(BusOut::Presence { seq, device });
    }

    /// Room for one more routed line on the bus; false (counted, logged once per episode)
    /// when it is behind and the line is to be stored instead.
    fn take_slot(&mut self) -> bool {
        let Some(bus) = &self.bus else {
            return false;
        };
        if bus.queued.load(Ordering::Relaxed) >= bus.max {
            self.behind += 1;
            if self.behind == 1 {
                tracing::warn!(
                    "the cluster bus is behind; lines for users on other nodes are stored instead"
                );
            }
            crate::metrics::get().bus_behind();
            return false;
        }
        if self.behind > 0 {
            tracing::info!(stored = self.behind, "the cluster bus caught up");
            self.behind = 0;
        }
        bus.queued.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Routes `payload` to the devices `wanted` picks on every other node; returns the
    /// device keys it could not hand to the bus (to be stored).
    pub(super) fn route(
        &mut self,
        wanted: impl Fn(&str, &Fingerprint) -> bool,
        payload: impl Fn() -> Payload,
    ) -> Vec<(String, Fingerprint)> {
        let mut per_node: Vec<PerNode> = Vec::new();
        for (name, view) in &self.nodes {
            let mut handles = Vec::new();
            let mut devices = Vec::new();
            for (fp, (user, handle, _)) in &view.devices {
                if wanted(user, fp) {
                    handles.push(*handle);
                    devices.push((user.clone(), *fp));
                }
            }
            if !handles.is_empty() {
                per_node.push((name.clone(), handles.into(), devices.into()));
            }
        }
        self.hand_out(per_node, payload)
    }

    /// Routes `payload` to every device on every other node (see [`Remote::route`]); the
    /// handles are listed once per change of the other nodes' devices.
    pub(super) fn route_everyone(
        &mut self,
        payload: impl Fn() -> Payload,
    ) -> Vec<(String, Fingerprint)> {
        let version = self.version;
        let lists = match &self.everyone {
            Some((v, lists)) if *v == version => lists.clone(),
            _ => {
                let lists: Vec<PerNode> = self
                    .nodes
                    .iter()
                    .filter(|(_, view)| !view.devices.is_empty())
                    .map(|(name, view)| {
                        let mut all: Vec<(u32, String, Fingerprint)> = view
                            .devices
                            .iter()
                            .map(|(fp, (user, h, _))| (*h, user.clone(), *fp))
                            .collect();
                        all.sort_unstable_by_key(|d| d.0);
                        let handles: Arc<[u32]> = all.iter().map(|d| d.0).collect();
                        let devices: Targets = all.into_iter().map(|d| (d.1, d.2)).collect();
                        (name.clone(), handles, devices)
                    })
                    .collect();
                self.everyone = Some((version, lists.clone()));
                lists
            }
        };
        self.hand_out(lists, payload)
    }

    /// Routes `payload` to `device`'s sessions on other nodes; true when the bus took it for
    /// every node that has one.
    pub(super) fn route_device(
        &mut self,
        device: &Fingerprint,
        payload: impl Fn() -> Payload,
    ) -> bool {
        let per_node: Vec<PerNode> = self
            .nodes
            .iter()
            .filter_map(|(name, view)| {
                let (user, handle, _) = view.devices.get(device)?;
                let devices: Targets = Arc::from([(user.clone(), *device)]);
                Some((name.clone(), Arc::from([*handle]), devices))
            })
            .collect();
        self.hand_out(per_node, payload).is_empty()
    }

    /// Hands one line per node to the bus; the devices of the nodes it could not.
    fn hand_out(
        &mut self,
        per_node: Vec<PerNode>,
        payload: impl Fn() -> Payload,
    ) -> Vec<(String, Fingerprint)> {
        let mut refused = Vec::new();
        for (node, handles, devices) in per_node {
            if !self.take_slot() {
                refused.extend(devices.iter().cloned());
                continue;
            }
            let out = BusOut::Route {
                node,
                handles,
                devices: Targets::clone(&devices),
                epoch: self.epoch,
                payload: payload(),
            };
            if !self.send(out) {
                refused.extend(devices.iter().cloned());
            }
        }
        refused
    }

    /// Applies what `node` says of one of its devices; returns (was the device online on
    /// some other node before, is it now; the user's sessions on other nodes before, now).
    pub(super) fn apply(&mut self, node: &str, d: &DeviceOnNode) -> (bool, bool, u32, u32) {
        let before = (self.device_online(&d.device), self.user_sessions(&d.user));
        let view = self.nodes.entry(node.to_string()).or_default();
        let old = match d.sessions {
            0 => view.devices.remove(&d.device).map(|(_, _, s)| s),
            n => view
                .devices
                .insert(d.device, (d.user.clone(), d.handle, n))
                .map(|(_, _, s)| s),
        }
        .unwrap_or(0);
        if d.sessions == 0 && !view.devices.values().any(|(u, _, _)| *u == d.user) {
            // Their last session there: an away message set there goes with it.
            view.away.remove(&d.user);
        }
        if old == 0 && d.sessions == 0 {
            return (before.0, before.0, before.1, before.1);
        }
        self.version += 1;
        if old == 0 {
            *self.devices.entry(d.device).or_insert(0) += 1;
        } else if d.sessions == 0 {
            decrement(&mut self.devices, &d.device, 1);
        }
        let users = self.users.entry(d.user.clone()).or_insert(0);
        *users = (*users + d.sessions).saturating_sub(old);
        if *users == 0 {
            self.users.remove(&d.user);
        }
        (
            before.0,
            self.device_online(&d.device),
            before.1,
            self.user_sessions(&d.user),
        )
    }

    /// Sets `user`'s away message on `node`.
    pub(super) fn set_away(&mut self, node: &str, user: &str, text: Option<String>) {
        let view = self.nodes.entry(node.to_string()).or_default();
        match text {
            Some(t) => view.away.insert(user.to_string(), t),
            None => view.away.remove(user),
        };
    }

    /// The devices `node` had (to announce gone), forgetting the node.
    pub(super) fn take_node(&mut self, node: &str) -> Vec<DeviceOnNode> {
        let Some(view) = self.nodes.get(node) else {
            return Vec::new();
        };
        let devices: Vec<DeviceOnNode> = view
            .devices
            .iter()
            .map(|(fp, (user, handle, _))| DeviceOnNode {
                user: user.clone(),
                device: *fp,
                key: String::new(),
                handle: *handle,
                sessions: 0,
            })
            .collect();
        devices
    }

    /// Forgets `node` once its devices were applied as gone.
    pub(super) fn drop_node(&mut self, node: &str) {
        if self.nodes.remove(node).is_some() {
            self.version += 1;
        }
    }
}

fn decrement(map: &mut HashMap<Fingerprint, u32>, key: &Fingerprint, by: u32) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(by);
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(user: &str, n: u8, handle: u32, sessions: u32) -> DeviceOnNode {
        DeviceOnNode {
            user: user.into(),
            device: Fingerprint::from_bytes([n; 32]),
            key: String::new(),
            handle,
            sessions,
        }
    }

    #[test]
    fn counts_follow_devices_across_nodes() {
        let mut r = Remote::default();
        assert_eq!(r.apply("b", &dev("alice", 1, 1, 1)), (false, true, 0, 1));
        assert_eq!(r.apply("b", &dev("alice", 1, 1, 2)), (true, true, 1, 2));
        assert_eq!(r.apply("c", &dev("alice", 1, 9, 1)), (true, true, 2, 3));
        assert_eq!(r.apply("b", &dev("alice", 1, 1, 0)), (true, true, 3, 1));
        assert!(r.device_online(&Fingerprint::from_bytes([1; 32])));
        assert_eq!(r.apply("c", &dev("alice", 1, 9, 0)), (true, false, 1, 0));
        assert_eq!(r.user_sessions("alice"), 0);
        // A device that was never there going away changes nothing.
        let v = r.version;
        assert_eq!(r.apply("c", &dev("bob", 2, 3, 0)), (false, false, 0, 0));
        assert_eq!(r.version, v);
    }

    #[test]
    fn an_away_message_goes_with_the_users_last_session_on_that_node() {
        let mut r = Remote::default();
        r.apply("b", &dev("alice", 1, 1, 1));
        r.apply("b", &dev("alice", 2, 2, 1));
        r.set_away("b", "alice", Some("lunch".into()));
        r.apply("b", &dev("alice", 1, 1, 0));
        assert_eq!(r.away("alice").map(String::as_str), Some("lunch"));
        r.apply("b", &dev("alice", 2, 2, 0));
        assert_eq!(r.away("alice"), None);
    }

    #[test]
    fn handles_are_stable_and_never_reused() {
        let mut r = Remote::default();
        let a = r.handle("alice", Fingerprint::from_bytes([1; 32]));
        let b = r.handle("bob", Fingerprint::from_bytes([2; 32]));
        assert_ne!(a, b);
        assert_eq!(r.handle("alice", Fingerprint::from_bytes([1; 32])), a);
        assert_eq!(r.by_handle(b).map(|d| d.0.as_str()), Some("bob"));
        assert_eq!(r.by_handle(99), None);
    }

    #[test]
    fn a_full_bus_refuses_lines_and_says_which_devices_to_store_for() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut r = Remote {
            bus: Some(BusTx {
                tx,
                queued: Arc::clone(&queued),
                max: 1,
            }),
            ..Remote::default()
        };
        r.apply("b", &dev("alice", 1, 1, 1));
        r.apply("c", &dev("bob", 2, 4, 1));
        let payload = || Payload::Device(Bytes::from_static(b"x\n"));
        let refused = r.route_everyone(payload);
        // One node's line went; the other's devices are to be stored.
        assert_eq!(refused.len(), 1);
        assert_eq!(queued.load(Ordering::Relaxed), 1);
        let Ok(BusOut::Route { node, handles, .. }) = rx.try_recv() else {
            panic!("nothing handed to the bus");
        };
        assert_eq!((node.as_str(), &handles[..]), ("b", &[1][..]));
        assert_eq!(refused[0].0, "bob");
    }
}
