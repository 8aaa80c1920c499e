//! Socket activation: chatd started by `systemd-socket-activate` (the same LISTEN_FDS
//! protocol as `chatd.socket`) serves the TLS port and control socket it was handed, and
//! binds nothing itself.

use std::process::{Command, Stdio};

use crate::harness::{Lines, Raw, bins, ctl_at, write_config};

/// Where systemd's test tool lives (the `systemd` package).
const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

#[test]
fn chatd_serves_the_sockets_systemd_passes() {
    assert!(
        std::path::Path::new(ACTIVATE).exists(),
        "{ACTIVATE} is missing: install the systemd package to run this test"
    );
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago; systemd-socket-activate binds it, not chatd.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The file names another port: status must report the passed one, proving chatd used it.
    let (file, control) = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(&file, text).unwrap();
    let child = Command::new(ACTIVATE)
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--listen={}", control.display()))
        .arg(&bins().chatd)
        .arg("--config")
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn systemd-socket-activate");
    let mut child = KillOnDrop(child);
    let mut log = Lines::spawn(child.0.stderr.take().unwrap(), "chatd stderr");
    log.expect_contains("Listening on");

    // The first connection starts chatd, which answers it on the inherited socket.
    let status = ctl_at(&control, &["status", "--json"], None);
    status.assert_ok();
    let listen = status.json()["listen"].as_str().unwrap().to_string();
    assert_eq!(listen, format!("127.0.0.1:{port}"), "{}", log.dump());
    let line = log.expect_contains("certificate fingerprint ");
    let fingerprint = line.rsplit(' ').next().unwrap().to_string();
    let mut raw = Raw::connect_to(listen.parse().unwrap(), &fingerprint);
    assert_eq!(raw.hello()["type"], "hello");

    // systemd owns the socket file: chatd leaves it in place when it stops.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    log.expect_contains("stopped");
    assert!(control.exists(), "chatd removed systemd's socket file");
}

/// systemd-socket-activate execs chatd in its place: killing it kills chatd.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
