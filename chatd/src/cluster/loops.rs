//! The cluster's three tasks: publishing what the hub hands out, receiving what the other
//! nodes send this one, and the heartbeats that keep the membership.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::members::Heard;
use super::wire::{self, Control, Message, NodeId};
use super::{Cluster, lock, new_incarnation, take_one};
use crate::hub::{BusOut, DeviceOnNode, Event};
use crate::store::PageSize;

/// Told to the sessions closed when this node rejoins its cluster.
const REJOINED: &str = "this node lost its cluster for a while and rejoined it; reconnect to receive what was stored meanwhile";
/// Told to a session with lines stored for it while another node did not know it was here.
const STORED_MEANWHILE: &str =
    "messages were stored for you while the cluster was divided; reconnect to receive them";

/// Publishes what the hub hands out: routed lines to their node, presence changes (batched
/// over `presence_batch_ms`) and events to every live node.
pub(super) async fn publish(
    c: Arc<Cluster>,
    mut rx: mpsc::UnboundedReceiver<BusOut>,
    stop: CancellationToken,
) {
    let mut pending: Vec<DeviceOnNode> = Vec::new();
    let mut pending_seq = 0;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let item = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                deadline = None;
                c.send_presence(std::mem::take(&mut pending), pending_seq).await;
                continue;
            }
            () = stop.cancelled() => break,
        };
        match item {
            BusOut::Presence { seq, device } => {
                pending.push(device);
                pending_seq = seq;
                if c.timing.batch.is_zero() {
                    c.send_presence(std::mem::take(&mut pending), pending_seq)
                        .await;
                } else if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + c.timing.batch);
                }
            }
            BusOut::Route {
                node,
                handles,
                devices,
                epoch,
                payload,
            } => {
                take_one(c.queued());
                if epoch != c.parts.hub.bus_epoch() || c.is_cut_off() {
                    // Routed before this node was cut off: late now, so stored.
                    c.parts.hub.store_instead(&devices, &payload);
                    continue;
                }
                let bytes = wire::encode_routed(&c.me(), &handles, &payload);
                if !c.send(&node, bytes).await {
                    // The bus did not take it: stored, not lost.
                    c.parts.hub.store_instead(&devices, &payload);
                }
            }
            BusOut::Event(event) => {
                // A device's presence (with its key) goes before an event that names it.
                if !pending.is_empty() {
                    deadline = None;
                    c.send_presence(std::mem::take(&mut pending), pending_seq)
                        .await;
                }
                c.send_event(event).await;
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The next message of `sub`; None when it ends or `stop` fires.
pub(super) async fn next(
    sub: &mut async_nats::Subscriber,
    stop: &CancellationToken,
) -> Option<async_nats::Message> {
    tokio::select! {
        msg = sub.next() => msg,
        () = stop.cancelled() => None,
    }
}

/// Receives what other nodes send this one.
pub(super) async fn receive(
    c: Arc<Cluster>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) {
    while let Some(msg) = next(&mut sub, &stop).await {
        crate::metrics::get().bus_message(false);
        // A node that was paused finds out before it delivers what waited for it.
        c.check_self();
        match wire::decode(msg.payload) {
            Err(e) => tracing::warn!(error = %e, "dropped a message from the cluster bus"),
            Ok(Message::Routed(r)) => {
                let deliver = {
                    let m = c.members();
                    !m.cut_off && m.is_live(&r.from)
                };
                c.parts.hub.routed_here(&r.handles, &r.payload, deliver);
            }
            Ok(Message::Control(control)) => c.control(control),
        }
    }
}

/// Says this node is alive every `heartbeat_ms`, hears the others, declares the silent
/// ones gone, and fences this node when its own heartbeats stop coming back.
pub(super) async fn hello(
    c: Arc<Cluster>,
    mut sub: async_nats::Subscriber,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(c.timing.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => c.beat().await,
            msg = sub.next() => match msg {
                Some(msg) => match wire::decode(msg.payload) {
                    Ok(Message::Control(Control::Heartbeat { from, sent_ms, version })) => {
                        if version == wire::BUS_VERSION {
                            c.heard_heartbeat(&from, sent_ms);
                        } else {
                            c.other_version(&from, version);
                        }
                    }
                    _ => tracing::warn!("dropped a malformed heartbeat"),
                },
                None => break,
            },
            () = stop.cancelled() => break,
        }
    }
}

impl Cluster {
    /// Publishes `bytes` to `node`'s subject; false when the bus did not take it within a
    /// heartbeat (its connection is gone and its buffer full).
    async fn send(&self, node: &str, bytes: Bytes) -> bool {
        let publish = self.client.publish(self.node_subject(node), bytes);
        match tokio::time::timeout(self.timing.heartbeat, publish).await {
            Ok(Ok(())) => {
                crate::metrics::get().bus_message(true);
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, node, "cannot publish to the cluster bus");
                false
            }
            Err(_) => {
                tracing::debug!(node, "the cluster bus took nothing for a heartbeat");
                false
            }
        }
    }

    /// Publishes a control message to `node`.
    async fn send_control(&self, node: &str, control: &Control) {
        if let Some(bytes) = wire::encode_control(control) {
            self.send(node, bytes).await;
        }
    }

    fn peer_names(&self) -> Vec<String> {
        self.members().peers.keys().cloned().collect()
    }

    /// Presence changes up to `seq`, to every live node.
    async fn send_presence(&self, devices: Vec<DeviceOnNode>, seq: u64) {
        if devices.is_empty() {
            return;
        }
        let control = Control::Presence {
            from: self.me(),
            whole: false,
            seq,
            devices,
            away: Vec::new(),
        };
        for node in self.peer_names() {
            self.send_control(&node, &control).await;
        }
    }

    /// An event made here, to every live node.
    async fn send_event(&self, event: Event) {
        let control = Control::Event {
            from: self.me(),
            event,
        };
        for node in self.peer_names() {
            self.send_control(&node, &control).await;
        }
    }

    /// Every device with a session here, to a node that just appeared.
    fn send_sync(self: &Arc<Self>, to: &NodeId) {
        let (devices, away, seq) = self.parts.hub.local_presence();
        {
            let mut m = self.members();
            match m.peers.get_mut(&to.name) {
                Some(p) if p.incarnation == to.incarnation => p.sync_seq = Some(seq),
                _ => return,
            }
        }
        let control = Control::Presence {
            from: self.me(),
            whole: true,
            seq,
            devices,
            away,
        };
        let c = Arc::clone(self);
        let to = to.name.clone();
        tokio::spawn(async move { c.send_control(&to, &control).await });
    }

    /// A node heard for the first time (or under a new incarnation): it gets this node's
    /// presence; one it replaced is gone.
    fn appeared(self: &Arc<Self>, from: &NodeId, replaced: bool) {
        if replaced {
            self.parts
                .hub
                .node_gone(&from.name, &format!("node {} restarted", from.name));
        }
        tracing::info!(node = %from.name, "cluster node joined");
        self.send_sync(from);
        crate::metrics::get().cluster_nodes(self.members().peers.len() + 1);
        self.bump();
    }

    /// A control message from another node.
    fn control(self: &Arc<Self>, control: Control) {
        let me = self.me();
        match control {
            Control::Presence {
                from,
                whole,
                seq,
                devices,
                away,
            } => {
                if from.name == me.name || self.is_cut_off() {
                    return;
                }
                match self.heard(&from) {
                    Heard::Gone => return,
                    Heard::New { replaced } => self.appeared(&from, replaced),
                    Heard::Known => {}
                }
                let offline_seq = self
                    .parts
                    .hub
                    .remote_presence(&from.name, &devices, &away, whole);
                self.ack_when_stored(from, seq, offline_seq);
            }
            Control::Ack { from, seq } => {
                let synced = self.members().acked(&from, seq);
                self.bump();
                if synced {
                    let c = Arc::clone(self);
                    tokio::spawn(async move { c.catch_up().await });
                }
            }
            Control::Event { from, event } => {
                if from.name == me.name {
                    return;
                }
                match self.heard(&from) {
                    // What a gone node did is in the store; its lines are late.
                    Heard::Gone if carries_lines(&event) => return,
                    Heard::New { replaced } => self.appeared(&from, replaced),
                    _ => {}
                }
                self.parts.hub.remote_event(&from.name, &event);
            }
            Control::Heartbeat { .. } => {}
        }
    }

    fn heard(&self, from: &NodeId) -> Heard {
        self.members().heard(from, Instant::now())
    }

    /// Acknowledges `from`'s presence up to `seq` once the offline writer stored every line
    /// this node routed before it knew (`offline_seq`).
    fn ack_when_stored(self: &Arc<Self>, from: NodeId, seq: u64, offline_seq: u64) {
        let c = Arc::clone(self);
        tokio::spawn(async move {
            let mut committed = c.parts.committed.clone();
            let _ = committed.wait_for(|done| *done >= offline_seq).await;
            let ack = Control::Ack { from: c.me(), seq };
            c.send_control(&from.name, &ack).await;
        });
    }

    /// A heartbeat: our own tells the bus works; another node's that it lives.
    fn heard_heartbeat(self: &Arc<Self>, from: &NodeId, sent_ms: u64) {
        let me = self.me();
        if from.name == me.name {
            if from.incarnation != me.incarnation {
                return;
            }
            let sent = self.clock + Duration::from_millis(sent_ms);
            let rejoin = {
                let mut m = self.members();
                if sent > m.last_echo {
                    m.last_echo = sent;
                }
                m.cut_off && m.last_echo.elapsed() < self.timing.heartbeat * 2
            };
            if rejoin {
                self.rejoin();
            }
            return;
        }
        if self.is_cut_off() {
            return;
        }
        if let Heard::New { replaced } = self.heard(from) {
            self.appeared(from, replaced);
        }
    }

    /// A node speaking another version of the bus: not a peer; said once per incarnation.
    fn other_version(&self, from: &NodeId, version: u32) {
        if self.members().note_other_version(from) {
            tracing::error!(
                node = %from.name,
                its_version = version,
                our_version = wire::BUS_VERSION,
                "a cluster node speaks another version of the bus and is ignored: run the same chatd version on every node"
            );
        }
    }

    /// Every heartbeat: say we live, declare the silent gone, check ourselves.
    async fn beat(self: &Arc<Self>) {
        let beat = Control::Heartbeat {
            from: self.me(),
            sent_ms: self.now_ms(),
            version: wire::BUS_VERSION,
        };
        if let Some(bytes) = wire::encode_control(&beat) {
            // Bounded: a bus that takes nothing must not stop the checks below.
            let publish = self.client.publish(self.hello_subject(), bytes);
            match tokio::time::timeout(self.timing.heartbeat, publish).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot publish a heartbeat"),
                Err(_) => tracing::debug!("the cluster bus took no heartbeat"),
            }
        }
        // Itself first: after a pause, every other node looks silent because this one was;
        // declared gone, their incarnations would never be heard again.
        self.check_self();
        let silent = if self.is_cut_off() {
            Vec::new()
        } else {
            self.members().expire(Instant::now(), self.timing.timeout)
        };
        for node in silent {
            tracing::warn!(node = %node, timeout_ms = self.timing.timeout.as_millis() as u64, "cluster node stopped answering: declared gone, its users offline");
            crate::metrics::get().node_gone();
            self.parts
                .hub
                .node_gone(&node, &format!("node {node} stopped answering"));
            self.bump();
        }
        crate::metrics::get().cluster_nodes(self.members().peers.len() + 1);
    }

    /// Cuts this node off when its own heartbeats have not come back for nearly the time
    /// after which the others declare it gone: from then on it delivers nothing another
    /// node sends (it stores it), until it rejoins.
    pub(super) fn check_self(&self) {
        let limit = self.timing.timeout.saturating_sub(self.timing.heartbeat);
        let silent = {
            let mut m = self.members();
            let silent = m.last_echo.elapsed();
            if m.cut_off || silent <= limit {
                return;
            }
            m.cut_off = true;
            m.forget_all();
            silent
        };
        tracing::warn!(
            silent_ms = silent.as_millis() as u64,
            "this node has not heard its own heartbeat (paused, or cut off from the cluster bus): \
             lines for users on other nodes are stored until it rejoins"
        );
        crate::metrics::get().fenced();
        self.parts.hub.cut_off("this node lost its cluster");
        crate::metrics::get().cluster_nodes(1);
        self.bump();
    }

    /// Heard again after being cut off: a new incarnation (the others declared the old one
    /// gone), and every session closed so its client replays what was stored meanwhile.
    fn rejoin(&self) {
        let incarnation = new_incarnation();
        lock(&self.me).incarnation = incarnation;
        {
            let mut m = self.members();
            m.cut_off = false;
            m.joined_at = Instant::now();
        }
        let closed = self.parts.hub.close_all(REJOINED);
        tracing::warn!(
            sessions = closed,
            "this node rejoined its cluster; its sessions were closed to replay what was stored meanwhile"
        );
        self.bump();
    }

    /// After a node that appeared acknowledged our presence (having stored what it routed
    /// to our users before it knew them): closes our sessions that have lines stored, so
    /// their clients replay them.
    async fn catch_up(&self) {
        let seq = self.parts.hub.offline_seq();
        let mut committed = self.parts.committed.clone();
        let _ = committed.wait_for(|done| *done >= seq).await;
        let not_before = crate::offline::now_ms().saturating_sub(self.parts.offline_ttl_ms);
        let one = PageSize { lines: 1, bytes: 1 };
        for (user, device) in self.parts.hub.local_devices() {
            let page = self
                .parts
                .store
                .replay_page(
                    &user,
                    device.as_bytes(),
                    0,
                    one,
                    not_before,
                    Arc::clone(&self.parts.stored_lines),
                )
                .await;
            if let Ok((rows, _)) = page {
                if !rows.is_empty() {
                    self.parts
                        .hub
                        .close_device_here(&user, &device, STORED_MEANWHILE);
                }
            }
        }
    }
}

/// Events whose point is a line for sessions now (late is wrong), not a stored fact.
fn carries_lines(event: &Event) -> bool {
    matches!(
        event,
        Event::ToUser { .. } | Event::ToRoom { .. } | Event::ToAll { .. }
    )
}
