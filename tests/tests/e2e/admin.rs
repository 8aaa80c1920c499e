//! `chatctl` against a running chatd: accounts, sessions, kicks, status and its errors.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::{Chat, ClientHome, Raw, Server, ctl_at, exactly, run_chat};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `YYYY-MM-DD HH:MM:SS`
fn looks_like_utc_time(date: &str, time: &str) -> bool {
    let digits = |s: &str, seps: &[usize], sep: u8| {
        s.bytes().enumerate().all(|(i, b)| {
            if seps.contains(&i) {
                b == sep
            } else {
                b.is_ascii_digit()
            }
        })
    };
    date.len() == 10
        && time.len() == 8
        && digits(date, &[4, 7], b'-')
        && digits(time, &[2, 5], b':')
}

/// Runs `chat` to completion with `password` and no messages; returns its exit code.
fn chat_login_code(
    server: &Server,
    home: &ClientHome,
    user: &str,
    password: &str,
) -> (i32, Vec<String>) {
    let exit = run_chat(
        &server.server_arg(),
        user,
        &format!("{password}\n"),
        home,
        &["--accept-fingerprint", &server.fingerprint],
    );
    let stderr = exit
        .stderr
        .into_iter()
        .filter(|l| !l.starts_with("chat: pinned "))
        .collect();
    (exit.status.code().unwrap_or(-1), stderr)
}

fn user_names(users: &Value) -> Vec<String> {
    users["users"]
        .as_array()
        .expect("users array")
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn user_list_as_table_and_json() {
    let server = Server::start();
    let before = now_secs();
    server.add_user("bob", "pw-b");
    let out = server.ctl(
        &["user", "add", "alice", "--admin", "--password-stdin"],
        Some("pw-a\n"),
    );
    out.assert_ok();
    assert_eq!(out.stdout, "user alice added (admin)\n");
    let _alice = Raw::login(&server, "alice", "pw-a");

    let out = server.ctl(&["user", "list"], None);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert_eq!(lines[0], "USER   ADMIN  LOCKED  SESSIONS  CREATED (UTC)");
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..4], ["alice", "yes", "no", "1"], "{}", out.stdout);
    assert_eq!(rows[1][..4], ["bob", "no", "no", "0"], "{}", out.stdout);
    for row in &rows {
        assert_eq!(row.len(), 6, "{row:?}");
        assert!(looks_like_utc_time(row[4], row[5]), "{row:?}");
    }
    // Columns line up: every row's second column starts where the header's does.
    let col = lines[0].find("ADMIN").unwrap();
    assert!(
        lines[1..]
            .iter()
            .all(|l| l[col..].starts_with("yes") || l[col..].starts_with("no "))
    );

    let list = server.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(list["type"], "users");
    assert_eq!(user_names(&list), ["alice", "bob"]);
    let alice = &list["users"][0];
    assert_eq!(
        (&alice["admin"], &alice["locked"], &alice["sessions"]),
        (&json!(true), &json!(false), &json!(1))
    );
    let bob = &list["users"][1];
    assert_eq!(
        (&bob["admin"], &bob["locked"], &bob["sessions"]),
        (&json!(false), &json!(false), &json!(0))
    );
    // Creation times are real timestamps (a day of slack each way for clock oddities).
    for u in list["users"].as_array().unwrap() {
        let created = u["created"].as_u64().unwrap();
        assert!(
            created + 86_400 >= before && created <= now_secs() + 86_400,
            "{u}"
        );
    }
}

#[test]
fn user_del_ends_sessions_and_refuses_login() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let home = ClientHome::new();
    let mut alice = Chat::login(&server, "alice", "pw-a", &home);
    let mut bob = Raw::login(&server, "bob", "pw-b");

    let out = server.ctl(&["user", "del", "alice"], None);
    out.assert_ok();
    assert_eq!(out.stdout, "user alice deleted (1 session(s) ended)\n");
    alice.out.expect(
        "the bye",
        exactly("-- server closed the connection: account deleted"),
    );
    let exit = alice.wait();
    assert_eq!(exit.status.code(), Some(1), "the server ended the session");
    assert_eq!(
        bob.recv(),
        json!({"type":"presence","user":"alice","event":"leave","reason":"account deleted"})
    );

    assert_eq!(
        chat_login_code(&server, &home, "alice", "pw-a"),
        (
            3,
            vec!["chat: login failed: invalid credentials".to_string()]
        )
    );
    let list = server.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(user_names(&list), ["bob"]);
    let err = server.ctl(&["user", "del", "alice"], None);
    assert_eq!(err.assert_code(1), "chatctl: no such user: alice\n");
}

#[test]
fn passwd_replaces_the_password() {
    let server = Server::start();
    server.add_user("alice", "old-pw");
    let out = server.ctl(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("new-pw\n"),
    );
    out.assert_ok();
    assert_eq!(out.stdout, "password of alice changed\n");

    let mut raw = Raw::connect(&server);
    raw.hello();
    let refused = raw.try_login("alice", "old-pw");
    assert_eq!(
        refused,
        json!({"type":"error","code":"invalid_credentials","message":"invalid credentials"})
    );
    assert_eq!(raw.try_login("alice", "new-pw")["type"], "login_ok");

    let home = ClientHome::new();
    assert_eq!(chat_login_code(&server, &home, "alice", "old-pw").0, 3);
    assert_eq!(chat_login_code(&server, &home, "alice", "new-pw").0, 0);

    let err = server.ctl(
        &["user", "passwd", "nobody", "--password-stdin"],
        Some("x\n"),
    );
    assert_eq!(err.assert_code(1), "chatctl: no such user: nobody\n");
    let err = server.ctl(&["user", "passwd", "alice", "--password-stdin"], Some("\n"));
    assert_eq!(err.assert_code(1), "chatctl: empty password refused\n");
}

#[test]
fn lock_ends_sessions_and_unlock_restores_login() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let home = ClientHome::new();
    let mut alice = Chat::login(&server, "alice", "pw-a", &home);
    let mut bob = Raw::login(&server, "bob", "pw-b");

    let out = server.ctl(&["user", "lock", "alice"], None);
    out.assert_ok();
    assert_eq!(out.stdout, "user alice locked (1 session(s) ended)\n");
    alice.out.expect(
        "the bye",
        exactly("-- server closed the connection: account locked"),
    );
    assert_eq!(alice.wait().status.code(), Some(1));
    assert_eq!(
        bob.recv(),
        json!({"type":"presence","user":"alice","event":"leave","reason":"account locked"})
    );

    // Locked looks exactly like a wrong password, to chat and on the wire.
    let locked = chat_login_code(&server, &home, "alice", "pw-a");
    let wrong = chat_login_code(&server, &home, "bob", "not-bobs");
    assert_eq!(
        locked,
        (
            3,
            vec!["chat: login failed: invalid credentials".to_string()]
        )
    );
    assert_eq!(locked, wrong);

    let list = server.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(list["users"][0]["user"], "alice");
    assert_eq!(list["users"][0]["locked"], true);

    let out = server.ctl(&["user", "unlock", "alice"], None);
    out.assert_ok();
    assert_eq!(out.stdout, "user alice unlocked\n");
    assert_eq!(chat_login_code(&server, &home, "alice", "pw-a").0, 0);
    let list = server.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(list["users"][0]["locked"], false);

    let err = server.ctl(&["user", "lock", "nobody"], None);
    assert_eq!(err.assert_code(1), "chatctl: no such user: nobody\n");
}

#[test]
fn who_lists_every_session() {
    let server = Server::start();
    let empty = server.ctl(&["who"], None);
    empty.assert_ok();
    assert_eq!(
        empty.stdout,
        "ID  USER  PEER  SINCE (UTC)  DEVICE\n(no sessions)\n"
    );

    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut ids = Vec::new();
    let mut conns = Vec::new();
    for (user, pw) in [("alice", "pw-a"), ("bob", "pw-b"), ("alice", "pw-a")] {
        let mut raw = Raw::connect(&server);
        raw.hello();
        let ok = raw.try_login(user, pw);
        assert_eq!(ok["type"], "login_ok", "{ok}");
        ids.push(ok["session"].as_u64().unwrap());
        conns.push(raw);
    }

    let who = server.ctl(&["--json", "who"], None).json();
    assert_eq!(who["type"], "sessions");
    let sessions = who["sessions"].as_array().unwrap();
    let got: Vec<(u64, &str)> = sessions
        .iter()
        .map(|s| (s["id"].as_u64().unwrap(), s["user"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(ids[0], "alice"), (ids[1], "bob"), (ids[2], "alice")]);
    for s in sessions {
        assert!(s["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{s}");
        let user = s["user"].as_str().unwrap();
        assert_eq!(
            s["device"],
            crate::harness::test_key(user).fingerprint().to_string()
        );
    }

    let out = server.ctl(&["who"], None);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("USER") && lines[0].ends_with("DEVICE")
    );
    for (line, (id, user)) in lines[1..].iter().zip(&got) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], id.to_string());
        assert_eq!(cells[1], *user);
        assert!(cells[2].starts_with("127.0.0.1:"));
        assert!(looks_like_utc_time(cells[3], cells[4]), "{line}");
        let fp = crate::harness::test_key(user).fingerprint().to_string();
        assert_eq!(cells[5], format!("{}…", &fp[..7 + 16]), "{line}");
    }

    // A session that quits disappears from the list.
    conns[1].send(json!({"type":"quit"}));
    conns[1].expect_bye("quit");
    let who = server.ctl(&["--json", "who"], None).json();
    assert_eq!(who["sessions"].as_array().unwrap().len(), 2);
}

#[test]
fn kick_with_reason_reaches_the_user_and_the_others() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Chat::login(&server, "alice", "pw-a", &ClientHome::new());
    let mut bob = Chat::login(&server, "bob", "pw-b", &ClientHome::new());
    alice.out.expect("bob joined", exactly("-- bob joined"));

    let out = server.ctl(&["kick", "bob", "--reason", "spam"], None);
    out.assert_ok();
    assert_eq!(out.stdout, "kicked bob (1 session(s))\n");
    bob.out.expect(
        "the kick reason",
        exactly("-- server closed the connection: kicked by administrator: spam"),
    );
    bob.out.expect(
        "how to come back",
        exactly("-- an administrator ended this session; chat does not reconnect on its own: run chat again to come back"),
    );
    let exit = bob.wait();
    assert_eq!(exit.status.code(), Some(1), "a kicked client exits 1");
    alice.out.expect(
        "bob left",
        exactly("-- bob left (kicked by administrator: spam)"),
    );

    // Without a reason, and for someone who is not online.
    let out = server.ctl(&["kick", "alice"], None);
    out.assert_ok();
    alice.out.expect(
        "the kick",
        exactly("-- server closed the connection: kicked by administrator"),
    );
    assert_eq!(alice.wait().status.code(), Some(1));
    let err = server.ctl(&["kick", "bob"], None);
    assert_eq!(err.assert_code(1), "chatctl: bob is not online\n");
}

#[test]
fn status_shows_version_listener_and_fingerprint() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let _alice = Raw::login(&server, "alice", "pw-a");

    let out = server.ctl(&["status"], None);
    out.assert_ok();
    let fields: Vec<(&str, &str)> = out
        .stdout
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k, v.trim())
        })
        .collect();
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {key:?} in {}", out.stdout))
    };
    assert_eq!(get("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(get("listen"), server.addr.to_string());
    assert_eq!(get("certificate fingerprint"), server.fingerprint);
    assert_eq!(get("sessions"), "1");
    assert_eq!(get("users online"), "1");
    assert_eq!(get("accounts"), "2");
    assert!(get("uptime").ends_with('s'));
    assert!(get("store").starts_with("sqlite path="), "{}", out.stdout);

    let status = server.ctl(&["status", "--json"], None).json();
    assert_eq!(status["type"], "status");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listen"], server.addr.to_string());
    assert_eq!(status["cert_fingerprint"], server.fingerprint.as_str());
    assert_eq!(status["accounts"], 2);
    assert_eq!(status["sessions"], 1);
}

#[test]
fn duplicate_and_invalid_names_are_refused() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let dup = server.ctl(
        &["user", "add", "alice", "--password-stdin"],
        Some("other\n"),
    );
    assert_eq!(dup.assert_code(1), "chatctl: user alice already exists\n");

    let long = "a".repeat(33);
    for name in ["Alice!", "", "1bob", "bo b", "bö", long.as_str()] {
        let out = server.ctl(&["user", "add", name, "--password-stdin"], Some("pw\n"));
        let err = out.assert_code(1);
        assert!(
            err.starts_with("chatctl: invalid user name "),
            "{name:?}: {err}"
        );
    }
    // A name that looks like an option is a usage error, or an invalid name after `--`.
    let out = server.ctl(&["user", "add", "-x", "--password-stdin"], Some("pw\n"));
    out.assert_code(2);
    let out = server.ctl(
        &["user", "add", "--password-stdin", "--", "-x"],
        Some("pw\n"),
    );
    assert!(
        out.assert_code(1)
            .starts_with("chatctl: invalid user name \"-x\"")
    );
    // Other commands check names the same way.
    for cmd in [["user", "del"], ["user", "lock"], ["user", "unlock"]] {
        let out = server.ctl(&[cmd[0], cmd[1], "Alice!"], None);
        assert!(out.assert_code(1).starts_with("chatctl: invalid user name"));
    }
    let out = server.ctl(&["user", "add", "carol", "--password-stdin"], Some(""));
    assert_eq!(out.assert_code(1), "chatctl: no password on stdin\n");

    let list = server.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(
        user_names(&list),
        ["alice"],
        "nothing but alice was created"
    );
    // The refused duplicate did not change alice's password.
    let _alice = Raw::login(&server, "alice", "pw");
}

#[test]
fn missing_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such.sock");
    let out = ctl_at(&path, &["status"], None);
    let err = out.assert_code(1);
    assert!(
        err.starts_with(&format!("chatctl: cannot connect to {}: ", path.display())),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn chatd_socket_environment_variable_names_the_socket() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let out = std::process::Command::new(&crate::harness::bins().chatctl)
        .args(["user", "list"])
        .env("CHATD_SOCKET", &server.control)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.lines().nth(1).unwrap().starts_with("alice "),
        "{stdout}"
    );
}

#[test]
fn the_control_socket_itself_refuses_bad_names() {
    // chatctl checks names before sending; chatd must not rely on that.
    use std::io::{BufRead, BufReader, Write};
    let server = Server::start();
    let mut sock = std::os::unix::net::UnixStream::connect(&server.control).unwrap();
    let mut answers = BufReader::new(sock.try_clone().unwrap());
    for request in [
        json!({"type":"user_lock","user":"mallory\nINFO forged line"}),
        json!({"type":"user_del","user":"Bad"}),
        json!({"type":"user_passwd","user":"","password":"pw"}),
        json!({"type":"kick","user":"x\u{1b}[2J"}),
        json!({"type":"user_add","user":"-x","password":"pw"}),
    ] {
        writeln!(sock, "{request}").unwrap();
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(answer["type"], "error", "{request} -> {answer}");
        assert_eq!(answer["code"], "invalid_argument", "{request} -> {answer}");
    }
    // The connection is still usable, and nothing was created.
    writeln!(sock, "{}", json!({"type":"user_list"})).unwrap();
    let mut line = String::new();
    answers.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), r#"{"type":"users","users":[]}"#);
    drop((sock, answers));
    let mut server = server;
    server.stop_sigterm();
    assert!(
        !server
            .log
            .all()
            .iter()
            .any(|l| l.starts_with("INFO forged line")),
        "a control request forged a log line"
    );
}

#[test]
fn with_json_every_failure_is_an_error_object_on_stdout() {
    let server = Server::start();
    // One chatd found: its own error object, as before.
    let out = server.ctl(&["--json", "user", "del", "nobody"], None);
    out.assert_code(1);
    assert_eq!(error_object(&out.stdout)["code"], "no_such_user");
    // One chatctl found before asking: a bad name...
    let out = server.ctl(&["--json", "user", "lock", "Alice!"], None);
    let err = out.assert_code(1);
    let object = error_object(&out.stdout);
    assert_eq!(object["type"], "error");
    assert_eq!(object["code"], "invalid_argument");
    assert!(err.contains(object["message"].as_str().unwrap()), "{err}");
    // ...and no chatd to ask.
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("no.sock");
    let out = ctl_at(&gone, &["--json", "status"], None);
    out.assert_code(1);
    let object = error_object(&out.stdout);
    assert_eq!(object["code"], "connection_failed");
    assert!(
        object["message"]
            .as_str()
            .unwrap()
            .contains("is chatd running?")
    );
}

/// The one JSON line chatctl printed on stdout.
fn error_object(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}
