//! chatd's life: configuration checks, config-file runs, restarts, second instances, SIGTERM.

use std::ffi::OsStr;
use std::path::Path;

use serde_json::json;

use crate::harness::{
    Chat, ClientHome, Closed, Mode, Raw, Server, exactly, loopback0, run_chat, run_chatd,
};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// `chatd --check-config --config FILE`.
fn check_config(file: &Path) -> (Option<i32>, String, String) {
    let (status, out, err) = run_chatd(&[
        OsStr::new("--check-config"),
        OsStr::new("--config"),
        file.as_os_str(),
    ]);
    (status.code(), out, err)
}

#[test]
fn restart_keeps_accounts_and_certificate() {
    let data = tempfile::tempdir().unwrap();
    let mut first = Server::start_in(data.path(), loopback0());
    first.add_user("alice", "pw-a");
    first.add_user("bob", "pw-b");
    first
        .ctl(
            &["user", "passwd", "bob", "--password-stdin"],
            Some("pw-b2\n"),
        )
        .assert_ok();
    first.ctl(&["user", "lock", "alice"], None).assert_ok();
    let fingerprint = first.fingerprint.clone();
    let status = first.stop_sigterm();
    assert_eq!(status.code(), Some(0), "{}", first.log.dump());
    assert!(
        !data.path().join("control.sock").exists(),
        "the control socket is removed on shutdown"
    );
    drop(first);

    let second = Server::start_in(data.path(), loopback0());
    assert_eq!(second.fingerprint, fingerprint, "the certificate is kept");
    assert!(
        !second
            .log
            .dump()
            .contains("generated a self-signed certificate"),
        "no new certificate on restart"
    );
    let list = second.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(list["users"][0]["user"], "alice");
    assert_eq!(list["users"][0]["locked"], true, "the lock is kept");
    assert_eq!(list["users"][1]["user"], "bob");
    // The changed password is the one that survived.
    let _bob = Raw::login(&second, "bob", "pw-b2");
    let mut raw = Raw::connect(&second);
    raw.hello();
    assert_eq!(raw.try_login("bob", "pw-b")["code"], "invalid_credentials");
    assert_eq!(
        raw.try_login("alice", "pw-a")["code"],
        "invalid_credentials"
    );
    // The fingerprint a client accepted before the restart is still the right one.
    assert_eq!(second.fingerprint, fingerprint);
    let mut chat = Chat::login(&second, "bob", "pw-b2", &ClientHome::new());
    chat.send("/list");
    chat.out
        .expect("online list", exactly("-- online: bob (2 sessions)"));
}

#[test]
fn sigterm_says_bye_to_everyone_and_exits_zero() {
    let mut server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut greeted = Raw::connect(&server);
    greeted.hello();
    let mut bob = Chat::login(&server, "bob", "pw-b", &ClientHome::new());
    alice.recv_type("presence");

    let status = server.stop_sigterm();
    assert_eq!(status.code(), Some(0), "{}", server.log.dump());

    for raw in [&mut alice, &mut greeted] {
        // alice may first see bob leave; the bye is what matters.
        let mut frame = raw.recv();
        if frame["type"] == "presence" {
            assert_eq!(
                frame,
                json!({"type":"presence","user":"bob","event":"leave","reason":"server shutting down"})
            );
            frame = raw.recv();
        }
        assert_eq!(frame, json!({"type":"bye","reason":"server shutting down"}));
        assert_eq!(raw.expect_closed(), Closed::Clean);
    }
    bob.out.expect(
        "the shutdown notice",
        exactly("-- server closed the connection: server shutting down"),
    );
    assert_eq!(bob.wait().status.code(), Some(1));
    let log = server.log.all();
    assert!(
        log.iter().any(|l| l.ends_with("SIGTERM received")),
        "{log:#?}"
    );
    assert!(
        log.last().is_some_and(|l| l.ends_with("stopped")),
        "{log:#?}"
    );
}

#[test]
fn second_instance_on_the_same_data_dir_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let first = Server::start_in(data.path(), loopback0());
    let failure = Server::try_start(Mode::Dev {
        data_dir: data.path(),
        listen: loopback0(),
    })
    .err()
    .expect("a second chatd on the same data dir must not start");
    assert_eq!(failure.status.code(), Some(1));
    assert_eq!(
        failure.stderr,
        format!(
            "chatd: error: another chatd is already running with state directory {}",
            data.path().display()
        )
    );
    // The first one is unharmed: its control socket still answers.
    let status = first.ctl(&["--json", "status"], None).json();
    assert_eq!(status["cert_fingerprint"], first.fingerprint.as_str());
    assert!(data.path().join("control.sock").exists());
}

#[test]
fn second_instance_on_the_same_port_is_refused() {
    let first = Server::start();
    let other = tempfile::tempdir().unwrap();
    let failure = Server::try_start(Mode::Dev {
        data_dir: other.path(),
        listen: first.addr,
    })
    .err()
    .expect("a second chatd on the same port must not start");
    assert_eq!(failure.status.code(), Some(1));
    let want = format!("chatd: error: cannot listen on {}: ", first.addr);
    assert!(failure.stderr.contains(&want), "{}", failure.stderr);
    assert!(
        failure
            .stderr
            .to_lowercase()
            .contains("address already in use"),
        "{}",
        failure.stderr
    );
    assert!(!other.path().join("control.sock").exists());
    // The first server still serves.
    first.add_user("alice", "pw");
    let _alice = Raw::login(&first, "alice", "pw");
}

#[test]
fn check_config_names_unknown_keys_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();

    let file = dir.path().join("typo.toml");
    write(&file, "[server]\nlisten = \"127.0.0.1:9000\"\nlisen = 3\n");
    let (code, out, err) = check_config(&file);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.starts_with("chatd: error: invalid config file "),
        "{err}"
    );
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("line 3") && err.contains("lisen"), "{err}");
    assert!(!out.contains("valid"), "{out}");

    let file = dir.path().join("small.toml");
    write(&file, "[limits]\n\nmax_line_bytes = 10\n");
    let (code, _, err) = check_config(&file);
    assert_eq!(code, Some(1));
    assert!(err.contains("line 3"), "{err}");
    assert!(
        err.contains("max_line_bytes must be between 1024 and 16777216, got 10"),
        "{err}"
    );

    let file = dir.path().join("cross.toml");
    write(
        &file,
        "[limits]\nmax_line_bytes = 2048\nmax_text_bytes = 4096\n",
    );
    let (code, _, err) = check_config(&file);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("limits.max_text_bytes") && err.contains("limits.max_line_bytes"),
        "{err}"
    );

    let missing = dir.path().join("missing.toml");
    let (code, _, err) = check_config(&missing);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot read config file") && err.contains("missing.toml"),
        "{err}"
    );
}

#[test]
fn check_config_accepts_valid_files() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/chatd.toml");
    let (code, out, err) = check_config(&shipped);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!("{}: configuration is valid", shipped.display())
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.toml");
    write(
        &file,
        "[server]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_line_bytes = 1109\nmax_text_bytes = 100\n",
    );
    let (code, out, err) = check_config(&file);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("configuration is valid"), "{out}");
    // Checking starts nothing: no state dir, no socket, no certificate.
    assert!(!dir.path().join("state").exists());
    assert!(!err.contains("error"), "{err}");
}

/// The name of a group that exists here (the test's own).
fn own_group() -> String {
    nix::unistd::Group::from_gid(nix::unistd::getgid())
        .unwrap()
        .expect("the test's group has a name")
        .name
}

/// A config file in `dir` whose admin group exists, with `tables` after `[server]`.
fn checked_config(dir: &Path, tables: &str) -> std::path::PathBuf {
    let file = dir.join("chatd.toml");
    write(
        &file,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\nadmin_group = {:?}\n{tables}",
            dir.join("state"),
            own_group()
        ),
    );
    file
}

/// A fresh self-signed certificate and key as PEM text.
fn pem_pair() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

#[test]
fn check_config_refuses_a_missing_unreadable_or_mismatched_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let (cert, key) = (p.join("cert.pem"), p.join("key.pem"));
    let tls = format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n");
    let file = checked_config(p, &tls);

    // Missing files: refused, naming the file (start-up would fail the same way).
    let (code, out, err) = check_config(&file);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("chatd: error: ") && err.contains("cert.pem"),
        "{err}"
    );
    assert!(!out.contains("valid"), "{out}");

    // Not PEM.
    write(&cert, "not a certificate");
    write(&key, "not a key");
    let (code, _, err) = check_config(&file);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cert.pem") && err.contains("no certificate"),
        "{err}"
    );

    // A key that is not the certificate's.
    let (cert_a, _) = pem_pair();
    let (_, key_b) = pem_pair();
    write(&cert, &cert_a);
    write(&key, &key_b);
    let (code, _, err) = check_config(&file);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("unusable certificate or key"), "{err}");
    assert!(!p.join("state").exists(), "checking created the state dir");
    let (status, _, start_err) = run_chatd(&[OsStr::new("--config"), file.as_os_str()]);
    assert_eq!(status.code(), Some(1), "start-up accepted it: {start_err}");

    // An unreadable key (mode 000; root reads anything, so only as another user).
    let (cert_a, key_a) = pem_pair();
    write(&cert, &cert_a);
    write(&key, &key_a);
    let (code, out, err) = check_config(&file);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("configuration is valid"), "{out}");
    assert!(err.is_empty(), "{err}");
    if !nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .unwrap();
        let (code, _, err) = check_config(&file);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("key.pem"), "{err}");
    }
}

#[test]
fn a_log_level_that_names_no_level_is_refused_by_check_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = checked_config(dir.path(), "[log]\nlevel = \"verbose\"\n");
    let (code, out, err) = check_config(&file);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("log.level \"verbose\"") && err.contains("is not a level"),
        "{err}"
    );
    // Start-up refuses it too, instead of running with no log at all.
    let (status, _, err) = run_chatd(&[OsStr::new("--config"), file.as_os_str()]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("is not a level"), "{err}");

    let file = checked_config(dir.path(), "[log]\nlevel = \"warn,chatd=debug\"\n");
    let (code, _, err) = check_config(&file);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn check_config_warns_of_plugins_that_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let plain = p.join("plain.sh");
    write(&plain, "#!/bin/sh\necho '{}'\n");
    let good = p.join("good.sh");
    write(&good, "#!/bin/sh\necho '{}'\n");
    std::fs::set_permissions(&good, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut tables = String::new();
    for (name, exec) in [
        ("gone", p.join("no-such-program")),
        ("plain", plain),
        ("dir", p.to_path_buf()),
        ("good", good),
    ] {
        tables += &format!("[[plugins]]\nname = {name:?}\nexec = {exec:?}\n");
    }
    let file = checked_config(p, &tables);
    let (code, out, err) = check_config(&file);
    // Start-up runs with them (their calls fail), so: warnings, exit 0.
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("configuration is valid"), "{out}");
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 3, "{err}");
    assert!(
        warnings[0].starts_with("chatd: warning: plugin \"gone\": ")
            && warnings[0].contains("no-such-program")
            && warnings[0].ends_with("/gone would fail"),
        "{err}"
    );
    assert!(
        warnings[1].contains("plugin \"plain\"") && warnings[1].contains("is not executable"),
        "{err}"
    );
    assert!(
        warnings[2].contains("plugin \"dir\"") && warnings[2].contains("is not a file"),
        "{err}"
    );
}

#[test]
fn check_config_warns_of_a_missing_admin_group() {
    let dir = tempfile::tempdir().unwrap();
    let file = checked_config(dir.path(), "");
    let (code, _, err) = check_config(&file);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");

    let file = dir.path().join("nogroup.toml");
    write(
        &file,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_group = \"chatd-test-no-such-group\"\n",
    );
    let (code, out, err) = check_config(&file);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.ends_with("configuration is valid"), "{out}");
    assert_eq!(
        err,
        "chatd: warning: server.admin_group: group \"chatd-test-no-such-group\" does not \
         exist; only root and chatd's own user will be able to use chatctl"
    );
}

#[test]
fn config_file_run_enforces_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let control = dir.path().join("run").join("ctl.sock");
    let file = dir.path().join("chatd.toml");
    write(
        &file,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\ncontrol_socket = {control:?}\n\
             [limits]\nmax_line_bytes = 2048\nmax_text_bytes = 512\nmax_protocol_errors = 3\n\
             login_timeout_secs = 2\nmax_sessions_per_user = 2\n[commands]\ndisabled = [\"list\"]\n",
        ),
    );
    let server = Server::try_start(Mode::Config {
        file: &file,
        control: &control,
    })
    .unwrap_or_else(|f| panic!("chatd --config failed ({}): {}", f.status, f.stderr));
    assert!(state.join("chatd.db").exists() && state.join("cert.pem").exists());
    server.add_user("alice", "pw-a");

    let mut raw = Raw::connect(&server);
    let hello = raw.hello();
    assert_eq!(hello["max_line_bytes"], 2048);
    assert_eq!(hello["max_text_bytes"], 512);
    assert_eq!(raw.try_login("alice", "pw-a")["type"], "login_ok");

    // Line limit at the edge: 2048 bytes pass, 2049 do not.
    let line = |nonce: u64, len: usize| {
        let head = format!(r#"{{"type":"ping","nonce":{nonce},"pad":""#);
        format!("{head}{}\"}}", "p".repeat(len - head.len() - 2))
    };
    assert_eq!(line(1, 2048).len(), 2048);
    raw.send_line(&line(1, 2048));
    assert_eq!(raw.recv(), json!({"type":"pong","nonce":1}));
    raw.send_line(&line(2, 2049));
    assert_eq!(
        raw.expect_error("frame_too_long"),
        "line longer than 2048 bytes"
    );
    raw.sync(3);

    // Text limit at the edge.
    let sent = raw.say(&"t".repeat(512));
    assert_eq!(raw.recv()["data"], sent);
    raw.say(&"t".repeat(513));
    assert_eq!(
        raw.expect_error("bad_text"),
        "message is 513 bytes sealed; the limit is 512"
    );

    // Disabled commands are gone, also from help.
    raw.command("list", "");
    raw.expect_error("unknown_command");
    raw.command("help", "");
    let help = raw.recv_type("help");
    assert!(
        help["commands"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "list"),
        "{help}"
    );

    // max_sessions_per_user = 2: a second session is fine, a third is refused.
    let _second = Raw::login(&server, "alice", "pw-a");
    let mut third = Raw::connect(&server);
    third.hello();
    assert_eq!(
        third.try_login("alice", "pw-a"),
        json!({"type":"error","code":"too_many_sessions","message":"too many sessions for this user (limit 2)"})
    );
    third.expect_bye("too many sessions");
    assert_eq!(third.expect_closed(), Closed::Clean);

    // max_protocol_errors = 3: two more violations end it.
    raw.send_line("nope");
    raw.expect_error("bad_frame");
    raw.send_line("nope");
    raw.expect_error("bad_frame");
    raw.expect_bye("too many protocol errors");
    assert_eq!(raw.expect_closed(), Closed::Clean);

    // login_timeout_secs = 2: a client that never logs in is sent away.
    let mut idle = Raw::connect(&server);
    idle.hello();
    idle.expect_bye("login timed out");
    assert_eq!(idle.expect_closed(), Closed::Clean);
}

#[test]
fn sigint_is_a_graceful_shutdown_too() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), loopback0());
    server.add_user("alice", "pw-a");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let status = server.stop_with(nix::sys::signal::Signal::SIGINT);
    assert_eq!(status.code(), Some(0), "{}", server.log.dump());
    alice.expect_bye("server shutting down");
    assert_eq!(alice.expect_closed(), Closed::Clean);
    assert!(
        server
            .log
            .all()
            .iter()
            .any(|l| l.ends_with("SIGINT received"))
    );
    // The WAL was checkpointed into the database on the way out.
    let wal = data.path().join("chatd.db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "WAL left behind after a clean shutdown");
    assert!(!data.path().join("control.sock").exists());
}

#[test]
fn crash_then_restart_recovers() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), loopback0());
    server.add_user("alice", "pw-a");
    let home = ClientHome::new();
    let chat = Chat::login(&server, "alice", "pw-a", &home);
    let addr = server.server_arg();

    // SIGKILL: no goodbye, no checkpoint, the socket file and lock file stay behind.
    let status = server.stop_with(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(status.code(), None, "killed by a signal");
    let exit = chat.wait();
    assert_eq!(exit.status.code(), Some(1));
    assert_eq!(
        exit.stderr.last().map(String::as_str),
        Some("chat: connection lost")
    );
    assert!(
        data.path().join("control.sock").exists(),
        "stale socket left behind"
    );

    // Nobody listens now: chat says so and exits 1.
    let exit = run_chat(&addr, "alice", "pw-a\n", &home, &[]);
    assert_eq!(exit.status.code(), Some(1));
    let err = exit.stderr.join("\n");
    assert!(err.contains(&format!("cannot connect to {addr}")), "{err}");

    // A restart replaces the stale socket, takes the lock again and still knows alice
    // (committed changes are durable without a clean shutdown).
    let restarted = Server::start_in(data.path(), loopback0());
    assert_eq!(restarted.fingerprint, server.fingerprint);
    let status = restarted.ctl(&["--json", "status"], None).json();
    assert_eq!(status["accounts"], 1);
    let _alice = Raw::login(&restarted, "alice", "pw-a");
}

#[test]
fn control_socket_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let config = |name: &str| {
        let file = dir.path().join(format!("{name}.toml"));
        write(
            &file,
            &format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\ncontrol_socket = {control:?}\n",
                dir.path().join(name)
            ),
        );
        file
    };
    let (first_file, second_file) = (config("first"), config("second"));
    let first = Server::try_start(Mode::Config {
        file: &first_file,
        control: &control,
    })
    .unwrap_or_else(|f| panic!("{}", f.stderr));
    let failure = Server::try_start(Mode::Config {
        file: &second_file,
        control: &control,
    })
    .err()
    .expect("a second chatd on a live control socket must not start");
    assert_eq!(failure.status.code(), Some(1));
    assert_eq!(
        failure.stderr,
        format!(
            "chatd: error: another chatd is already listening on the control socket {}",
            control.display()
        )
    );
    // The socket still belongs to the first chatd.
    let status = first.ctl(&["--json", "status"], None).json();
    assert_eq!(status["cert_fingerprint"], first.fingerprint.as_str());
}

#[test]
fn a_connection_that_never_starts_tls_does_not_hold_up_shutdown() {
    // Grace and handshake timeout far beyond the harness's 30 s deadline: if the silent
    // connection held chatd until either expired, stop_sigterm would time out.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let control = dir.path().join("ctl.sock");
    let file = dir.path().join("chatd.toml");
    write(
        &file,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\ncontrol_socket = {control:?}\n\
             [limits]\nhandshake_timeout_secs = 3600\nshutdown_grace_secs = 3600\n",
        ),
    );
    let mut server = Server::try_start(Mode::Config {
        file: &file,
        control: &control,
    })
    .unwrap_or_else(|f| panic!("chatd --config failed ({}): {}", f.status, f.stderr));
    let silent = std::net::TcpStream::connect(server.addr).unwrap();
    // A logged-in client too, which must still get its goodbye.
    server.add_user("alice", "pw-a");
    let mut raw = Raw::login(&server, "alice", "pw-a");
    let status = server.stop_sigterm();
    assert!(status.success(), "chatd exited with {status}");
    raw.expect_bye("server shutting down");
    drop(silent);
}
