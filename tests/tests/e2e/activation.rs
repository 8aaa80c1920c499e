//! Socket activation: chatd started by `systemd-socket-activate` (the same LISTEN_FDS
//! protocol as `chatd.socket`) serves the TLS port and control socket it was handed, and
//! binds nothing itself; the TLS key read from a systemd credential (`LoadCredential=`); and
//! the sd_notify messages systemd receives.

use std::process::{Command, Stdio};

use chatd_proto::Fingerprint;

use crate::harness::{Lines, Mode, Raw, Server, TIMEOUT, bins, ctl_at, write_config};

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

/// `LoadCredential=tls.key:...` puts the key in `$CREDENTIALS_DIRECTORY`; `%d/tls.key` in the
/// config names it there.
#[test]
fn tls_key_from_a_systemd_credential() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("rcgen");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(creds.join("tls.key"), certified.signing_key.serialize_pem()).unwrap();
    let (file, control) = write_config(
        dir.path(),
        &format!("[tls]\ncert = {cert:?}\nkey = \"%d/tls.key\"\n"),
    );
    let mode = || Mode::Config {
        file: &file,
        control: &control,
    };

    // Outside systemd there is no credentials directory: a clear refusal.
    let failure = Server::try_start(mode())
        .err()
        .expect("chatd started without its key");
    assert!(
        failure.stderr.contains("CREDENTIALS_DIRECTORY is not set")
            && failure.stderr.contains("LoadCredential="),
        "{}",
        failure.stderr
    );

    let creds = creds.to_str().unwrap();
    let server = Server::try_start_env(mode(), &[("CREDENTIALS_DIRECTORY", creds)])
        .unwrap_or_else(|f| panic!("chatd failed to start: {}", f.stderr));
    assert_eq!(
        server.fingerprint,
        Fingerprint::of(certified.cert.der()).to_string()
    );
    Raw::connect(&server).hello();
}

/// The sd_notify protocol as systemd sees it (`Type=notify`, `WatchdogSec=`): a datagram
/// socket in `NOTIFY_SOCKET` receives READY=1 with a status line, watchdog pings,
/// RELOADING=1 with a timestamp around a reload, and STOPPING=1 on SIGTERM.
#[test]
fn chatd_notifies_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(TIMEOUT)).unwrap();
    let next = |want: &str| -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want} from chatd: {e}"));
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.lines().any(|l| l == want) {
                return msg;
            }
        }
    };
    let (file, control) = write_config(dir.path(), "");
    let mut server = Server::try_start_env(
        Mode::Config {
            file: &file,
            control: &control,
        },
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            // Two seconds: chatd pings every second.
            ("WATCHDOG_USEC", "2000000"),
        ],
    )
    .unwrap_or_else(|f| panic!("chatd failed to start: {}", f.stderr));

    let ready = next("READY=1");
    assert!(
        ready.contains("STATUS=0 session(s), 0 user(s) online; up "),
        "{ready}"
    );
    // Ready means both sockets answer.
    server.ctl(&["status"], None).assert_ok();
    Raw::connect(&server).hello();
    next("WATCHDOG=1");
    next("WATCHDOG=1");

    server.signal(nix::sys::signal::Signal::SIGHUP);
    let reloading = next("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let reloaded = next("READY=1");
    assert!(reloaded.contains("configuration reloaded"), "{reloaded}");

    assert!(server.stop_sigterm().success());
    next("STOPPING=1");
}
