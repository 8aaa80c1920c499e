//! chat-bench: a load generator for chatd.
//!
//! ```text
//! cli        what to run            server   start chatd or use --target
//! control    create users           latency  latency histograms and their summary
//! e2e        keys, sealing up front, reading envelope headers
//! incoming   what a client reads, split into lines or binary frames
//! run        what every client of a run shares (send times, window, stop)
//! client     login and quit (through chatd-testkit), the sender, connection setups
//! reader     the receivers' reading and counting
//! workload   fan-out / idle / connect-rate / login-storm modes
//! stats      figures, text and JSON
//! server     also the startup mode (time to ready)
//! procfs     chatd CPU and RSS from /proc, our open-file limit
//! receivers  threads that read the receivers' streams (epoll, rustls)
//! host       how steady the machine is around a run (late wake-ups, steal)
//! ```

mod cli;
mod client;
mod control;
mod e2e;
mod host;
mod incoming;
mod latency;
mod procfs;
mod reader;
mod receivers;
mod run;
mod server;
mod stats;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::cli::Args;
use crate::server::Target;

async fn run(args: Args) -> anyhow::Result<bool> {
    if let Some(again) = args.startup {
        let chatd = chatd_path(&args)?;
        let times = tokio::task::block_in_place(|| server::startup_times(&chatd, again))?;
        if args.json {
            println!("{}", stats::startup_json(&times));
        } else {
            print!("{}", stats::startup_text(&times));
        }
        return Ok(true);
    }
    args.validate()?;
    procfs::raise_nofile_limit()?;
    let keys = tokio::task::block_in_place(|| e2e::Keys::load(args.key_bits))?;
    match &args.compare {
        Some(other) => compare(&args, &keys, other).await,
        None => runs(&args, &keys).await,
    }
}

/// `--compare`: `--runs` pairs of runs, `--chatd` then `other`, then each one's medians and
/// the median of the pairs' differences.
async fn compare(args: &Args, keys: &e2e::Keys, other: &Path) -> anyhow::Result<bool> {
    let chatd = chatd_path(args)?;
    let mut all_ok = true;
    let (mut a, mut b) = (Vec::with_capacity(args.runs), Vec::with_capacity(args.runs));
    for i in 1..=args.runs {
        for (side, path, figures) in [("A", chatd.as_path(), &mut a), ("B", other, &mut b)] {
            let run = once(args, keys, Some(path)).await?;
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
    if args.json {
        println!("{}", stats::compare_json(&chatd, &a, other, &b));
    } else {
        print!("{}", stats::compare_text(&chatd, &a, other, &b));
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
        let run = once(args, keys, None).await?;
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
        let run = once(args, keys, None).await?;
        // Each run's text as it ends, so a long series shows its progress.
        if !args.json {
            print!("== run {i} of {}\n{}\n", args.runs, run.text);
        }
        all_ok &= run.ok;
        figures.push(run.json);
    }
    if args.json {
        println!("{}", stats::runs_json(&figures));
    } else {
        print!("{}", stats::runs_text(&figures));
    }
    Ok(all_ok)
}

/// One run's figures, as JSON and as text, and whether nothing was lost or failed.
struct Once {
    json: serde_json::Value,
    text: String,
    ok: bool,
}

/// One run of the chosen mode against a chatd started for it (`chatd`, else `--chatd`, else
/// the default) or the `--target`.
async fn once(args: &Args, keys: &e2e::Keys, chatd: Option<&Path>) -> anyhow::Result<Once> {
    let mut target = match (&args.target, &args.control, &args.fingerprint) {
        (Some(addr), Some(control), Some(fp)) => {
            Target::external(*addr, control.clone(), *fp, args.pid)
        }
        _ => {
            let chatd = match chatd {
                Some(path) => path.to_path_buf(),
                None => chatd_path(args)?,
            };
            tokio::task::block_in_place(|| {
                Target::start(
                    &chatd,
                    args.connection_count(),
                    args.sessions_per_user(),
                    args.outbound_queue,
                )
            })?
        }
    };
    let run = if let Some(n) = args.connect_rate {
        let report =
            workload::connect_rate(&target, n, args.connect_concurrency, args.wire).await?;
        Once {
            json: stats::connect_json(&report),
            text: stats::connect_text(&report),
            ok: report.failed.is_empty(),
        }
    } else if let Some(logins) = args.login_storm {
        let (setup, report, storm) = workload::login_storm(args, &target, keys, logins).await?;
        Once {
            json: stats::storm_json(&setup, &report, &storm),
            text: stats::storm_text(&setup, &report, &storm),
            ok: report.lost() == 0 && storm.failed.is_empty(),
        }
    } else if args.idle.is_some() {
        let (setup, report) = workload::idle(args, &target, keys).await?;
        Once {
            json: stats::idle_json(&setup, &report),
            text: stats::idle_text(&setup, &report),
            ok: report.dropped == 0,
        }
    } else {
        let (setup, report) = workload::fanout(args, &target, keys).await?;
        Once {
            json: stats::fanout_json(&setup, &report),
            text: stats::fanout_text(&setup, &report),
            ok: report.lost() == 0,
        }
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
