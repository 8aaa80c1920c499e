//! A report per mode: what it measured (stats.rs), the rates and differences worked out from
//! that once, when the report is made, and the two forms it prints: one JSON object (the
//! report's serde form) and text (rows through [`Table`]).

use serde::Serialize;

use crate::cli::WireMode;
use crate::latency::Latency;
use crate::server::StartupTimes;
use crate::stats::{Connect, Fanout, Idle, Setup, Storm, median_of_sorted};
use crate::table::Table;

/// A run's report: `--json` prints its serde form, otherwise [`Report::text`].
pub trait Report: Serialize {
    /// The figures for people.
    fn text(&self) -> String;
    /// True when nothing was lost or dropped and nothing failed.
    fn ok(&self) -> bool;
}

/// The `mode` every report names.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Fanout,
    LoginStorm,
    Idle,
    ConnectRate,
    Startup,
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

/// The fan-out: its setup, what it measured, and the rates worked out from them.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    mode: Mode,
    /// Setup costs.
    #[serde(flatten)]
    pub setup: Setup,
    /// Clients logged in per second of setup.
    pub logins_per_sec: f64,
    /// The measurements.
    #[serde(flatten)]
    pub run: Fanout,
    /// Envelopes sealed before the run.
    pub sealed: u64,
    /// expected - received.
    pub lost: u64,
    /// Deliveries per second of wall time.
    pub deliveries_per_sec: f64,
    /// Deliveries per chatd CPU second (a cluster's nodes together).
    pub deliveries_per_cpu_sec: Option<f64>,
    /// A cluster's deliveries per CPU second of its nodes and nats-server together, the figure
    /// that compares with one node's `deliveries_per_cpu_sec` (PostgreSQL's CPU is apart: it
    /// is off the path of a delivery to a logged-in member).
    pub deliveries_per_cluster_cpu_sec: Option<f64>,
    /// Mean `envelope` frame on the wire (inside TLS): a binary frame, or a line with its
    /// newline.
    pub bytes_per_delivery: f64,
}

impl FanoutReport {
    /// The fan-out mode's report.
    pub fn new(setup: Setup, run: Fanout) -> FanoutReport {
        FanoutReport::with_mode(Mode::Fanout, setup, run)
    }

    fn with_mode(mode: Mode, setup: Setup, run: Fanout) -> FanoutReport {
        let deliveries = run.deliveries as f64;
        FanoutReport {
            mode,
            logins_per_sec: per(setup.clients as f64, setup.login_secs),
            sealed: run.senders as u64 * run.messages,
            lost: run.expected.saturating_sub(run.deliveries),
            deliveries_per_sec: per(deliveries, run.duration_secs),
            deliveries_per_cpu_sec: run.server_cpu_secs.map(|cpu| per(deliveries, cpu)),
            deliveries_per_cluster_cpu_sec: run
                .server_cpu_secs
                .zip(run.nats_cpu_secs)
                .map(|(chatd, nats)| per(deliveries, chatd + nats)),
            bytes_per_delivery: per(run.line_bytes as f64, deliveries),
            setup,
            run,
        }
    }

    fn rows(&self, t: &mut Table) {
        setup_rows(t, &self.setup, self.logins_per_sec);
        let r = &self.run;
        let mut rate = r
            .rate
            .map_or_else(|| "as fast as possible".into(), |r| format!("{r} msg/s"));
        if let Some(w) = r.window {
            rate += &format!(", window {w}");
        }
        let each_ms = per(r.seal_secs * 1000.0, self.sealed as f64);
        t.row(
            "workload",
            format_args!(
                "{} senders x {} messages x {} bytes, {rate}",
                r.senders, r.messages, r.bytes
            ),
        );
        t.row(
            "sealed",
            format_args!(
                "{} envelopes of {:.0} bytes in {:.2} s ({each_ms:.2} ms each, before the run)",
                self.sealed, r.envelope_bytes, r.seal_secs
            ),
        );
        t.row(
            "deliveries",
            format_args!(
                "{} of {} expected, lost {}",
                r.deliveries, r.expected, self.lost
            ),
        );
        t.row("duration", format_args!("{:.3} s", r.duration_secs));
        t.row(
            "deliveries/s",
            format_args!("{:.0}", self.deliveries_per_sec),
        );
        let frame = match self.setup.wire {
            WireMode::Binary => "envelope frame inside TLS",
            WireMode::Json => "envelope line inside TLS, newline included",
        };
        t.row(
            "bytes/delivery",
            format_args!("{:.0} ({frame})", self.bytes_per_delivery),
        );
        t.row("latency", ms3(&r.latency));
        let nodes = match r.nodes {
            0 | 1 => String::new(),
            n => format!(" on {n} nodes"),
        };
        let each: Vec<String> = r.node_cpu_secs.iter().map(|c| format!("{c:.2}")).collect();
        let each = if each.is_empty() {
            String::new()
        } else {
            format!(" ({})", each.join(", "))
        };
        match (r.server_cpu_secs, self.deliveries_per_cpu_sec) {
            (Some(cpu), Some(per_cpu)) => t.row(
                "chatd CPU",
                format_args!("{cpu:.2} s{nodes}{each}, {per_cpu:.0} deliveries per CPU-second"),
            ),
            _ => t.row("chatd CPU", "unknown (pass --pid with --target)"),
        }
        if let (Some(nats), Some(per_cpu)) = (r.nats_cpu_secs, self.deliveries_per_cluster_cpu_sec)
        {
            t.row("nats-server CPU", format_args!("{nats:.2} s"));
            t.row(
                "cluster CPU",
                format_args!("chatd + nats-server, {per_cpu:.0} deliveries per CPU-second"),
            );
        }
        if let Some(pg) = r.postgres_cpu_secs {
            t.row(
                "PostgreSQL CPU",
                format_args!("{pg:.2} s (server and backends; not in the cluster's CPU)"),
            );
        }
        if let Some(cpu) = r.bench_cpu_secs {
            t.row(
                "chat-bench CPU",
                format_args!("{cpu:.2} s (TLS, reading headers; same machine)"),
            );
        }
        t.row(
            "chatd RSS",
            format_args!("after run {}{nodes}", mib(r.rss_after_run)),
        );
        host_rows(t, r);
        if r.out_of_order > 0 || r.corrupt > 0 || r.incomplete_receivers > 0 {
            t.row(
                "PROBLEMS",
                format_args!(
                    "{} out of order, {} corrupt, {} receivers incomplete",
                    r.out_of_order, r.corrupt, r.incomplete_receivers
                ),
            );
        }
        for (reason, n) in &r.byes {
            t.row("bye", format_args!("{n} x {reason}"));
        }
        for (error, n) in &r.errors {
            t.row("error", format_args!("{n} x {error}"));
        }
        if r.server_log_problems > 0 {
            t.row("chatd warnings", r.server_log_problems);
            for line in &r.server_log_lines {
                t.line(format_args!("  {line}"));
            }
        }
    }
}

impl Report for FanoutReport {
    fn text(&self) -> String {
        let mut t = Table::default();
        self.rows(&mut t);
        t.finish()
    }

    fn ok(&self) -> bool {
        self.lost == 0
    }
}

/// The login storm: the whole run's fan-out figures, then the two phases side by side.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// The whole run's fan-out.
    #[serde(flatten)]
    pub fanout: FanoutReport,
    /// The storm's measurements.
    #[serde(flatten)]
    pub storm: Storm,
    /// How far the storm moved chat p99: storm - quiet, milliseconds.
    pub p99_delta_ms: f64,
    /// Storm logins completed per second of storm.
    pub storm_logins_per_sec: f64,
    /// True when the storm used up its L logins: it may have ended before the storm phase's
    /// messages did, and the later ones were sent with no storm.
    pub storm_reached_max: bool,
}

impl StormReport {
    /// The login-storm mode's report.
    pub fn new(setup: Setup, run: Fanout, storm: Storm) -> StormReport {
        let reached_max = usize::try_from(storm.logins).map_or(true, |n| {
            n.saturating_add(storm.failures()) >= storm.max_logins
        });
        StormReport {
            fanout: FanoutReport::with_mode(Mode::LoginStorm, setup, run),
            p99_delta_ms: storm.storm.p99_ms - storm.quiet.p99_ms,
            storm_logins_per_sec: per(storm.logins as f64, storm.storm_secs),
            storm_reached_max: reached_max,
            storm,
        }
    }
}

impl Report for StormReport {
    fn text(&self) -> String {
        let secs = |x: Option<f64>| x.map_or_else(|| "?".to_string(), |v| format!("{v:.2} s"));
        let s = &self.storm;
        let mut t = Table::default();
        self.fanout.rows(&mut t);
        t.row(
            "login storm",
            format_args!(
                "at most {} logins, {} at a time (full TLS handshake, argon2id, quit)",
                s.max_logins, s.concurrency
            ),
        );
        t.row(
            "phases",
            format_args!("quiet {:.2} s, storm {:.2} s", s.quiet_secs, s.storm_secs),
        );
        t.row("latency quiet", ms3(&s.quiet));
        t.row("latency storm", ms3(&s.storm));
        t.row(
            "p99 storm - quiet",
            format_args!("{:+.3} ms", self.p99_delta_ms),
        );
        t.row(
            "storm logins",
            format_args!(
                "{} ({:.1}/s), {} failed",
                s.logins,
                self.storm_logins_per_sec,
                s.failures()
            ),
        );
        let l = &s.login_latency;
        t.row(
            "login latency",
            format_args!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (connect to login_ok)",
                l.p50_ms, l.p99_ms, l.max_ms
            ),
        );
        t.row(
            "chatd CPU",
            format_args!(
                "quiet {}, storm {}",
                secs(s.quiet_chatd_cpu_secs),
                secs(s.storm_chatd_cpu_secs)
            ),
        );
        t.row(
            "chat-bench CPU",
            format_args!(
                "quiet {}, storm {}",
                secs(s.quiet_bench_cpu_secs),
                secs(s.storm_bench_cpu_secs)
            ),
        );
        if self.storm_reached_max {
            t.row(
                "NOTE",
                "the storm used up its logins and may have ended before the phase did; \
                 raise --login-storm",
            );
        }
        for (why, n) in &s.failed {
            t.row("login failed", format_args!("{n} x {why}"));
        }
        t.finish()
    }

    fn ok(&self) -> bool {
        self.fanout.ok() && self.storm.failed.is_empty()
    }
}

/// The idle mode: what the connections cost the server.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    mode: Mode,
    /// Setup costs.
    #[serde(flatten)]
    pub setup: Setup,
    /// Clients logged in per second of setup.
    pub logins_per_sec: f64,
    /// The measurements.
    #[serde(flatten)]
    pub run: Idle,
    /// chatd's RSS growth per connection, bytes.
    pub rss_per_connection_bytes: Option<f64>,
}

impl IdleReport {
    /// The idle mode's report.
    pub fn new(setup: Setup, run: Idle) -> IdleReport {
        IdleReport {
            mode: Mode::Idle,
            logins_per_sec: per(setup.clients as f64, setup.login_secs),
            rss_per_connection_bytes: rss_per_connection(&setup, run.rss_after_wait),
            setup,
            run,
        }
    }
}

impl Report for IdleReport {
    fn text(&self) -> String {
        let per_conn = self
            .rss_per_connection_bytes
            .map_or_else(|| "?".into(), |b| format!("{:.1} KiB", b / 1024.0));
        let mut t = Table::default();
        setup_rows(&mut t, &self.setup, self.logins_per_sec);
        t.row(
            "chatd RSS",
            format_args!(
                "after {} s idle {}",
                self.run.wait_secs,
                mib(self.run.rss_after_wait)
            ),
        );
        t.row("RSS per connection", per_conn);
        t.row("dropped", self.run.dropped);
        t.finish()
    }

    fn ok(&self) -> bool {
        self.run.dropped == 0
    }
}

/// The connect-rate mode: full connection setups per second.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    mode: Mode,
    /// The measurements.
    #[serde(flatten)]
    pub run: Connect,
    /// Setups per second of wall time.
    pub setups_per_sec: Option<f64>,
    /// Setups per chatd CPU second.
    pub setups_per_chatd_cpu_sec: Option<f64>,
}

impl ConnectReport {
    /// The connect-rate mode's report.
    pub fn new(run: Connect) -> ConnectReport {
        ConnectReport {
            mode: Mode::ConnectRate,
            setups_per_sec: rate(run.done, run.secs),
            setups_per_chatd_cpu_sec: run.chatd_cpu_secs.and_then(|c| rate(run.done, c)),
            run,
        }
    }
}

impl Report for ConnectReport {
    fn text(&self) -> String {
        let per = |x: Option<f64>| x.map_or_else(|| "?".to_string(), |v| format!("{v:.0}"));
        let r = &self.run;
        let mut t = Table::default();
        t.line("connection setups (TCP + TLS handshake + hello, no login)");
        t.row("wire", wire_text(r.wire));
        t.row(
            "done",
            format_args!(
                "{} in {:.2} s, {} failed",
                r.done,
                r.secs,
                r.failed.values().sum::<usize>()
            ),
        );
        t.row("setups per second", per(self.setups_per_sec));
        t.row("per chatd CPU-s", per(self.setups_per_chatd_cpu_sec));
        t.finish()
    }

    fn ok(&self) -> bool {
        self.run.failed.is_empty()
    }
}

/// The startup mode: chatd's time from exec to ready, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StartupReport {
    mode: Mode,
    /// The first start: creates the database and a self-signed certificate.
    pub fresh_ms: f64,
    /// Each later start on the existing state dir.
    pub existing_ms: Vec<f64>,
    /// Their median, smallest and largest (None without later starts).
    pub existing_median_ms: Option<f64>,
    /// See `existing_median_ms`.
    pub existing_min_ms: Option<f64>,
    /// See `existing_median_ms`.
    pub existing_max_ms: Option<f64>,
}

impl StartupReport {
    /// The startup mode's report.
    pub fn new(times: StartupTimes) -> StartupReport {
        let spread = spread(&times.existing_ms);
        StartupReport {
            mode: Mode::Startup,
            fresh_ms: times.fresh_ms,
            existing_median_ms: spread.map(|s| s.0),
            existing_min_ms: spread.map(|s| s.1),
            existing_max_ms: spread.map(|s| s.2),
            existing_ms: times.existing_ms,
        }
    }
}

impl Report for StartupReport {
    fn text(&self) -> String {
        let existing = match (
            self.existing_median_ms,
            self.existing_min_ms,
            self.existing_max_ms,
        ) {
            (Some(m), Some(a), Some(b)) => format!(
                "median {m:.1} ms (min {a:.1}, max {b:.1}) over {} starts",
                self.existing_ms.len()
            ),
            _ => "not measured".to_string(),
        };
        let mut t = Table::default();
        t.line("chatd start to ready (listener and control socket bound)");
        t.row(
            "fresh state dir",
            format_args!(
                "{:.1} ms (creates the database and a certificate)",
                self.fresh_ms
            ),
        );
        t.row("existing state dir", existing);
        t.finish()
    }

    fn ok(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Rows and figures shared by the reports
// ---------------------------------------------------------------------------------------------

/// The setup rows every mode with clients starts with.
fn setup_rows(t: &mut Table, s: &Setup, logins_per_sec: f64) {
    let keys = if s.keys_generated {
        format!("generated in {:.2} s", s.keys_secs)
    } else {
        "fixed test keys".into()
    };
    t.row("clients", s.clients);
    t.row("wire", wire_text(s.wire));
    t.row("receivers", receivers_text(s.receiver_threads));
    t.row("device keys", format_args!("RSA-{}, {keys}", s.key_bits));
    t.row("users created in", format_args!("{:.2} s", s.create_secs));
    t.row(
        "logins",
        format_args!("{:.2} s ({logins_per_sec:.0}/s)", s.login_secs),
    );
    t.row(
        "chatd RSS",
        format_args!(
            "before login {}, after login {}",
            mib(s.rss_before_login),
            mib(s.rss_after_login)
        ),
    );
}

/// The host's steadiness around the run.
fn host_rows(t: &mut Table, r: &Fanout) {
    if let Some(w) = r.host_wake {
        t.row(
            "host wake-ups",
            format_args!(
                "1 ms sleeps late by p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms \
                 ({} sleeps in {:.1} s, idle, before the run)",
                w.late.p50_ms, w.late.p99_ms, w.late.max_ms, w.samples, w.secs
            ),
        );
    }
    match r.host_steal_percent {
        Some(steal) => t.row(
            "host steal",
            format_args!("{steal:.2} % of the CPU time during the run (taken by the hypervisor)"),
        ),
        None => t.row(
            "host steal",
            "unknown (/proc/stat unread, or no clock tick passed)",
        ),
    }
}

/// How the receivers read, for the text output.
fn receivers_text(threads: usize) -> String {
    match threads {
        0 => "a tokio task each".into(),
        1 => "1 thread (epoll)".into(),
        n => format!("{n} threads (epoll)"),
    }
}

/// What `--wire` means, for the text output.
fn wire_text(wire: WireMode) -> &'static str {
    match wire {
        WireMode::Binary => "binary (envelopes in binary frames, agreed in hello)",
        WireMode::Json => "json (envelopes base64 in JSON lines)",
    }
}

/// A latency summary for people, to the microsecond.
fn ms3(l: &Latency) -> String {
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        l.p50_ms, l.p99_ms, l.max_ms
    )
}

fn per(n: f64, secs: f64) -> f64 {
    if secs > 0.0 { n / secs } else { 0.0 }
}

fn rate(n: usize, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| n as f64 / secs)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "?".into(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    )
}

/// RSS growth per connection, bytes.
pub fn rss_per_connection(s: &Setup, after: Option<u64>) -> Option<f64> {
    let (before, after) = (s.rss_before_login?, after?);
    (s.clients > 0).then(|| (after as f64 - before as f64) / s.clients as f64)
}

/// Median, smallest and largest of `xs` (None when empty).
fn spread(xs: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    Some((median_of_sorted(&v)?, *v.first()?, *v.last()?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The JSON `--json` prints for `report`.
    fn json(report: &impl Report) -> serde_json::Value {
        serde_json::to_value(report).unwrap()
    }

    #[test]
    fn startup_spread_is_median_min_max() {
        assert_eq!(spread(&[30.0, 10.0, 20.0]), Some((20.0, 10.0, 30.0)));
        assert_eq!(spread(&[30.0, 10.0, 20.0, 40.0]), Some((25.0, 10.0, 40.0)));
        assert_eq!(spread(&[]), None);
        let t = StartupReport::new(StartupTimes {
            fresh_ms: 50.0,
            existing_ms: vec![12.0, 11.0, 13.0],
        });
        let v = json(&t);
        assert_eq!(
            (v["existing_median_ms"].as_f64(), v["fresh_ms"].as_f64()),
            (Some(12.0), Some(50.0))
        );
        assert!(
            t.text()
                .contains("median 12.0 ms (min 11.0, max 13.0) over 3 starts")
        );
    }

    #[test]
    fn lost_and_rates() {
        let r = Fanout {
            deliveries: 90,
            expected: 100,
            duration_secs: 2.0,
            server_cpu_secs: Some(0.5),
            ..Fanout::default()
        };
        let report = FanoutReport::new(Setup::default(), r.clone());
        assert_eq!(report.lost, 10);
        assert_eq!(report.deliveries_per_sec, 45.0);
        assert_eq!(report.deliveries_per_cpu_sec, Some(180.0));
        assert_eq!(report.deliveries_per_cluster_cpu_sec, None, "one node");
        assert!(!report.text().contains("cluster CPU"));
        let cluster = Fanout {
            nodes: 3,
            node_cpu_secs: vec![0.25, 0.125, 0.125],
            nats_cpu_secs: Some(0.1),
            postgres_cpu_secs: Some(0.25),
            ..r.clone()
        };
        let report = FanoutReport::new(Setup::default(), cluster);
        assert_eq!(report.deliveries_per_cpu_sec, Some(180.0));
        assert_eq!(report.deliveries_per_cluster_cpu_sec, Some(150.0));
        let text = report.text();
        assert!(
            text.contains(
                "\nchatd CPU          0.50 s on 3 nodes (0.25, 0.12, 0.12), 180 deliveries"
            ),
            "{text}"
        );
        assert!(text.contains("\nnats-server CPU    0.10 s\n"), "{text}");
        assert!(
            text.contains("chatd + nats-server, 150 deliveries per CPU-second"),
            "{text}"
        );
        assert!(
            text.contains("\nPostgreSQL CPU     0.25 s (server"),
            "{text}"
        );
        let v = json(&report);
        assert_eq!(v["deliveries_per_cluster_cpu_sec"], 150.0);
        assert_eq!(v["nats_cpu_secs"], 0.1);
        assert_eq!(v["postgres_cpu_secs"], 0.25);
        assert_eq!(v["nodes"], 3);
        assert_eq!(
            v["chatd_cpu_secs_each"],
            serde_json::json!([0.25, 0.125, 0.125])
        );
        let report = FanoutReport::new(Setup::default(), r);
        let v = json(&report);
        assert_eq!(v["lost"], 10);
        assert_eq!(v["mode"], "fanout");
        assert_eq!(v["wire"], "binary");
    }

    #[test]
    fn wire_bytes_and_text() {
        let r = Fanout {
            senders: 2,
            messages: 5,
            bytes: 100,
            deliveries: 4,
            expected: 4,
            line_bytes: 4 * 700,
            seal_secs: 0.02,
            envelope_bytes: 469.0,
            ..Fanout::default()
        };
        let s = Setup {
            key_bits: 2048,
            wire: WireMode::Json,
            receiver_threads: 2,
            ..Setup::default()
        };
        let report = FanoutReport::new(s.clone(), r.clone());
        assert_eq!(report.bytes_per_delivery, 700.0);
        assert_eq!(
            FanoutReport::new(Setup::default(), Fanout::default()).bytes_per_delivery,
            0.0
        );
        let v = json(&report);
        assert_eq!(v["bytes_per_delivery"], 700.0);
        assert_eq!(v["sealed"], 10);
        assert_eq!(v["key_bits"], 2048);
        assert_eq!(v["wire"], "json");
        let text = report.text();
        assert!(
            text.contains("bytes/delivery     700 (envelope line"),
            "{text}"
        );
        assert!(text.contains("\nwire               json ("), "{text}");
        assert!(
            text.contains("\nreceivers          2 threads (epoll)\n"),
            "{text}"
        );
        assert_eq!(v["receiver_threads"], 2);
        assert!(text.contains("10 envelopes of 469 bytes"), "{text}");
        assert!(text.contains("(2.00 ms each"), "{text}");
        assert!(text.contains("RSA-2048, fixed test keys"), "{text}");
        let text = FanoutReport::new(Setup::default(), r).text();
        assert!(
            text.contains("bytes/delivery     700 (envelope frame"),
            "{text}"
        );
        assert!(text.contains("\nwire               binary ("), "{text}");
        assert!(
            text.contains("\nreceivers          a tokio task each\n"),
            "{text}"
        );
    }

    #[test]
    fn storm_figures() {
        let t = Storm {
            max_logins: 100,
            concurrency: 4,
            storm_secs: 2.0,
            quiet: Latency {
                p50_ms: 1.0,
                p99_ms: 2.5,
                max_ms: 3.0,
            },
            storm: Latency {
                p50_ms: 1.5,
                p99_ms: 4.0,
                max_ms: 9.0,
            },
            logins: 50,
            failed: BTreeMap::from([("login: refused".to_string(), 2)]),
            ..Storm::default()
        };
        let report = StormReport::new(Setup::default(), Fanout::default(), t.clone());
        assert_eq!(report.p99_delta_ms, 1.5);
        assert_eq!(report.storm_logins_per_sec, 25.0);
        assert_eq!(t.failures(), 2);
        assert!(!report.storm_reached_max);
        let more = Storm {
            logins: 98,
            ..t.clone()
        };
        assert!(StormReport::new(Setup::default(), Fanout::default(), more).storm_reached_max);
        let v = json(&report);
        assert_eq!(v["mode"], "login_storm");
        assert_eq!(v["p99_delta_ms"], 1.5);
        assert_eq!(v["storm_logins"], 50);
        assert_eq!(v["storm_login_failed"]["login: refused"], 2);
        assert!(v["quiet_chatd_cpu_secs"].is_null());
        let text = report.text();
        assert!(text.contains("\np99 storm - quiet  +1.500 ms\n"), "{text}");
        assert!(
            text.contains("storm logins       50 (25.0/s), 2 failed"),
            "{text}"
        );
        assert!(
            text.contains("login failed       2 x login: refused"),
            "{text}"
        );
    }

    #[test]
    fn per_connection() {
        let s = Setup {
            clients: 10,
            rss_before_login: Some(1000),
            ..Setup::default()
        };
        assert_eq!(rss_per_connection(&s, Some(21_000)), Some(2000.0));
        assert_eq!(rss_per_connection(&s, None), None);
    }
}
