//! Clusters: several chatd nodes serving one deployment, sharing their state in PostgreSQL
//! and carrying live traffic over NATS (`[cluster] nats`). See docs/CLUSTER.md.
//!
//! Each node subscribes to two subjects: `P.hello`, where every node says it is alive every
//! `heartbeat_ms`, and `P.node.NAME`, where the others send it everything else, in order,
//! from one connection each: lines routed to its devices, its peers' presence and state
//! changes, and acknowledgements ([`wire`]). The hub decides what goes where ([`crate::hub`]);
//! this module moves it and keeps the membership ([`members`]):
//!
//! - a node not heard for `node_timeout_ms` is declared gone: its users leave, lines for
//!   them are stored, and nothing its incarnation sends is delivered afterwards;
//! - a node whose own heartbeats have not come back for that long (paused, cut off) drops
//!   its view of the others and stores whatever reaches it, then, heard again, rejoins under
//!   a new incarnation and closes its sessions so their clients replay what was stored;
//! - a login's replay waits until every live node acknowledged the new device, each having
//!   stored what it routed before, so a line is neither lost nor delivered twice;
//! - when a node appears, the others close their sessions that have lines stored meanwhile
//!   (lines it stored for them while it did not know them), so those clients replay them.
//!
//! `P.admin.NAME` answers the cluster-wide questions of `chatctl` ([`admin`]).

mod admin;
mod loops;
mod members;
pub mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ClusterConfig;
use crate::hub::{BusTx, Hub};
use crate::store::Store;
use crate::stored_lines::StoredLines;
use members::Members;
use wire::NodeId;

/// What a node's cluster part needs from the rest of chatd.
pub struct Parts {
    /// The hub.
    pub hub: Arc<Hub>,
    /// The store (to find sessions with lines stored meanwhile).
    pub store: Store,
    /// The offline writer's last committed job.
    pub committed: watch::Receiver<u64>,
    /// Lines replay reads share.
    pub stored_lines: Arc<StoredLines>,
    /// `limits.offline_ttl_secs`, in milliseconds.
    pub offline_ttl_ms: i64,
}

/// Bus timings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) heartbeat: Duration,
    pub(crate) timeout: Duration,
    pub(crate) batch: Duration,
}

/// One node's part of the cluster.
pub struct Cluster {
    client: async_nats::Client,
    prefix: String,
    me: Mutex<NodeId>,
    members: Mutex<Members>,
    /// Bumped when acknowledgements or membership change (logins wait on it).
    changed: watch::Sender<u64>,
    parts: Parts,
    timing: Timing,
    /// The monotonic clock's zero, for heartbeat times.
    clock: Instant,
    queued: Arc<AtomicUsize>,
}

/// The cluster could not start.
#[derive(Debug, thiserror::Error)]
#[error("cluster bus {urls}: {reason}")]
pub struct ClusterError {
    urls: String,
    reason: String,
}

fn bus_error(config: &ClusterConfig, reason: String) -> ClusterError {
    ClusterError {
        urls: config.nats.clone().unwrap_or_default(),
        reason,
    }
}

/// The bus servers and how to connect to them (name, token, reconnecting forever).
fn options(
    config: &ClusterConfig,
) -> Result<(Vec<async_nats::ServerAddr>, async_nats::ConnectOptions), ClusterError> {
    let urls = config.nats.clone().unwrap_or_default();
    let servers: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| bus_error(config, format!("{e}")))?;
    let token = config.nats_token().map_err(|e| bus_error(config, e))?;
    let options = async_nats::ConnectOptions::new()
        .name(format!("chatd {}", config.node_name()))
        .max_reconnects(None)
        .ping_interval(Duration::from_millis(config.heartbeat_ms.max(1000)))
        .connection_timeout(Duration::from_secs(5))
        .subscription_capacity(1 << 16);
    let options = match token {
        Some(t) => options.token(t),
        None => options,
    };
    Ok((servers, options))
}

/// One try at the bus: a refused token or an unusable URL is an error (start-up stops with
/// its reason); a bus that is down is Ok(Err) (start-up goes on: local routing works, and
/// chatd joins once it is up).
async fn connect(
    config: &ClusterConfig,
) -> Result<Result<async_nats::Client, async_nats::ConnectError>, ClusterError> {
    use async_nats::ConnectErrorKind as Kind;
    let (servers, options) = options(config)?;
    match options.connect(servers).await {
        Ok(client) => Ok(Ok(client)),
        Err(e)
            if matches!(
                e.kind(),
                Kind::AuthorizationViolation | Kind::Authentication | Kind::ServerParse | Kind::Tls
            ) =>
        {
            Err(bus_error(config, e.to_string()))
        }
        Err(e) => Ok(Err(e)),
    }
}

/// What `chatd --check-config` says of the bus: `Ok(Ok(server))` when it answered with the
/// token, `Ok(Err(why))` when it is down (start-up would go on without it), Err when start-up
/// would stop.
pub async fn probe(config: &ClusterConfig) -> Result<Result<String, String>, ClusterError> {
    match connect(config).await? {
        Ok(client) => {
            let info = client.server_info();
            let said = format!(
                "nats-server {} at {}:{}",
                info.version, info.host, info.port
            );
            drop(client);
            Ok(Ok(said))
        }
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// One node in `chatctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Its name.
    pub name: String,
    /// Milliseconds since it was last heard (0 for this node).
    pub heard_ms: u64,
}

impl Cluster {
    /// Connects to NATS (retrying in the background if it is down), subscribes, attaches
    /// the bus to the hub and starts the tasks, which end when `stop` fires.
    pub async fn start(
        config: &ClusterConfig,
        parts: Parts,
        stop: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let client = match connect(config).await? {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(error = %e, "cluster bus unreachable; serving this node's users alone until it is up");
                let (servers, options) = options(config)?;
                options
                    .retry_on_initial_connect()
                    .connect(servers)
                    .await
                    .map_err(|e| bus_error(config, e.to_string()))?
            }
        };
        let name = config.node_name();
        let timing = Timing {
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            timeout: Duration::from_millis(config.node_timeout_ms),
            batch: Duration::from_millis(config.presence_batch_ms),
        };
        let now = Instant::now();
        let cluster = Arc::new(Cluster {
            client,
            prefix: config.nats_prefix.clone(),
            me: Mutex::new(NodeId {
                name,
                incarnation: new_incarnation(),
            }),
            members: Mutex::new(Members::new(now)),
            changed: watch::channel(0).0,
            parts,
            timing,
            clock: now,
            queued: Arc::new(AtomicUsize::new(0)),
        });
        let hello = cluster
            .client
            .subscribe(cluster.hello_subject())
            .await
            .map_err(|e| bus_error(config, e.to_string()))?;
        let mine = cluster
            .client
            .subscribe(cluster.node_subject(&cluster.me().name))
            .await
            .map_err(|e| bus_error(config, e.to_string()))?;
        let admin = cluster
            .client
            .subscribe(cluster.admin_subject(&cluster.me().name))
            .await
            .map_err(|e| bus_error(config, e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        cluster.parts.hub.attach_bus(BusTx {
            tx,
            queued: Arc::clone(&cluster.queued),
            max: config.bus_queue_max,
        });
        crate::metrics::get().cluster_nodes(1);
        tracker.spawn(loops::publish(Arc::clone(&cluster), rx, stop.clone()));
        tracker.spawn(loops::receive(Arc::clone(&cluster), mine, stop.clone()));
        tracker.spawn(loops::hello(Arc::clone(&cluster), hello, stop.clone()));
        tracker.spawn(admin::answer(Arc::clone(&cluster), admin, stop));
        Ok(cluster)
    }

    /// This node as the bus knows it now.
    pub fn me(&self) -> NodeId {
        lock(&self.me).clone()
    }

    fn hello_subject(&self) -> String {
        format!("{}.hello", self.prefix)
    }

    fn node_subject(&self, node: &str) -> String {
        format!("{}.node.{node}", self.prefix)
    }

    fn admin_subject(&self, node: &str) -> String {
        format!("{}.admin.{node}", self.prefix)
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Members> {
        lock(&self.members)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits until a login registered with presence change `seq` may read its stored lines:
    /// this node has been in the cluster long enough for the others to have heard it, and
    /// every live node acknowledged the change (having stored what it routed before). At
    /// most `node_timeout_ms`: a node that does not answer is about to be declared gone.
    pub async fn login_settled(&self, seq: u64) {
        let deadline = tokio::time::Instant::now() + self.timing.timeout;
        let mut changed = self.changed.subscribe();
        loop {
            let settle = {
                let m = self.members();
                let since = m.joined_at.elapsed();
                let settle = (self.timing.heartbeat * 2).saturating_sub(since);
                if settle.is_zero() && (m.cut_off || m.all_acked(seq)) {
                    return;
                }
                settle
            };
            let wake = tokio::time::Instant::now() + settle.max(Duration::from_millis(1));
            tokio::select! {
                _ = changed.changed() => {}
                () = tokio::time::sleep_until(wake.min(deadline)), if !settle.is_zero() => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(seq, "not every node acknowledged a login in time; replaying anyway");
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
        }
    }

    /// Every node this one counts alive, itself first.
    pub fn nodes(&self) -> Vec<NodeState> {
        let me = self.me().name;
        let m = self.members();
        let mut out = vec![NodeState {
            name: me,
            heard_ms: 0,
        }];
        out.extend(m.peers.iter().map(|(name, p)| NodeState {
            name: name.clone(),
            heard_ms: p.last_heard.elapsed().as_millis() as u64,
        }));
        out
    }

    /// True while this node is cut off from the others.
    pub fn is_cut_off(&self) -> bool {
        self.members().cut_off
    }

    /// Milliseconds on this node's monotonic clock.
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Routed lines handed over and not yet published.
    fn queued(&self) -> &AtomicUsize {
        &self.queued
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A random incarnation number (the time, if the system has no randomness to give).
fn new_incarnation() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// One routed line left the queue (published, or stored instead).
fn take_one(queued: &AtomicUsize) {
    let _ = queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}
