//! chatd and chatctl as processes: starting a server (dev or config mode, wrapped or not),
//! its log lines, stopping it; running chatctl against its control socket.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Instant;

use chatd_proto::Fingerprint;
use serde_json::Value;
use tempfile::TempDir;

use super::process::{Lines, TIMEOUT, bins, signal, wait_child};

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

    /// Waits for chatd to exit on its own; its full log is then in `self.log`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("chatd already stopped");
        let status = wait_child(&mut child, "chatd");
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
