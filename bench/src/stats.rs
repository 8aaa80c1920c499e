//! What a run measured, as the JSON names it: setup costs and each mode's figures, which the
//! reports (report.rs) print with the rates worked out from them.
//!
//! A JSON key is the field's name, or the name `rename` gives it (docs/PERFORMANCE.md and
//! `--runs` use these names); a latency summary spreads into three keys (`latency_p50_ms`,
//! `latency_p99_ms`, `latency_max_ms`); what only the text shows is skipped.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::cli::WireMode;
use crate::host::WakeDelay;
use crate::latency::Latency;

/// Counts by reason: failures, `bye`s, errors.
pub type Tally = BTreeMap<String, usize>;

/// Counts one more `key`.
pub fn count(tally: &mut Tally, key: String) {
    *tally.entry(key).or_default() += 1;
}

// ---------------------------------------------------------------------------------------------
// What was measured
// ---------------------------------------------------------------------------------------------

/// Setup costs common to every mode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Setup {
    /// Clients logged in.
    pub clients: usize,
    /// Seconds to create the users.
    #[serde(rename = "create_users_secs")]
    pub create_secs: f64,
    /// Seconds to log every client in.
    pub login_secs: f64,
    /// chatd RSS after user creation, before the first login.
    #[serde(rename = "rss_before_login_bytes")]
    pub rss_before_login: Option<u64>,
    /// chatd RSS once every client is logged in.
    #[serde(rename = "rss_after_login_bytes")]
    pub rss_after_login: Option<u64>,
    /// chatd PID, when known.
    #[serde(rename = "chatd_pid")]
    pub pid: Option<u32>,
    /// RSA modulus of the bench's device keys.
    pub key_bits: usize,
    /// False when they are the fixed test keys.
    pub keys_generated: bool,
    /// Seconds spent loading or generating them.
    pub keys_secs: f64,
    /// How envelopes travelled (`--wire`).
    #[serde(serialize_with = "wire_name")]
    pub wire: WireMode,
    /// Threads reading the receivers (`--receiver-threads`); 0: a tokio task each.
    pub receiver_threads: usize,
}

/// What the fan-out measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fanout {
    /// Workload.
    pub senders: usize,
    /// Messages per sender.
    #[serde(rename = "messages_per_sender")]
    pub messages: u64,
    /// Plaintext bytes per message (before sealing).
    #[serde(rename = "payload_bytes")]
    pub bytes: usize,
    /// Total paced rate, if any.
    pub rate: Option<f64>,
    /// Per-sender window of unechoed messages, if any.
    pub window: Option<u64>,
    /// Seconds spent sealing every envelope, before the timed phase.
    pub seal_secs: f64,
    /// Mean envelope size, binary, in bytes.
    pub envelope_bytes: f64,
    /// Bytes of the `envelope` frames counted as deliveries (binary frames whole, lines with
    /// their newline); printed per delivery.
    #[serde(skip)]
    pub line_bytes: u64,
    /// Deliveries counted at the receivers.
    pub deliveries: u64,
    /// clients × senders × messages.
    pub expected: u64,
    /// Seconds from the first send to the last receiver completing (or the timeout).
    pub duration_secs: f64,
    /// Latency over all deliveries.
    #[serde(flatten, serialize_with = "latency")]
    pub latency: Latency,
    /// chatd CPU seconds during the run (a cluster's nodes together).
    #[serde(rename = "chatd_cpu_secs")]
    pub server_cpu_secs: Option<f64>,
    /// chatd processes measured: 1, or a cluster's nodes.
    pub nodes: usize,
    /// A cluster's CPU seconds during the run, node by node (empty for one chatd).
    #[serde(rename = "chatd_cpu_secs_each")]
    pub node_cpu_secs: Vec<f64>,
    /// A cluster's nats-server CPU seconds during the run.
    pub nats_cpu_secs: Option<f64>,
    /// A cluster's PostgreSQL CPU seconds during the run (server and backends).
    pub postgres_cpu_secs: Option<f64>,
    /// chat-bench's own CPU seconds during the run (it shares the machine with chatd).
    pub bench_cpu_secs: Option<f64>,
    /// chatd RSS after the run.
    #[serde(rename = "rss_after_run_bytes")]
    pub rss_after_run: Option<u64>,
    /// How late 1 ms sleeps woke on the idle machine just before the run (`--host-check`).
    #[serde(flatten, serialize_with = "host_wake_late")]
    pub host_wake: Option<WakeDelay>,
    /// Percent of the machine's CPU time stolen by the hypervisor during the run.
    pub host_steal_percent: Option<f64>,
    /// Messages out of sequence at some receiver.
    pub out_of_order: u64,
    /// `envelope` frames that could not be read or name no message of this run, and frames
    /// the binary-mode codec refused.
    pub corrupt: u64,
    /// Receivers that did not get everything.
    pub incomplete_receivers: usize,
    /// `bye` reasons received, with counts.
    pub byes: Tally,
    /// Read or write errors, with counts.
    pub errors: Tally,
    /// Warnings and errors chatd logged.
    #[serde(rename = "chatd_log_problems")]
    pub server_log_problems: usize,
    /// The first of them.
    #[serde(rename = "chatd_log_lines")]
    pub server_log_lines: Vec<String>,
}

/// What the login storm measured, beside the fan-out figures of the whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storm {
    /// `--login-storm L`: logins at most.
    #[serde(rename = "storm_max_logins")]
    pub max_logins: usize,
    /// Storm logins in flight at once (and storm users).
    #[serde(rename = "storm_concurrency")]
    pub concurrency: usize,
    /// Seconds from the first send to the start of the storm.
    pub quiet_secs: f64,
    /// Seconds from the start of the storm to the end of its last login.
    pub storm_secs: f64,
    /// Chat latency of the messages sent in the quiet phase.
    #[serde(flatten, serialize_with = "quiet_latency")]
    pub quiet: Latency,
    /// Chat latency of the messages sent during the storm.
    #[serde(flatten, serialize_with = "storm_latency")]
    pub storm: Latency,
    /// chatd CPU seconds in the quiet phase.
    pub quiet_chatd_cpu_secs: Option<f64>,
    /// chatd CPU seconds during the storm.
    pub storm_chatd_cpu_secs: Option<f64>,
    /// chat-bench's own CPU seconds in the quiet phase.
    pub quiet_bench_cpu_secs: Option<f64>,
    /// chat-bench's own CPU seconds during the storm (its TLS handshakes too).
    pub storm_bench_cpu_secs: Option<f64>,
    /// Storm logins completed (`login_ok` received).
    #[serde(rename = "storm_logins")]
    pub logins: u64,
    /// Storm login latency, connect to `login_ok`.
    #[serde(flatten, serialize_with = "storm_login")]
    pub login_latency: Latency,
    /// Failed storm logins (or quits after one), by reason.
    #[serde(rename = "storm_login_failed")]
    pub failed: Tally,
}

impl Storm {
    /// Failed storm logins (and quits), all reasons.
    pub fn failures(&self) -> usize {
        self.failed.values().sum()
    }
}

/// What the idle mode measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Idle {
    /// Seconds waited after the last login.
    pub wait_secs: u64,
    /// chatd RSS after waiting.
    #[serde(rename = "rss_after_wait_bytes")]
    pub rss_after_wait: Option<u64>,
    /// Connections lost while waiting (bye or error).
    pub dropped: usize,
}

/// What the connect-rate mode measured.
#[derive(Debug, Clone, Serialize)]
pub struct Connect {
    /// What each `hello` asked for (and the server's had to agree to).
    #[serde(serialize_with = "wire_name")]
    pub wire: WireMode,
    /// Setups completed.
    #[serde(rename = "setups")]
    pub done: usize,
    /// Setups that failed, by reason.
    pub failed: Tally,
    /// Wall-clock seconds for all of them.
    pub secs: f64,
    /// chatd CPU seconds used meanwhile, when its pid is known.
    pub chatd_cpu_secs: Option<f64>,
}

/// The middle of sorted figures, or the mean of the middle two for an even count.
pub fn median_of_sorted(xs: &[f64]) -> Option<f64> {
    let mid = xs.len() / 2;
    match xs.len() {
        0 => None,
        n if n % 2 == 1 => Some(xs[mid]),
        _ => Some((xs[mid - 1] + xs[mid]) / 2.0),
    }
}

// ---------------------------------------------------------------------------------------------
// Figures in JSON
// ---------------------------------------------------------------------------------------------

/// `--wire`'s name for the mode.
fn wire_name<S: Serializer>(wire: &WireMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(wire.as_str())
}

// Each writes a summary into the surrounding object (`#[serde(flatten, serialize_with)]`) as
// three keys that share a prefix, null when there is no summary.

fn latency<S: Serializer>(l: &Latency, s: S) -> Result<S::Ok, S::Error> {
    latency_keys("latency_", Some(l), s)
}

fn quiet_latency<S: Serializer>(l: &Latency, s: S) -> Result<S::Ok, S::Error> {
    latency_keys("quiet_latency_", Some(l), s)
}

fn storm_latency<S: Serializer>(l: &Latency, s: S) -> Result<S::Ok, S::Error> {
    latency_keys("storm_latency_", Some(l), s)
}

fn storm_login<S: Serializer>(l: &Latency, s: S) -> Result<S::Ok, S::Error> {
    latency_keys("storm_login_", Some(l), s)
}

fn host_wake_late<S: Serializer>(w: &Option<WakeDelay>, s: S) -> Result<S::Ok, S::Error> {
    latency_keys("host_wake_late_", w.as_ref().map(|w| &w.late), s)
}

/// `{prefix}p50_ms`, `{prefix}p99_ms` and `{prefix}max_ms`.
fn latency_keys<S: Serializer>(prefix: &str, l: Option<&Latency>, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(3))?;
    map.serialize_entry(&format!("{prefix}p50_ms"), &l.map(|l| l.p50_ms))?;
    map.serialize_entry(&format!("{prefix}p99_ms"), &l.map(|l| l.p99_ms))?;
    map.serialize_entry(&format!("{prefix}max_ms"), &l.map(|l| l.max_ms))?;
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summaries_spread_into_prefixed_keys() {
        let wake = WakeDelay {
            late: Latency {
                p50_ms: 0.5,
                p99_ms: 1.5,
                max_ms: 2.5,
            },
            samples: 10,
            secs: 0.1,
        };
        let r = Fanout {
            latency: Latency {
                p50_ms: 1.0,
                p99_ms: 2.0,
                max_ms: 3.0,
            },
            host_wake: Some(wake),
            ..Fanout::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            [
                &v["latency_p50_ms"],
                &v["latency_p99_ms"],
                &v["latency_max_ms"]
            ],
            [1.0, 2.0, 3.0]
        );
        assert_eq!(v["host_wake_late_max_ms"], 2.5);
        assert!(
            v.get("latency").is_none() && v.get("host_wake").is_none(),
            "{v}"
        );
        // No wake-up check: the keys are there, and null.
        let v = serde_json::to_value(Fanout::default()).unwrap();
        let host = v.as_object().map(|o| o.get("host_wake_late_p99_ms"));
        assert_eq!(host, Some(Some(&serde_json::Value::Null)), "{v}");
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_of_sorted(&[1.0, 2.0, 7.0]), Some(2.0));
        assert_eq!(median_of_sorted(&[1.0, 2.0, 4.0, 7.0]), Some(3.0));
        assert_eq!(median_of_sorted(&[]), None);
    }
}
