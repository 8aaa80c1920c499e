//! Live reload (SIGHUP and `chatctl reload`) of the real chatd: new limits and a new
//! certificate take effect while connected clients stay connected; an invalid file changes
//! nothing.

use std::path::{Path, PathBuf};

use chatd_proto::Fingerprint;
use nix::sys::signal::Signal;

use crate::harness::{Mode, Raw, Server, write_config};

/// A fresh self-signed certificate for 127.0.0.1 in `dir`; returns its `[tls]` table and
/// fingerprint.
fn new_certificate(dir: &Path) -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("rcgen");
    let cert: PathBuf = dir.join("cert.pem");
    let key: PathBuf = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let fingerprint = Fingerprint::of(certified.cert.der()).to_string();
    (
        format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n"),
        fingerprint,
    )
}

#[test]
fn sighup_applies_a_new_limit_and_keeps_clients_connected() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_limits(dir.path(), "max_text_bytes = 4000");
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut alice = Raw::login(&server, "alice", "pw");
    let mut bob = Raw::login(&server, "bob", "pw");
    alice.recv_type("presence");
    let long = "x".repeat(1000);
    let data = alice.say(&long);
    bob.expect_envelope("alice", &data);
    alice.expect_envelope("alice", &data);

    write_config(dir.path(), "[limits]\nmax_text_bytes = 500\n");
    server.signal(Signal::SIGHUP);
    server
        .log
        .expect_contains("configuration reloaded; changed: limits.max_text_bytes");

    // The same connections, now under the new limit.
    alice.say(&long);
    let msg = alice.expect_error("bad_text");
    assert!(msg.contains("the limit is 500"), "{msg}");
    let data = alice.say("short");
    bob.expect_envelope("alice", &data);
    alice.expect_envelope("alice", &data);
    // New connections are told the new limit.
    let mut carol = Raw::connect(&server);
    assert_eq!(carol.hello()["max_text_bytes"], 500);
    assert!(
        server
            .log
            .all()
            .iter()
            .all(|l| !l.contains("reload refused"))
    );
}

#[test]
fn an_invalid_config_is_refused_and_the_old_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_limits(dir.path(), "max_text_bytes = 500");
    server.add_user("alice", "pw");
    let mut alice = Raw::login(&server, "alice", "pw");

    // A bad value, through chatctl: refused with the reason, exit status 1.
    write_config(dir.path(), "[limits]\nmax_text_bytes = 0\n");
    let out = server.ctl(&["reload"], None);
    let err = out.assert_code(1);
    assert!(
        err.contains("reload refused") && err.contains("max_text_bytes"),
        "{err}"
    );
    server.log.expect_contains("reload refused");
    // A typo, through SIGHUP: refused and logged with the key.
    write_config(dir.path(), "[limits]\nmax_text_byte = 9000\n");
    server.signal(Signal::SIGHUP);
    server.log.expect_contains("reload refused");
    // The parser's message (on the lines that follow) names the unknown key.
    server.log.expect_contains("max_text_byte");

    // Still 500, on the old connection and on new ones.
    alice.say(&"x".repeat(1000));
    assert!(alice.expect_error("bad_text").contains("the limit is 500"));
    alice.sync(1);
    assert_eq!(Raw::connect(&server).hello()["max_text_bytes"], 500);

    // A setting bound to the running process is reported, and the rest still applies.
    write_config(
        dir.path(),
        "[limits]\nmax_text_bytes = 600\nmax_connections = 7\n",
    );
    let out = server.ctl(&["reload"], None);
    out.assert_ok();
    assert!(
        out.stdout.contains("changed: limits.max_text_bytes")
            && out
                .stdout
                .contains("needs a restart to change: limits.max_connections"),
        "{}",
        out.stdout
    );
    assert_eq!(Raw::connect(&server).hello()["max_text_bytes"], 600);
}

#[test]
fn reload_serves_a_new_certificate_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let (table, first) = new_certificate(&tls);
    let server = Server::with_config(dir.path(), &table);
    assert_eq!(server.fingerprint, first);
    server.add_user("alice", "pw");
    let mut alice = Raw::login(&server, "alice", "pw");

    let (_, second) = new_certificate(&tls);
    let out = server.ctl(&["reload"], None);
    out.assert_ok();
    assert!(
        out.stdout.contains(&format!("new certificate {second}")),
        "{}",
        out.stdout
    );
    // New connections get the new certificate (Raw pins it), the old one keeps going.
    Raw::connect_to(server.addr, &second).hello();
    alice.sync(7);
    let status = server.ctl(&["status", "--json"], None).json();
    assert_eq!(status["cert_fingerprint"], second.as_str());

    // A broken key is refused: the second certificate stays in force.
    std::fs::write(tls.join("key.pem"), "not a key").unwrap();
    let err = server.ctl(&["reload"], None).assert_code(1).to_string();
    assert!(err.contains("key.pem"), "{err}");
    Raw::connect_to(server.addr, &second).hello();
    alice.sync(8);
}

#[test]
fn reload_changes_the_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_config(dir.path(), "[log]\nlevel = \"info\"\n");
    Raw::connect(&server).hello();
    write_config(dir.path(), "[log]\nlevel = \"debug\"\n");
    server.signal(Signal::SIGHUP);
    server
        .log
        .expect_contains("configuration reloaded; changed: log.level");
    // `hello` is logged at debug level only.
    Raw::connect(&server).hello();
    server.log.expect_contains("DEBUG");
    let before_reload = server
        .log
        .all()
        .iter()
        .take_while(|l| !l.contains("configuration reloaded"))
        .any(|l| l.contains("DEBUG"));
    assert!(!before_reload, "{}", server.log.dump());
}

/// A wrapper (`bash -c SCRIPT bash CHATD ARGS...`) that execs chatd while a background shell
/// sends it `signal` as early as a test can time it, then repeatedly over the next ~100 ms.
/// "As early": once the process is chatd (`/proc/PID/exe`) and has a second thread, i.e. the
/// moment the tokio runtime starts, before the configuration is read, logging is set up and
/// the handlers exist. (chatd blocks the signals a little earlier still, first thing in
/// `main`; but signals sent before `main` runs, while the loader maps the binary, kill any
/// process, and nothing visible from outside marks `main`'s first instruction.) The wait and
/// the first signals use bash builtins only, so they come microseconds apart. The shell execs
/// chatd only once the sender runs (its first signal, caught by a trap, is the sign; exec
/// resets the trap to the default action).
fn signalling_wrapper(signal: &str) -> Vec<std::ffi::OsString> {
    let script = format!(
        r#"ready=
trap ready=1 {signal}
pid=$$
(
  exec >/dev/null 2>&1
  kill -{signal} $pid
  for ((n = 0; n < 1000000; n++)); do
    [[ /proc/$pid/exe -ef $1 ]] || continue
    tasks=(/proc/$pid/task/*)
    (( ${{#tasks[@]}} > 1 )) && break
  done
  for ((i = 0; i < 200; i++)); do kill -{signal} $pid || exit 0; done
  for ((i = 0; i < 20; i++)); do kill -{signal} $pid || exit 0; sleep 0.005; done
) &
until [[ $ready ]]; do :; done
trap : {signal}
exec "$@""#
    );
    ["bash", "-c", &script, "bash"].map(Into::into).to_vec()
}

/// How many times each early-signal test starts chatd: the window the test can hit is short
/// (a few ms), and several starts make hitting it very likely whatever the machine's load.
const EARLY_SIGNAL_STARTS: usize = 5;

fn start_signalled(dir: &Path, signal: &str) -> Server {
    let (file, control) = write_config(dir, "");
    Server::try_start_wrapped(
        Mode::Config {
            file: &file,
            control: &control,
        },
        &[],
        &signalling_wrapper(signal),
    )
    .unwrap_or_else(|f| {
        panic!(
            "chatd died instead of starting ({}):\n{}",
            f.status, f.stderr
        )
    })
}

#[test]
fn sighup_at_the_earliest_moment_is_a_reload_once_started() {
    let dir = tempfile::tempdir().unwrap();
    for start in 0..EARLY_SIGNAL_STARTS {
        let mut server = start_signalled(dir.path(), "HUP");
        let line = server.log.expect_contains("configuration reloaded");
        assert!(line.contains("SIGHUP"), "{line}");
        if start == 0 {
            server.add_user("alice", "pw");
        }
        Raw::login(&server, "alice", "pw").sync(1);
        assert!(server.stop_sigterm().success(), "{}", server.log.dump());
    }
}

#[test]
fn sigterm_at_the_earliest_moment_is_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..EARLY_SIGNAL_STARTS {
        let mut server = start_signalled(dir.path(), "TERM");
        let status = server.wait_exit();
        assert_eq!(status.code(), Some(0), "{status}: {}", server.log.dump());
        let log = server.log.all();
        assert!(
            log.iter().any(|l| l.contains("SIGTERM received")),
            "{log:?}"
        );
        assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
    }
}
