//! The modes: log everyone in, then fan out messages or sit idle, and collect the figures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::WriteHalf;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::Args;
use crate::client::{self, ReadStats, Run, Tls};
use crate::control;
use crate::procfs::Probe;
use crate::server::Target;
use crate::stats::{FanoutReport, IdleReport, Latency, Setup};

/// How often the waiting loop looks at the counters.
const POLL: Duration = Duration::from_millis(5);

/// A logged-in client: its write half and its reader task.
struct Client {
    writer: Option<WriteHalf<Tls>>,
    reader: JoinHandle<ReadStats>,
}

/// Creates the users and logs every client in; each client's reader starts as soon as it is
/// logged in, so presence frames from later logins never pile up.
async fn setup(
    args: &Args,
    target: &Target,
    run: &Arc<Run>,
) -> anyhow::Result<(Setup, Vec<Client>)> {
    let n = args.client_count();
    let probe = Probe::new(target.pid);
    let started = Instant::now();
    control::create_users(&target.control, n, args.create_concurrency).await?;
    let create_secs = started.elapsed().as_secs_f64();
    let rss_before_login = probe.rss();

    let connector = client::connector(target.fingerprint)?;
    let limit = Arc::new(tokio::sync::Semaphore::new(args.login_concurrency));
    let started = Instant::now();
    let mut logins = Vec::with_capacity(n);
    for i in 0..n {
        let (connector, limit, run, addr) = (
            connector.clone(),
            Arc::clone(&limit),
            Arc::clone(run),
            target.addr,
        );
        logins.push(tokio::spawn(async move {
            let permit = limit.acquire_owned().await?;
            let user = control::user_name(i);
            let (tls, lines) = client::login(addr, &connector, &user, control::PASSWORD).await?;
            drop(permit);
            let histogram = client::new_histogram()?;
            let (rd, writer) = tokio::io::split(tls);
            let reader = tokio::spawn(client::read_loop(rd, lines, run, histogram));
            anyhow::Ok(Client {
                writer: Some(writer),
                reader,
            })
        }));
    }
    let mut clients = Vec::with_capacity(n);
    for login in logins {
        clients.push(login.await.context("login task failed")??);
    }
    let login_secs = started.elapsed().as_secs_f64();
    let setup = Setup {
        clients: n,
        create_secs,
        login_secs,
        rss_before_login,
        rss_after_login: probe.rss(),
        pid: target.pid,
    };
    Ok((setup, clients))
}

/// Shared state for `receivers` clients; a send window needs a ring of `window + 1` counters.
fn new_run(expected: u64, senders: usize, receivers: usize, window: Option<u64>) -> Arc<Run> {
    let ring = window.map_or(0, |w| usize::try_from(w).unwrap_or(usize::MAX - 1) + 1);
    Arc::new(Run {
        origin: Instant::now(),
        expected,
        senders,
        complete: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        last_complete_ns: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        receivers,
        acks: (0..senders)
            .map(|_| (0..ring).map(|_| AtomicUsize::new(0)).collect())
            .collect(),
        delivered_through: (0..senders).map(|_| AtomicU64::new(0)).collect(),
        progress: (0..senders).map(|_| tokio::sync::Notify::new()).collect(),
        stop: CancellationToken::new(),
    })
}

/// Fan-out: S senders, M messages each, every client receives everything.
pub async fn fanout(args: &Args, target: &Target) -> anyhow::Result<(Setup, FanoutReport)> {
    let (s, m) = (args.senders, args.messages);
    let expected = u64::try_from(s)? * m;
    let run = new_run(expected, s, args.clients, args.window());
    let (setup, mut clients) = setup(args, target, &run).await?;
    let probe = Probe::new(target.pid);
    let n = clients.len();

    let cpu_before = probe.cpu();
    let t0 = run.now_ns();
    // Each sender sends at rate/S, the senders evenly staggered within one interval.
    let pacing = args
        .rate
        .map(|rate| Duration::from_secs_f64(s as f64 / rate));
    let mut senders = Vec::with_capacity(s);
    for (id, c) in clients.iter_mut().take(s).enumerate() {
        let Some(writer) = c.writer.take() else {
            continue;
        };
        let pacing = pacing.map(|iv| (iv, iv.mul_f64(id as f64 / s as f64)));
        senders.push(tokio::spawn(client::send_loop(
            writer,
            id,
            m,
            args.bytes,
            pacing,
            args.window(),
            Arc::clone(&run),
        )));
    }

    let deadline = Instant::now() + args.timeout();
    while run.complete.load(Ordering::Acquire) + run.ended.load(Ordering::Acquire) < n
        && Instant::now() < deadline
    {
        tokio::time::sleep(POLL).await;
    }
    let all_complete = run.complete.load(Ordering::Acquire) == n;
    let t1 = if all_complete {
        run.last_complete_ns.load(Ordering::Acquire)
    } else {
        run.now_ns()
    };
    let cpu_after = probe.cpu();
    let rss_after_run = probe.rss();
    run.stop.cancel();

    let mut report = FanoutReport {
        senders: s,
        messages: m,
        bytes: args.bytes,
        rate: args.rate,
        window: args.window(),
        expected: expected * u64::try_from(n)?,
        duration_secs: t1.saturating_sub(t0) as f64 / 1e9,
        server_cpu_secs: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        rss_after_run,
        ..FanoutReport::default()
    };
    for mut sender in senders {
        // A sender stuck in a write to a server that stopped reading is abandoned.
        match tokio::time::timeout(Duration::from_secs(1), &mut sender).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => count(&mut report.errors, format!("send: {e}")),
            Ok(Err(e)) => count(&mut report.errors, format!("sender task: {e}")),
            Err(_) => {
                sender.abort();
                count(&mut report.errors, "send: still blocked at the end".into());
            }
        }
    }
    let mut latency = client::new_histogram()?;
    for c in clients {
        let stats = c.reader.await.context("reader task failed")?;
        report.deliveries += stats.received;
        report.out_of_order += stats.out_of_order;
        report.corrupt += stats.corrupt;
        if stats.received < expected {
            report.incomplete_receivers += 1;
        }
        if let Some(bye) = stats.bye {
            count(&mut report.byes, bye);
        }
        if let Some(e) = stats.error {
            count(&mut report.errors, format!("receive: {e}"));
        }
        latency
            .add(&stats.latency_us)
            .context("merging latency histograms")?;
    }
    report.latency = Latency::of(&latency);
    let log = target.log();
    report.server_log_problems = log.count;
    report.server_log_lines = log.lines;
    Ok((setup, report))
}

/// Idle: log everyone in, wait, and see what the connections cost the server.
pub async fn idle(args: &Args, target: &Target) -> anyhow::Result<(Setup, IdleReport)> {
    let run = new_run(u64::MAX, 0, args.client_count(), None);
    let (setup, clients) = setup(args, target, &run).await?;
    tokio::time::sleep(Duration::from_secs(args.idle_wait)).await;
    let report = IdleReport {
        wait_secs: args.idle_wait,
        rss_after_wait: Probe::new(target.pid).rss(),
        dropped: run.ended.load(Ordering::Acquire),
    };
    run.stop.cancel();
    for c in clients {
        let _ = c.reader.await;
        drop(c.writer);
    }
    Ok((setup, report))
}

fn count(map: &mut BTreeMap<String, usize>, key: String) {
    *map.entry(key).or_default() += 1;
}
