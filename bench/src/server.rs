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

/// Where and what the server is.
pub struct Target {
    /// TLS listener.
    pub addr: SocketAddr,
    /// Admin control socket.
    pub control: PathBuf,
    /// Certificate fingerprint to pin.
    pub fingerprint: Fingerprint,
    /// Process id, for /proc sampling.
    pub pid: Option<u32>,
    /// Set when we started the server ourselves.
    owned: Option<Owned>,
}

struct Owned {
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
            control,
            fingerprint,
            pid,
            owned: None,
        }
    }

    /// Starts `chatd` with a generated configuration sized for `connections` at once (the
    /// clients, and the login storm's), up to `sessions_per_user` of them per user.
    pub fn start(
        chatd: &Path,
        connections: usize,
        sessions_per_user: usize,
        outbound_queue: usize,
    ) -> anyhow::Result<Target> {
        let sizes = Sizes {
            clients: connections,
            sessions_per_user,
            outbound_queue,
        };
        let (dir, config_path, control) = config_dir(&sizes)?;
        let (mut owned, rx) = spawn(chatd, &config_path)?;
        owned._dir = Some(dir);
        let pid = owned.child.id();
        let ready = wait_ready(&rx);
        match ready {
            Ok((addr, fingerprint)) => Ok(Target {
                addr,
                control,
                fingerprint,
                pid: Some(pid),
                owned: Some(owned),
            }),
            Err(e) => {
                owned.stop();
                Err(e)
            }
        }
    }

    /// Warnings and errors the started server logged so far (none known for `--target`).
    pub fn log(&self) -> ServerLog {
        self.owned
            .as_ref()
            .and_then(|o| o.problems.lock().ok().map(|l| l.clone()))
            .unwrap_or_default()
    }

    /// Stops a started server (SIGTERM, then SIGKILL after a grace period).
    pub fn stop(&mut self) {
        if let Some(mut owned) = self.owned.take() {
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
fn spawn(
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
    fn stop(&mut self) {
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
struct Sizes {
    /// Connections at once.
    clients: usize,
    /// Sessions of one user at once (chatd's default, 16, when that is more).
    sessions_per_user: usize,
    /// `[limits] outbound_queue`.
    outbound_queue: usize,
}

/// chatd.toml for a bench server taking `clients` connections at once. Every connection comes
/// from 127.0.0.1, so the per-address cap is the total; both get 64 spare, also for login-storm
/// sessions chatd is still closing (holding their slot) when the client already has its `bye`.
fn config_text(state: &Path, control: &Path, sizes: &Sizes) -> String {
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
enum Startup {
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

fn wait_ready(
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
