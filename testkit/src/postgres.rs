//! A throwaway PostgreSQL server for tests: Debian's `initdb` into a temporary directory, and
//! `postgres` listening on a unix socket in it only, as an unprivileged user.
//!
//! [`TempPostgres::start`] gives a server the caller owns (stopped, and its directory removed,
//! on drop); [`TempPostgres::shared`] one server per test process, on which each test makes
//! a database of its own ([`TempPostgres::create_database`]), which is fast. The shared
//! server cannot be dropped (it lives in a static), so it is started with a parent-death
//! signal from a thread that never ends: it stops when the test process exits, however it
//! exits, and the next run removes what it left in the temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The port number in the socket's name (`.s.PGSQL.5432`); nothing listens on TCP.
const PORT: u16 = 5432;
/// The superuser initdb creates; trusted on the socket, which only this directory holds.
const SUPERUSER: &str = "postgres";
/// Names the temporary directories, so a later run can remove those of dead processes.
const DIR_PREFIX: &str = "chatd-testpg-";

/// The directory holding PostgreSQL's programs (`initdb`, `postgres`, `pg_dump`...), the
/// newest installed, or None if PostgreSQL is not installed.
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// True if PostgreSQL can be started. False (with a note) when it is not installed and `CI`
/// is not set; panics when it is not installed but `CI` is set, since `.ci/run` installs it.
pub fn available() -> bool {
    if bin_dir().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "PostgreSQL is not installed but CI is set (.ci/run installs it)"
    );
    eprintln!(
        "PostgreSQL is not installed: skipping the PostgreSQL half of this test (CI runs it)"
    );
    false
}

/// A running PostgreSQL server in a temporary directory.
pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
    server: Option<Child>,
    /// Stop it and remove `dir` on drop (not for the shared server).
    owned: bool,
}

impl TempPostgres {
    /// Starts a server the caller owns; stopped and removed on drop.
    pub fn start() -> Result<TempPostgres, String> {
        let bin = bin_dir().ok_or("PostgreSQL is not installed")?;
        let mut pg = TempPostgres::init(bin, None)?;
        pg.owned = true;
        Ok(pg)
    }

    /// The server shared by this test process, started on first use; None (with a note) if
    /// PostgreSQL is not installed and `CI` is not set. Panics if it is installed but does
    /// not start: the tests must not pass without it.
    #[allow(clippy::panic)]
    pub fn shared() -> Option<&'static TempPostgres> {
        static SHARED: OnceLock<TempPostgres> = OnceLock::new();
        if !available() {
            return None;
        }
        let pg = SHARED.get_or_init(|| {
            remove_stale_dirs();
            let bin = bin_dir().unwrap_or_default();
            // Spawned from a thread that never ends: the parent-death signal fires when the
            // spawning thread ends, which is then only when the process does.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(TempPostgres::init(bin, Some("INT")));
                loop {
                    std::thread::park();
                }
            });
            match rx.recv() {
                Ok(Ok(pg)) => pg,
                Ok(Err(e)) => panic!("cannot start PostgreSQL for the tests: {e}"),
                Err(e) => panic!("cannot start PostgreSQL for the tests: {e}"),
            }
        });
        Some(pg)
    }

    fn init(bin: PathBuf, death_signal: Option<&str>) -> Result<TempPostgres, String> {
        let dir =
            std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{}", std::process::id(), next_id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut pg = TempPostgres {
            dir,
            bin,
            server: None,
            owned: true,
        };
        if is_root() {
            // PostgreSQL refuses to run as root: the directory goes to its system user.
            run(Command::new("chown").arg("-R").arg(SUPERUSER).arg(&pg.dir))?;
        }
        let data = pg.dir.join("data");
        run(pg
            .command("initdb", None)
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .arg("--no-instructions"))?;
        let server = pg
            .command("postgres", death_signal)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&pg.dir)
            .args(["-c", "listen_addresses=", "-p", &PORT.to_string()])
            // Throwaway data: no fsync, so tests are quick.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        pg.server = Some(server);
        pg.owned = death_signal.is_none();
        pg.wait_ready(Duration::from_secs(30))?;
        Ok(pg)
    }

    /// A command running PostgreSQL's program `name`, as its system user when we are root.
    fn command(&self, name: &str, death_signal: Option<&str>) -> Command {
        let program = self.bin.join(name);
        let mut cmd = Command::new("setpriv");
        if is_root() {
            cmd.args(["--reuid", SUPERUSER, "--regid", SUPERUSER, "--clear-groups"]);
        }
        if let Some(sig) = death_signal {
            cmd.args(["--pdeathsig", sig]);
        }
        cmd.arg(program)
            .env("HOME", &self.dir)
            .current_dir(&self.dir);
        cmd
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let ready = self
                .command("pg_isready", None)
                .arg("-q")
                .args(["-h", &self.dir.to_string_lossy(), "-p", &PORT.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.server.as_mut().map(|c| c.try_wait()) {
                return Err(format!("postgres exited at start: {status}"));
            }
            if started.elapsed() > limit {
                return Err(format!("postgres not ready after {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id (for a benchmark to measure its CPU time; its backends are its
    /// children), None while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// The directory holding the server's socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// PostgreSQL's program `name` (`pg_dump`, `psql`...), run as a user the server trusts.
    pub fn tool(&self, name: &str) -> Command {
        self.command(name, None)
    }

    /// Creates a new, empty database and returns its name.
    pub fn create_database(&self) -> Result<String, String> {
        let name = format!("test_{}_{}", std::process::id(), next_id());
        run(self
            .command("createdb", None)
            .args(["-h", &self.dir.to_string_lossy(), "-p", &PORT.to_string()])
            .args(["-U", SUPERUSER, &name]))?;
        Ok(name)
    }

    /// The connection URL of database `db` (unix socket, trusted superuser).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@/{db}?host={}&port={PORT}",
            self.dir.display()
        )
    }

    /// Stops the server (fast shutdown: sessions are ended) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(server.id().to_string())
                .status();
            let _ = server.wait();
        }
    }

    /// Starts the stopped server again on the same data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let server = self
            .command("postgres", None)
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=", "-p", &PORT.to_string()])
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        self.server = Some(server);
        self.wait_ready(Duration::from_secs(30))
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.owned {
            self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn is_root() -> bool {
    // /proc/self belongs to the process's own (effective) user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes the directories of shared servers whose test process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
