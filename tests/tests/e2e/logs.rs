//! What chatd's log says, and what it never says (docs/SECURITY.md, "Logging").

use chatd_proto::PROTOCOL_VERSION;
use serde_json::json;

use crate::harness::{Raw, Server};

#[test]
fn log_never_shows_secrets_and_cannot_be_forged() {
    const PASSWORD: &str = "pw-SECRET-4711";
    const TEXT: &str = "text-SECRET-0815";
    let dir = tempfile::tempdir().unwrap();
    // The most verbose level there is; the promise holds "at any level".
    let mut server = Server::start_trace(dir.path());
    server.add_user("alice", PASSWORD);
    server.add_user("bob", "bob-pw");
    server
        .ctl(
            &["user", "passwd", "bob", "--password-stdin"],
            Some(&format!("{PASSWORD}-new\n")),
        )
        .assert_ok();
    server.ctl(&["user", "lock", "bob"], None).assert_ok();

    // Unauthenticated input that tries to start a fake log line (and an ANSI escape).
    let mut raw = Raw::connect(&server);
    raw.send(json!({"type":"hello","version":PROTOCOL_VERSION,"client":"evil\nFORGED-HELLO line\u{1b}[2J"}));
    raw.recv_type("hello");
    raw.send(json!({"type":"quit"}));
    raw.expect_bye("quit");
    let long_name = "n".repeat(50);
    for (user, password) in [
        (long_name.as_str(), PASSWORD),
        ("mallory\nFORGED-LOGIN\u{1b}[2J", PASSWORD),
        ("zed", PASSWORD),
        ("alice", "wrong-SECRET"),
    ] {
        // One connection each: max_login_failures would end a shared one.
        let mut raw = Raw::connect(&server);
        raw.hello();
        assert_eq!(raw.try_login(user, password)["code"], "invalid_credentials");
    }
    let mut alice = Raw::connect(&server);
    alice.hello();
    assert_eq!(alice.try_login("alice", PASSWORD)["type"], "login_ok");
    let mut bob = Raw::connect(&server);
    bob.hello();
    assert_eq!(
        bob.try_login("bob", &format!("{PASSWORD}-new"))["code"],
        "invalid_credentials"
    );
    let sent = alice.say(TEXT);
    alice.expect_envelope("alice", &sent);
    let sent = alice.whisper("alice", TEXT);
    alice.expect_envelope("alice", &sent);
    // Error frames go to the wire capture too; they must not quote what the peer sent.
    alice.send(json!({"type":"ping","nonce":"nonce-SECRET"}));
    alice.expect_error("bad_frame");
    alice.send(json!({"type":"quit"}));
    alice.expect_bye("quit");
    assert_eq!(server.stop_sigterm().code(), Some(0));

    let log = server.log.all();
    assert!(log.len() > 20, "trace logging is on: {log:#?}");
    for line in &log {
        assert!(!line.contains("SECRET"), "a secret reached the log: {line}");
        assert!(
            !line.starts_with("FORGED") && !line.contains('\u{1b}'),
            "a peer forged or escaped a log line: {line:?}"
        );
    }
    let text = log.join("\n");
    // Login failures say why, for the admin; the supplied name is truncated and escaped.
    for why in ["unknown user", "wrong password", "account locked"] {
        assert!(text.contains(&format!("why=\"{why}\"")), "{why}: {text}");
    }
    assert!(text.contains(&"n".repeat(40)));
    assert!(
        !text.contains(&"n".repeat(41)),
        "the login name is truncated"
    );
    assert!(text.contains("user=\"mallory\\nFORGED-LOGIN"), "{text}");
    assert!(text.contains("client=\"evil\\nFORGED-HELLO"), "{text}");
}

/// A login name built to look like more fields stays inside one quoted `user=` field.
#[test]
fn crafted_login_name_cannot_add_log_fields() {
    const CRAFTED: &str = "x peer=1.2.3.4 why=ok\nFORGED";
    let mut server = Server::start();
    server.add_user("alice", "alice-pw");
    let mut raw = Raw::connect(&server);
    raw.hello();
    assert_eq!(
        raw.try_login(CRAFTED, "guess")["code"],
        "invalid_credentials"
    );
    assert_eq!(server.stop_sigterm().code(), Some(0));

    let log = server.log.all();
    let failed: Vec<&String> = log.iter().filter(|l| l.contains("login failed")).collect();
    assert_eq!(failed.len(), 1, "one line for the one failure: {log:#?}");
    let line = failed[0];
    // The whole name, escaped, between the quotes of one field; the real fields follow it.
    assert!(
        line.contains(r#"user="x peer=1.2.3.4 why=ok\nFORGED" why="unknown user""#),
        "{line}"
    );
    assert_eq!(line.matches(" why=").count(), 2, "{line}");
    assert_eq!(
        line.matches("why=\"").count(),
        1,
        "only the real why= is a field: {line}"
    );
    assert!(
        log.iter().all(|l| !l.starts_with("FORGED")),
        "the newline did not start a line: {log:#?}"
    );
}
