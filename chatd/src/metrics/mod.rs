//! Counters, gauges and histograms for the OpenMetrics endpoint (`[metrics] listen`) and
//! `chatctl metrics`.
//!
//! One set per process, reached through [`get`]: what it counts (logins, deliveries, storage
//! errors, the process's CPU and memory) belongs to the process, and an increment is then a
//! single line at the place where the event happens, with no handle threaded through the
//! layers. Every update is an atomic add (a label family takes a read lock to find its
//! series); the fan-out path counts once per routed batch, never per delivery.
//!
//! No label is ever a user name, a room name, an address or anything a client chooses: the
//! label values are fixed words, and plugin names, which come from the administrator's
//! `[[plugins]]`.

pub mod http;
mod process;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of the text [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A label set of one fixed word.
type Word = [(&'static str, &'static str); 1];
/// A plugin's label set: its configured name, and the call's result.
type PluginLabels = [(&'static str, String); 2];

/// How a login attempt ended (`chatd_logins_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// Password and device key accepted.
    Ok,
    /// Unknown user, wrong password or locked account (the client cannot tell which).
    BadCredentials,
    /// Refused before any password work by the failed-login backoff.
    Throttled,
    /// The right password for a banned account.
    Refused,
    /// The device key is malformed, revoked, or one too many for the account.
    BadDeviceKey,
    /// The database failed while checking.
    Error,
}

impl LoginResult {
    fn word(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::BadCredentials => "bad_credentials",
            LoginResult::Throttled => "throttled",
            LoginResult::Refused => "refused",
            LoginResult::BadDeviceKey => "bad_device_key",
            LoginResult::Error => "error",
        }
    }
}

/// Buckets for latencies from a millisecond (a commit) to tens of seconds (a login
/// queued behind a storm of argon2 hashes).
fn latency_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Every metric chatd keeps, and the registry that writes them out.
pub struct Metrics {
    registry: Registry,
    sessions: Family<Word, Gauge>,
    logins: Family<Word, Counter>,
    login_seconds: Histogram,
    hash_queue: Family<Word, Gauge>,
    envelopes_routed: Counter,
    deliveries: Counter,
    slow_consumers: Counter,
    rate_limited: Counter,
    offline_stored: Counter,
    offline_delivered: Counter,
    offline_expired: Counter,
    offline_commit_seconds: Histogram,
    storage_unavailable: Family<Word, Counter>,
    plugin_calls: Family<PluginLabels, Counter>,
    plugin_seconds: Family<[(&'static str, String); 1], Histogram>,
    cluster_nodes: Gauge,
    bus_messages: Family<Word, Counter>,
    bus_behind: Counter,
    nodes_gone: Counter,
    fences: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Records the start time (`process_start_time_seconds`); called once at start-up, before
/// anything is counted.
pub fn init() {
    process::start_time();
    LazyLock::force(&METRICS);
}

impl Metrics {
    fn new() -> Metrics {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::Process));
        let r = root.sub_registry_with_prefix("chatd");
        let m = Metrics {
            registry: Registry::default(),
            sessions: Family::default(),
            logins: Family::default(),
            login_seconds: latency_buckets(),
            hash_queue: Family::default(),
            envelopes_routed: Counter::default(),
            deliveries: Counter::default(),
            slow_consumers: Counter::default(),
            rate_limited: Counter::default(),
            offline_stored: Counter::default(),
            offline_delivered: Counter::default(),
            offline_expired: Counter::default(),
            offline_commit_seconds: latency_buckets(),
            storage_unavailable: Family::default(),
            plugin_calls: Family::default(),
            plugin_seconds: Family::new_with_constructor(latency_buckets),
            cluster_nodes: Gauge::default(),
            bus_messages: Family::default(),
            bus_behind: Counter::default(),
            nodes_gone: Counter::default(),
            fences: Counter::default(),
        };
        r.register(
            "build",
            "chatd's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Both series exist from the start, so a dashboard shows 0 rather than nothing.
        for wire in ["json", "binary"] {
            let _ = m.sessions.get_or_create(&[("wire", wire)]);
        }
        r.register(
            "sessions",
            "Logged-in sessions, by the wire form they negotiated",
            m.sessions.clone(),
        );
        for result in [
            LoginResult::Ok,
            LoginResult::BadCredentials,
            LoginResult::Throttled,
            LoginResult::Refused,
            LoginResult::BadDeviceKey,
            LoginResult::Error,
        ] {
            let _ = m.logins.get_or_create(&[("result", result.word())]);
        }
        r.register("logins", "Login attempts, by result", m.logins.clone());
        r.register_with_unit(
            "login_duration",
            "Time from a login frame to its answer (throttle, database, argon2id)",
            Unit::Seconds,
            m.login_seconds.clone(),
        );
        for lane in ["first", "rest"] {
            let _ = m.hash_queue.get_or_create(&[("lane", lane)]);
        }
        r.register(
            "password_hash_queue",
            "Password hashes waiting for an argon2id thread, by lane",
            m.hash_queue.clone(),
        );
        r.register(
            "envelopes_routed",
            "Envelopes routed to a conversation",
            m.envelopes_routed.clone(),
        );
        r.register(
            "deliveries",
            "Envelopes queued for online sessions (one per session reached)",
            m.deliveries.clone(),
        );
        r.register(
            "slow_consumer_disconnects",
            "Sessions closed because their outbound queue was full",
            m.slow_consumers.clone(),
        );
        r.register(
            "rate_limited",
            "Messages and commands dropped by the per-session rate limit",
            m.rate_limited.clone(),
        );
        r.register(
            "offline_stored",
            "Lines stored for offline devices (a line for several offline users counts once)",
            m.offline_stored.clone(),
        );
        r.register(
            "offline_delivered",
            "Stored lines replayed to a device at login",
            m.offline_delivered.clone(),
        );
        r.register(
            "offline_expired",
            "Stored lines deleted unread after limits.offline_ttl_secs",
            m.offline_expired.clone(),
        );
        r.register_with_unit(
            "offline_commit_duration",
            "Time to store one batch of offline lines (one database transaction)",
            Unit::Seconds,
            m.offline_commit_seconds.clone(),
        );
        for reason in ["disk_full", "locked", "down"] {
            let _ = m.storage_unavailable.get_or_create(&[("reason", reason)]);
        }
        r.register(
            "storage_unavailable",
            "Database operations refused for a full disk or a lock held past busy_timeout",
            m.storage_unavailable.clone(),
        );
        r.register(
            "plugin_calls",
            "Plugin command calls, by plugin and result (ok, error, busy)",
            m.plugin_calls.clone(),
        );
        r.register_with_unit(
            "plugin_duration",
            "Time a plugin command took, by plugin",
            Unit::Seconds,
            m.plugin_seconds.clone(),
        );
        r.register(
            "cluster_nodes",
            "Nodes of the cluster this node hears, itself included (0: not in a cluster)",
            m.cluster_nodes.clone(),
        );
        for direction in ["out", "in"] {
            let _ = m.bus_messages.get_or_create(&[("direction", direction)]);
        }
        r.register(
            "bus_messages",
            "Messages published to (out) or received from (in) the cluster bus",
            m.bus_messages.clone(),
        );
        r.register(
            "bus_behind",
            "Lines for users on other nodes stored instead, the bus being behind",
            m.bus_behind.clone(),
        );
        r.register(
            "nodes_gone",
            "Other nodes declared gone after cluster.node_timeout_ms of silence",
            m.nodes_gone.clone(),
        );
        r.register(
            "fences",
            "Times this node found itself cut off from the cluster and fenced itself",
            m.fences.clone(),
        );
        Metrics {
            registry: root,
            ..m
        }
    }

    /// The OpenMetrics text of every metric, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8192);
        // Writing into a String cannot fail; an encoder error would be a bug in a metric.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
            text.push_str("# EOF\n");
        }
        text
    }

    /// A session logged in; the gauge goes down again when the guard drops.
    pub fn session_online(&'static self, binary: bool) -> SessionGuard {
        let wire = if binary { "binary" } else { "json" };
        self.sessions.get_or_create(&[("wire", wire)]).inc();
        SessionGuard { wire }
    }

    /// A login attempt ended, `started` when its frame arrived.
    pub fn login(&self, result: LoginResult, started: Instant) {
        self.logins
            .get_or_create(&[("result", result.word())])
            .inc();
        self.login_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// The hashing queues now hold `first` and `rest` jobs.
    pub fn hash_queue(&self, first: usize, rest: usize) {
        self.hash_queue
            .get_or_create(&[("lane", "first")])
            .set(first as i64);
        self.hash_queue
            .get_or_create(&[("lane", "rest")])
            .set(rest as i64);
    }

    /// `envelopes` were routed and queued for `sessions` sessions each.
    pub fn routed(&self, envelopes: usize, sessions: usize) {
        self.envelopes_routed.inc_by(envelopes as u64);
        self.deliveries.inc_by((envelopes * sessions) as u64);
    }

    /// This node hears `n` nodes, itself included.
    pub fn cluster_nodes(&self, n: usize) {
        self.cluster_nodes.set(n as i64);
    }

    /// A message was published to the bus (`out`) or received from it (`in`).
    pub fn bus_message(&self, out: bool) {
        let direction = if out { "out" } else { "in" };
        self.bus_messages
            .get_or_create(&[("direction", direction)])
            .inc();
    }

    /// A line for another node was stored instead: the bus is behind.
    pub fn bus_behind(&self) {
        self.bus_behind.inc();
    }

    /// Another node was declared gone.
    pub fn node_gone(&self) {
        self.nodes_gone.inc();
    }

    /// This node fenced itself.
    pub fn fenced(&self) {
        self.fences.inc();
    }

    /// A session was closed as too slow.
    pub fn slow_consumer(&self) {
        self.slow_consumers.inc();
    }

    /// A frame was dropped by the rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// A batch of `lines` offline lines was committed in `took`.
    pub fn offline_committed(&self, lines: usize, took: Duration) {
        self.offline_stored.inc_by(lines as u64);
        self.offline_commit_seconds.observe(took.as_secs_f64());
    }

    /// `lines` stored lines were replayed to a device.
    pub fn offline_delivered(&self, lines: usize) {
        self.offline_delivered.inc_by(lines as u64);
    }

    /// `lines` stored lines expired.
    pub fn offline_expired(&self, lines: usize) {
        self.offline_expired.inc_by(lines as u64);
    }

    /// A database operation failed for a full disk (`disk_full`), a lock (`locked`) or a
    /// database server that cannot be reached (`down`).
    pub fn storage_unavailable(&self, why: crate::store::Unavailable) {
        let reason = match why {
            crate::store::Unavailable::DiskFull => "disk_full",
            crate::store::Unavailable::Locked => "locked",
            crate::store::Unavailable::Down => "down",
        };
        self.storage_unavailable
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// A plugin call ended with `result` (`ok`, `error`, `busy`); `took` is None when it did
    /// not run.
    pub fn plugin_call(&self, plugin: &str, result: &'static str, took: Option<Duration>) {
        self.plugin_calls
            .get_or_create(&[
                ("plugin", plugin.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
        if let Some(took) = took {
            self.plugin_seconds
                .get_or_create(&[("plugin", plugin.to_string())])
                .observe(took.as_secs_f64());
        }
    }
}

/// Counts a logged-in session while it lives.
pub struct SessionGuard {
    wire: &'static str,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        get().sessions.get_or_create(&[("wire", self.wire)]).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_openmetrics_with_every_family_and_eof() {
        let m = Metrics::new();
        m.routed(3, 4);
        m.plugin_call("dice", "ok", Some(Duration::from_millis(3)));
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in [
            "chatd_build_info{version=\"",
            "chatd_sessions{wire=\"json\"} 0",
            "chatd_logins_total{result=\"bad_credentials\"} 0",
            "chatd_envelopes_routed_total 3",
            "chatd_deliveries_total 12",
            "chatd_plugin_calls_total{plugin=\"dice\",result=\"ok\"} 1",
            "chatd_plugin_duration_seconds_count{plugin=\"dice\"} 1",
            "chatd_login_duration_seconds_bucket{le=\"+Inf\"} 0",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
