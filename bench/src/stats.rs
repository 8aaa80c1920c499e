//! The figures a run produces, printed as text or as one JSON object.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::cli::WireMode;
use crate::host::WakeDelay;
use crate::latency::Latency;

/// Setup costs common to every mode.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Clients logged in.
    pub clients: usize,
    /// Seconds to create the users.
    pub create_secs: f64,
    /// Seconds to log every client in.
    pub login_secs: f64,
    /// chatd RSS after user creation, before the first login.
    pub rss_before_login: Option<u64>,
    /// chatd RSS once every client is logged in.
    pub rss_after_login: Option<u64>,
    /// chatd PID, when known.
    pub pid: Option<u32>,
    /// RSA modulus of the bench's device keys.
    pub key_bits: usize,
    /// False when they are the fixed test keys.
    pub keys_generated: bool,
    /// Seconds spent loading or generating them.
    pub keys_secs: f64,
    /// How envelopes travelled (`--wire`).
    pub wire: WireMode,
    /// Threads reading the receivers (`--receiver-threads`); 0: a tokio task each.
    pub receiver_threads: usize,
}

/// Result of the fan-out mode.
#[derive(Debug, Clone, Default)]
pub struct FanoutReport {
    /// Workload.
    pub senders: usize,
    /// Messages per sender.
    pub messages: u64,
    /// Plaintext bytes per message (before sealing).
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
    /// their newline).
    pub line_bytes: u64,
    /// Deliveries counted at the receivers.
    pub deliveries: u64,
    /// clients × senders × messages.
    pub expected: u64,
    /// Seconds from the first send to the last receiver completing (or the timeout).
    pub duration_secs: f64,
    /// Latency over all deliveries.
    pub latency: Latency,
    /// chatd CPU seconds during the run.
    pub server_cpu_secs: Option<f64>,
    /// chat-bench's own CPU seconds during the run (it shares the machine with chatd).
    pub bench_cpu_secs: Option<f64>,
    /// chatd RSS after the run.
    pub rss_after_run: Option<u64>,
    /// How late 1 ms sleeps woke on the idle machine just before the run (`--host-check`).
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
    pub byes: BTreeMap<String, usize>,
    /// Read or write errors, with counts.
    pub errors: BTreeMap<String, usize>,
    /// Warnings and errors chatd logged.
    pub server_log_problems: usize,
    /// The first of them.
    pub server_log_lines: Vec<String>,
}

impl FanoutReport {
    /// expected - received.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.deliveries)
    }

    /// Deliveries per second of wall time.
    pub fn rate_per_sec(&self) -> f64 {
        per(self.deliveries as f64, self.duration_secs)
    }

    /// Deliveries per chatd CPU second.
    pub fn per_cpu_sec(&self) -> Option<f64> {
        self.server_cpu_secs
            .map(|cpu| per(self.deliveries as f64, cpu))
    }

    /// Mean `envelope` frame on the wire (inside TLS): a binary frame, or a line with its
    /// newline.
    pub fn bytes_per_delivery(&self) -> f64 {
        per(self.line_bytes as f64, self.deliveries as f64)
    }

    /// Envelopes sealed before the run.
    fn sealed(&self) -> u64 {
        self.senders as u64 * self.messages
    }
}

/// Result of the idle mode.
#[derive(Debug, Clone, Default)]
pub struct IdleReport {
    /// Seconds waited after the last login.
    pub wait_secs: u64,
    /// chatd RSS after waiting.
    pub rss_after_wait: Option<u64>,
    /// Connections lost while waiting (bye or error).
    pub dropped: usize,
}

/// Result of the login-storm mode, beside the fan-out figures of the whole run.
#[derive(Debug, Clone, Default)]
pub struct StormReport {
    /// `--login-storm L`: logins at most.
    pub max_logins: usize,
    /// Storm logins in flight at once (and storm users).
    pub concurrency: usize,
    /// Seconds from the first send to the start of the storm.
    pub quiet_secs: f64,
    /// Seconds from the start of the storm to the end of its last login.
    pub storm_secs: f64,
    /// Chat latency of the messages sent in the quiet phase.
    pub quiet: Latency,
    /// Chat latency of the messages sent during the storm.
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
    pub logins: u64,
    /// Storm login latency, connect to `login_ok`.
    pub login_latency: Latency,
    /// Failed storm logins (or quits after one), by reason.
    pub failed: BTreeMap<String, usize>,
}

impl StormReport {
    /// How far the storm moved chat p99: storm - quiet, milliseconds.
    pub fn p99_delta_ms(&self) -> f64 {
        self.storm.p99_ms - self.quiet.p99_ms
    }

    /// Storm logins completed per second of storm.
    pub fn logins_per_sec(&self) -> f64 {
        per(self.logins as f64, self.storm_secs)
    }

    /// Failed storm logins (and quits), all reasons.
    pub fn failures(&self) -> usize {
        self.failed.values().sum()
    }

    /// True when the storm used up its L logins: it may have ended before the storm phase's
    /// messages did, and the later ones were sent with no storm.
    pub fn reached_max(&self) -> bool {
        usize::try_from(self.logins).map_or(true, |n| {
            n.saturating_add(self.failures()) >= self.max_logins
        })
    }
}

fn per(n: f64, secs: f64) -> f64 {
    if secs > 0.0 { n / secs } else { 0.0 }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "?".into(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    )
}

fn setup_json(s: &Setup) -> Value {
    json!({
        "clients": s.clients,
        "chatd_pid": s.pid,
        "create_users_secs": s.create_secs,
        "login_secs": s.login_secs,
        "logins_per_sec": per(s.clients as f64, s.login_secs),
        "rss_before_login_bytes": s.rss_before_login,
        "rss_after_login_bytes": s.rss_after_login,
        "key_bits": s.key_bits,
        "keys_generated": s.keys_generated,
        "keys_secs": s.keys_secs,
        "wire": s.wire.as_str(),
        "receiver_threads": s.receiver_threads,
    })
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

fn setup_text(s: &Setup) -> String {
    let keys = if s.keys_generated {
        format!("generated in {:.2} s", s.keys_secs)
    } else {
        "fixed test keys".into()
    };
    format!(
        "clients            {}\n\
         wire               {}\n\
         receivers          {}\n\
         device keys        RSA-{}, {keys}\n\
         users created in   {:.2} s\n\
         logins             {:.2} s ({:.0}/s)\n\
         chatd RSS          before login {}, after login {}\n",
        s.clients,
        wire_text(s.wire),
        receivers_text(s.receiver_threads),
        s.key_bits,
        s.create_secs,
        s.login_secs,
        per(s.clients as f64, s.login_secs),
        mib(s.rss_before_login),
        mib(s.rss_after_login),
    )
}

/// The fan-out figures as one JSON object.
pub fn fanout_json(s: &Setup, r: &FanoutReport) -> Value {
    let mut v = setup_json(s);
    let extra = json!({
        "mode": "fanout",
        "senders": r.senders,
        "messages_per_sender": r.messages,
        "payload_bytes": r.bytes,
        "sealed": r.sealed(),
        "seal_secs": r.seal_secs,
        "envelope_bytes": r.envelope_bytes,
        "bytes_per_delivery": r.bytes_per_delivery(),
        "rate": r.rate,
        "window": r.window,
        "deliveries": r.deliveries,
        "expected": r.expected,
        "lost": r.lost(),
        "duration_secs": r.duration_secs,
        "deliveries_per_sec": r.rate_per_sec(),
        "latency_p50_ms": r.latency.p50_ms,
        "latency_p99_ms": r.latency.p99_ms,
        "latency_max_ms": r.latency.max_ms,
        "chatd_cpu_secs": r.server_cpu_secs,
        "bench_cpu_secs": r.bench_cpu_secs,
        "deliveries_per_cpu_sec": r.per_cpu_sec(),
        "rss_after_run_bytes": r.rss_after_run,
        "host_wake_late_p50_ms": r.host_wake.map(|w| w.late.p50_ms),
        "host_wake_late_p99_ms": r.host_wake.map(|w| w.late.p99_ms),
        "host_wake_late_max_ms": r.host_wake.map(|w| w.late.max_ms),
        "host_steal_percent": r.host_steal_percent,
        "out_of_order": r.out_of_order,
        "corrupt": r.corrupt,
        "incomplete_receivers": r.incomplete_receivers,
        "byes": r.byes,
        "errors": r.errors,
        "chatd_log_problems": r.server_log_problems,
        "chatd_log_lines": r.server_log_lines,
    });
    merge(&mut v, extra);
    v
}

/// The fan-out figures for people.
pub fn fanout_text(s: &Setup, r: &FanoutReport) -> String {
    let mut out = setup_text(s);
    let mut rate = r
        .rate
        .map_or_else(|| "as fast as possible".into(), |r| format!("{r} msg/s"));
    if let Some(w) = r.window {
        rate += &format!(", window {w}");
    }
    let each_ms = per(r.seal_secs * 1000.0, r.sealed() as f64);
    out += &format!(
        "workload           {} senders x {} messages x {} bytes, {rate}\n\
         sealed             {} envelopes of {:.0} bytes in {:.2} s ({each_ms:.2} ms each, before the run)\n\
         deliveries         {} of {} expected, lost {}\n\
         duration           {:.3} s\n\
         deliveries/s       {:.0}\n\
         bytes/delivery     {:.0} ({})\n\
         latency            p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n",
        r.senders,
        r.messages,
        r.bytes,
        r.sealed(),
        r.envelope_bytes,
        r.seal_secs,
        r.deliveries,
        r.expected,
        r.lost(),
        r.duration_secs,
        r.rate_per_sec(),
        r.bytes_per_delivery(),
        match s.wire {
            WireMode::Binary => "envelope frame inside TLS",
            WireMode::Json => "envelope line inside TLS, newline included",
        },
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
    );
    match (r.server_cpu_secs, r.per_cpu_sec()) {
        (Some(cpu), Some(per_cpu)) => {
            out +=
                &format!("chatd CPU          {cpu:.2} s, {per_cpu:.0} deliveries per CPU-second\n")
        }
        _ => out += "chatd CPU          unknown (pass --pid with --target)\n",
    }
    if let Some(cpu) = r.bench_cpu_secs {
        out += &format!("chat-bench CPU     {cpu:.2} s (TLS, reading headers; same machine)\n");
    }
    out += &format!("chatd RSS          after run {}\n", mib(r.rss_after_run));
    out += &host_text(r);
    if r.out_of_order > 0 || r.corrupt > 0 || r.incomplete_receivers > 0 {
        out += &format!(
            "PROBLEMS           {} out of order, {} corrupt, {} receivers incomplete\n",
            r.out_of_order, r.corrupt, r.incomplete_receivers
        );
    }
    for (reason, n) in &r.byes {
        out += &format!("bye                {n} x {reason}\n");
    }
    for (error, n) in &r.errors {
        out += &format!("error              {n} x {error}\n");
    }
    if r.server_log_problems > 0 {
        out += &format!("chatd warnings     {}\n", r.server_log_problems);
        for line in &r.server_log_lines {
            out += &format!("  {line}\n");
        }
    }
    out
}

/// The host's steadiness around the run, for people.
fn host_text(r: &FanoutReport) -> String {
    let mut out = String::new();
    if let Some(w) = r.host_wake {
        out += &format!(
            "host wake-ups      1 ms sleeps late by p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms \
             ({} sleeps in {:.1} s, idle, before the run)\n",
            w.late.p50_ms, w.late.p99_ms, w.late.max_ms, w.samples, w.secs
        );
    }
    match r.host_steal_percent {
        Some(steal) => {
            out += &format!(
                "host steal         {steal:.2} % of the CPU time during the run (taken by the \
                 hypervisor)\n"
            )
        }
        None => out += "host steal         unknown (/proc/stat unread, or no clock tick passed)\n",
    }
    out
}

/// The login-storm figures (and the whole run's fan-out figures) as one JSON object.
pub fn storm_json(s: &Setup, r: &FanoutReport, t: &StormReport) -> Value {
    let mut v = fanout_json(s, r);
    merge(
        &mut v,
        json!({
            "mode": "login_storm",
            "storm_max_logins": t.max_logins,
            "storm_concurrency": t.concurrency,
            "quiet_secs": t.quiet_secs,
            "storm_secs": t.storm_secs,
            "quiet_latency_p50_ms": t.quiet.p50_ms,
            "quiet_latency_p99_ms": t.quiet.p99_ms,
            "quiet_latency_max_ms": t.quiet.max_ms,
            "storm_latency_p50_ms": t.storm.p50_ms,
            "storm_latency_p99_ms": t.storm.p99_ms,
            "storm_latency_max_ms": t.storm.max_ms,
            "p99_delta_ms": t.p99_delta_ms(),
            "storm_logins": t.logins,
            "storm_logins_per_sec": t.logins_per_sec(),
            "storm_login_p50_ms": t.login_latency.p50_ms,
            "storm_login_p99_ms": t.login_latency.p99_ms,
            "storm_login_max_ms": t.login_latency.max_ms,
            "storm_login_failed": t.failed,
            "storm_reached_max": t.reached_max(),
            "quiet_chatd_cpu_secs": t.quiet_chatd_cpu_secs,
            "storm_chatd_cpu_secs": t.storm_chatd_cpu_secs,
            "quiet_bench_cpu_secs": t.quiet_bench_cpu_secs,
            "storm_bench_cpu_secs": t.storm_bench_cpu_secs,
        }),
    );
    v
}

/// The login-storm figures for people: the fan-out's, then the two phases side by side.
pub fn storm_text(s: &Setup, r: &FanoutReport, t: &StormReport) -> String {
    let secs = |x: Option<f64>| x.map_or_else(|| "?".to_string(), |v| format!("{v:.2} s"));
    let mut out = fanout_text(s, r);
    out += &format!(
        "login storm        at most {} logins, {} at a time (full TLS handshake, argon2id, quit)\n\
         phases             quiet {:.2} s, storm {:.2} s\n\
         latency quiet      p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n\
         latency storm      p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n\
         p99 storm - quiet  {:+.3} ms\n\
         storm logins       {} ({:.1}/s), {} failed\n\
         login latency      p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (connect to login_ok)\n\
         chatd CPU          quiet {}, storm {}\n\
         chat-bench CPU     quiet {}, storm {}\n",
        t.max_logins,
        t.concurrency,
        t.quiet_secs,
        t.storm_secs,
        t.quiet.p50_ms,
        t.quiet.p99_ms,
        t.quiet.max_ms,
        t.storm.p50_ms,
        t.storm.p99_ms,
        t.storm.max_ms,
        t.p99_delta_ms(),
        t.logins,
        t.logins_per_sec(),
        t.failures(),
        t.login_latency.p50_ms,
        t.login_latency.p99_ms,
        t.login_latency.max_ms,
        secs(t.quiet_chatd_cpu_secs),
        secs(t.storm_chatd_cpu_secs),
        secs(t.quiet_bench_cpu_secs),
        secs(t.storm_bench_cpu_secs),
    );
    if t.reached_max() {
        out += "NOTE               the storm used up its logins and may have ended before the \
                phase did; raise --login-storm\n";
    }
    for (why, n) in &t.failed {
        out += &format!("login failed       {n} x {why}\n");
    }
    out
}

/// RSS growth per connection, bytes.
pub fn rss_per_connection(s: &Setup, after: Option<u64>) -> Option<f64> {
    let (before, after) = (s.rss_before_login?, after?);
    (s.clients > 0).then(|| (after as f64 - before as f64) / s.clients as f64)
}

/// The idle figures as one JSON object.
pub fn idle_json(s: &Setup, r: &IdleReport) -> Value {
    let mut v = setup_json(s);
    merge(
        &mut v,
        json!({
            "mode": "idle",
            "wait_secs": r.wait_secs,
            "rss_after_wait_bytes": r.rss_after_wait,
            "rss_per_connection_bytes": rss_per_connection(s, r.rss_after_wait),
            "dropped": r.dropped,
        }),
    );
    v
}

/// The idle figures for people.
pub fn idle_text(s: &Setup, r: &IdleReport) -> String {
    let per_conn = rss_per_connection(s, r.rss_after_wait)
        .map_or_else(|| "?".into(), |b| format!("{:.1} KiB", b / 1024.0));
    setup_text(s)
        + &format!(
            "chatd RSS          after {} s idle {}\n\
             RSS per connection {per_conn}\n\
             dropped            {}\n",
            r.wait_secs,
            mib(r.rss_after_wait),
            r.dropped,
        )
}

/// The connect-rate figures as one JSON object.
pub fn connect_json(r: &crate::workload::ConnectReport) -> Value {
    json!({
        "mode": "connect_rate",
        "wire": r.wire.as_str(),
        "setups": r.done,
        "failed": r.failed,
        "secs": r.secs,
        "setups_per_sec": rate(r.done, r.secs),
        "chatd_cpu_secs": r.chatd_cpu_secs,
        "setups_per_chatd_cpu_sec": r.chatd_cpu_secs.and_then(|c| rate(r.done, c)),
    })
}

/// The connect-rate figures for people.
pub fn connect_text(r: &crate::workload::ConnectReport) -> String {
    let per = |x: Option<f64>| x.map_or_else(|| "?".to_string(), |v| format!("{v:.0}"));
    format!(
        "connection setups (TCP + TLS handshake + hello, no login)\n\
         wire               {}\n\
         done               {} in {:.2} s, {} failed\n\
         setups per second  {}\n\
         per chatd CPU-s    {}\n",
        wire_text(r.wire),
        r.done,
        r.secs,
        r.failed.values().sum::<usize>(),
        per(rate(r.done, r.secs)),
        per(r.chatd_cpu_secs.and_then(|c| rate(r.done, c))),
    )
}

fn rate(n: usize, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| n as f64 / secs)
}

/// Median, smallest and largest of `xs` (None when empty).
fn spread(xs: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    Some((median_of_sorted(&v)?, *v.first()?, *v.last()?))
}

/// The middle of sorted figures, or the mean of the middle two for an even count.
fn median_of_sorted(xs: &[f64]) -> Option<f64> {
    let mid = xs.len() / 2;
    match xs.len() {
        0 => None,
        n if n % 2 == 1 => Some(xs[mid]),
        _ => Some((xs[mid - 1] + xs[mid]) / 2.0),
    }
}

/// The startup figures as one JSON object.
pub fn startup_json(t: &crate::server::StartupTimes) -> Value {
    let (median, min, max) =
        spread(&t.existing_ms).map_or((None, None, None), |(m, a, b)| (Some(m), Some(a), Some(b)));
    json!({
        "mode": "startup",
        "fresh_ms": t.fresh_ms,
        "existing_ms": t.existing_ms,
        "existing_median_ms": median,
        "existing_min_ms": min,
        "existing_max_ms": max,
    })
}

/// The startup figures for people.
pub fn startup_text(t: &crate::server::StartupTimes) -> String {
    let existing = spread(&t.existing_ms).map_or_else(
        || "not measured".to_string(),
        |(m, a, b)| {
            format!(
                "median {m:.1} ms (min {a:.1}, max {b:.1}) over {} starts",
                t.existing_ms.len()
            )
        },
    );
    format!(
        "chatd start to ready (listener and control socket bound)\n\
         fresh state dir    {:.1} ms (creates the database and a certificate)\n\
         existing state dir {existing}\n",
        t.fresh_ms
    )
}

/// The figures `--runs` summarises in text, with their labels, in this order; a mode shows
/// the ones it has.
const SUMMARY: &[(&str, &str)] = &[
    ("deliveries_per_sec", "deliveries/s"),
    ("deliveries_per_cpu_sec", "per chatd CPU-s"),
    ("latency_p50_ms", "latency p50 ms"),
    ("latency_p99_ms", "latency p99 ms"),
    ("latency_max_ms", "latency max ms"),
    ("quiet_latency_p99_ms", "quiet p99 ms"),
    ("storm_latency_p99_ms", "storm p99 ms"),
    ("p99_delta_ms", "storm - quiet ms"),
    ("storm_logins", "storm logins"),
    ("setups_per_sec", "setups/s"),
    ("setups_per_chatd_cpu_sec", "setups/chatd CPU-s"),
    ("rss_per_connection_bytes", "RSS/connection B"),
    ("chatd_cpu_secs", "chatd CPU s"),
    ("bench_cpu_secs", "chat-bench CPU s"),
    ("lost", "lost"),
    ("dropped", "dropped"),
    ("host_wake_late_p99_ms", "host wake p99 ms"),
    ("host_steal_percent", "host steal %"),
];

/// Numbers in a run's figures that name something rather than measure it.
const NOT_FIGURES: &[&str] = &["chatd_pid"];

/// The median of every figure that is a number in every run (the mean of the middle two
/// for an even count); other keys are left out.
pub fn medians(runs: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    let Some(Value::Object(first)) = runs.first() else {
        return Value::Object(out);
    };
    for key in first.keys().filter(|k| !NOT_FIGURES.contains(&k.as_str())) {
        let mut xs: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
        if xs.len() != runs.len() {
            continue;
        }
        xs.sort_by(f64::total_cmp);
        if let Some(median) = median_of_sorted(&xs) {
            out.insert(key.clone(), json!(median));
        }
    }
    Value::Object(out)
}

/// `--runs` as one JSON object: every run's figures and their medians.
pub fn runs_json(runs: &[Value]) -> Value {
    json!({
        "runs": runs.len(),
        "median": medians(runs),
        "each": runs,
    })
}

/// `--runs` for people: the main figures' medians, each with every run's value.
pub fn runs_text(runs: &[Value]) -> String {
    summary_text(
        &format!(
            "median of {} runs (each run's value in brackets)",
            runs.len()
        ),
        runs,
    )
}

/// Per pair, every figure that is a number in both runs: `b` minus `a`.
fn differences(a: &[Value], b: &[Value]) -> Vec<Value> {
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            let mut diff = serde_json::Map::new();
            if let Value::Object(b_figures) = b {
                for (key, y) in b_figures {
                    if let (Some(x), Some(y)) = (a[key].as_f64(), y.as_f64()) {
                        diff.insert(key.clone(), json!(y - x));
                    }
                }
            }
            Value::Object(diff)
        })
        .collect()
}

/// `--compare` as one JSON object: each chatd's runs and medians, and the median of the
/// per-pair differences (second minus first).
pub fn compare_json(a_path: &Path, a: &[Value], b_path: &Path, b: &[Value]) -> Value {
    let diffs = differences(a, b);
    json!({
        "pairs": a.len().min(b.len()),
        "a": {"chatd": a_path.display().to_string(), "median": medians(a), "each": a},
        "b": {"chatd": b_path.display().to_string(), "median": medians(b), "each": b},
        "b_minus_a_median": medians(&diffs),
    })
}

/// `--compare` for people: each chatd's medians, then the per-pair differences'.
pub fn compare_text(a_path: &Path, a: &[Value], b_path: &Path, b: &[Value]) -> String {
    let pairs = a.len().min(b.len());
    let mut out = summary_text(
        &format!("A {}: median of {} runs", a_path.display(), a.len()),
        a,
    );
    out += &summary_text(
        &format!("B {}: median of {} runs", b_path.display(), b.len()),
        b,
    );
    out += &summary_text(
        &format!("B - A: median of {pairs} pairs' differences (each pair's in brackets)"),
        &differences(a, b),
    );
    out
}

/// A `== title` line, then the main figures' medians over `runs`, each with every run's value.
fn summary_text(title: &str, runs: &[Value]) -> String {
    let median = medians(runs);
    let mut out = format!("== {title}\n");
    for (key, label) in SUMMARY {
        let Some(m) = median[*key].as_f64() else {
            continue;
        };
        // Counts as counts (a median of two may be a half), large figures without decimals.
        let counts = runs.iter().all(|r| r[*key].is_u64());
        let large = runs
            .iter()
            .any(|r| r[*key].as_f64().is_some_and(|x| x.abs() >= 1000.0));
        let show = |x: f64| {
            if counts {
                format!("{}", (x * 2.0).round() / 2.0)
            } else if large {
                format!("{x:.0}")
            } else {
                format!("{x:.3}")
            }
        };
        let each: Vec<String> = runs
            .iter()
            .filter_map(|r| r[*key].as_f64())
            .map(show)
            .collect();
        out += &format!("{label:<19}{} [{}]\n", show(m), each.join(", "));
    }
    out
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_numbers_present_in_every_run() {
        let runs = [
            json!({"mode": "fanout", "a": 3.0, "b": 1, "c": null, "d": 5, "chatd_pid": 9}),
            json!({"mode": "fanout", "a": 1.0, "b": 2, "c": 1.0}),
            json!({"mode": "fanout", "a": 2.0, "b": 4, "c": 2.0, "d": 7}),
        ];
        let m = medians(&runs);
        assert_eq!(
            m,
            json!({"a": 2.0, "b": 2.0}),
            "c is null once, d missing once"
        );
        let m = medians(&runs[..2]);
        assert_eq!(m["a"], 2.0, "even count: the mean of the middle two");
        assert_eq!(m["b"], 1.5);
        assert_eq!(medians(&[]), json!({}));
    }

    #[test]
    fn runs_text_shows_each_value_beside_the_median() {
        let runs = [
            json!({"deliveries_per_sec": 2_100_000.0, "latency_p99_ms": 4.5, "lost": 0}),
            json!({"deliveries_per_sec": 2_500_000.0, "latency_p99_ms": 5.25, "lost": 0}),
            json!({"deliveries_per_sec": 2_300_000.5, "latency_p99_ms": 4.75, "lost": 1}),
        ];
        let text = runs_text(&runs);
        assert!(text.starts_with("== median of 3 runs"), "{text}");
        assert!(
            text.contains("deliveries/s       2300000 [2100000, 2500000, 2300000]\n"),
            "{text}"
        );
        assert!(
            text.contains("latency p99 ms     4.750 [4.500, 5.250, 4.750]\n"),
            "{text}"
        );
        assert!(text.contains("lost               0 [0, 0, 1]\n"), "{text}");
        let two = runs_text(&runs[1..]);
        assert!(two.contains("lost               0.5 [0, 1]\n"), "{two}");
        assert!(!text.contains("storm"), "{text}");
        let v = runs_json(&runs);
        assert_eq!(v["runs"], 3);
        assert_eq!(v["median"]["latency_p99_ms"], 4.75);
        assert_eq!(v["each"][1]["deliveries_per_sec"], 2_500_000.0);
    }

    #[test]
    fn a_comparison_reports_each_side_and_the_pairs_differences() {
        let a = [
            json!({"mode": "fanout", "latency_p99_ms": 5.0, "lost": 0}),
            json!({"mode": "fanout", "latency_p99_ms": 6.0, "lost": 0}),
            json!({"mode": "fanout", "latency_p99_ms": 4.0, "lost": 0}),
        ];
        let b = [
            json!({"mode": "fanout", "latency_p99_ms": 4.5, "lost": 0}),
            json!({"mode": "fanout", "latency_p99_ms": 6.25, "lost": 0}),
            json!({"mode": "fanout", "latency_p99_ms": 3.0, "lost": 0}),
        ];
        let diffs = differences(&a, &b);
        assert_eq!(diffs[1], json!({"latency_p99_ms": 0.25, "lost": 0.0}));
        // One figure, one format: a small median among large differences has no decimals.
        let rates = [
            json!({"deliveries_per_sec": 2000.0}),
            json!({"deliveries_per_sec": -1800.0}),
        ];
        let text = summary_text("t", &rates);
        assert!(
            text.contains("deliveries/s       100 [2000, -1800]\n"),
            "{text}"
        );
        let (pa, pb) = (Path::new("/x/chatd-a"), Path::new("/x/chatd-b"));
        let v = compare_json(pa, &a, pb, &b);
        assert_eq!(v["pairs"], 3);
        assert_eq!(v["a"]["chatd"], "/x/chatd-a");
        assert_eq!(v["a"]["median"]["latency_p99_ms"], 5.0);
        assert_eq!(v["b"]["median"]["latency_p99_ms"], 4.5);
        assert_eq!(v["b"]["each"][2]["latency_p99_ms"], 3.0);
        // The differences' median (−0.5 of −0.5, +0.25, −1.0), not B's median minus A's.
        assert_eq!(v["b_minus_a_median"]["latency_p99_ms"], -0.5);
        let text = compare_text(pa, &a, pb, &b);
        assert!(
            text.contains("== A /x/chatd-a: median of 3 runs\n"),
            "{text}"
        );
        assert!(
            text.contains("== B /x/chatd-b: median of 3 runs\n"),
            "{text}"
        );
        assert!(
            text.contains("latency p99 ms     -0.500 [-0.500, 0.250, -1.000]\n"),
            "{text}"
        );
    }

    #[test]
    fn startup_spread_is_median_min_max() {
        assert_eq!(spread(&[30.0, 10.0, 20.0]), Some((20.0, 10.0, 30.0)));
        assert_eq!(spread(&[30.0, 10.0, 20.0, 40.0]), Some((25.0, 10.0, 40.0)));
        assert_eq!(spread(&[]), None);
        let t = crate::server::StartupTimes {
            fresh_ms: 50.0,
            existing_ms: vec![12.0, 11.0, 13.0],
        };
        let v = startup_json(&t);
        assert_eq!(
            (v["existing_median_ms"].as_f64(), v["fresh_ms"].as_f64()),
            (Some(12.0), Some(50.0))
        );
        assert!(startup_text(&t).contains("median 12.0 ms (min 11.0, max 13.0) over 3 starts"));
    }

    #[test]
    fn lost_and_rates() {
        let r = FanoutReport {
            deliveries: 90,
            expected: 100,
            duration_secs: 2.0,
            server_cpu_secs: Some(0.5),
            ..FanoutReport::default()
        };
        assert_eq!(r.lost(), 10);
        assert_eq!(r.rate_per_sec(), 45.0);
        assert_eq!(r.per_cpu_sec(), Some(180.0));
        let v = fanout_json(&Setup::default(), &r);
        assert_eq!(v["lost"], 10);
        assert_eq!(v["mode"], "fanout");
        assert_eq!(v["wire"], "binary");
    }

    #[test]
    fn wire_bytes_and_text() {
        let r = FanoutReport {
            senders: 2,
            messages: 5,
            bytes: 100,
            deliveries: 4,
            expected: 4,
            line_bytes: 4 * 700,
            seal_secs: 0.02,
            envelope_bytes: 469.0,
            ..FanoutReport::default()
        };
        assert_eq!(r.bytes_per_delivery(), 700.0);
        assert_eq!(FanoutReport::default().bytes_per_delivery(), 0.0);
        let s = Setup {
            key_bits: 2048,
            wire: WireMode::Json,
            receiver_threads: 2,
            ..Setup::default()
        };
        let v = fanout_json(&s, &r);
        assert_eq!(v["bytes_per_delivery"], 700.0);
        assert_eq!(v["sealed"], 10);
        assert_eq!(v["key_bits"], 2048);
        assert_eq!(v["wire"], "json");
        let text = fanout_text(&s, &r);
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
        let text = fanout_text(&Setup::default(), &r);
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
        let t = StormReport {
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
            ..StormReport::default()
        };
        assert_eq!(t.p99_delta_ms(), 1.5);
        assert_eq!(t.logins_per_sec(), 25.0);
        assert_eq!(t.failures(), 2);
        assert!(!t.reached_max());
        assert!(
            StormReport {
                logins: 98,
                ..t.clone()
            }
            .reached_max()
        );
        let v = storm_json(&Setup::default(), &FanoutReport::default(), &t);
        assert_eq!(v["mode"], "login_storm");
        assert_eq!(v["p99_delta_ms"], 1.5);
        assert_eq!(v["storm_logins"], 50);
        assert_eq!(v["storm_login_failed"]["login: refused"], 2);
        assert!(v["quiet_chatd_cpu_secs"].is_null());
        let text = storm_text(&Setup::default(), &FanoutReport::default(), &t);
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
