//! The modes: log everyone in, then fan out messages (with or without a login storm) or sit
//! idle, and collect the figures; or time bare connection setups.
//!
//! Fan-out seals every envelope before the users are even created (one RSA signature per
//! message is far slower than chatd's fan-out), so the timed phase only writes ready frames.
//!
//! The login storm is a paced fan-out whose messages are split in two halves: the first half
//! is sent in a quiet phase, and a storm of logins (storm.rs) runs while the second half is
//! sent. Every receiver keeps one latency histogram per half (by chain index), so the two
//! phases are compared over the same receivers, senders and rate.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use chatd_testkit::Tls;
use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, WriteHalf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{Args, WireMode};
use crate::client;
use crate::control;
use crate::e2e::{self, Keys};
use crate::host::{self, CpuTimes, WakeDelay};
use crate::incoming::Incoming;
use crate::latency::{Latency, new_histogram};
use crate::procfs::Probe;
use crate::reader::{self, ReadStats};
use crate::receivers::Receivers;
use crate::report::{ConnectReport, FanoutReport, IdleReport, StormReport};
use crate::run::Run;
use crate::server::Target;
use crate::stats::{Connect, Fanout, Idle, Setup, Storm, Tally, count};
use crate::storm::{self, StormPlan};

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
    let probe = Probe::all(target.chatd_pids());
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
        // A cluster's nodes in turn, so senders too are on every node.
        let (connector, limit, run, addr, key) = (
            connector.clone(),
            Arc::clone(&limit),
            Arc::clone(run),
            target.addr_for(i),
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

/// The paced (or unpaced) fan-out, and the login storm when there is a `storm` plan: seal,
/// log in, check the host, send while the receivers count, then gather the figures.
async fn paced(
    args: &Args,
    target: &Target,
    keys: &Keys,
    storm: Option<StormPlan>,
) -> anyhow::Result<(Setup, Fanout, Option<Storm>)> {
    let (s, m) = (args.senders, args.messages_per_sender());
    let expected = u64::try_from(s)? * m;
    let sealed = tokio::task::block_in_place(|| e2e::seal_all(keys, s, m, args.bytes, args.wire))?;
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
    let n = clients.len();
    // The storm connects like a fresh client: a full TLS handshake every time.
    let storm_connector = chatd_testkit::full_handshake_connector(target.fingerprint)?;
    if let Some(plan) = storm {
        // First logins also join the default room and register the device key; done here, so
        // both phases see the same users, rooms and keys and the storm is only logins.
        storm::warm_up(args, target, keys, &storm_connector, plan).await?;
    }
    let host_wake = host_check(args).await?;

    let meters = Meters::start(target, &run);
    let storm_stop = CancellationToken::new();
    let storm_task = storm.map(|plan| {
        let key = keys.login_key(plan.first_user, s);
        let (stop, run) = (storm_stop.clone(), Arc::clone(&run));
        storm::spawn(
            plan,
            target.addr,
            storm_connector,
            key,
            meters.chatd.clone(),
            stop,
            run,
        )
    });
    let senders = start_senders(args, &run, &mut clients, sealed.frames);
    let planned = storm.map_or(Duration::ZERO, |p| p.phase * 2);
    wait_for_receivers(&run, n, planned + args.timeout(), &senders, &storm_stop).await;
    storm_stop.cancel();
    let timed = meters.stop(&run, n);
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
        host_wake,
        ..timed
    };
    join_senders(senders, &mut report.errors).await;
    let phases = gather_receivers(clients, expected, &mut report).await?;
    let storm = match (storm_task, storm) {
        (Some(task), Some(plan)) => {
            let outcome = task.await.context("login storm task failed")??;
            Some(outcome.figures(plan, phases, meters.cpu_before(), meters.t0))
        }
        _ => None,
    };
    let log = target.log();
    report.server_log_problems = log.count;
    report.server_log_lines = log.lines;
    Ok((setup, report, storm))
}

/// With everyone logged in and nothing sent yet, the machine is idle: how late do sleeps wake
/// on it now? (`--host-check`; None when it is off.)
async fn host_check(args: &Args) -> anyhow::Result<Option<WakeDelay>> {
    match args.host_check() {
        Some(length) => Ok(Some(
            tokio::task::spawn_blocking(move || host::wake_delay(length)).await??,
        )),
        None => Ok(None),
    }
}

/// What is read at either end of the timed phase: CPU time (chatd's, a cluster's bus and
/// database, our own, the host's steal) and the run's clock.
struct Meters {
    /// chatd (a cluster's nodes).
    chatd: Probe,
    /// A cluster's nats-server and PostgreSQL (empty probes otherwise).
    nats: Probe,
    postgres: Probe,
    /// chat-bench itself.
    me: Probe,
    /// How many chatd processes `chatd` samples.
    nodes: usize,
    host_before: Option<CpuTimes>,
    /// Each chatd's CPU seconds (a cluster's nodes').
    chatd_before: Option<Vec<f64>>,
    nats_before: Option<f64>,
    postgres_before: Option<f64>,
    own_before: Option<f64>,
    /// The first send may follow: the timed phase's start, in [`Run::now_ns`].
    t0: u64,
}

impl Meters {
    /// Reads everything of `target` at the start of the timed phase; the run's clock last.
    fn start(target: &Target, run: &Run) -> Meters {
        let pids = target.chatd_pids();
        let nodes = pids.len();
        let chatd = Probe::all(pids);
        let cluster = target.cluster.as_ref();
        let nats = Probe::new(cluster.and_then(|c| c.nats));
        let postgres = Probe::tree(cluster.and_then(|c| c.postgres));
        let me = Probe::new(Some(std::process::id()));
        let host_before = CpuTimes::now().ok();
        let chatd_before = chatd.cpu_each();
        let nats_before = nats.cpu();
        let postgres_before = postgres.cpu();
        let own_before = me.cpu();
        Meters {
            chatd,
            nats,
            postgres,
            me,
            nodes,
            host_before,
            chatd_before,
            nats_before,
            postgres_before,
            own_before,
            t0: run.now_ns(),
        }
    }

    /// (chatd, own) CPU seconds at the start.
    fn cpu_before(&self) -> Option<(f64, f64)> {
        let chatd = self.chatd_before.as_ref().map(|c| c.iter().sum());
        chatd.zip(self.own_before)
    }

    /// Reads everything again at the end of the timed phase: when all `receivers` completed,
    /// the phase ends at the last one's completion, else now. The figures go into an
    /// otherwise empty [`Fanout`].
    fn stop(&self, run: &Run, receivers: usize) -> Fanout {
        let all_complete = run.complete.load(Ordering::Acquire) == receivers;
        let t1 = if all_complete {
            run.last_complete_ns.load(Ordering::Acquire)
        } else {
            run.now_ns()
        };
        let chatd_each: Option<Vec<f64>> = self
            .chatd_before
            .as_ref()
            .zip(self.chatd.cpu_each())
            .map(|(a, b)| a.iter().zip(&b).map(|(a, b)| b - a).collect());
        let nats_after = self.nats.cpu();
        let postgres_after = self.postgres.cpu();
        let own_after = self.me.cpu();
        let host_after = CpuTimes::now().ok();
        Fanout {
            duration_secs: t1.saturating_sub(self.t0) as f64 / 1e9,
            server_cpu_secs: chatd_each.as_ref().map(|c| c.iter().sum()),
            node_cpu_secs: chatd_each.filter(|c| c.len() > 1).unwrap_or_default(),
            nodes: self.nodes,
            nats_cpu_secs: self.nats_before.zip(nats_after).map(|(a, b)| b - a),
            postgres_cpu_secs: self.postgres_before.zip(postgres_after).map(|(a, b)| b - a),
            bench_cpu_secs: self.own_before.zip(own_after).map(|(a, b)| b - a),
            rss_after_run: self.chatd.rss(),
            host_steal_percent: self
                .host_before
                .zip(host_after)
                .and_then(|(a, b)| a.steal_percent(&b)),
            ..Fanout::default()
        }
    }
}

/// Starts a sender task per sending client with its pre-sealed `frames`. Each sender sends at
/// rate/S, the senders evenly staggered within one interval.
fn start_senders(
    args: &Args,
    run: &Arc<Run>,
    clients: &mut [Client],
    frames: Vec<Vec<Vec<u8>>>,
) -> Vec<JoinHandle<std::io::Result<()>>> {
    let s = args.senders;
    let pacing = args
        .rate()
        .map(|rate| Duration::from_secs_f64(s as f64 / rate));
    let mut frames = frames.into_iter();
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
            Arc::clone(run),
        )));
    }
    senders
}

/// Waits until each of the `receivers` has everything or has ended, or `limit` has passed;
/// cancels `storm_stop` once every sender is done, since the storm covers the second phase's
/// sends and no more.
async fn wait_for_receivers(
    run: &Run,
    receivers: usize,
    limit: Duration,
    senders: &[JoinHandle<std::io::Result<()>>],
    storm_stop: &CancellationToken,
) {
    let deadline = Instant::now() + limit;
    while run.complete.load(Ordering::Acquire) + run.ended.load(Ordering::Acquire) < receivers
        && Instant::now() < deadline
    {
        if senders.iter().all(JoinHandle::is_finished) {
            storm_stop.cancel();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Counts the senders' failures into `errors`.
async fn join_senders(senders: Vec<JoinHandle<std::io::Result<()>>>, errors: &mut Tally) {
    for mut sender in senders {
        // A sender stuck in a write to a server that stopped reading is abandoned.
        match tokio::time::timeout(Duration::from_secs(1), &mut sender).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => count(errors, format!("send: {e}")),
            Ok(Err(e)) => count(errors, format!("sender task: {e}")),
            Err(_) => {
                sender.abort();
                count(errors, "send: still blocked at the end".into());
            }
        }
    }
}

/// Adds every receiver's figures to `report` (each should have had `expected` messages),
/// latency over all deliveries included; returns the latency of the [quiet, storm] phases.
async fn gather_receivers(
    clients: Vec<Client>,
    expected: u64,
    report: &mut Fanout,
) -> anyhow::Result<[Latency; 2]> {
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
    Ok([quiet_latency, Latency::of(&storm_latency)])
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
