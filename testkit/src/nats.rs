//! A throwaway NATS server for tests: Debian's `nats-server` on a loopback port the kernel
//! picks, which it writes to a ports file in a temporary directory.
//!
//! The server can be stopped and started again on the same port ([`TempNats::stop`],
//! [`TempNats::restart`]), as the cluster tests need to take the bus away under running nodes.
//! It is killed, and its directory removed, on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server program Debian's package installs.
const PROGRAM: &str = "nats-server";

/// True if nats-server can be started. False (with a note) when it is not installed and `CI`
/// is not set; panics when it is not installed but `CI` is set, since `.ci/run` installs it.
pub fn available() -> bool {
    let found = Command::new(PROGRAM)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nats-server is not installed but CI is set (.ci/run installs it)"
    );
    eprintln!("nats-server is not installed: skipping this cluster test (CI runs it)");
    false
}

/// A running nats-server on 127.0.0.1.
pub struct TempNats {
    dir: tempfile::TempDir,
    server: Option<Child>,
    port: u16,
    /// The token clients must give (`--auth`), if any.
    token: Option<String>,
}

impl TempNats {
    /// Starts a server on a free loopback port.
    pub fn start() -> Result<TempNats, String> {
        TempNats::start_with(None)
    }

    /// Starts a server that wants `token` from every client.
    pub fn start_with_token(token: &str) -> Result<TempNats, String> {
        TempNats::start_with(Some(token.to_string()))
    }

    fn start_with(token: Option<String>) -> Result<TempNats, String> {
        let dir = tempfile::Builder::new()
            .prefix("chatd-testnats-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let mut nats = TempNats {
            dir,
            server: None,
            port: 0,
            token,
        };
        nats.spawn(None)?;
        Ok(nats)
    }

    /// `nats://127.0.0.1:PORT`, for `[cluster] nats`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (for a test to measure its CPU time), None while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL: the nodes see their connection drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let port = self.port;
        // The port was just freed; another process may take it in between, rarely.
        let started = Instant::now();
        loop {
            match self.spawn(Some(port)) {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() > Duration::from_secs(10) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn ports_file(&self) -> Option<PathBuf> {
        let pid = self.server.as_ref()?.id();
        Some(self.dir.path().join(format!("{PROGRAM}_{pid}.ports")))
    }

    fn spawn(&mut self, port: Option<u16>) -> Result<(), String> {
        let port_arg = port.map_or_else(|| "-1".to_string(), |p| p.to_string());
        let mut cmd = Command::new(PROGRAM);
        if let Some(token) = &self.token {
            cmd.args(["--auth", token]);
        }
        let child = cmd
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .arg("--ports_file_dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {PROGRAM}: {e}"))?;
        self.server = Some(child);
        let started = Instant::now();
        loop {
            if let Some(found) = self.read_port() {
                self.port = found;
                if std::net::TcpStream::connect(("127.0.0.1", found)).is_ok() {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.server.as_mut().map(Child::try_wait) {
                self.server = None;
                return Err(format!("{PROGRAM} exited at start: {status}"));
            }
            if started.elapsed() > Duration::from_secs(20) {
                self.stop();
                return Err(format!("{PROGRAM} not listening after 20 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The client port from the ports file (`{"nats": ["nats://127.0.0.1:PORT"], ...}`).
    fn read_port(&self) -> Option<u16> {
        let text = std::fs::read_to_string(self.ports_file()?).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let url = json.get("nats")?.get(0)?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    }
}

impl Drop for TempNats {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// The server answers the NATS protocol on the port the ports file named, stops, and
    /// answers again after a restart on the same port.
    #[test]
    fn starts_stops_and_restarts_on_one_port() {
        if !available() {
            return;
        }
        let mut nats = TempNats::start().unwrap();
        let info = |port: u16| {
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            line
        };
        let port = nats.port();
        assert!(info(port).starts_with("INFO "), "not a NATS server");
        assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
        nats.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        nats.restart().unwrap();
        assert_eq!(nats.port(), port);
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"PING\r\n").unwrap();
        assert!(info(port).starts_with("INFO "));
    }
}
