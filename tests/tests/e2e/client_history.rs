//! `chat`'s optional local history (`[history] enabled = true`): a restarted client shows the
//! recent conversation first, marked as history, each line once, before what the server
//! stored meanwhile; the file holds no text in the clear; without the setting no file exists.
//! The full-screen interface shows the kept lines too.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::harness::{Chat, ClientHome, Server, bins, exactly, loopback0};
use crate::tmux::{self, Tmux};

/// How many lines of `out` contain `text`.
fn count(out: &[String], text: &str) -> usize {
    out.iter().filter(|l| l.contains(text)).count()
}

/// Where `text` first appears in `out`.
fn position(out: &[String], text: &str) -> usize {
    out.iter()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} not in {out:#?}"))
}

/// The history file beside the key `home` gives `user` (`--key DIR/USER.pem`).
fn history_file(home: &ClientHome, user: &str) -> PathBuf {
    let key = PathBuf::from(&home.key_args(user)[1]);
    key.with_extension("history")
}

/// A config file turning history on, in a directory of its own.
fn history_config(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[history]\nenabled = true\nlines = 50\n").unwrap();
    path.display().to_string()
}

#[test]
fn a_restart_shows_the_kept_conversation_once_then_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), loopback0());
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let alice_home = ClientHome::new();
    let bob_home = ClientHome::new();
    let config_dir = tempfile::tempdir().unwrap();
    let config = history_config(&config_dir);
    let alice_args = [
        "--accept-fingerprint",
        &server.fingerprint,
        "--config",
        &config,
    ];
    let login_alice = || {
        let mut chat = Chat::spawn(
            &server.server_arg(),
            "alice",
            "pw-a",
            &alice_home,
            &alice_args,
        );
        chat.out.expect_contains("-- logged in as alice; online: ");
        chat
    };

    let mut alice = login_alice();
    let mut bob = Chat::login(&server, "bob", "pw-b", &bob_home);
    alice.out.expect_contains("pinned bob's device key");
    bob.out.expect_contains("pinned alice's device key");
    alice.send("HIST-ROOM-FROM-ALICE");
    alice
        .out
        .expect("own line", exactly("<alice> HIST-ROOM-FROM-ALICE"));
    bob.out.expect_contains("HIST-ROOM-FROM-ALICE");
    bob.send("HIST-ROOM-FROM-BOB");
    alice
        .out
        .expect("bob's line", exactly("<bob> HIST-ROOM-FROM-BOB"));
    bob.send("/w alice HIST-WHISPER-FROM-BOB");
    alice
        .out
        .expect("bob's whisper", exactly("*bob* HIST-WHISPER-FROM-BOB"));
    alice.send("/me HIST-WAVES");
    alice.out.expect_contains("HIST-WAVES");
    // Not kept: a client command's output and a refusal.
    alice.send("/fingerprint");
    alice.out.expect_contains("your device key");
    let first = alice.wait();
    assert!(first.status.success(), "{:?}", first.stderr);
    assert!(
        !first.stdout.iter().any(|l| l.contains("-- history")),
        "nothing kept before the first run: {:?}",
        first.stdout
    );
    bob.out.expect_contains("-- alice left");

    // The file: private, beside the key, no text in the clear.
    let file = history_file(&alice_home, "alice");
    let meta = std::fs::metadata(&file).expect("the history file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"CHATHIST\x01"));
    for text in [
        "HIST-ROOM-FROM-ALICE",
        "HIST-ROOM-FROM-BOB",
        "HIST-WHISPER",
        "HIST-WAVES",
        "alice",
        "device key",
    ] {
        assert!(
            !bytes.windows(text.len()).any(|w| w == text.as_bytes()),
            "{text} is in the history file in the clear"
        );
    }
    // bob did not ask for history: nothing of the kind on his side.
    assert!(!history_file(&bob_home, "bob").exists());

    // Stored by the server while alice is away.
    bob.send("HIST-WHILE-AWAY");
    bob.out.expect_contains("-- stored for alice (offline)");

    let mut alice = login_alice();
    alice
        .out
        .expect_contains("-- end of what was stored while you were offline");
    alice.send("/history");
    alice
        .out
        .expect_contains("-- history is on: 5 lines kept in");
    let run = alice.wait();
    assert!(run.status.success(), "{:?}", run.stderr);
    let out = &run.stdout;
    let start = position(
        out,
        "-- history: the last 4 lines kept on this device, since ",
    );
    let end = position(out, "-- end of history");
    let logged_in = position(out, "-- logged in as alice");
    assert!(logged_in < start && start < end, "{out:#?}");
    for text in [
        "<alice> HIST-ROOM-FROM-ALICE",
        "<bob> HIST-ROOM-FROM-BOB",
        "*bob* HIST-WHISPER-FROM-BOB",
        "HIST-WAVES",
    ] {
        assert_eq!(count(out, text), 1, "{text} once: {out:#?}");
        let at = position(out, text);
        assert!(
            start < at && at < end,
            "{text} is marked as history: {out:#?}"
        );
    }
    assert_eq!(count(out, "HIST-WHILE-AWAY"), 1, "{out:#?}");
    assert!(
        position(out, "HIST-WHILE-AWAY") > end,
        "the server's replay after: {out:#?}"
    );
    assert_eq!(
        count(out, "your device key"),
        0,
        "command output is not kept: {out:#?}"
    );
    assert!(!out.iter().any(|l| l.contains("!! ")), "{out:#?}");

    // Third run: the stored line is history now; /history clear deletes the file.
    let mut alice = login_alice();
    alice
        .out
        .expect_contains("-- history: the last 5 lines kept on this device");
    alice.out.expect_contains("HIST-WHILE-AWAY");
    alice.send("/history clear");
    alice.out.expect_contains("-- history deleted (");
    assert!(!file.exists(), "deleted");
    let run = alice.wait();
    assert!(run.status.success(), "{:?}", run.stderr);
    assert_eq!(
        count(&run.stdout, "HIST-WHILE-AWAY"),
        1,
        "{:#?}",
        run.stdout
    );
    let fourth = login_alice().wait();
    assert!(
        !fourth.stdout.iter().any(|l| l.contains("-- history:")),
        "{:#?}",
        fourth.stdout
    );
    drop(bob);
}

#[test]
fn the_full_screen_interface_shows_the_kept_lines_first() {
    if !tmux::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), loopback0());
    server.add_user("alice", "pw-a");
    let home = ClientHome::new();
    let config_dir = tempfile::tempdir().unwrap();
    let config = history_config(&config_dir);
    // A line kept by the plain client (a whisper to oneself, so nobody else is needed).
    let mut plain = Chat::spawn(
        &server.server_arg(),
        "alice",
        "pw-a",
        &home,
        &[
            "--accept-fingerprint",
            &server.fingerprint,
            "--config",
            &config,
        ],
    );
    plain.out.expect_contains("-- logged in as alice");
    plain.send("/w alice TUI-HIST-LINE");
    plain.out.expect_contains("TUI-HIST-LINE");
    let kept = plain.wait();
    assert!(kept.status.success(), "{:?}", kept.stderr);
    let shown = count(&kept.stdout, "TUI-HIST-LINE");

    let mut argv = vec![
        bins().chat.display().to_string(),
        "--server".to_string(),
        server.server_arg(),
        "--user".to_string(),
        "alice".to_string(),
        "--accept-fingerprint".to_string(),
        server.fingerprint.clone(),
        "--config".to_string(),
        config,
    ];
    argv.extend(home.key_args("alice"));
    let t = Tmux::start(100, 24, &home.env(), &argv);
    t.wait_for_text("Password for alice@");
    t.type_text("pw-a");
    t.send_keys(&["Enter"]);
    let screen = t.wait_for("the kept line between the history marks", |s| {
        s.contains("-- end of history") && s.contains("logged in as alice")
    });
    let at = |needle: &str| {
        screen
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not on {screen}"))
    };
    assert!(
        at("-- history: the last ") < at("TUI-HIST-LINE"),
        "{screen}"
    );
    assert!(at("TUI-HIST-LINE") < at("-- end of history"), "{screen}");
    assert_eq!(
        screen.matches("TUI-HIST-LINE").count(),
        shown,
        "as often as the plain client showed it: {screen}"
    );
    t.type_text("/quit");
    t.send_keys(&["Enter"]);
    t.wait_exit();
}
