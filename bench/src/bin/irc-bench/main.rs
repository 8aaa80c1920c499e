//! irc-bench: chat-bench's fan-out and paced workloads against an IRC server (InspIRCd), so
//! that chatd's figures have a reference measured the same way on the same host.
//!
//! N clients register and join one channel; the first S of them each send M PRIVMSGs of a
//! B-byte text, either as fast as the fan-out drains (each sender at most `--window` messages
//! ahead of the slowest receiver) or paced at `--rate` messages per second in total. An IRC
//! server does not echo a message to its sender, so the deliveries expected are S·M·(N−1).
//! Every client counts what it gets, checks each sender's order (the sequence number opens
//! the text) and records the latency (send times kept in memory, one monotonic clock).

mod conn;
mod line;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};

use conn::{Connector, Phase, Shared};

/// Most `--runs`.
const MAX_RUNS: usize = 100;

/// Figures printed for people, in order, with their labels.
const FIGURES: &[(&str, &str)] = &[
    ("deliveries", "deliveries"),
    ("lost", "lost"),
    ("out_of_order", "out of order"),
    ("duration_secs", "duration s"),
    ("deliveries_per_sec", "deliveries/s"),
    ("server_cpu_secs", "server CPU s"),
    (
        "deliveries_per_server_cpu_sec",
        "deliveries per server CPU-s",
    ),
    ("bench_cpu_secs", "irc-bench CPU s"),
    ("latency_p50_ms", "latency p50 ms"),
    ("latency_p99_ms", "latency p99 ms"),
    ("latency_max_ms", "latency max ms"),
];

/// Fan-out and paced-room load against an IRC server (plain TCP, or TLS with --tls-cert).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The server, HOST:PORT (loopback only: this is a load generator).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:6667")]
    target: SocketAddr,
    /// Process id of the server, for its CPU time during the timed phase (/proc/PID/stat).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Connect with TLS, trusting exactly this (self-signed) PEM certificate.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// Clients in the channel (every one receives every message but its own).
    #[arg(short = 'n', long, default_value_t = 500)]
    clients: usize,
    /// Clients that also send (the first S of the N).
    #[arg(short = 's', long, default_value_t = 5)]
    senders: usize,
    /// Messages each sender sends.
    #[arg(short = 'm', long, default_value_t = 2000)]
    messages: u64,
    /// Bytes of text per message (10-digit sequence number, a space, padding).
    #[arg(short = 'b', long, default_value_t = 100)]
    bytes: usize,
    /// Total send rate over all senders, messages per second (default: as fast as possible).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    rate: Option<f64>,
    /// Most messages a sender may be ahead of the slowest receiver (0: no limit).
    #[arg(long, value_name = "MSGS", default_value_t = 100)]
    window: u64,
    /// Runs, each with new connections to the same server; figures are the medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Channel all clients join.
    #[arg(long, default_value = "#bench")]
    channel: String,
    /// Connection setups (connect, TLS, register, join) in flight at once.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Give up the timed phase after this many seconds without a delivery.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    idle_timeout: u64,
    /// Give up the timed phase after this many seconds in all.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    check(&args)?;
    raise_nofile_limit()?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t);
    }
    let rt = rt.enable_all().build().context("tokio runtime")?;
    rt.block_on(run_all(&args))
}

fn check(args: &Args) -> Result<()> {
    if !args.target.ip().is_loopback() {
        bail!("--target must be a loopback address: irc-bench only loads servers on this host");
    }
    if args.clients < 2 || args.senders == 0 || args.senders > args.clients {
        bail!("need -n ≥ 2 and 1 ≤ -s ≤ -n");
    }
    if args.messages == 0 || args.messages > 1_000_000_000 {
        bail!("-m must be between 1 and 10^9 (the sequence has 10 digits)");
    }
    if args.bytes < line::MIN_TEXT_BYTES || args.bytes > 400 {
        bail!(
            "-b must be between {} and 400 (an IRC line is at most 512 bytes)",
            line::MIN_TEXT_BYTES
        );
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number");
    }
    if args.runs == 0 || args.runs > MAX_RUNS {
        bail!("--runs must be between 1 and {MAX_RUNS}");
    }
    if args.connect_concurrency == 0 {
        bail!("--connect-concurrency must be at least 1");
    }
    Ok(())
}

async fn run_all(args: &Args) -> Result<()> {
    let connector = match &args.tls_cert {
        Some(cert) => Connector::tls_pinned(cert)?,
        None => Connector::Plain,
    };
    let load_before = loadavg();
    let mut runs = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        if run > 0 {
            // Let the server finish the previous run's 500 QUITs before the next one starts.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let figures = run_once(args, &connector, run).await?;
        if !args.json {
            eprintln!("run {}: {}", run + 1, one_line(&figures));
        }
        runs.push(figures);
    }
    let summary = json!({
        "workload": if args.rate.is_some() { "paced" } else { "fan-out" },
        "transport": if args.tls_cert.is_some() { "tls" } else { "tcp" },
        "target": args.target.to_string(),
        "clients": args.clients,
        "senders": args.senders,
        "messages": args.messages,
        "bytes": args.bytes,
        "window": args.window,
        "rate": args.rate,
        "expected_per_run": expected(args),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "runs": runs.len(),
        "median": medians(&runs),
        "each": runs,
    });
    if args.json {
        println!("{summary}");
    } else {
        print!("{}", text(args, &summary, &runs));
    }
    Ok(())
}

/// Deliveries a run should see: every message reaches every member but its sender.
fn expected(args: &Args) -> u64 {
    args.senders as u64 * args.messages * (args.clients as u64 - 1)
}

async fn run_once(args: &Args, connector: &Connector, run: usize) -> Result<Value> {
    let (n, s, m) = (args.clients, args.senders, args.messages);
    let slots = usize::try_from(m)
        .ok()
        .and_then(|m| m.checked_mul(s))
        .context("-s × -m too large")?;
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        target: args.target,
        connector: connector.clone(),
        run,
        channel: args.channel.clone(),
        clients: n,
        senders: s,
        messages: m,
        text_bytes: args.bytes,
        window: args.window,
        rate: args.rate,
        send_ns: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        counts: (0..n * s).map(|_| AtomicU64::new(0)).collect(),
        need: (0..s).map(|_| AtomicU64::new(u64::MAX)).collect(),
        wake: (0..s).map(|_| Notify::new()).collect(),
        delivered: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        start_ns: AtomicU64::new(0),
    });
    let setup = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel();
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let tasks: Vec<_> = (0..n)
        .map(|idx| {
            let task = conn::client(
                idx,
                Arc::clone(&shared),
                Arc::clone(&setup),
                joined_tx.clone(),
                phase_rx.clone(),
            );
            tokio::spawn(task)
        })
        .collect();
    drop(joined_tx);

    // Everyone in the channel, or the first reason why not.
    let setup_started = Instant::now();
    let mut ready = 0;
    while ready < n {
        let next = tokio::time::timeout(Duration::from_secs(120), joined_rx.recv()).await;
        match next {
            Ok(Some(Ok(()))) => ready += 1,
            Ok(Some(Err(e))) => {
                let _ = phase_tx.send(Phase::Stop);
                bail!("setup failed after {ready} of {n} clients joined: {e}");
            }
            Ok(None) | Err(_) => {
                let _ = phase_tx.send(Phase::Stop);
                bail!("setup stalled after {ready} of {n} clients joined");
            }
        }
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    // The JOINs of later clients are still reaching earlier ones: let that settle so the
    // timed phase measures messages only.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let server_cpu_start = args.pid.map(cpu_seconds).transpose()?;
    let bench_cpu_start = own_cpu_seconds()?;
    let start_ns = u64::try_from(shared.t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    shared.start_ns.store(start_ns, Ordering::SeqCst);
    phase_tx.send(Phase::Go).context("no client left")?;

    let want = expected(args);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let idle = Duration::from_secs(args.idle_timeout);
    let (mut seen, mut seen_at) = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let d = shared.delivered.load(Ordering::Relaxed);
        if d >= want || Instant::now() > deadline {
            break;
        }
        if d != seen {
            (seen, seen_at) = (d, Instant::now());
        } else if seen_at.elapsed() > idle {
            break;
        }
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    let server_cpu = match (args.pid, server_cpu_start) {
        (Some(pid), Some(start)) => Some(cpu_seconds(pid)? - start),
        _ => None,
    };
    let bench_cpu = own_cpu_seconds()? - bench_cpu_start;
    let _ = phase_tx.send(Phase::Stop);

    let mut latency = conn::new_histogram()?;
    let (mut received, mut out_of_order) = (0u64, 0u64);
    let mut errors = Vec::new();
    for task in tasks {
        let stats = task.await.context("client task")??;
        received += stats.received;
        out_of_order += stats.out_of_order;
        latency.add(&stats.latency_us).context("merging latency")?;
        errors.extend(stats.error);
    }
    if let Some(first) = errors.first() {
        eprintln!(
            "warning: {} clients stopped early; the first: {first}",
            errors.len()
        );
    }
    let end_ns = shared.last_ns.load(Ordering::Relaxed).max(start_ns);
    let duration = (end_ns - start_ns) as f64 / 1e9;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "setup_secs": round3(setup_secs),
        "deliveries": received,
        "expected": want,
        "lost": want.saturating_sub(received),
        "out_of_order": out_of_order,
        "clients_failed": errors.len(),
        "duration_secs": round3(duration),
        "deliveries_per_sec": round3(if duration > 0.0 { received as f64 / duration } else { 0.0 }),
        "server_cpu_secs": server_cpu.map(round3),
        "deliveries_per_server_cpu_sec": server_cpu
            .filter(|c| *c > 0.0)
            .map(|c| round3(received as f64 / c)),
        "bench_cpu_secs": round3(bench_cpu),
        "latency_p50_ms": ms(0.5),
        "latency_p99_ms": ms(0.99),
        "latency_max_ms": latency.max() as f64 / 1000.0,
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The median of every figure that is a number in every run.
fn medians(runs: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    let Some(Value::Object(first)) = runs.first() else {
        return Value::Object(out);
    };
    for key in first.keys() {
        let xs: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
        if xs.len() == runs.len()
            && let Some(m) = line::median(&xs)
        {
            out.insert(key.clone(), json!(round3(m)));
        }
    }
    Value::Object(out)
}

fn one_line(figures: &Value) -> String {
    FIGURES
        .iter()
        .filter_map(|(key, label)| figures.get(key).map(|v| format!("{label} {v}")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn text(args: &Args, summary: &Value, runs: &[Value]) -> String {
    let mut out = format!(
        "irc-bench {} over {} to {}: N={} S={} M={} B={} window={}{}; expected S·M·(N−1) = {} \
         deliveries per run; load average before {} after {}\n",
        summary["workload"].as_str().unwrap_or(""),
        summary["transport"].as_str().unwrap_or(""),
        args.target,
        args.clients,
        args.senders,
        args.messages,
        args.bytes,
        args.window,
        args.rate
            .map(|r| format!(" rate={r}/s"))
            .unwrap_or_default(),
        expected(args),
        summary["loadavg_before"],
        summary["loadavg_after"],
    );
    out.push_str(&format!(
        "median of {} runs (each run's value in brackets)\n",
        runs.len()
    ));
    for (key, label) in FIGURES {
        let median = &summary["median"][key];
        if median.is_null() {
            continue;
        }
        let each: Vec<String> = runs.iter().map(|r| r[key].to_string()).collect();
        out.push_str(&format!("  {label:<30} {median} [{}]\n", each.join(", ")));
    }
    out
}

/// The 1-minute load average (the first field of /proc/loadavg), for the report.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Raises the soft open-file limit to the hard one: each client is a descriptor, and a soft
/// limit of 1024 would cap -n below that.
fn raise_nofile_limit() -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    Ok(())
}

/// User plus system CPU seconds of process `pid` so far (/proc/PID/stat fields 14 and 15).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .context("unexpected /proc/PID/stat format")?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut tick = || -> Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .context("unexpected /proc/PID/stat format")
    };
    let ticks = tick()? + tick()?;
    let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("sysconf(CLK_TCK)")?
        .filter(|t| *t > 0)
        .unwrap_or(100);
    Ok(ticks as f64 / per_sec as f64)
}

/// This process's user plus system CPU seconds so far.
fn own_cpu_seconds() -> Result<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}
