//! The real binaries, built once per run and located by cargo, and the processes the tests
//! start: their output lines captured, waited on under a deadline, signalled.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

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
    pub(super) rx: Receiver<String>,
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
pub(super) fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
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

pub(super) fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    nix::sys::signal::kill(pid, sig).expect("cannot signal the child");
}
