//! The login storm: while the paced fan-out sends the second half of its messages, a few
//! workers (each its own user, logged in once beforehand) log in, quit and log in again, each
//! time as a fresh client would (a full TLS handshake, argon2id, registering nothing new).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::cli::{Args, WireMode};
use crate::client;
use crate::control;
use crate::e2e::Keys;
use crate::latency::{Latency, new_histogram};
use crate::procfs::Probe;
use crate::run::Run;
use crate::server::Target;
use crate::stats::{Storm, Tally, count};

/// What the login storm is to do.
#[derive(Debug, Clone, Copy)]
pub struct StormPlan {
    /// Logins at most.
    pub logins: usize,
    /// Logins in flight at once (one worker, and one user, each).
    pub concurrency: usize,
    /// Index of the first storm user (`bench{first_user}`); the clients are the ones before.
    pub first_user: usize,
    /// Length of the quiet phase, from the first send to the storm.
    pub phase: Duration,
    /// First chain index sent during the storm.
    pub from_index: u32,
    /// What the storm's `hello`s ask for, as the clients'.
    pub wire: WireMode,
}

/// Logs every storm user in once and out again, `--login-concurrency` at a time.
pub async fn warm_up(
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

/// Starts the storm once the quiet phase (`plan.phase`) is over; it runs until `stop` (or
/// `plan.logins` logins). Every worker logs in with `key` at `addr` through `connector`;
/// `probe` samples chatd's CPU at either end.
pub fn spawn(
    plan: StormPlan,
    addr: SocketAddr,
    connector: TlsConnector,
    key: Arc<str>,
    probe: Probe,
    stop: CancellationToken,
    run: Arc<Run>,
) -> JoinHandle<anyhow::Result<StormOutcome>> {
    tokio::spawn(async move {
        tokio::time::sleep(plan.phase).await;
        run_storm(plan, addr, connector, key, probe, stop, run).await
    })
}

/// What the storm workers did, with the clocks at either end.
pub struct StormOutcome {
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
    pub fn figures(
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
    addr: SocketAddr,
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
