//! What the cluster task (crate::cluster) asks of the hub: the way out to the bus, this
//! node's devices for a node that just appeared, and what other nodes said (their devices,
//! their events, the lines they routed here); a node gone, and this node cut off.

use bytes::Bytes;
use chatd_proto::Fingerprint;

use super::Hub;
use super::outgoing::{EnvelopeLines, EnvelopeRun, Outgoing};
use super::remote::{BusTx, DeviceOnNode, Event, Payload};

impl Hub {
    /// Connects the bus: from now on the hub hands it presence changes, events and lines for
    /// other nodes.
    pub fn attach_bus(&self, bus: BusTx) {
        self.lock().remote.bus = Some(bus);
    }

    /// The number of the last presence change handed to the bus.
    pub fn presence_seq(&self) -> u64 {
        self.lock().remote.presence_seq
    }

    /// Every device key with a session here (for a node that just appeared), the away
    /// messages set here, and the number of the last presence change they include.
    pub fn local_presence(&self) -> (Vec<DeviceOnNode>, Vec<(String, String)>, u64) {
        let tables = &mut *self.lock();
        let mut devices = Vec::new();
        let ids: Vec<(Fingerprint, u32)> = tables
            .sessions
            .by_device
            .iter()
            .map(|(fp, ids)| (*fp, ids.len() as u32))
            .collect();
        for (device, sessions) in ids {
            let Some(user) = tables.sessions.user_of_device(&device) else {
                continue;
            };
            let key = tables
                .directory
                .get(&user, &device)
                .map(|k| k.key().to_string())
                .unwrap_or_default();
            let handle = tables.remote.handle(&user, device);
            devices.push(DeviceOnNode {
                user,
                device,
                key,
                handle,
                sessions,
            });
        }
        let away = tables
            .sessions
            .away
            .iter()
            .map(|(u, t)| (u.clone(), t.clone()))
            .collect();
        (devices, away, tables.remote.presence_seq)
    }

    /// What `node` says of its devices: `devices` changed (with `whole`, they are all it
    /// has, and any other it had is gone). Returns the number of the last offline job, which
    /// the offline writer must have stored before `node` is told this node knows.
    pub fn remote_presence(
        &self,
        node: &str,
        devices: &[DeviceOnNode],
        away: &[(String, String)],
        whole: bool,
    ) -> u64 {
        let tables = &mut *self.lock();
        if whole {
            let listed: std::collections::HashSet<Fingerprint> =
                devices.iter().map(|d| d.device).collect();
            for gone in tables.remote.take_node(node) {
                if !listed.contains(&gone.device) {
                    tables.remote_device(node, &gone, "logged out");
                }
            }
            tables.remote.nodes.entry(node.to_string()).or_default();
        }
        for d in devices {
            tables.remote_device(node, d, "logged out");
        }
        for (user, text) in away {
            tables.remote.set_away(node, user, Some(text.clone()));
        }
        tables.offline.changed();
        self.quiet_queued(tables);
        tables.offline.seq
    }

    /// `node` is gone: its users leave (as far as the cluster goes), and lines for them are
    /// stored from now on.
    pub fn node_gone(&self, node: &str, reason: &str) {
        let tables = &mut *self.lock();
        for gone in tables.remote.take_node(node) {
            tables.remote_device(node, &gone, reason);
        }
        tables.remote.drop_node(node);
        tables.offline.changed();
        self.quiet_queued(tables);
    }

    /// The other nodes this hub has heard of.
    pub fn remote_nodes(&self) -> Vec<String> {
        self.lock().remote.nodes.keys().cloned().collect()
    }

    /// An event `node` made.
    pub fn remote_event(&self, node: &str, event: &Event) {
        let tables = &mut *self.lock();
        tables.remote_event(node, event);
        self.quiet_queued(tables);
    }

    /// A line another node routed to this node's devices `handles`: queued for their
    /// sessions here, or stored for a device that has none any more. With `deliver` false
    /// (this node is cut off from the cluster and others may have stored lines since), every
    /// line is stored, so nothing arrives late or out of order.
    pub fn routed_here(&self, handles: &[u32], payload: &Payload, deliver: bool) -> usize {
        let (line, json) = match payload {
            Payload::Envelopes(each) if each.len() == 1 => {
                (Arrived::One(each[0].clone()), vec![each[0].json.clone()])
            }
            Payload::Envelopes(each) => (
                Arrived::Run(EnvelopeRun::new(each.clone())),
                each.iter().map(|l| l.json.clone()).collect(),
            ),
            Payload::Device(line) | Payload::Rekey(line) => {
                (Arrived::Line(line.clone()), vec![line.clone()])
            }
        };
        let rekey = matches!(payload, Payload::Rekey(_));
        let tables = &mut *self.lock();
        let mut reached = 0;
        let mut offline = Vec::new();
        for h in handles {
            let Some((user, device)) = tables.remote.by_handle(*h).cloned() else {
                continue;
            };
            if !deliver {
                offline.push((user, device));
                continue;
            }
            let took = if rekey {
                // None: no session at all; Some(0): sessions that cannot read a rekey.
                tables.sessions.deliver_device_rekey(&device, &line)
            } else {
                Some(tables.sessions.deliver_device(&device, &line)).filter(|n| *n > 0)
            };
            match took {
                Some(n) => reached += n,
                None => offline.push((user, device)),
            }
        }
        if !offline.is_empty() {
            let targets: super::Targets = offline.into();
            for line in &json {
                tables
                    .offline
                    .store_for(line, super::Targets::clone(&targets), None, None);
            }
        }
        if let Payload::Envelopes(each) = payload {
            crate::metrics::get().routed(each.len(), reached);
        }
        reached
    }

    /// This node was cut off from the cluster: every other node is gone as far as it goes,
    /// and lines routed to them before now are stored instead of sent late.
    pub fn cut_off(&self, reason: &str) {
        self.lock().remote.epoch += 1;
        for node in self.remote_nodes() {
            self.node_gone(&node, reason);
        }
    }

    /// The bus epoch now (see [`super::BusOut::Route`]).
    pub fn bus_epoch(&self) -> u64 {
        self.lock().remote.epoch
    }

    /// Stores `payload` for `devices`: a routed line that could not cross the bus.
    pub fn store_instead(&self, devices: &super::Targets, payload: &Payload) {
        let lines: Vec<Bytes> = match payload {
            Payload::Envelopes(each) => each.iter().map(|l| l.json.clone()).collect(),
            Payload::Device(line) | Payload::Rekey(line) => vec![line.clone()],
        };
        let tables = &mut *self.lock();
        tables.offline.changed();
        for line in &lines {
            tables
                .offline
                .store_for(line, super::Targets::clone(devices), None, None);
        }
    }

    /// Every device key with a session here, and its user.
    pub fn local_devices(&self) -> Vec<(String, Fingerprint)> {
        let tables = self.lock();
        tables
            .sessions
            .by_device
            .keys()
            .filter_map(|fp| Some((tables.sessions.user_of_device(fp)?, *fp)))
            .collect()
    }

    /// Asks the sessions of `user`'s device key `device` on this node alone to close.
    pub fn close_device_here(&self, user: &str, device: &Fingerprint, reason: &str) -> usize {
        self.lock().sessions.close_device(user, device, reason)
    }

    /// Asks every session here to close; returns how many.
    pub fn close_all(&self, reason: &str) -> usize {
        self.lock().sessions.close_all(reason)
    }
}

/// A line another node routed here, as this node's sessions take it.
enum Arrived {
    One(EnvelopeLines),
    Run(EnvelopeRun),
    Line(Bytes),
}

impl Outgoing for Arrived {
    fn for_session(&self, binary: bool) -> &Bytes {
        match self {
            Arrived::One(lines) => lines.for_session(binary),
            Arrived::Run(run) => run.for_session(binary),
            Arrived::Line(line) => line,
        }
    }

    fn frames(&self) -> usize {
        match self {
            Arrived::Run(run) => run.frames(),
            _ => 1,
        }
    }

    fn each_frame(&self, binary: bool, f: &mut dyn FnMut(&Bytes)) {
        match self {
            Arrived::Run(run) => run.each_frame(binary, f),
            _ => f(self.for_session(binary)),
        }
    }
}
