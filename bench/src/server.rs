//! The server under test: one we start (and stop), or one given with `--target`.
//!
//! A started chatd gets a generated configuration in a temporary directory (so the bench can
//! raise `max_connections` and set `outbound_queue`); its address, certificate fingerprint and
//! control socket are read from its log on stderr, which is then drained for the whole run so
//! that chatd never blocks on a full pipe. Warnings and errors it logs are kept for the report.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chatd_proto::Fingerprint;

/// How many warning/error lines of chatd's log the report keeps.
const KEPT_LOG_LINES: usize = 20;

/// Where and what the server is: one chatd, or the nodes of a cluster (cluster.rs).
pub struct Target {
    /// TLS listener (a cluster's first node).
    pub addr: SocketAddr,
    /// Every node's TLS listener, the first being `addr`; clients go to them in turn.
    pub addrs: Vec<SocketAddr>,
    /// Admin control socket (a cluster's first node: its users are every node's).
    pub control: PathBuf,
    /// Certificate fingerprint to pin (a cluster's nodes share the certificate).
    pub fingerprint: Fingerprint,
    /// Process id, for /proc sampling (a cluster's first node).
    pub pid: Option<u32>,
    /// Every node's process id and the services a cluster runs on.
    pub cluster: Option<ClusterPids>,
    /// The servers we started ourselves, stopped in this order.
    owned: Vec<Owned>,
    /// What else a cluster keeps running until the nodes have stopped (its database and bus,
    /// stopped when dropped).
    _services: Option<Box<dyn std::any::Any>>,
}

/// The processes of a cluster, for /proc sampling.
#[derive(Debug, Clone)]
pub struct ClusterPids {
    /// Every chatd node.
    pub nodes: Vec<u32>,
    /// nats-server.
    pub nats: Option<u32>,
    /// PostgreSQL's server (its backends are its children).
    pub postgres: Option<u32>,
}

/// A chatd we started, and what it logged.
pub(crate) struct Owned {
    child: Child,
    problems: Arc<Mutex<ServerLog>>,
    /// The temporary directory of a server we configured (None: the caller owns it).
    _dir: Option<tempfile::TempDir>,
}

/// Warnings and errors chatd logged.
#[derive(Debug, Default, Clone)]
pub struct ServerLog {
    /// Lines at WARN or ERROR level.
    pub count: usize,
    /// The first few of them.
    pub lines: Vec<String>,
}

impl Target {
    /// A server someone else runs.
    pub fn external(
        addr: SocketAddr,
        control: PathBuf,
        fingerprint: Fingerprint,
        pid: Option<u32>,
    ) -> Target {
        Target {
            addr,
            addrs: vec![addr],
            control,
            fingerprint,
            pid,
            cluster: None,
            owned: Vec::new(),
            _services: None,
        }
    }

    /// The nodes of a cluster (started, each ready, listening at `addrs`, the first one's
    /// control socket at `control`) and the `services` they run on, dropped after them.
    pub(crate) fn cluster(
        nodes: Vec<(Owned, SocketAddr)>,
        control: PathBuf,
        fingerprint: Fingerprint,
        pids: ClusterPids,
        services: Box<dyn std::any::Any>,
    ) -> anyhow::Result<Target> {
        let addrs: Vec<SocketAddr> = nodes.iter().map(|(_, a)| *a).collect();
        let Some(addr) = addrs.first().copied() else {
            bail!("a cluster without nodes");
        };
        Ok(Target {
            addr,
            addrs,
            control,
            fingerprint,
            pid: pids.nodes.first().copied(),
            cluster: Some(pids),
            owned: nodes.into_iter().map(|(o, _)| o).collect(),
            _services: Some(services),
        })
    }

    /// The TLS listener client `i` connects to: the nodes in turn.
    pub fn addr_for(&self, i: usize) -> SocketAddr {
        self.addrs
            .get(i % self.addrs.len().max(1))
            .copied()
            .unwrap_or(self.addr)
    }

    /// Every chatd process we know of (a cluster's nodes, or the one `pid`).
    pub fn chatd_pids(&self) -> Vec<u32> {
        match &self.cluster {
            Some(c) => c.nodes.clone(),
            None => self.pid.into_iter().collect(),
        }
    }

    /// Starts `chatd` with a generated configuration sized for `sizes` (connections at once:
    /// the clients, and the login storm's).
    pub fn start(chatd: &Path, sizes: &Sizes) -> anyhow::Result<Target> {
        let (dir, config_path, control) = config_dir(sizes)?;
        let (mut owned, rx) = spawn(chatd, &config_path)?;
        owned._dir = Some(dir);
        let pid = owned.child.id();
        let ready = wait_ready(&rx);
        match ready {
            Ok((addr, fingerprint)) => Ok(Target {
                addr,
                addrs: vec![addr],
                control,
                fingerprint,
                pid: Some(pid),
                cluster: None,
                owned: vec![owned],
                _services: None,
            }),
            Err(e) => {
                owned.stop();
                Err(e)
            }
        }
    }

    /// Warnings and errors the started servers logged so far (none known for `--target`),
    /// a cluster's nodes' together.
    pub fn log(&self) -> ServerLog {
        let mut all = ServerLog::default();
        for log in self.owned.iter().filter_map(|o| o.problems.lock().ok()) {
            all.count += log.count;
            let room = KEPT_LOG_LINES.saturating_sub(all.lines.len());
            all.lines.extend(log.lines.iter().take(room).cloned());
        }
        all
    }

    /// Stops the started servers (SIGTERM, then SIGKILL after a grace period); a cluster's
    /// database and bus stop when the target is dropped, after its nodes.
    pub fn stop(&mut self) {
        for mut owned in self.owned.drain(..) {
            owned.stop();
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts chatd with `config`; its log is drained by a thread that reports startup on `rx`.
pub(crate) fn spawn(
    chatd: &Path,
    config: &Path,
) -> anyhow::Result<(Owned, std::sync::mpsc::Receiver<Startup>)> {
    let mut child = Command::new(chatd)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", chatd.display()))?;
    let Some(stderr) = child.stderr.take() else {
        bail!("chatd's stderr was not captured");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let problems = Arc::new(Mutex::new(ServerLog::default()));
    let log = Arc::clone(&problems);
    std::thread::spawn(move || drain_log(BufReader::new(stderr), &tx, &log));
    Ok((
        Owned {
            child,
            problems,
            _dir: None,
        },
        rx,
    ))
}

/// How long chatd takes from exec to ready (TLS listener and control socket bound, the
/// certificate fingerprint logged), on a fresh state dir and then `again` times on the same
/// one (an existing database and certificate). Milliseconds.
pub struct StartupTimes {
    /// The first start: creates the database and a self-signed certificate.
    pub fresh_ms: f64,
    /// Each later start on the existing state dir.
    pub existing_ms: Vec<f64>,
}

/// Measures [`StartupTimes`] with a configuration like the other modes'.
pub fn startup_times(chatd: &Path, again: usize) -> anyhow::Result<StartupTimes> {
    let sizes = Sizes {
        clients: 1,
        sessions_per_user: 1,
        outbound_queue: 1024,
    };
    let (_dir, config_path, _control) = config_dir(&sizes)?;
    let mut times = Vec::with_capacity(again + 1);
    for _ in 0..=again {
        let started = Instant::now();
        let (mut owned, rx) = spawn(chatd, &config_path)?;
        let ready = wait_ready(&rx);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        owned.stop();
        ready?;
    }
    let fresh_ms = times.remove(0);
    Ok(StartupTimes {
        fresh_ms,
        existing_ms: times,
    })
}

impl Owned {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it: SIGTERM, then SIGKILL after 5 s.
    pub(crate) fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory holding a bench chatd.toml (state and control socket inside it);
/// returns it, the config file and the control socket path.
fn config_dir(sizes: &Sizes) -> anyhow::Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("chat-bench.")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let control = dir.path().join("control.sock");
    let config_path = dir.path().join("chatd.toml");
    std::fs::write(
        &config_path,
        config_text(&dir.path().join("state"), &control, sizes),
    )
    .with_context(|| format!("cannot write {}", config_path.display()))?;
    Ok((dir, config_path, control))
}

/// What a bench chatd must be sized for.
pub struct Sizes {
    /// Connections at once.
    pub clients: usize,
    /// Sessions of one user at once (chatd's default, 16, when that is more).
    pub sessions_per_user: usize,
    /// `[limits] outbound_queue`.
    pub outbound_queue: usize,
}

/// chatd.toml for a bench server taking `clients` connections at once. Every connection comes
/// from 127.0.0.1, so the per-address cap is the total; both get 64 spare, also for login-storm
/// sessions chatd is still closing (holding their slot) when the client already has its `bye`.
pub(crate) fn config_text(state: &Path, control: &Path, sizes: &Sizes) -> String {
    let outbound_queue = sizes.outbound_queue;
    let sessions = sizes.sessions_per_user.max(16);
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\ncontrol_socket = {control:?}\n\n\
         [limits]\nmax_connections = {0}\nmax_connections_per_ip = {0}\noutbound_queue = {outbound_queue}\n\
         max_sessions_per_user = {sessions}\n\
         # Bench clients send no keepalive; logging 19,000 in takes longer than the default 300 s.\n\
         idle_timeout_secs = 86400\n\
         # The senders are the load: no rate limit in the way.\n\
         messages_per_sec = 1000000000\nmessage_burst = 1000000000\n\
         chains_per_sec = 1000000000\nchain_burst = 1000000000\n\
         device_chains_per_sec = 1000000000\ndevice_chain_burst = 1000000000\n\n\
         [log]\nlevel = \"info\"\n",
        sizes.clients + 64,
        state = state.display().to_string(),
        control = control.display().to_string(),
    )
}

/// What the reader thread reports while chatd starts.
pub(crate) enum Startup {
    Listening(SocketAddr),
    Fingerprint(Fingerprint),
    Exited(Vec<String>),
}

fn drain_log(
    stderr: impl BufRead,
    tx: &std::sync::mpsc::Sender<Startup>,
    problems: &Mutex<ServerLog>,
) {
    let mut early = Vec::new();
    let mut started = false;
    for line in stderr.lines() {
        let Ok(line) = line else { break };
        if !started {
            early.push(line.clone());
            if let Some(addr) = after(&line, "listening on ").and_then(|w| w.parse().ok()) {
                let _ = tx.send(Startup::Listening(addr));
            }
            if let Some(fp) = after(&line, "certificate fingerprint ").and_then(|w| w.parse().ok())
            {
                let _ = tx.send(Startup::Fingerprint(fp));
                started = true;
            }
        }
        if line.contains(" WARN ") || line.contains(" ERROR ") {
            if let Ok(mut p) = problems.lock() {
                p.count += 1;
                if p.lines.len() < KEPT_LOG_LINES {
                    p.lines.push(line);
                }
            }
        }
    }
    if !started {
        let _ = tx.send(Startup::Exited(early));
    }
}

/// The whitespace-delimited word after `marker` in `line`.
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let start = line.find(marker)? + marker.len();
    line[start..].split_whitespace().next()
}

/// Waits for a started chatd's address and fingerprint (or its early exit).
pub(crate) fn wait_ready(
    rx: &std::sync::mpsc::Receiver<Startup>,
) -> anyhow::Result<(SocketAddr, Fingerprint)> {
    let mut addr = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Startup::Listening(a)) => addr = Some(a),
            Ok(Startup::Fingerprint(fp)) => match addr {
                Some(a) => return Ok((a, fp)),
                None => bail!("chatd logged its fingerprint before its address"),
            },
            Ok(Startup::Exited(lines)) => {
                bail!("chatd exited during startup:\n{}", lines.join("\n"))
            }
            Err(_) => bail!("chatd did not report its address within 30 s"),
        }
    }
}

/// `chatd` next to this executable (target/<profile>/chatd when both are built there).
pub fn default_chatd() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    let candidate = dir.join("chatd");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "no chatd at {}; build it (cargo build --release -p chatd) or pass --chatd PATH",
        candidate.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_after_markers() {
        let line = "2026-11-28T12:00:00Z  INFO chatd 0.1.0 listening on 127.0.0.1:4321";
        assert_eq!(after(line, "listening on "), Some("127.0.0.1:4321"));
        assert_eq!(after(line, "fingerprint "), None);
    }

    #[test]
    fn config_mentions_limits() {
        let sizes = Sizes {
            clients: 100,
            sessions_per_user: 40,
            outbound_queue: 4096,
        };
        let text = config_text(Path::new("/tmp/s"), Path::new("/tmp/c.sock"), &sizes);
        assert!(text.contains("max_connections = 164"));
        assert!(text.contains("max_sessions_per_user = 40"));
        assert!(text.contains("outbound_queue = 4096"));
        assert!(text.contains("control_socket = \"/tmp/c.sock\""));
    }
}
