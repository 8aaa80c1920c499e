//! `chat --server A,B`: two real chatd nodes of one deployment (the same certificate and key,
//! the same users) are one server to chat; a node that is down is skipped at the first login;
//! the full-screen chat moves on to the next node when its node dies, with the same device
//! key and no second pin question; a node with another certificate is never trusted through
//! the list (issue 27, the client outcome).

use std::net::TcpListener;
use std::path::Path;

use crate::harness::{
    ClientHome, Server, bins, input_row, is_input_line, loopback0, run_chat, status_row,
};
use crate::tmux::{self, Tmux, frame};

/// A chatd --dev in `dir` presenting the certificate and key of the chatd in `like` (as an
/// operator copies one certificate to every node), with alice added.
fn node_like(like: &Path, dir: &Path) -> Server {
    for name in ["cert.pem", "key.pem"] {
        std::fs::copy(like.join(name), dir.join(name)).expect("copy the node's certificate");
    }
    let server = Server::start_in(dir, loopback0());
    server.add_user("alice", "alice-pw");
    server
}

/// A first node and a second one with the same certificate.
fn two_nodes() -> (tempfile::TempDir, Server, tempfile::TempDir, Server) {
    let da = tempfile::tempdir().unwrap();
    let a = Server::start_in(da.path(), loopback0());
    a.add_user("alice", "alice-pw");
    let db = tempfile::tempdir().unwrap();
    let b = node_like(da.path(), db.path());
    assert_eq!(
        a.fingerprint, b.fingerprint,
        "one certificate on both nodes"
    );
    (da, a, db, b)
}

/// `127.0.0.1:PORT` where nothing listens.
fn dead_node() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

#[test]
fn plain_mode_skips_a_node_that_is_down() {
    let (_da, _a, _db, b) = two_nodes();
    let home = ClientHome::new();
    let dead = dead_node();
    let list = format!("{dead},{}", b.server_arg());
    let done = run_chat(
        &list,
        "alice",
        "alice-pw\n",
        &home,
        &["--accept-fingerprint", &b.fingerprint],
    );
    let err = done.stderr.join("\n");
    assert!(done.status.success(), "{err}");
    assert!(
        done.stdout.iter().any(|l| l.contains("logged in as alice")),
        "{:?}",
        done.stdout
    );
    assert_eq!(
        err.matches(&format!("cannot connect to {dead}")).count(),
        1,
        "the dead node is said once: {err}"
    );
    assert!(err.contains(&format!("trying {}", b.server_arg())), "{err}");

    // A bad entry is a usage error naming it.
    let bad = run_chat(&format!("{dead},nope:0"), "alice", "x\n", &home, &[]);
    let err = bad.stderr.join("\n");
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("nope:0") && err.contains("bad port"), "{err}");
}

#[test]
fn a_node_with_another_certificate_is_not_trusted_through_the_list() {
    let (_da, a, _db, _b) = two_nodes();
    // A node of some other deployment: its own certificate.
    let other = Server::start();
    other.add_user("alice", "alice-pw");
    assert_ne!(other.fingerprint, a.fingerprint);
    let home = ClientHome::new();
    let first = run_chat(
        &a.server_arg(),
        "alice",
        "alice-pw\n",
        &home,
        &["--accept-fingerprint", &a.fingerprint],
    );
    assert!(first.status.success(), "{:?}", first.stderr);
    let pins = std::fs::read_to_string(home.known_servers()).unwrap();

    // The list's server is pinned: the other node is refused, without a question or a pin,
    // though it comes first in the list.
    let list = format!("{},{}", other.server_arg(), a.server_arg());
    let done = run_chat(&list, "alice", "alice-pw\n", &home, &[]);
    let err = done.stderr.join("\n");
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} is not accepted as this list's server {}",
            other.server_arg(),
            a.fingerprint
        )),
        "{err}"
    );
    assert!(!err.contains("logged in"), "{err}");
    assert_eq!(
        std::fs::read_to_string(home.known_servers()).unwrap(),
        pins,
        "nothing pinned"
    );

    // Pinned on its own (a separate server, a separate first-use decision), it still cannot
    // share a list with the first one.
    let alone = run_chat(
        &other.server_arg(),
        "alice",
        "alice-pw\n",
        &home,
        &["--accept-fingerprint", &other.fingerprint],
    );
    assert!(alone.status.success(), "{:?}", alone.stderr);
    let list = format!("{},{}", a.server_arg(), other.server_arg());
    let done = run_chat(&list, "alice", "alice-pw\n", &home, &[]);
    let err = done.stderr.join("\n");
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} and {} are pinned as two different servers",
            a.server_arg(),
            other.server_arg()
        )),
        "{err}"
    );
}

#[test]
fn full_screen_moves_to_the_next_node_when_its_node_dies() {
    if !tmux::available() {
        return;
    }
    let (_da, mut a, _db, b) = two_nodes();
    let home = ClientHome::new();
    let list = format!("{},{}", a.server_arg(), b.server_arg());
    let mut argv = vec![
        bins().chat.display().to_string(),
        "--server".to_string(),
        list,
        "--user".to_string(),
        "alice".to_string(),
    ];
    argv.extend(home.key_args("alice"));
    let t = Tmux::start(120, 30, &home.env(), &argv);
    // The one pin question, for the first node (trust on first use).
    t.wait_for_text("Trust this server and remember it?");
    t.type_text("yes");
    t.send_keys(&["Enter"]);
    t.wait_for_text(&format!("Password for alice@{}:", a.server_arg()));
    t.type_text("alice-pw");
    t.send_keys(&["Enter"]);
    let screen = t.wait_for("logged in on the first node", |s| {
        s.contains("logged in as alice") && is_input_line(input_row(s))
    });
    assert!(
        status_row(&screen).contains(&format!("alice@{}", a.server_arg())),
        "{}",
        frame(&screen)
    );

    a.stop_with(nix::sys::signal::Signal::SIGKILL);
    let screen = t.wait_for("reconnected to the second node", |s| {
        s.contains(&format!("reconnected to {}", b.server_arg()))
    });
    assert!(
        screen.contains(&format!(
            "connection lost; reconnecting to {}",
            a.server_arg()
        )),
        "{}",
        frame(&screen)
    );
    assert!(
        status_row(&screen).contains(&format!("alice@{}", b.server_arg())),
        "{}",
        frame(&screen)
    );
    assert!(!screen.contains("Trust this server"), "{}", frame(&screen));
    // The second node is remembered as the same server (an alias), not pinned apart.
    let pins = std::fs::read_to_string(home.known_servers()).unwrap();
    let line = pins
        .lines()
        .find(|l| l.starts_with(&b.server_arg()))
        .unwrap_or_else(|| panic!("no pin for the second node:\n{pins}"));
    assert!(line.contains(&b.fingerprint), "{pins}");
    // One key file, the one given, and no key made per node in the data directory.
    let keys = home.xdg_data().join("chat").join("keys");
    let made: Vec<_> = std::fs::read_dir(&keys)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "{made:?}");
    // The session on the second node works: a room joined there.
    t.type_text("/join #ops");
    t.send_keys(&["Enter"]);
    t.wait_for("joined #ops on the second node", |s| {
        s.contains("#ops (owner alice): alice")
    });
}
