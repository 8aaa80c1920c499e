//! `chat`'s device key and pins, named by the server's identity: nothing written before a
//! login succeeded, one key for two names of one server, host-named files of earlier versions
//! moved; three password tries at a terminal; `$USER` by default; a failing reconnect said once
//! and counted (issue 29).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{Chat, ChatExit, ClientHome, Server, bins, loopback0, run_chat};
use crate::tmux::{self, Tmux, frame, rows};

/// Every file under `dir`, relative, sorted (empty when `dir` does not exist).
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn chat_dir(home: &ClientHome) -> PathBuf {
    home.xdg_data().join("chat")
}

fn key_files(home: &ClientHome) -> Vec<String> {
    files_under(&chat_dir(home).join("keys"))
}

fn failed(exit: &ChatExit, code: i32) {
    assert_eq!(
        exit.status.code(),
        Some(code),
        "stdout {:?}\nstderr {:?}",
        exit.stdout,
        exit.stderr
    );
}

fn ok(exit: &ChatExit) {
    assert!(
        exit.status.success(),
        "stdout {:?}\nstderr {:?}",
        exit.stdout,
        exit.stderr
    );
}

/// The fingerprints of `user`'s keys on the server.
fn server_keys(server: &Server, user: &str) -> Vec<String> {
    let listed = server.ctl(&["--json", "key", "list", user], None).json();
    listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["fingerprint"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_mistyped_server_user_or_password_leaves_nothing_on_disk() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let home = ClientHome::generating();
    let accept = ["--accept-fingerprint", server.fingerprint.as_str()];
    let bits = ["--key-bits", "2048"];
    let args = [&accept[..], &bits[..]].concat();

    // Nothing listening.
    let closed = TcpListener::bind(loopback0()).unwrap();
    let nobody = closed.local_addr().unwrap().to_string();
    drop(closed);
    let exit = run_chat(&nobody, "alice", "pw\n", &home, &args);
    failed(&exit, 1);
    assert!(
        exit.stderr.iter().any(|l| l.contains("cannot connect")),
        "{:?}",
        exit.stderr
    );
    assert_eq!(files_under(&chat_dir(&home)), Vec::<String>::new());

    // Something that is not TLS: it answers and hangs up.
    let plain = TcpListener::bind(loopback0()).unwrap();
    let plain_addr = plain.local_addr().unwrap().to_string();
    let answering = std::thread::spawn(move || {
        if let Ok((mut s, _)) = plain.accept() {
            use std::io::Write;
            let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        }
    });
    let exit = run_chat(&plain_addr, "alice", "pw\n", &home, &args);
    failed(&exit, 1);
    answering.join().unwrap();
    assert_eq!(files_under(&chat_dir(&home)), Vec::<String>::new());

    // The right server, a wrong password, then an unknown user: refused, and still nothing
    // written: no key, no pin, no state.
    let addr = server.server_arg();
    let exit = run_chat(&addr, "alice", "wrong\n", &home, &args);
    failed(&exit, 3);
    assert!(
        exit.stderr.iter().any(|l| l.contains("login failed")),
        "{:?}",
        exit.stderr
    );
    let exit = run_chat(&addr, "alicee", "pw\n", &home, &args);
    failed(&exit, 3);
    assert_eq!(files_under(&chat_dir(&home)), Vec::<String>::new());
    assert!(server_keys(&server, "alice").is_empty());

    // The login that works keeps the key (named by the server's certificate) and the pin.
    let exit = run_chat(&addr, "alice", "pw\n", &home, &args);
    ok(&exit);
    let key = format!("alice@{}.pem", server.fingerprint);
    assert_eq!(key_files(&home), std::slice::from_ref(&key));
    let known = std::fs::read_to_string(home.known_servers()).unwrap();
    assert_eq!(known, format!("{addr} {}\n", server.fingerprint));
    let created = exit
        .stderr
        .iter()
        .find(|l| l.starts_with("chat: created device key "))
        .unwrap_or_else(|| panic!("{:?}", exit.stderr));
    assert!(created.ends_with(&key), "{created}");
    assert_eq!(server_keys(&server, "alice").len(), 1);
}

#[test]
fn localhost_after_127_0_0_1_is_the_same_server_one_key_and_no_new_device() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let alice_home = ClientHome::generating();
    let bits = ["--key-bits", "2048"];
    let accept = ["--accept-fingerprint", server.fingerprint.as_str()];
    let port = server.addr.port();
    let numeric = format!("127.0.0.1:{port}");
    let named = format!("localhost:{port}");

    let exit = run_chat(
        &numeric,
        "alice",
        "alice-pw\n",
        &alice_home,
        &[&accept[..], &bits[..]].concat(),
    );
    ok(&exit);
    let keys = server_keys(&server, "alice");
    assert_eq!(keys.len(), 1);

    // bob meets alice's key first.
    let bob_home = ClientHome::new();
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);

    // localhost: no --accept-fingerprint and nobody to ask, yet it connects: the certificate
    // is the one pinned for 127.0.0.1.
    let exit = run_chat(
        &named,
        "alice",
        "alice-pw\nhello from localhost\n",
        &alice_home,
        &bits,
    );
    ok(&exit);
    assert!(
        exit.stderr
            .iter()
            .any(|l| l.contains("the same server under another name")),
        "{:?}",
        exit.stderr
    );
    assert!(
        !exit.stderr.iter().any(|l| l.contains("created device key")),
        "{:?}",
        exit.stderr
    );
    assert_eq!(
        key_files(&alice_home),
        [format!("alice@{}.pem", server.fingerprint)]
    );
    assert_eq!(server_keys(&server, "alice"), keys);
    let known = std::fs::read_to_string(alice_home.known_servers()).unwrap();
    assert_eq!(
        known,
        format!("{numeric} {fp}\n{named} {fp}\n", fp = server.fingerprint)
    );
    // bob reads her message, and never hears of a new device of hers.
    bob.out.expect_contains("<alice> hello from localhost");
    let exit = bob.wait();
    assert!(
        !exit
            .stdout
            .iter()
            .any(|l| l.contains("NEW device") || l.contains("new device")),
        "{:?}",
        exit.stdout
    );
}

#[test]
fn host_named_files_of_an_earlier_version_move_and_still_work() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let home = ClientHome::generating();
    let addr = server.server_arg();
    let args = [
        "--accept-fingerprint",
        server.fingerprint.as_str(),
        "--key-bits",
        "2048",
    ];
    ok(&run_chat(&addr, "alice", "pw\n", &home, &args));
    let keys = server_keys(&server, "alice");

    // What an earlier chat left: every file named by the host string as typed, and a
    // known_servers line without an id.
    let dir = chat_dir(&home);
    let id = server.fingerprint.as_str();
    let moves = [
        (
            format!("keys/alice@{id}.pem"),
            format!("keys/alice@{addr}.pem"),
        ),
        (format!("state/alice@{id}"), format!("state/alice@{addr}")),
        (
            format!("state/alice@{id}.pending.json"),
            format!("state/alice@{addr}.pending.json"),
        ),
        (format!("peers/{id}.json"), format!("peers/{addr}.json")),
    ];
    let mut old_names = Vec::new();
    for (new, old) in &moves {
        if dir.join(new).exists() {
            std::fs::rename(dir.join(new), dir.join(old)).unwrap();
            old_names.push(old.clone());
        }
    }
    assert!(old_names.contains(&format!("keys/alice@{addr}.pem")));
    let key_pem = std::fs::read(dir.join(format!("keys/alice@{addr}.pem"))).unwrap();

    // No flag: the pin names the server, the old files move to its id and work.
    let exit = run_chat(&addr, "alice", "pw\n", &home, &[]);
    ok(&exit);
    let moved: Vec<&String> = exit
        .stderr
        .iter()
        .filter(|l| l.starts_with("chat: moved "))
        .collect();
    assert_eq!(moved.len(), old_names.len(), "{:?}", exit.stderr);
    assert!(!exit.stderr.iter().any(|l| l.contains("created device key")));
    for old in &old_names {
        assert!(!dir.join(old).exists(), "{old} is still there");
    }
    assert_eq!(
        std::fs::read(dir.join(format!("keys/alice@{id}.pem"))).unwrap(),
        key_pem
    );
    for (new, old) in &moves {
        assert_eq!(dir.join(new).exists(), old_names.contains(old), "{new}");
    }
    assert_eq!(server_keys(&server, "alice"), keys);
    // And once more: nothing left to move.
    let exit = run_chat(&addr, "alice", "pw\n", &home, &[]);
    ok(&exit);
    assert!(!exit.stderr.iter().any(|l| l.starts_with("chat: moved ")));
}

/// Runs `chat ARGS --password-stdin` in `home` with `$USER` set, the password on stdin.
fn run_as(home: &ClientHome, user_env: &str, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(&bins().chat)
        .args(args)
        .arg("--password-stdin")
        .env("USER", user_env)
        .envs(home.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"pw\n").unwrap();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_user_name_defaults_to_dollar_user_and_short_flags_work() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let home = ClientHome::new();
    let addr = server.server_arg();
    let key = home.key_args("alice");
    let base = [
        "-s",
        addr.as_str(),
        "--accept-fingerprint",
        server.fingerprint.as_str(),
        "-k",
        key[1].as_str(),
    ];
    let out = run_as(&home, "alice", &base);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("-- logged in as alice; online: "),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // -u wins over $USER.
    let out = run_as(&home, "alice", &[&base[..], &["-u", "nobody"]].concat());
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `chat -s ADDR -u USER --accept-fingerprint FP`, making its own 2048-bit key, in a terminal.
fn tui_argv(server: &Server, user: &str) -> Vec<String> {
    [
        bins().chat.display().to_string(),
        "-s".into(),
        server.server_arg(),
        "-u".into(),
        user.into(),
        "--accept-fingerprint".into(),
        server.fingerprint.clone(),
        "--key-bits".into(),
        "2048".into(),
    ]
    .to_vec()
}

fn answer_password(t: &Tmux, server: &Server, user: &str, password: &str, nth: usize) {
    let prompt = format!("Password for {user}@{}:", server.server_arg());
    t.wait_for(&format!("password prompt {nth}"), |s| {
        s.matches(&prompt).count() == nth
    });
    t.type_text(password);
    t.send_keys(&["Enter"]);
}

#[test]
fn three_password_tries_at_a_terminal() {
    if !tmux::available() {
        return;
    }
    let server = Server::start();
    server.add_user("alice", "alice-pw");

    // Three wrong: each failure said, then chat ends; no key was kept.
    let home = ClientHome::generating();
    let t = Tmux::start(120, 30, &home.env(), &tui_argv(&server, "alice"));
    for nth in 1..=3 {
        answer_password(&t, &server, "alice", "nope", nth);
    }
    t.wait_exit();
    let screen = t.capture();
    for nth in 1..=3 {
        assert!(
            screen.contains(&format!(
                "login failed: invalid credentials (try {nth} of 3)"
            )),
            "{}",
            frame(&screen)
        );
    }
    assert!(key_files(&home).is_empty(), "{:?}", key_files(&home));
    assert!(!home.known_servers().exists());
    drop(t);

    // Two wrong, then the right one: logged in, key kept.
    let t = Tmux::start(120, 30, &home.env(), &tui_argv(&server, "alice"));
    answer_password(&t, &server, "alice", "nope", 1);
    answer_password(&t, &server, "alice", "still-nope", 2);
    answer_password(&t, &server, "alice", "alice-pw", 3);
    // The new key's passphrase is asked only now that it will be kept: none.
    t.wait_for_text("New device key: passphrase to protect it (Enter for none):");
    assert!(key_files(&home).is_empty(), "{:?}", key_files(&home));
    t.send_keys(&["Enter"]);
    t.wait_for("the full-screen UI after the login", |s| {
        s.contains("logged in as alice")
    });
    assert_eq!(
        key_files(&home),
        [format!("alice@{}.pem", server.fingerprint)]
    );
    assert_eq!(server_keys(&server, "alice").len(), 1);
    drop(t);

    // password_tries = 1 (the low edge): one wrong password ends it.
    let config = home.xdg_data().with_file_name("xdg-config").join("chat");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.toml"), "password_tries = 1\n").unwrap();
    let t = Tmux::start(120, 30, &home.env(), &tui_argv(&server, "alice"));
    answer_password(&t, &server, "alice", "nope", 1);
    t.wait_exit();
    let screen = t.capture();
    assert!(
        screen.contains("chat: login failed: invalid credentials") && !screen.contains("try 1"),
        "{}",
        frame(&screen)
    );
}

#[test]
fn a_failing_reconnect_is_said_once_and_counted() {
    if !tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), loopback0());
    let addr = server.addr;
    server.add_user("alice", "alice-pw");
    let home = ClientHome::new();
    let mut argv = tui_argv(&server, "alice");
    argv.extend(home.key_args("alice"));
    let t = Tmux::start(160, 30, &home.env(), &argv);
    answer_password(&t, &server, "alice", "alice-pw", 1);
    t.wait_for("logged in", |s| s.contains("logged in as alice"));

    assert!(server.stop_sigterm().success());
    // Tries 1 s, 2 s and 4 s after the loss fail; the bar then counts the fourth (due in 8 s,
    // counting down).
    let screen = t.wait_for("the fourth try counted in the status bar", |s| {
        rows(s).iter().any(|r| {
            r.contains("reconnecting (try 4, next in ") && r.contains(" s): connection refused")
        })
    });
    let said = screen
        .matches("reconnecting failed: cannot connect to")
        .count();
    assert_eq!(
        said,
        1,
        "the reason should be said once:\n{}",
        frame(&screen)
    );
    assert_eq!(
        screen.matches("connection lost").count(),
        1,
        "{}",
        frame(&screen)
    );

    let server = Server::start_in(dir.path(), addr);
    let screen = t.wait_for("reconnected", |s| s.contains("reconnected"));
    assert_eq!(
        screen.matches("reconnecting failed").count(),
        1,
        "{}",
        frame(&screen)
    );
    drop(server);
}
