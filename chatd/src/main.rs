//! The chatd binary: command line, logging, signals.

mod manual;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chatd::config::{Config, DEFAULT_CONFIG_PATH};
use clap::Parser;

/// Self-hosted end-to-end encrypted chat daemon.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
struct Args {
    /// Run locally with no setup: state, certificate and control socket in ./chatd-dev,
    /// listening on 127.0.0.1:8443. Never weakens TLS or password checks.
    #[arg(long)]
    dev: bool,
    /// Configuration file (not used with --dev).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH, conflicts_with = "dev")]
    config: PathBuf,
    /// Check the configuration as start-up would, then exit without starting.
    ///
    /// Errors (exit status 1): the file itself, the TLS certificate and key (readable,
    /// parseable, belonging together), the log level, and with `[cluster] database` the
    /// database (reachable, password accepted, schema not newer than this chatd). Warnings
    /// on stderr (exit status 0): plugin programs that cannot run, an admin group that does
    /// not exist.
    #[arg(long)]
    check_config: bool,
    /// Override the state directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Override the TLS listen address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut config = if args.dev {
        Config::dev(
            args.data_dir
                .as_deref()
                .unwrap_or(std::path::Path::new("./chatd-dev")),
        )
    } else {
        match Config::load(&args.config) {
            Ok(c) => c,
            Err(chatd::config::ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && args.config.as_os_str() == DEFAULT_CONFIG_PATH =>
            {
                anyhow::bail!(
                    "no configuration at {DEFAULT_CONFIG_PATH}; pass --config PATH, \
                     or run `chatd --dev` for a local server with no setup"
                )
            }
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(dir) = &args.data_dir {
        if !args.dev {
            config.server.state_dir = dir.clone();
        }
    }
    if let Some(addr) = args.listen {
        config.server.listen = addr;
    }
    Ok(config)
}

/// Logs to the journal when systemd connected stderr to it, else to stderr; returns what a
/// reload calls to change `log.level`.
fn init_logging(config: &chatd::config::LogConfig) -> chatd::reload::LogLevelHook {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, reload};
    let from_env = EnvFilter::try_from_default_env().ok();
    let overridden = from_env.is_some();
    let (filter, handle) =
        reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new(&config.level)));
    chatd::repeats::REPEATS.configure(config.repeat_window_secs, config.repeat_burst);
    // Repeated lines are vetoed before any output sees them (see repeats.rs).
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(chatd::repeats::layer());
    // Started by systemd: native journal entries, so fields (USER, PEER, ...) stay fields.
    let journal = if chatd::systemd::stderr_is_journal() {
        chatd::journal::layer()
            .map_err(|e| eprintln!("chatd: cannot log to the journal ({e}); logging to stderr"))
            .ok()
    } else {
        None
    };
    match journal {
        Some(journal) => registry.with(journal).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .init(),
    }
    Box::new(move |level: &str| {
        if overridden {
            return Err("RUST_LOG is set and overrides log.level".into());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// The signals chatd handles. They are blocked from the first instruction of `main` (before
/// any thread exists, so every thread inherits the mask) until [`Signals::install`] has put
/// tokio's handlers in place; one that comes earlier stays pending and is delivered then: a
/// SIGHUP becomes a reload once chatd is serving, a SIGTERM or SIGINT a clean stop.
const HANDLED: [nix::sys::signal::Signal; 3] = [
    nix::sys::signal::Signal::SIGHUP,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGINT,
];

fn handled_set() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in HANDLED {
        set.add(sig);
    }
    set
}

/// The signals chatd handles, caught from the start: one that comes while chatd is still
/// starting (binding, opening the database) waits here instead of killing it.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers, then unblocks the signals on this thread (the runtime's
    /// `block_on` thread; the worker threads keep them blocked, so the kernel delivers them
    /// here), which delivers any that came while they were blocked.
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = Signals {
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?,
        };
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
            Some(&handled_set()),
            None,
        )
        .context("cannot unblock SIGHUP, SIGTERM and SIGINT")?;
        Ok(signals)
    }

    /// Waits for SIGTERM or SIGINT, reloading on every SIGHUP meanwhile.
    async fn wait(mut self, shared: &chatd::shared::Shared) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => {
                    // The outcome is logged; a refused reload keeps the old configuration.
                    let _ = shared.reload("SIGHUP");
                }
            }
        }
    }
}

async fn run(args: Args, activated: chatd::systemd::Activated) -> anyhow::Result<()> {
    // Nothing chatd creates (database, WAL, directories) is readable by other users; the
    // generated key (0600) and the control socket (0660) get their modes explicitly.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    let config = load_config(&args)?;
    if args.check_config {
        // What start-up would refuse is an error (exit 1); what it would run without, a
        // warning (exit 0).
        chatd::check::identity(&config)?;
        // Said before the verdict, which stays the last line.
        if let Some(store) = chatd::check::store(&config).await? {
            println!("store: {store}");
        }
        if config.cluster.nats.is_some() {
            match chatd::cluster::probe(&config.cluster).await? {
                Ok(server) => println!("cluster bus: {server}"),
                Err(why) => eprintln!(
                    "chatd: warning: cluster bus {} unreachable ({why}): start-up would serve this node's users alone until it is up",
                    config.cluster.nats.as_deref().unwrap_or("")
                ),
            }
        }
        for warning in chatd::check::warnings(&config) {
            eprintln!("chatd: warning: {warning}");
        }
        if args.dev {
            println!("--dev configuration is valid (no config file is read with --dev)");
        } else {
            println!("{}: configuration is valid", args.config.display());
        }
        return Ok(());
    }
    let plugin_problems = chatd::check::plugin_problems(&config);
    let log_level = init_logging(&config.log);
    let signals = Signals::install()?;
    let reload_args = args.clone();
    let options = chatd::server::BindOptions {
        activated,
        log_level: Some(log_level),
        source: Some(Box::new(move || {
            load_config(&reload_args).map_err(|e| report(&e))
        })),
    };
    let server = chatd::server::Server::bind_with(config, options).await?;
    tracing::info!(
        "chatd {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        server.listen_addr()
    );
    tracing::info!("store: {}", server.store_info());
    tracing::info!("certificate fingerprint {}", server.fingerprint());
    if let Some(addr) = server.metrics_addr() {
        tracing::info!("metrics at http://{addr}/metrics");
    }
    tracing::info!("control socket at {}", server.control_path().display());
    for problem in plugin_problems {
        tracing::warn!("{problem}");
    }
    let token = server.shutdown_token();
    let shared = server.shared();
    let serving = tokio::spawn(server.run());
    let flusher = tokio::spawn(chatd::repeats::run_flusher());
    let signal = signals.wait(&shared).await;
    tracing::info!("{signal} received");
    token.cancel();
    serving.await.context("server task failed")?;
    flusher.abort();
    Ok(())
}

fn main() -> ExitCode {
    // First of all: a SIGHUP or SIGTERM sent right after exec waits (blocked, pending) for
    // the handlers instead of killing chatd (see [`HANDLED`]). Child processes (plugins) do
    // not inherit the mask: the standard library clears it in every child it spawns.
    if let Err(e) = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&handled_set()),
        None,
    ) {
        eprintln!("chatd: cannot block SIGHUP, SIGTERM and SIGINT: {e}");
        return ExitCode::FAILURE;
    }
    // A build step (packaging/build-debs), not a user-facing option.
    if let Some(code) = chatd_proto::docgen::generate_if_asked(
        <Args as clap::CommandFactory>::command,
        "8",
        manual::manual,
    ) {
        return code;
    }
    let args = Args::parse();
    // Before any thread exists: this clears LISTEN_FDS/LISTEN_PID from the environment.
    let activated = match chatd::systemd::take_activated() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chatd: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, activated)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatd: error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes the message already quotes
/// (our error types put their source in their own message).
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}
