//! The modes: log everyone in, then fan out messages or sit idle, and collect the figures.
//!
//! Fan-out seals every envelope before the users are even created (one RSA signature per
//! message is far slower than chatd's fan-out), so the timed phase only writes ready lines.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::WriteHalf;
use tokio::task::JoinHandle;

use crate::cli::Args;
use crate::client::{self, ReadStats, Run, Tls};
use crate::control;
use crate::e2e::{self, Keys};
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

/// Creates the users and logs every client in (the first `senders` with sender keys); each
/// client's reader starts as soon as it is logged in, so presence and device frames from later
/// logins never pile up.
async fn setup(
    args: &Args,
    target: &Target,
    run: &Arc<Run>,
    keys: &Keys,
    senders: usize,
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
        let (connector, limit, run, addr, key) = (
            connector.clone(),
            Arc::clone(&limit),
            Arc::clone(run),
            target.addr,
            keys.login_key(i, senders),
        );
        logins.push(tokio::spawn(async move {
            let permit = limit.acquire_owned().await?;
            let user = control::user_name(i);
            let (tls, lines) =
                client::login(addr, &connector, &user, control::PASSWORD, &key).await?;
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
        key_bits: keys.bits,
        keys_generated: keys.generated,
        keys_secs: keys.secs,
    };
    Ok((setup, clients))
}

/// Fan-out: S senders, M messages each, every client receives everything.
pub async fn fanout(
    args: &Args,
    target: &Target,
    keys: &Keys,
) -> anyhow::Result<(Setup, FanoutReport)> {
    let (s, m) = (args.senders, args.messages);
    let expected = u64::try_from(s)? * m;
    let sealed = tokio::task::block_in_place(|| e2e::seal_all(keys, s, m, args.bytes))?;
    let mut frames = sealed.frames.into_iter();
    let run = Run::new(
        expected,
        s,
        usize::try_from(m)?,
        args.clients,
        args.window(),
    );
    let (setup, mut clients) = setup(args, target, &run, keys, s).await?;
    let probe = Probe::new(target.pid);
    let n = clients.len();

    let me = Probe::new(Some(std::process::id()));
    let cpu_before = probe.cpu();
    let own_before = me.cpu();
    let t0 = run.now_ns();
    // Each sender sends at rate/S, the senders evenly staggered within one interval.
    let pacing = args
        .rate
        .map(|rate| Duration::from_secs_f64(s as f64 / rate));
    let mut senders = Vec::with_capacity(s);
    for (id, c) in clients.iter_mut().take(s).enumerate() {
        let (Some(writer), Some(frames)) = (c.writer.take(), frames.next()) else {
            continue;
        };
        let pacing = pacing.map(|iv| (iv, iv.mul_f64(id as f64 / s as f64)));
        senders.push(tokio::spawn(client::send_loop(
            writer,
            id,
            frames,
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
    let own_after = me.cpu();
    let rss_after_run = probe.rss();
    run.stop.cancel();

    let mut report = FanoutReport {
        senders: s,
        messages: m,
        bytes: args.bytes,
        rate: args.rate,
        window: args.window(),
        seal_secs: sealed.secs,
        envelope_bytes: sealed.envelope_bytes,
        expected: expected * u64::try_from(n)?,
        duration_secs: t1.saturating_sub(t0) as f64 / 1e9,
        server_cpu_secs: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        bench_cpu_secs: own_before.zip(own_after).map(|(a, b)| b - a),
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
        report.line_bytes += stats.bytes;
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
        for (e, n) in stats.server_errors {
            *report.errors.entry(format!("server: {e}")).or_default() += n;
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
pub async fn idle(
    args: &Args,
    target: &Target,
    keys: &Keys,
) -> anyhow::Result<(Setup, IdleReport)> {
    let run = Run::new(u64::MAX, 0, 0, args.client_count(), None);
    let (setup, clients) = setup(args, target, &run, keys, 0).await?;
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

/// What the connect-rate mode measured.
pub struct ConnectReport {
    /// Setups completed.
    pub done: usize,
    /// Setups that failed, by reason.
    pub failed: BTreeMap<String, usize>,
    /// Wall-clock seconds for all of them.
    pub secs: f64,
    /// chatd CPU seconds used meanwhile, when its pid is known.
    pub chatd_cpu_secs: Option<f64>,
}

/// `n` connection setups (TLS handshake and hello, no login), `concurrency` at a time.
pub async fn connect_rate(
    target: &Target,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<ConnectReport> {
    let connector = client::full_handshake_connector(target.fingerprint)?;
    let probe = Probe::new(target.pid);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let cpu_before = probe.cpu();
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let (addr, connector) = (target.addr, connector.clone());
        tasks.spawn(async move {
            let result = client::handshake(addr, &connector).await;
            drop(permit);
            result
        });
    }
    let mut report = ConnectReport {
        done: 0,
        failed: BTreeMap::new(),
        secs: 0.0,
        chatd_cpu_secs: None,
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => report.done += 1,
            Ok(Err(e)) => count(&mut report.failed, format!("{e:#}")),
            Err(e) => count(&mut report.failed, format!("task: {e}")),
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    report.chatd_cpu_secs = probe.cpu().zip(cpu_before).map(|(a, b)| a - b);
    Ok(report)
}

fn count(map: &mut BTreeMap<String, usize>, key: String) {
    *map.entry(key).or_default() += 1;
}
