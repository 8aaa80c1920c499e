
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
