//! chat-bench: a load generator for chatd.
//!
//! Each module imports only modules listed above it, so there are no import cycles:
//!
//! ```text
//! cli        what to run
//! control    create users
//! procfs     chatd CPU and RSS from /proc, our open-file limit
//! server     start chatd or use --target; also the startup mode (time to ready)
//! cluster    start N chatd nodes on a throwaway PostgreSQL and nats-server (--cluster)
//! latency    latency histograms and their summary
//! table      the text form's rows
//! host       how steady the machine is around a run (late wake-ups, steal)
//! e2e        keys, sealing up front, reading envelope headers
//! incoming   what a client reads, split into lines or binary frames
//! run        what every client of a run shares (send times, window, stop)
//! client     login and quit (through chatd-testkit), the sender, connection setups
//! reader     the receivers' reading and counting
//! receivers  threads that read the receivers' streams (epoll, rustls)
//! stats      what one run measured, named as its JSON names it
//! report     a report per mode: figures worked out, text and JSON
//! summary    medians over --runs and --compare
//! storm      the login storm's workers
//! workload   fan-out / idle / connect-rate / login-storm modes
//! ```

mod cli;
mod client;
mod cluster;
mod control;
mod e2e;
mod host;
mod incoming;
mod latency;
mod procfs;
mod reader;
mod receivers;
mod report;
mod run;
mod server;
mod stats;
mod storm;
mod summary;
mod table;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::cli::Args;
use crate::report::{Report, StartupReport};
use crate::server::Target;
use crate::summary::{ClusterComparison, Comparison, Runs};

async fn run(args: Args) -> anyhow::Result<bool> {
    if let Some(again) = args.startup {
        let chatd = chatd_path(&args)?;
        let times = tokio::task::block_in_place(|| server::startup_times(&chatd, again))?;
        let report = Once::of(&StartupReport::new(times))?;
        if args.json {
            println!("{}", report.json);
        } else {
            print!("{}", report.text);
        }
        return Ok(true);
    }
    args.validate()?;
    procfs::raise_nofile_limit()?;
    let keys = tokio::task::block_in_place(|| e2e::Keys::load(args.key_bits))?;
    match (&args.compare, args.cluster) {
        (Some(other), _) => compare(&args, &keys, other).await,
        (None, Some(nodes)) => cluster_pairs(&args, &keys, nodes).await,
        (None, None) => runs(&args, &keys).await,
    }
}

/// `--cluster`: `--runs` pairs of runs, one chatd then a cluster of `nodes`, then each one's
/// medians, the pairs' differences, and the cluster's CPU against one node's.
async fn cluster_pairs(args: &Args, keys: &e2e::Keys, nodes: usize) -> anyhow::Result<bool> {
    let mut all_ok = true;
    let (mut one, mut cluster) = (Vec::with_capacity(args.runs), Vec::with_capacity(args.runs));
    for i in 1..=args.runs {
        for (side, server, figures) in [
            ("one node", Server::Default, &mut one),
            ("cluster", Server::Cluster(nodes), &mut cluster),
        ] {
            let run = once(args, keys, server).await?;
            if !args.json {
                print!("== pair {i} of {}, {side}\n{}\n", args.runs, run.text);
            }
            all_ok &= run.ok;
            figures.push(run.json);
        }
    }
    let comparison = ClusterComparison::new(nodes, &one, &cluster);
    if args.json {
        println!("{}", serde_json::to_value(&comparison)?);
    } else {
        print!("{}", comparison.text());
    }
    Ok(all_ok)
}

/// `--compare`: `--runs` pairs of runs, `--chatd` then `other`, then each one's medians and
/// the median of the pairs' differences.
async fn compare(args: &Args, keys: &e2e::Keys, other: &Path) -> anyhow::Result<bool> {
    let chatd = chatd_path(args)?;
    let mut all_ok = true;
    let (mut a, mut b) = (Vec::with_capacity(args.runs), Vec::with_capacity(args.runs));
    for i in 1..=args.runs {
        for (side, path, figures) in [("A", chatd.as_path(), &mut a), ("B", other, &mut b)] {
            let run = once(args, keys, Server::Binary(path)).await?;
            if !args.json {
                print!(
                    "== pair {i} of {}, {side}: {}\n{}\n",
                    args.runs,
                    path.display(),
                    run.text
                );
            }
            all_ok &= run.ok;
            figures.push(run.json);
        }
    }
    let comparison = Comparison::new(&chatd, &a, other, &b);
    if args.json {
        println!("{}", serde_json::to_value(&comparison)?);
    } else {
        print!("{}", comparison.text());
    }
    Ok(all_ok)
}

/// The chatd binary to start: `--chatd`, or the one next to this executable.
fn chatd_path(args: &Args) -> anyhow::Result<PathBuf> {
    match &args.chatd {
        Some(path) => Ok(path.clone()),
        None => server::default_chatd(),
    }
}

/// `--runs` of the chosen mode against one chatd: each run's figures, then their medians.
async fn runs(args: &Args, keys: &e2e::Keys) -> anyhow::Result<bool> {
    if args.runs == 1 {
        let run = once(args, keys, Server::Default).await?;
        if args.json {
            println!("{}", run.json);
        } else {
            print!("{}", run.text);
        }
        return Ok(run.ok);
    }
    let mut all_ok = true;
    let mut figures = Vec::with_capacity(args.runs);
    for i in 1..=args.runs {
        let run = once(args, keys, Server::Default).await?;
        // Each run's text as it ends, so a long series shows its progress.
        if !args.json {
            print!("== run {i} of {}\n{}\n", args.runs, run.text);
        }
        all_ok &= run.ok;
        figures.push(run.json);
    }
    let summary = Runs::new(&figures);
    if args.json {
        println!("{}", serde_json::to_value(&summary)?);
    } else {
        print!("{}", summary.text());
    }
    Ok(all_ok)
}

/// One run's figures, as JSON and as text, and whether nothing was lost or failed.
struct Once {
    json: serde_json::Value,
    text: String,
    ok: bool,
}

impl Once {
    /// What `report` prints either way. The JSON goes through a `Value`, whose keys are
    /// sorted: the medians over `--runs` read it, and the printed order stays alphabetical.
    fn of(report: &impl Report) -> anyhow::Result<Once> {
        Ok(Once {
            json: serde_json::to_value(report).context("cannot serialize the figures")?,
            text: report.text(),
            ok: report.ok(),
        })
    }
}

/// What a run starts when there is no `--target`.
#[derive(Clone, Copy)]
enum Server<'a> {
    /// `--chatd`, else the chatd beside this executable.
    Default,
    /// This chatd binary.
    Binary(&'a Path),
    /// A cluster of this many nodes of the default chatd.
    Cluster(usize),
}

/// One run of the chosen mode against the `server` started for it, or the `--target`.
async fn once(args: &Args, keys: &e2e::Keys, server: Server<'_>) -> anyhow::Result<Once> {
    let sizes = server::Sizes {
        clients: args.connection_count(),
        sessions_per_user: args.sessions_per_user(),
        outbound_queue: args.outbound_queue,
    };
    let mut target = match (&args.target, &args.control, &args.fingerprint) {
        (Some(addr), Some(control), Some(fp)) => {
            Target::external(*addr, control.clone(), *fp, args.pid)
        }
        _ => match server {
            Server::Default => {
                let chatd = chatd_path(args)?;
                tokio::task::block_in_place(|| Target::start(&chatd, &sizes))?
            }
            Server::Binary(chatd) => tokio::task::block_in_place(|| Target::start(chatd, &sizes))?,
            Server::Cluster(nodes) => {
                let chatd = chatd_path(args)?;
                tokio::task::block_in_place(|| cluster::start(&chatd, nodes, &sizes))?
            }
        },
    };
    let run = if let Some(n) = args.connect_rate {
        Once::of(&workload::connect_rate(&target, n, args.connect_concurrency, args.wire).await?)?
    } else if let Some(logins) = args.login_storm {
        Once::of(&workload::login_storm(args, &target, keys, logins).await?)?
    } else if args.idle.is_some() {
        Once::of(&workload::idle(args, &target, keys).await?)?
    } else {
        Once::of(&workload::fanout(args, &target, keys).await?)?
    };
    tokio::task::block_in_place(|| target.stop());
    Ok(run)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime");
    let result = runtime.and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("chat-bench: messages were lost, connections dropped or logins failed");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("chat-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
