//! The modes: log everyone in, then fan out messages (with or without a login storm) or sit
//! idle, and collect the figures.
//!
//! Fan-out seals every envelope before the users are even created (one RSA signature per
//! message is far slower than chatd's fan-out), so the timed phase only writes ready frames.
//!
//! The login storm is a paced fan-out whose messages are split in two halves: the first half
//! is sent in a quiet phase, and a storm of logins runs while the second half is sent. Every
//! receiver keeps one latency histogram per half (by chain index), so the two phases are
//! compared over the same receivers, senders and rate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chatd_testkit::Tls;
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, WriteHalf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::cli::{Args, WireMode};
use crate::client;
use crate::control;
use crate::e2e::{self, Keys};
use crate::host::{self, CpuTimes};
use crate::incoming::Incoming;
use crate::latency::{Latency, new_histogram};
use crate::procfs::Probe;
use crate::reader::{self, ReadStats};
use crate::receivers::Receivers;
use crate::report::{ConnectReport, FanoutReport, IdleReport, StormReport};
use crate::run::Run;
use crate::server::Target;
use crate::stats::{Connect, Fanout, Idle, Setup, Storm, Tally, count};

/// How often the waiting loop looks at the counters. Its figures come from the receivers'
/// own timestamps, so this only bounds how late the loop notices the end; a short period
/// (it was 5 ms) woke this thread inside every other paced burst, taking a core from the
/// receivers for nothing.
const POLL: Duration = Duration::from_millis(50);

/// A logged-in client: its write half, and where its reader's figures arrive.
struct Client {
    writer: Option<WriteHalf<Tls>>,
    reader: oneshot::Receiver<ReadStats>,
}

/// Creates the users (`extra_users` more than the clients, for the login storm) and logs every
/// client in (the first `senders` with sender keys); each client's reader starts as soon as it
/// is logged in, so presence and device frames from later logins never pile up. Receivers
/// that do not send read on the returned receiver threads (`--receiver-threads`), which stop
/// when the run finishes or when they are dropped.
async fn setup(
    args: &Args,
    target: &Target,
    run: &Arc<Run>,
    keys: &Keys,
    senders: usize,
    extra_users: usize,
) -> anyhow::Result<(Setup, Vec<Client>, Option<Arc<Receivers>>)> {
    let n = args.client_count();
    let probe = Probe::new(target.pid);
    let started = Instant::now();
    // With `--users` (idle mode only, so no storm users follow) clients share users in turn.
    let users = args.user_count();
    control::create_users(
        &target.control,
        users + extra_users,
        args.create_concurrency,
    )
    .await?;
    let create_secs = started.elapsed().as_secs_f64();
    let rss_before_login = probe.rss();

    let connector = chatd_testkit::connector(target.fingerprint)?;
    let threads = args.receiver_threads();
    let receivers = (threads > 0)
        .then(|| Receivers::start(threads, run).map(Arc::new))
        .transpose()?;
    let limit = Arc::new(tokio::sync::Semaphore::new(args.login_concurrency));
    let started = Instant::now();
    let mut logins = Vec::with_capacity(n);
    let wire = args.wire;
    for i in 0..n {
        let (connector, limit, run, addr, key) = (
            connector.clone(),
            Arc::clone(&limit),
            Arc::clone(run),
            target.addr,
            keys.login_key(i, senders),
        );
        let receivers = receivers.clone();
        logins.push(tokio::spawn(async move {
            let permit = limit.acquire_owned().await?;
            let user = control::user_name(i % users);
            let (tls, incoming) =
                client::login(addr, &connector, &user, control::PASSWORD, &key, wire).await?;
            drop(permit);
            let histogram = new_histogram()?;
            // Only senders write: a receiver reads its stream whole, without the lock
            // that a split stream takes on every read.
            if i < senders {
                let (rd, writer) = tokio::io::split(tls);
                return anyhow::Ok(Client {
                    writer: Some(writer),
                    reader: read_task(rd, incoming, run, histogram),
                });
            }
            let reader = match &receivers {
                Some(threads) => threads.add(tls, incoming, &run, histogram)?,
                None => read_task(tls, incoming, run, histogram),
            };
            anyhow::Ok(Client {
                writer: None,
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
        wire,
        receiver_threads: threads,
    };
    Ok((setup, clients, receivers))
}

/// A receiver as a tokio task ([`reader::read_loop`]).
fn read_task<R: AsyncRead + Unpin + Send + 'static>(
    rd: R,
    incoming: Incoming,
    run: Arc<Run>,
    latency_us: Histogram<u64>,
) -> oneshot::Receiver<ReadStats> {
    let (done, stats) = oneshot::channel();
    tokio::spawn(async move {
        let _ = done.send(reader::read_loop(rd, incoming, run, latency_us).await);
    });
    stats
}

/// Fan-out: S senders, M messages each, every client receives everything.
pub async fn fanout(args: &Args, target: &Target, keys: &Keys) -> anyhow::Result<FanoutReport> {
    let (setup, run, _) = paced(args, target, keys, None).await?;
    Ok(FanoutReport::new(setup, run))
}

/// Login storm: the paced fan-out in a quiet phase and then a storm phase of the same length,
/// during which `--storm-concurrency` workers (each its own user, created and logged in once
/// beforehand) log in, quit and log in again, at most `logins` times in all.
pub async fn login_storm(
    args: &Args,
    target: &Target,
    keys: &Keys,
    logins: usize,
) -> anyhow::Result<StormReport> {
    let (Some(per_phase), Some(rate)) = (args.phase_messages(), args.rate()) else {
        anyhow::bail!("the login storm needs a rate and a phase length");
    };
    let plan = StormPlan {
        logins,
        concurrency: args.storm_concurrency,
        first_user: args.clients,
        // The messages of the second phase are due from here on (each sender's first one
        // within one interval after it): the storm starts with them.
        phase: Duration::from_secs_f64(per_phase as f64 * args.senders as f64 / rate),
        from_index: u32::try_from(per_phase)?,
        wire: args.wire,
    };
    let (setup, run, storm) = paced(args, target, keys, Some(plan)).await?;
    let storm = storm.context("the login storm did not run")?;
    Ok(StormReport::new(setup, run, storm))
}

/// What the login storm is to do.
#[derive(Debug, Clone, Copy)]
struct StormPlan {
    /// Logins at most.
    logins: usize,
    /// Logins in flight at once (one worker, and one user, each).
    concurrency: usize,
    /// Index of the first storm user (`bench{first_user}`); the clients are the ones before.
    first_user: usize,
    /// Length of the quiet phase, from the first send to the storm.
    phase: Duration,
    /// First chain index sent during the storm.
    from_index: u32,
    /// What the storm's `hello`s ask for, as the clients'.
    wire: WireMode,
}

/// The paced (or unpaced) fan-out, and the login storm when there is a `storm` plan.
async fn paced(
    args: &Args,
    target: &Target,
    keys: &Keys,
    storm: Option<StormPlan>,
) -> anyhow::Result<(Setup, Fanout, Option<Storm>)> {
    let (s, m) = (args.senders, args.messages_per_sender());
    let expected = u64::try_from(s)? * m;
    let sealed = tokio::task::block_in_place(|| e2e::seal_all(keys, s, m, args.bytes, args.wire))?;
    let mut frames = sealed.frames.into_iter();
    let run = Run::new(
        expected,
        s,
        usize::try_from(m)?,
        args.clients,
        args.window(),
        storm.map(|p| p.from_index),
    );
    let storm_users = storm.map_or(0, |p| p.concurrency);
    // The receiver threads stop with the run; held to the end all the same.
    let (setup, mut clients, _receivers) = setup(args, target, &run, keys, s, storm_users).await?;
    let probe = Probe::new(target.pid);
    let n = clients.len();
    // The storm connects like a fresh client: a full TLS handshake every time.
    let storm_connector = chatd_testkit::full_handshake_connector(target.fingerprint)?;
    if let Some(plan) = storm {
        // First logins also join the default room and register the device key; done here, so
        // both phases see the same users, rooms and keys and the storm is only logins.
        warm_up(args, target, keys, &storm_connector, plan).await?;
    }

    // With everyone logged in and nothing sent yet, the machine is idle: how late do
    // sleeps wake on it now?
    let host_wake = match args.host_check() {
        Some(length) => Some(tokio::task::spawn_blocking(move || host::wake_delay(length)).await??),
        None => None,
    };
    let me = Probe::new(Some(std::process::id()));
    let host_before = CpuTimes::now().ok();
    let cpu_before = probe.cpu();
    let own_before = me.cpu();
    let t0 = run.now_ns();
    let storm_stop = CancellationToken::new();
    let storm_task = storm.map(|plan| {
        let (addr, connector, stop) = (target.addr, storm_connector.clone(), storm_stop.clone());
        let (key, run) = (keys.login_key(plan.first_user, s), Arc::clone(&run));
        tokio::spawn(async move {
            tokio::time::sleep(plan.phase).await;
            run_storm(plan, addr, connector, key, probe, stop, run).await
        })
    });
    let planned = storm.map_or(Duration::ZERO, |p| p.phase * 2);
    // Each sender sends at rate/S, the senders evenly staggered within one interval.
    let pacing = args
        .rate()
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

    let deadline = Instant::now() + planned + args.timeout();
    while run.complete.load(Ordering::Acquire) + run.ended.load(Ordering::Acquire) < n
        && Instant::now() < deadline
    {
        // The storm covers the second phase's sends and no more.
        if senders.iter().all(JoinHandle::is_finished) {
            storm_stop.cancel();
        }
        tokio::time::sleep(POLL).await;
    }
    storm_stop.cancel();
    let all_complete = run.complete.load(Ordering::Acquire) == n;
    let t1 = if all_complete {
        run.last_complete_ns.load(Ordering::Acquire)
    } else {
        run.now_ns()
    };
    let cpu_after = probe.cpu();
    let own_after = me.cpu();
    let host_after = CpuTimes::now().ok();
    let rss_after_run = probe.rss();
    run.finish();

    let mut report = Fanout {
        senders: s,
        messages: m,
        bytes: args.bytes,
        rate: args.rate(),
        window: args.window(),
        seal_secs: sealed.secs,
        envelope_bytes: sealed.envelope_bytes,
        expected: expected * u64::try_from(n)?,
        duration_secs: t1.saturating_sub(t0) as f64 / 1e9,
        server_cpu_secs: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        bench_cpu_secs: own_before.zip(own_after).map(|(a, b)| b - a),
        rss_after_run,
        host_wake,
        host_steal_percent: host_before
            .zip(host_after)
            .and_then(|(a, b)| a.steal_percent(&b)),
        ..Fanout::default()
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
    let mut latency = new_histogram()?;
    let mut storm_latency = new_histogram()?;
    for c in clients {
        let stats = c
            .reader
            .await
            .context("a receiver ended without its figures")?;
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
        if let Some(h) = &stats.storm_latency_us {
            storm_latency.add(h).context("merging latency histograms")?;
        }
    }
    let quiet_latency = Latency::of(&latency);
    latency
        .add(&storm_latency)
        .context("merging latency histograms")?;
    report.latency = Latency::of(&latency);
    let storm = match (storm_task, storm) {
        (Some(task), Some(plan)) => {
            let outcome = task.await.context("login storm task failed")??;
            Some(outcome.figures(
                plan,
                [quiet_latency, Latency::of(&storm_latency)],
                cpu_before.zip(own_before),
                t0,
            ))
        }
        _ => None,
    };
    let log = target.log();
    report.server_log_problems = log.count;
    report.server_log_lines = log.lines;
    Ok((setup, report, storm))
}

/// Logs every storm user in once and out again, `--login-concurrency` at a time.
async fn warm_up(
    args: &Args,
    target: &Target,
    keys: &Keys,
    connector: &TlsConnector,
    plan: StormPlan,
) -> anyhow::Result<()> {
    let limit = Arc::new(tokio::sync::Semaphore::new(args.login_concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in plan.first_user..plan.first_user + plan.concurrency {
        let (limit, connector, addr) = (Arc::clone(&limit), connector.clone(), target.addr);
        let (key, wire) = (keys.login_key(i, args.senders), args.wire);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let user = control::user_name(i);
            let (tls, incoming) =
                client::login(addr, &connector, &user, control::PASSWORD, &key, wire).await?;
            client::quit(tls, incoming)
                .await
                .with_context(|| format!("quit of {user}"))
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("storm warm-up task failed")??;
    }
    Ok(())
}

/// What the storm workers did, with the clocks at either end.
struct StormOutcome {
    /// Nanoseconds since the run's origin when the storm started.
    started_ns: u64,
    /// Nanoseconds since the run's origin when the last storm login (and quit) ended.
    ended_ns: u64,
    /// (chatd, own) CPU seconds when the storm started.
    cpu_start: Option<(f64, f64)>,
    /// (chatd, own) CPU seconds when it ended.
    cpu_end: Option<(f64, f64)>,
    /// Logins completed (`login_ok` received).
    logins: u64,
    /// Connect to `login_ok`, microseconds.
    login_us: Histogram<u64>,
    /// Failed logins (and failed quits after a login) by reason.
    failed: Tally,
}

impl StormOutcome {
    /// The storm's figures: `latency` is the chat latency of the [quiet, storm] phases,
    /// `before` the (chatd, own) CPU seconds at `t0`, the first send.
    fn figures(
        self,
        plan: StormPlan,
        latency: [Latency; 2],
        before: Option<(f64, f64)>,
        t0: u64,
    ) -> Storm {
        let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e9;
        let diff = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| {
            a.zip(b).map(|((ca, oa), (cb, ob))| (cb - ca, ob - oa))
        };
        let quiet_cpu = diff(before, self.cpu_start);
        let storm_cpu = diff(self.cpu_start, self.cpu_end);
        let [quiet, storm] = latency;
        Storm {
            max_logins: plan.logins,
            concurrency: plan.concurrency,
            quiet_secs: secs(t0, self.started_ns),
            storm_secs: secs(self.started_ns, self.ended_ns),
            quiet,
            storm,
            quiet_chatd_cpu_secs: quiet_cpu.map(|c| c.0),
            storm_chatd_cpu_secs: storm_cpu.map(|c| c.0),
            quiet_bench_cpu_secs: quiet_cpu.map(|c| c.1),
            storm_bench_cpu_secs: storm_cpu.map(|c| c.1),
            logins: self.logins,
            login_latency: Latency::of(&self.login_us),
            failed: self.failed,
        }
    }
}

/// Runs the storm until `stop` (or `plan.logins` logins): `plan.concurrency` workers, worker
/// `w` logging in as storm user `first_user + w` over and over. Logins in flight when `stop`
/// fires are finished and counted.
async fn run_storm(
    plan: StormPlan,
    addr: std::net::SocketAddr,
    connector: TlsConnector,
    key: Arc<str>,
    probe: Probe,
    stop: CancellationToken,
    run: Arc<Run>,
) -> anyhow::Result<StormOutcome> {
    let me = Probe::new(Some(std::process::id()));
    let cpu_start = probe.cpu().zip(me.cpu());
    let started_ns = run.now_ns();
    let begun = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..plan.concurrency {
        let (connector, key, stop, begun) = (
            connector.clone(),
            Arc::clone(&key),
            stop.clone(),
            Arc::clone(&begun),
        );
        let mut login_us = new_histogram()?;
        workers.spawn(async move {
            let user = control::user_name(plan.first_user + w);
            let (mut done, mut failed) = (0u64, BTreeMap::new());
            while !stop.is_cancelled() && begun.fetch_add(1, Ordering::AcqRel) < plan.logins {
                let begin = Instant::now();
                match client::login(addr, &connector, &user, control::PASSWORD, &key, plan.wire)
                    .await
                {
                    Ok((tls, incoming)) => {
                        let us = u64::try_from(begin.elapsed().as_micros()).unwrap_or(u64::MAX);
                        login_us.saturating_record(us.max(1));
                        done += 1;
                        if let Err(e) = client::quit(tls, incoming).await {
                            count(&mut failed, reason("after login", &e, &user));
                        }
                    }
                    Err(e) => count(&mut failed, reason("login", &e, &user)),
                }
            }
            (done, login_us, failed)
        });
    }
    let mut outcome = StormOutcome {
        started_ns,
        ended_ns: started_ns,
        cpu_start,
        cpu_end: None,
        logins: 0,
        login_us: new_histogram()?,
        failed: BTreeMap::new(),
    };
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((done, login_us, failed)) => {
                outcome.logins += done;
                outcome
                    .login_us
                    .add(&login_us)
                    .context("merging login latency histograms")?;
                for (why, n) in failed {
                    *outcome.failed.entry(why).or_default() += n;
                }
            }
            Err(e) => count(&mut outcome.failed, format!("storm worker: {e}")),
        }
    }
    outcome.ended_ns = run.now_ns();
    outcome.cpu_end = probe.cpu().zip(me.cpu());
    Ok(outcome)
}

/// A failure's text with the user's name taken out, so failures count by reason.
fn reason(stage: &str, e: &anyhow::Error, user: &str) -> String {
    format!("{stage}: {e:#}").replace(user, "USER")
}

/// Idle: log everyone in, wait, and see what the connections cost the server.
pub async fn idle(args: &Args, target: &Target, keys: &Keys) -> anyhow::Result<IdleReport> {
    let run = Run::new(u64::MAX, 0, 0, args.client_count(), None, None);
    let (setup, clients, _receivers) = setup(args, target, &run, keys, 0, 0).await?;
    tokio::time::sleep(Duration::from_secs(args.idle_wait)).await;
    let idle = Idle {
        wait_secs: args.idle_wait,
        rss_after_wait: Probe::new(target.pid).rss(),
        dropped: run.ended.load(Ordering::Acquire),
    };
    run.finish();
    for c in clients {
        let _ = c.reader.await;
        drop(c.writer);
    }
    Ok(IdleReport::new(setup, idle))
}

/// `n` connection setups (TLS handshake and hello, no login), `concurrency` at a time, each
/// `hello` asking for binary frames if `wire` says so.
pub async fn connect_rate(
    target: &Target,
    n: usize,
    concurrency: usize,
    wire: WireMode,
) -> anyhow::Result<ConnectReport> {
    let connector = chatd_testkit::full_handshake_connector(target.fingerprint)?;
    let probe = Probe::new(target.pid);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let cpu_before = probe.cpu();
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let (addr, connector) = (target.addr, connector.clone());
        tasks.spawn(async move {
            let result = client::handshake(addr, &connector, wire).await;
            drop(permit);
            result
        });
    }
    let mut report = Connect {
        done: 0,
        failed: Tally::new(),
        secs: 0.0,
        chatd_cpu_secs: None,
        wire,
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
    Ok(ConnectReport::new(report))
}
