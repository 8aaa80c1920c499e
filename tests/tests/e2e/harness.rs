//! Shared machinery: building and locating the real binaries, running `chatd`, `chatctl` and
//! `chat` as processes, and a raw TLS client that speaks the JSON-lines protocol directly
//! (connecting, `hello` and `login` through chatd-testkit, which chat-bench shares).
//!
//! Every wait has a generous deadline ([`TIMEOUT`]) and exists only so a broken build fails
//! instead of hanging; nothing here asserts that anything was fast. Each test gets its own
//! temporary directories and port 0, so tests run in parallel safely.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::BytesMut;
use chatd_proto::e2e::Envelope;
use chatd_proto::e2e::{DeviceKey, SenderChain, seal};
use chatd_proto::frame::ClientFrame;
use chatd_proto::{Fingerprint, LineError, Wire, WireCodec};
use chatd_testkit::Tls;
use futures_util::StreamExt;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Chain, ReadHalf, WriteHalf};
use tokio_util::codec::FramedRead;

/// Deadline for anything we wait for. Generous: a slow CI machine must not fail a test.
pub const TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// Paths of the binaries under test.
pub struct Bins {
    pub chatd: PathBuf,
    pub chatctl: PathBuf,
    pub chat: PathBuf,
    /// The example plugins (plugins/).
    pub plugin_dice: PathBuf,
    pub plugin_uptime: PathBuf,
}

/// Builds the binaries once per test run (same profile as this test) and returns their paths.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(build_bins)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn build_bins() -> Bins {
    let root = workspace_root();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&root).args([
        "build",
        "-p",
        "chatd",
        "-p",
        "chatctl",
        "-p",
        "chat",
        "-p",
        "chatd-plugins",
        "--bins",
        "--message-format=json-render-diagnostics",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    // `cargo test` gives this process the e2e package's own CARGO_MANIFEST_DIR, CARGO_PKG_*, ...
    // Build scripts track some of them (ring: rerun-if-env-changed=CARGO_MANIFEST_DIR), so
    // passing them on would rebuild ring and rustls here and again in the next plain build.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ];
        if per_package.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().expect("cannot run cargo build");
    assert!(
        out.status.success(),
        "cargo build of the binaries failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Cargo reports where it put each executable, wherever the target dir is configured.
    let mut found = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_bin = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        if let (true, Some(name), Some(exe)) = (
            is_bin,
            msg["target"]["name"].as_str(),
            msg["executable"].as_str(),
        ) {
            found.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    let mut locate = |name: &str| -> PathBuf {
        let path = found
            .remove(name)
            .unwrap_or_else(|| fallback_target_dir(&root).join(name));
        assert!(
            path.is_file(),
            "binary {name} not found at {}",
            path.display()
        );
        path
    };
    Bins {
        chatd: locate("chatd"),
        chatctl: locate("chatctl"),
        chat: locate("chat"),
        plugin_dice: locate("chatd-plugin-dice"),
        plugin_uptime: locate("chatd-plugin-uptime"),
    }
}

/// `$CARGO_TARGET_DIR/<profile>` or `<workspace>/target/<profile>`.
fn fallback_target_dir(root: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    target.join(if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    })
}

// ---------------------------------------------------------------------------------------------
// Line capture for child processes
// ---------------------------------------------------------------------------------------------

/// Lines from a child's stdout or stderr, read on a thread as they arrive.
pub struct Lines {
    rx: Receiver<String>,
    all: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    what: String,
}

impl Lines {
    pub fn spawn(stream: impl Read + Send + 'static, what: &str) -> Lines {
        let (tx, rx) = mpsc::channel();
        let all = Arc::new(Mutex::new(Vec::new()));
        let all2 = Arc::clone(&all);
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        all2.lock().unwrap().push(line.clone());
                        let _ = tx.send(line);
                    }
                }
            }
        });
        Lines {
            rx,
            all,
            reader: Some(reader),
            what: what.to_string(),
        }
    }

    /// Waits for the next line satisfying `pred`, skipping (but keeping) others.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.wait_for(&pred) {
            Ok(line) => line,
            Err(why) => panic!(
                "{}: expected a line {what}, but {why}; everything so far:\n{}",
                self.what,
                self.dump()
            ),
        }
    }

    /// Waits for the next line containing `needle`.
    pub fn expect_contains(&mut self, needle: &str) -> String {
        self.expect(&format!("containing {needle:?}"), |l| l.contains(needle))
    }

    fn wait_for(&mut self, pred: &dyn Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("none came within {TIMEOUT:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => return Err("the stream ended".into()),
            }
        }
    }

    /// Waits until the stream ends (the child closed it or exited).
    pub fn wait_eof(&mut self) {
        if let Some(reader) = self.reader.take() {
            let deadline = Instant::now() + TIMEOUT;
            while !reader.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "{}: stream did not end within {TIMEOUT:?}",
                    self.what
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = reader.join();
        }
    }

    /// Every line seen so far, including those already consumed by `expect`.
    pub fn all(&self) -> Vec<String> {
        self.all.lock().unwrap().clone()
    }

    /// The lines seen so far from the `from`-th on (cheaper than [`Lines::all`] on a long log).
    pub fn since(&self, from: usize) -> Vec<String> {
        let all = self.all.lock().unwrap();
        all.get(from..).map(<[String]>::to_vec).unwrap_or_default()
    }

    pub fn dump(&self) -> String {
        self.all().join("\n")
    }
}

/// Waits for a child to exit, killing it if it does not within [`TIMEOUT`].
fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    nix::sys::signal::kill(pid, sig).expect("cannot signal the child");
}

// ---------------------------------------------------------------------------------------------
// chatd
// ---------------------------------------------------------------------------------------------

/// How to start chatd.
pub enum Mode<'a> {
    /// `--dev --data-dir DIR --listen ADDR`.
    Dev {
        data_dir: &'a Path,
        listen: SocketAddr,
    },
    /// `--config FILE` (no --dev); `control` is the socket path the file names.
    Config { file: &'a Path, control: &'a Path },
}

/// A running chatd; killed (SIGKILL) on drop, with its log printed if the test is failing.
pub struct Server {
    child: Option<Child>,
    pub log: Lines,
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub control: PathBuf,
    /// Data dir owned by this server (for [`Server::start`]); None when the test owns it.
    _dir: Option<TempDir>,
}

/// A chatd that exited instead of starting.
#[derive(Debug)]
pub struct StartFailure {
    pub status: ExitStatus,
    pub stderr: String,
}

pub fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Server {
    /// A fresh chatd in its own temp dir on 127.0.0.1:0.
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Server::start_in(dir.path(), loopback0());
        server._dir = Some(dir);
        server
    }

    /// chatd --dev on a data dir the caller owns (for restarts).
    pub fn start_in(data_dir: &Path, listen: SocketAddr) -> Server {
        Server::try_start(Mode::Dev { data_dir, listen })
            .unwrap_or_else(|f| panic!("chatd failed to start ({}):\n{}", f.status, f.stderr))
    }

    /// chatd --dev on a caller-owned data dir, logging at trace level (the most verbose there is).
    pub fn start_trace(data_dir: &Path) -> Server {
        Server::try_start_env(
            Mode::Dev {
                data_dir,
                listen: loopback0(),
            },
            &[("RUST_LOG", "trace")],
        )
        .unwrap_or_else(|f| panic!("chatd failed to start ({}):\n{}", f.status, f.stderr))
    }

    /// chatd with a config file in `dir` whose `[limits]` table is `limits` (TOML lines).
    pub fn with_limits(dir: &Path, limits: &str) -> Server {
        Server::with_config(dir, &format!("[limits]\n{limits}\n"))
    }

    /// [`Server::with_limits`] with extra environment variables for chatd (e.g. `RUST_LOG`).
    pub fn with_limits_env(dir: &Path, limits: &str, env: &[(&str, &str)]) -> Server {
        let (file, control) = write_config(dir, &format!("[limits]\n{limits}\n"));
        Server::try_start_env(
            Mode::Config {
                file: &file,
                control: &control,
            },
            env,
        )
        .unwrap_or_else(|f| panic!("chatd failed to start ({}):\n{}", f.status, f.stderr))
    }

    /// chatd with a config file in `dir`: `server` adds lines to `[server]` (which sets the
    /// listener and paths), `tail` adds whole tables after it.
    pub fn with_toml(dir: &Path, server: &str, tail: &str) -> Server {
        Server::with_config(dir, &format!("{server}\n{tail}\n"))
    }

    /// chatd with the config file [`write_config`] makes in `dir` from `tables`.
    pub fn with_config(dir: &Path, tables: &str) -> Server {
        let (file, control) = write_config(dir, tables);
        Server::try_start(Mode::Config {
            file: &file,
            control: &control,
        })
        .unwrap_or_else(|f| panic!("chatd failed to start ({}):\n{}", f.status, f.stderr))
    }

    /// Starts chatd and waits for it to announce its listener, fingerprint and control socket;
    /// Err if it exits first.
    pub fn try_start(mode: Mode<'_>) -> Result<Server, StartFailure> {
        Server::try_start_env(mode, &[])
    }

    /// [`Server::try_start`] with extra environment variables for chatd (e.g. `RUST_LOG`).
    pub fn try_start_env(mode: Mode<'_>, env: &[(&str, &str)]) -> Result<Server, StartFailure> {
        Server::try_start_wrapped(mode, env, &[])
    }

    /// [`Server::try_start_env`] with chatd started through `wrapper` (a program and its
    /// arguments, given chatd's path and arguments last; it must `exec` chatd, so that the
    /// child's pid is chatd's own), e.g. `unshare` to give chatd a private mount.
    pub fn try_start_wrapped(
        mode: Mode<'_>,
        env: &[(&str, &str)],
        wrapper: &[OsString],
    ) -> Result<Server, StartFailure> {
        let mut args: Vec<OsString> = Vec::new();
        let control_hint = match &mode {
            Mode::Dev { data_dir, listen } => {
                args.extend(["--dev".into(), "--data-dir".into(), data_dir.into()]);
                args.extend(["--listen".into(), listen.to_string().into()]);
                data_dir.join("control.sock")
            }
            Mode::Config { file, control } => {
                args.extend(["--config".into(), file.into()]);
                control.to_path_buf()
            }
        };
        let mut child = wrapped(wrapper, &bins().chatd)
            .args(&args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot spawn chatd");
        let mut log = Lines::spawn(child.stderr.take().expect("stderr"), "chatd stderr");
        let mut addr = None;
        let mut fingerprint = None;
        let mut control = None;
        let deadline = Instant::now() + TIMEOUT;
        while control.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.rx.recv_timeout(left) {
                // Only chatd's own INFO lines count; an error line may say "listening on" too.
                Ok(line) if !line.contains(" INFO ") => {}
                Ok(line) => {
                    if let Some(rest) = after(&line, " listening on ") {
                        addr = Some(rest.trim().parse::<SocketAddr>().expect("listen addr"));
                    } else if let Some(rest) = after(&line, "certificate fingerprint ") {
                        fingerprint = Some(rest.trim().to_string());
                    } else if let Some(rest) = after(&line, "control socket at ") {
                        control = Some(PathBuf::from(rest.trim()));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = wait_child(&mut child, "chatd");
                    log.wait_eof();
                    return Err(StartFailure {
                        status,
                        stderr: log.dump(),
                    });
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "chatd did not finish starting within {TIMEOUT:?}:\n{}",
                        log.dump()
                    );
                }
            }
        }
        let control = control.expect("control socket line");
        // --dev logs a relative path if given one; ours are absolute, but be exact anyway.
        assert_eq!(
            control, control_hint,
            "chatd's control socket is not where the configuration puts it"
        );
        let fingerprint = fingerprint.expect("chatd printed no fingerprint");
        assert!(
            fingerprint.parse::<Fingerprint>().is_ok(),
            "bad fingerprint line: {fingerprint}"
        );
        Ok(Server {
            child: Some(child),
            log,
            addr: addr.expect("chatd printed no listen address"),
            fingerprint,
            control,
            _dir: None,
        })
    }

    /// chatd's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The address as `chat --server` wants it.
    pub fn server_arg(&self) -> String {
        self.addr.to_string()
    }

    /// Sends `sig` and returns at once (SIGHUP: reload).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal(self.child.as_ref().expect("chatd already stopped"), sig);
    }

    /// Sends SIGTERM and waits for chatd to exit; its full log is then in `self.log`.
    pub fn stop_sigterm(&mut self) -> ExitStatus {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }

    /// Sends `sig` and waits for chatd to exit; its full log is then in `self.log`.
    pub fn stop_with(&mut self, sig: nix::sys::signal::Signal) -> ExitStatus {
        let mut child = self.child.take().expect("chatd already stopped");
        signal(&child, sig);
        let status = wait_child(&mut child, &format!("chatd after {sig}"));
        self.log.wait_eof();
        status
    }

    /// Runs chatctl against this server.
    pub fn ctl(&self, args: &[&str], stdin: Option<&str>) -> CtlOutput {
        ctl_at(&self.control, args, stdin)
    }

    /// Adds a user, asserting success.
    pub fn add_user(&self, name: &str, password: &str) {
        let out = self.ctl(
            &["user", "add", name, "--password-stdin"],
            Some(&format!("{password}\n")),
        );
        out.assert_ok();
        assert_eq!(out.stdout, format!("user {name} added\n"));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- chatd log ({}) ----\n{}\n----",
                self.addr,
                self.log.dump()
            );
        }
    }
}

/// Writes `dir/chatd.toml`: listen on 127.0.0.1:0, state in `dir/state`, control socket
/// `dir/ctl.sock`, then `tables` (more TOML tables). Returns the file and the socket path.
pub fn write_config(dir: &Path, tables: &str) -> (PathBuf, PathBuf) {
    let control = dir.join("ctl.sock");
    let file = dir.join("chatd.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\ncontrol_socket = {control:?}\n{tables}",
            dir.join("state")
        ),
    )
    .expect("write chatd.toml");
    (file, control)
}

/// `program` run through `wrapper` (a program and its arguments) if there is one.
fn wrapped<S: AsRef<std::ffi::OsStr>>(wrapper: &[S], program: &Path) -> Command {
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// Runs chatd with `args` expecting it to exit (a refused start or --check-config).
pub fn run_chatd(args: &[&std::ffi::OsStr]) -> (ExitStatus, String, String) {
    let mut child = Command::new(&bins().chatd)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn chatd");
    let mut out = Lines::spawn(child.stdout.take().expect("stdout"), "chatd stdout");
    let mut err = Lines::spawn(child.stderr.take().expect("stderr"), "chatd stderr");
    let status = wait_child(&mut child, "chatd");
    out.wait_eof();
    err.wait_eof();
    (status, out.dump(), err.dump())
}

// ---------------------------------------------------------------------------------------------
// chatctl
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct CtlOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    pub fn assert_ok(&self) {
        assert!(
            self.status.success(),
            "chatctl failed ({}): stdout={:?} stderr={:?}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    /// Asserts exit status `code` and returns stderr.
    pub fn assert_code(&self, code: i32) -> &str {
        assert_eq!(
            self.status.code(),
            Some(code),
            "chatctl exit status; stdout={:?} stderr={:?}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }

    pub fn json(&self) -> Value {
        self.assert_ok();
        serde_json::from_str(self.stdout.trim_end())
            .unwrap_or_else(|e| panic!("chatctl --json printed non-JSON ({e}): {:?}", self.stdout))
    }
}

/// `chatctl --socket SOCKET args...`, with `stdin` piped in (or /dev/null).
pub fn ctl_at(socket: &Path, args: &[&str], stdin: Option<&str>) -> CtlOutput {
    ctl_as(&[], socket, args, stdin)
}

/// [`ctl_at`] run through `wrapper` (a program and its arguments, e.g. `setpriv` to run
/// chatctl as another user); chatctl's path and arguments follow the wrapper's.
pub fn ctl_as(wrapper: &[&str], socket: &Path, args: &[&str], stdin: Option<&str>) -> CtlOutput {
    let mut child = wrapped(wrapper, &bins().chatctl)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("CHATD_SOCKET")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn chatctl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        // chatctl may exit before reading (e.g. a refused name): a broken pipe is fine.
        let _ = pipe.write_all(input.as_bytes());
    }
    let mut out = Lines::spawn(child.stdout.take().expect("stdout"), "chatctl stdout");
    let mut err = Lines::spawn(child.stderr.take().expect("stderr"), "chatctl stderr");
    let status = wait_child(&mut child, "chatctl");
    out.wait_eof();
    err.wait_eof();
    let join = |l: &Lines| {
        let all = l.all();
        if all.is_empty() {
            String::new()
        } else {
            all.join("\n") + "\n"
        }
    };
    CtlOutput {
        status,
        stdout: join(&out),
        stderr: join(&err),
    }
}

// ---------------------------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------------------------

/// A private $HOME / $XDG_DATA_HOME for chat, so known_servers never touches the real one.
///
/// Also one device: unless made with [`ClientHome::generating`], chat is started with
/// `--key` pointing at a ready key ([`test_key`] of the user, or of the device label), because
/// generating RSA keys for every client of every test would dominate the run.
pub struct ClientHome {
    dir: TempDir,
    device: Device,
}

enum Device {
    /// The test key of the user chat logs in as.
    UserKey,
    /// The test key of this label (a second device of the same user).
    Labelled(String),
    /// No --key: chat makes its own on first login, as it does for real users.
    Generate,
}

impl ClientHome {
    pub fn new() -> ClientHome {
        ClientHome {
            dir: tempfile::tempdir().expect("tempdir"),
            device: Device::UserKey,
        }
    }

    /// A home whose device key is [`test_key`]`(label)`: another device of the same user.
    pub fn device(label: &str) -> ClientHome {
        ClientHome {
            device: Device::Labelled(label.to_string()),
            ..ClientHome::new()
        }
    }

    /// A home where chat creates its key itself.
    pub fn generating() -> ClientHome {
        ClientHome {
            device: Device::Generate,
            ..ClientHome::new()
        }
    }

    /// The `--key FILE` arguments for `user` (writing the key file once), if any.
    pub fn key_args(&self, user: &str) -> Vec<String> {
        let label = match &self.device {
            Device::Generate => return Vec::new(),
            Device::UserKey => user,
            Device::Labelled(label) => label.as_str(),
        };
        let path = self.dir.path().join(format!("{label}.pem"));
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let pem = test_key(label).to_pkcs8_pem().expect("pem");
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(pem.as_bytes()))
                .expect("write the test key");
        }
        vec!["--key".to_string(), path.display().to_string()]
    }

    pub fn xdg_data(&self) -> PathBuf {
        self.dir.path().join("xdg-data")
    }

    pub fn known_servers(&self) -> PathBuf {
        self.xdg_data().join("chat").join("known_servers")
    }

    /// The environment of a chat started some other way than [`Command`] (in a terminal):
    /// HOME and XDG_DATA_HOME as for the plain clients, and XDG_CONFIG_HOME inside this home
    /// too, so no real config.toml is read.
    pub fn env(&self) -> Vec<(String, String)> {
        let home = self.dir.path();
        [
            ("HOME", home.to_path_buf()),
            ("XDG_DATA_HOME", self.xdg_data()),
            ("XDG_CONFIG_HOME", home.join("xdg-config")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
        .collect()
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env("HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.xdg_data())
            .env_remove("XDG_CONFIG_HOME");
    }
}

/// A running `chat` in plain mode with piped stdin/stdout/stderr.
pub struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    pub out: Lines,
    pub err: Lines,
    name: String,
}

/// The finished chat process.
pub struct ChatExit {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Chat {
    /// Spawns `chat --server ADDR --user USER --password-stdin [extra]` and writes the password line.
    pub fn spawn(
        server: &str,
        user: &str,
        password: &str,
        home: &ClientHome,
        extra: &[&str],
    ) -> Chat {
        let mut child = spawn_chat(server, user, home, extra);
        let stdin = child.stdin.take();
        let out = Lines::spawn(
            child.stdout.take().expect("stdout"),
            &format!("chat {user} stdout"),
        );
        let err = Lines::spawn(
            child.stderr.take().expect("stderr"),
            &format!("chat {user} stderr"),
        );
        let mut chat = Chat {
            child,
            stdin,
            out,
            err,
            name: user.to_string(),
        };
        chat.send(password);
        chat
    }

    /// Logs in to `server` (accepting its fingerprint) and waits for the logged-in line.
    pub fn login(server: &Server, user: &str, password: &str, home: &ClientHome) -> Chat {
        let mut chat = Chat::spawn(
            &server.server_arg(),
            user,
            password,
            home,
            &["--accept-fingerprint", &server.fingerprint],
        );
        chat.out
            .expect_contains(&format!("-- logged in as {user}; online: "));
        chat
    }

    /// Writes one line to chat's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot write to chat {}'s stdin: {e}", self.name));
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Closes stdin and waits for the process to end.
    pub fn wait(mut self) -> ChatExit {
        self.close_stdin();
        let status = wait_child(&mut self.child, &format!("chat {}", self.name));
        self.out.wait_eof();
        self.err.wait_eof();
        ChatExit {
            status,
            stdout: self.out.all(),
            stderr: self.err.all(),
        }
    }

    /// SIGKILL: the process vanishes without a word to the server.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- chat {} stdout ----\n{}\n---- chat {} stderr ----\n{}\n----",
                self.name,
                self.out.dump(),
                self.name,
                self.err.dump()
            );
        }
    }
}

/// `chat --server SERVER --user USER --password-stdin [extra]` with piped stdio in `home`.
fn spawn_chat(server: &str, user: &str, home: &ClientHome, extra: &[&str]) -> Child {
    let mut cmd = Command::new(&bins().chat);
    cmd.args(["--server", server, "--user", user, "--password-stdin"])
        .args(home.key_args(user))
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    home.apply(&mut cmd);
    cmd.spawn().expect("cannot spawn chat")
}

/// Runs chat to completion with all of `stdin` (password first) and returns what it did.
pub fn run_chat(
    server: &str,
    user: &str,
    stdin: &str,
    home: &ClientHome,
    extra: &[&str],
) -> ChatExit {
    let mut child = spawn_chat(server, user, home, extra);
    let mut out = Lines::spawn(child.stdout.take().expect("stdout"), "chat stdout");
    let mut err = Lines::spawn(child.stderr.take().expect("stderr"), "chat stderr");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        // chat may exit before reading everything (refused certificate): ignore broken pipes.
        let _ = pipe.write_all(stdin.as_bytes());
    }
    let status = wait_child(&mut child, "chat");
    out.wait_eof();
    err.wait_eof();
    ChatExit {
        status,
        stdout: out.all(),
        stderr: err.all(),
    }
}

/// The line without the `[HH:MM:SS] ` stamp chat puts before server frames; None if unstamped.
pub fn unstamped(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    let stamped = b.len() >= 11
        && b[0] == b'['
        && b[3] == b':'
        && b[6] == b':'
        && b[9] == b']'
        && b[10] == b' '
        && [1, 2, 4, 5, 7, 8].iter().all(|i| b[*i].is_ascii_digit());
    stamped.then(|| &line[11..])
}

/// Predicate: a stamped line whose text after the stamp is exactly `want`.
pub fn exactly(want: &str) -> impl Fn(&str) -> bool + '_ {
    move |line| unstamped(line) == Some(want)
}

// ---------------------------------------------------------------------------------------------
// Raw protocol client
// ---------------------------------------------------------------------------------------------

/// The raw client's `hello`, asking for binary envelope frames if `binary`.
fn e2e_hello(binary: bool) -> ClientFrame {
    chatd_testkit::hello("e2e", binary)
}

/// A raw client's own runtime.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// TLS to `addr`, verifying its certificate against the fingerprint chatd printed.
async fn connect_tls(addr: SocketAddr, fingerprint: &str) -> Tls {
    let fingerprint = fingerprint.parse().expect("fingerprint");
    let connector = chatd_testkit::connector(fingerprint).expect("TLS configuration");
    match tokio::time::timeout(TIMEOUT, chatd_testkit::connect(addr, &connector)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => panic!("TLS connect to {addr} failed: {e}"),
        Err(_) => panic!("TLS connect to {addr} timed out"),
    }
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// TLS close_notify then EOF.
    Clean,
    /// Reset or EOF without close_notify.
    Abrupt(String),
}

// ---------------------------------------------------------------------------------------------
// Device keys
// ---------------------------------------------------------------------------------------------

/// The fixed 2048-bit test keys kept with the e2e library.
const FIXED_KEYS: [(&str, &str); 3] = [
    (
        "alice",
        include_str!("../../../proto/src/e2e/testdata/alice.pem"),
    ),
    (
        "bob",
        include_str!("../../../proto/src/e2e/testdata/bob.pem"),
    ),
    (
        "carol",
        include_str!("../../../proto/src/e2e/testdata/carol.pem"),
    ),
];

/// A device key for `name`: alice, bob and carol have fixed ones; any other name gets one
/// generated once per test run (RSA generation is slow, so keys are reused).
pub fn test_key(name: &str) -> DeviceKey {
    static KEYS: OnceLock<Mutex<std::collections::HashMap<String, DeviceKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    let mut keys = keys.lock().unwrap_or_else(|p| p.into_inner());
    keys.entry(name.to_string())
        .or_insert_with(|| match FIXED_KEYS.iter().find(|(n, _)| *n == name) {
            Some((_, pem)) => DeviceKey::from_pkcs8_pem(pem).expect("fixed test key"),
            None => DeviceKey::generate(2048).expect("generate a test key"),
        })
        .clone()
}

/// Base64 SPKI DER of a key, as `login` carries it.
pub fn key_b64(key: &DeviceKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key.public().to_spki_der())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A frame read off the wire as JSON; a binary `envelope` becomes the JSON frame it stands
/// for (sender from the envelope's header, `data` in base64) plus `"binary": true`.
fn as_json(wire: Wire) -> Value {
    match wire {
        Wire::Line(line) => serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("server sent non-JSON ({e}): {line:?}")),
        Wire::Envelope { ts, data } => {
            let env = Envelope::decode(&data)
                .unwrap_or_else(|e| panic!("server sent an undecodable binary envelope: {e}"));
            let h = env.header();
            serde_json::json!({
                "type": "envelope",
                "from": h.sender_user,
                "device": h.sender_device.to_string(),
                "data": base64::engine::general_purpose::STANDARD.encode(&data),
                "ts": ts,
                "binary": true,
            })
        }
        Wire::Send(_) => panic!("server sent a binary send frame"),
    }
}

/// What a raw client reads from: the bytes login read past `login_ok`, then the stream.
type Reader = FramedRead<Chain<std::io::Cursor<BytesMut>, ReadHalf<Tls>>, WireCodec>;

/// A raw protocol client over TLS, driven synchronously by its own small runtime.
pub struct Raw {
    rt: tokio::runtime::Runtime,
    reader: Reader,
    writer: WriteHalf<Tls>,
    /// Every frame received, for failure messages.
    seen: Vec<String>,
    /// The device key `login` presents (set by `try_login` from the user name unless chosen).
    pub key: Option<DeviceKey>,
    /// The user logged in as, for sealing envelopes.
    user: String,
    /// One sending chain per conversation; raw clients never hand them out, since the server
    /// routes envelopes without looking inside.
    chains: std::collections::HashMap<String, SenderChain>,
    /// When true (the default), [`Raw::recv`] skips `device` frames: most tests are about
    /// something else, and every login makes one.
    pub skip_devices: bool,
    /// This end's address (the `peer` chatd logs for the session).
    pub local: SocketAddr,
}

impl Raw {
    /// TLS-connects to `server`, verifying its certificate against the fingerprint it printed.
    pub fn connect(server: &Server) -> Raw {
        Raw::connect_to(server.addr, &server.fingerprint)
    }

    pub fn connect_to(addr: SocketAddr, fingerprint: &str) -> Raw {
        let rt = runtime();
        let tls = rt.block_on(connect_tls(addr, fingerprint));
        Raw::over(rt, tls, BytesMut::new())
    }

    /// A client reading `read` (what login read past `login_ok`), then the rest of `tls`.
    fn over(rt: tokio::runtime::Runtime, tls: Tls, read: BytesMut) -> Raw {
        let local = tls.get_ref().0.local_addr().expect("local address");
        let (r, w) = tokio::io::split(tls);
        let r = AsyncReadExt::chain(std::io::Cursor::new(read), r);
        Raw {
            rt,
            reader: FramedRead::new(r, WireCodec::new(1 << 20)),
            writer: w,
            seen: Vec::new(),
            key: None,
            user: String::new(),
            chains: Default::default(),
            skip_devices: true,
            local,
        }
    }

    /// Connects, says hello and logs in with [`test_key`] of `user`; asserts `login_ok`.
    pub fn login(server: &Server, user: &str, password: &str) -> Raw {
        let rt = runtime();
        let mut tls = rt.block_on(connect_tls(server.addr, &server.fingerprint));
        let key = test_key(user);
        let login = chatd_testkit::login(user, password, &key_b64(&key));
        let exchange = chatd_testkit::log_in(&mut tls, e2e_hello(false), login);
        let read = match rt.block_on(async { tokio::time::timeout(TIMEOUT, exchange).await }) {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => panic!("login as {user}: {e}"),
            Err(_) => panic!("login as {user} did not finish within {TIMEOUT:?}"),
        };
        let mut raw = Raw::over(rt, tls, read);
        raw.key = Some(key);
        raw.user = user.to_string();
        raw
    }

    /// Sends `frames` as protocol lines in one write.
    fn send_frames(&mut self, frames: &[ClientFrame]) {
        let bytes = chatd_testkit::encode(frames).expect("frames encode");
        self.send_raw(&bytes);
    }

    /// Sends `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let res = self.rt.block_on(async {
            tokio::time::timeout(TIMEOUT, async {
                self.writer.write_all(bytes).await?;
                self.writer.flush().await
            })
            .await
        });
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => panic!("write did not finish within {TIMEOUT:?}"),
        }
    }

    /// Sends one line (a newline is added).
    pub fn send_line(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.send_raw(&bytes);
    }

    /// Sends a JSON value as one line.
    pub fn send(&mut self, frame: Value) {
        self.send_line(&frame.to_string());
    }

    fn next_item(&mut self) -> Option<Result<Result<Wire, LineError>, std::io::Error>> {
        let item = self
            .rt
            .block_on(async { tokio::time::timeout(TIMEOUT, self.reader.next()).await });
        match item {
            Ok(item) => item,
            Err(_) => panic!(
                "no frame from the server within {TIMEOUT:?}; seen so far: {:#?}",
                self.seen
            ),
        }
    }

    /// The next frame (skipping `device` frames while [`Raw::skip_devices`] is set); fails if
    /// the connection ends or nothing comes.
    pub fn recv(&mut self) -> Value {
        loop {
            let frame = self.recv_any();
            if !(self.skip_devices && frame["type"] == "device") {
                return frame;
            }
        }
    }

    /// The next frame of any type. A binary envelope frame comes back as the JSON frame it
    /// stands for, with `"binary": true` added.
    pub fn recv_any(&mut self) -> Value {
        match self.next_item() {
            Some(Ok(Ok(wire))) => {
                let frame = as_json(wire);
                self.seen.push(frame.to_string());
                frame
            }
            Some(Ok(Err(e))) => panic!("server sent an unreadable line: {e}"),
            Some(Err(e)) => panic!(
                "connection failed while waiting for a frame: {e}; seen so far: {:#?}",
                self.seen
            ),
            None => panic!(
                "connection closed while waiting for a frame; seen so far: {:#?}",
                self.seen
            ),
        }
    }

    /// The next frame, which must have `"type": ty`.
    pub fn recv_type(&mut self, ty: &str) -> Value {
        let frame = self.recv();
        assert_eq!(frame["type"], ty, "expected a {ty} frame, got {frame}");
        frame
    }

    /// The next frame, which must be an error with `code`; returns its message.
    pub fn expect_error(&mut self, code: &str) -> String {
        let frame = self.recv_type("error");
        assert_eq!(frame["code"], code, "{frame}");
        frame["message"]
            .as_str()
            .expect("error message")
            .to_string()
    }

    /// The next frame must be `bye` with this reason.
    pub fn expect_bye(&mut self, reason: &str) {
        let frame = self.recv_type("bye");
        assert_eq!(frame["reason"], reason, "{frame}");
    }

    /// Every frame until the connection ends, and how it ended.
    pub fn recv_until_closed(&mut self) -> (Vec<Value>, Closed) {
        let mut frames = Vec::new();
        loop {
            match self.next_item() {
                None => return (frames, Closed::Clean),
                Some(Err(e)) => return (frames, Closed::Abrupt(e.to_string())),
                Some(Ok(Err(e))) => panic!("server sent an unreadable line: {e}"),
                Some(Ok(Ok(wire))) => frames.push(as_json(wire)),
            }
        }
    }

    /// Waits for the end of the connection; any frame before it is a failure.
    pub fn expect_closed(&mut self) -> Closed {
        match self.next_item() {
            None => Closed::Clean,
            Some(Err(e)) => Closed::Abrupt(e.to_string()),
            Some(Ok(item)) => panic!("expected the connection to close, got {item:?}"),
        }
    }

    /// Sends `hello` (the current version) and returns the server's hello.
    pub fn hello(&mut self) -> Value {
        self.send_frames(&[e2e_hello(false)]);
        self.recv_type("hello")
    }

    /// Sends `hello` asking for binary envelope frames; returns the server's hello.
    pub fn hello_binary(&mut self) -> Value {
        self.send_frames(&[e2e_hello(true)]);
        self.recv_type("hello")
    }

    /// Sends an envelope (base64, as [`Raw::seal`] returns it) as a binary `send` frame.
    pub fn send_envelope_binary(&mut self, data: &str) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 envelope");
        self.send_raw(&chatd_proto::codec::binary_send(&raw));
    }

    /// Sends `login` with this client's device key ([`test_key`] of `user` unless
    /// [`Raw::key`] was set) and returns the answer (login_ok or error).
    pub fn try_login(&mut self, user: &str, password: &str) -> Value {
        let key = self.key.get_or_insert_with(|| test_key(user)).clone();
        self.user = user.to_string();
        self.send_frames(&[chatd_testkit::login(user, password, &key_b64(&key))]);
        self.recv()
    }

    /// Seals `text` for `conversation` with this client's key; returns the base64 envelope.
    pub fn seal(&mut self, conversation: &str, text: &str) -> String {
        let key = self.key.clone().expect("log in before sealing");
        let chain = self
            .chains
            .entry(conversation.to_string())
            .or_insert_with(|| SenderChain::new().expect("chain"));
        seal(&key, &self.user, conversation, chain, text, now_ms())
            .expect("seal")
            .to_base64()
            .expect("base64")
    }

    /// Sends an envelope (base64) as a `send` frame.
    pub fn send_envelope(&mut self, data: &str) {
        self.send(serde_json::json!({"type":"send","data":data}));
    }

    /// Ping with `nonce`; the next frame must be the matching pong. A sync point: every frame
    /// queued for this session before the ping was answered arrives before the pong.
    pub fn sync(&mut self, nonce: u64) {
        self.send(serde_json::json!({"type":"ping","nonce":nonce}));
        let pong = self.recv();
        assert_eq!(
            pong,
            serde_json::json!({"type":"pong","nonce":nonce}),
            "expected only the pong"
        );
    }

    /// Seals `text` for the default room (#lobby, everyone is in it) and sends it; returns
    /// the envelope (base64).
    pub fn say(&mut self, text: &str) -> String {
        let data = self.seal("#lobby", text);
        self.send_envelope(&data);
        data
    }

    /// Seals `text` for the pair (this user, `to`) and sends it; returns the envelope.
    pub fn whisper(&mut self, to: &str, text: &str) -> String {
        let conv = chatd_proto::conversation::Conversation::pair(&self.user, to).name();
        let data = self.seal(&conv, text);
        self.send_envelope(&data);
        data
    }

    /// The next frame must be an envelope from `from` carrying exactly `data`.
    pub fn expect_envelope(&mut self, from: &str, data: &str) -> Value {
        let frame = self.recv_type("envelope");
        assert_eq!(frame["from"], from, "{frame}");
        assert_eq!(frame["data"], data, "{frame}");
        frame
    }

    pub fn command(&mut self, name: &str, args: &str) {
        self.send(serde_json::json!({"type":"command","name":name,"args":args}));
    }
}
