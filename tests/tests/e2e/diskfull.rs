//! Disk full and database locked: chatd refuses the change with a clear, retryable error
//! (`storage_unavailable`), logs it, keeps routing messages, recovers once the condition
//! ends, and never corrupts the database.
//!
//! Disk full needs root and `unshare`: chatd runs in a private mount namespace whose state
//! dir is a small tmpfs, so nothing on the host fills up. Without them the test says why and
//! returns.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::crash::integrity_check;
use crate::harness::{
    Chat, ClientHome, CtlOutput, Mode, Raw, Server, exactly, test_key, write_config,
};

/// Why a private tmpfs cannot be had here, if it cannot.
fn no_private_tmpfs() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    let probe = tempfile::tempdir().unwrap();
    let ok = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "mount",
            "-t",
            "tmpfs",
        ])
        .args(["-o", "size=64k", "tmpfs"])
        .arg(probe.path())
        .status();
    match ok {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("unshare --mount ... mount -t tmpfs failed ({s})")),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

/// Writes zeros to `path` until the file system says ENOSPC; panics if it never does.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    // A bound, so a tmpfs that is not there cannot fill the host's disk.
    for _ in 0..(64 * 1024 * 1024 / chunk.len()) {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(
                e.raw_os_error(),
                Some(nix::errno::Errno::ENOSPC as i32),
                "{e}"
            );
            return;
        }
    }
    panic!("{} never filled up: not on the small tmpfs", path.display());
}

/// `chatctl --json ...` was refused with `storage_unavailable`, and chatd logged it.
fn refused_storage_unavailable(server: &mut Server, out: &CtlOutput) {
    out.assert_code(1);
    let answer: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(answer["code"], "storage_unavailable", "{answer}");
    server
        .log
        .expect_contains("control: storage unavailable, change not saved");
}

/// The message passes from one chat to the other: routing needs no disk.
fn message_passes(from: &mut Chat, to: &mut Chat, from_name: &str, text: &str) {
    from.send(text);
    to.out
        .expect("the message", exactly(&format!("<{from_name}> {text}")));
}

#[test]
fn disk_full_refuses_changes_clearly_keeps_serving_and_recovers() {
    if let Some(why) = no_private_tmpfs() {
        eprintln!("SKIPPED disk_full test: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The control socket is beside the state dir, reachable from outside chatd's namespace.
    let (file, control) = write_config(dir.path(), "");
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let state = dir.path().join("state");
    // Mount a 1 MiB tmpfs on the state dir in a private mount namespace, then exec chatd.
    let wrapper: Vec<OsString> = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs -o size=1m,mode=0700 tmpfs \"$0\" && exec \"$@\"",
    ]
    .iter()
    .map(OsString::from)
    .chain([state.clone().into_os_string()])
    .collect();
    let mut server = Server::try_start_wrapped(
        Mode::Config {
            file: &file,
            control: &control,
        },
        &[],
        &wrapper,
    )
    .unwrap_or_else(|f| panic!("chatd failed to start ({}):\n{}", f.status, f.stderr));
    // chatd's view of its state dir: the tmpfs, seen through its own root.
    let pid = server.pid().expect("running");
    let inside = PathBuf::from(format!("/proc/{pid}/root")).join(state.strip_prefix("/").unwrap());
    assert!(
        !state.join("chatd.db").exists() && inside.join("chatd.db").exists(),
        "the database is not on chatd's private tmpfs"
    );

    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let (home_a, home_b) = (ClientHome::new(), ClientHome::new());
    let mut alice = Chat::login(&server, "alice", "pw-a", &home_a);
    let mut bob = Chat::login(&server, "bob", "pw-b", &home_b);

    fill(&inside.join("filler"));

    // A change is refused with a clear, retryable error, and the log says why.
    let out = server.ctl(
        &["user", "add", "carol", "--password-stdin"],
        Some("pw-c\n"),
    );
    assert_eq!(
        out.assert_code(1),
        "chatctl: disk full: the change was not saved; free space in chatd's state directory and retry\n"
    );
    let out = server.ctl(&["--json", "user", "lock", "bob"], None);
    refused_storage_unavailable(&mut server, &out);

    // What needs no disk goes on: reading, routing, a known device logging in again.
    let list = server.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(list["users"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(
        list["users"][1]["locked"], false,
        "the refused lock did not happen"
    );
    message_passes(&mut alice, &mut bob, "alice", "routing needs no disk");
    message_passes(&mut bob, &mut alice, "bob", "and back");
    let mut again = Raw::login(&server, "alice", "pw-a");
    // A new device cannot be recorded: told so, not logged in.
    let mut new_device = Raw::connect(&server);
    new_device.key = Some(test_key("carol"));
    new_device.hello();
    let refused = new_device.try_login("bob", "pw-b");
    assert_eq!(refused["code"], "internal", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("storage is full or busy"),
        "{refused}"
    );
    again.sync(1);

    // Space again: the same change goes through, and carol can log in.
    std::fs::remove_file(inside.join("filler")).unwrap();
    server.add_user("carol", "pw-c");
    let _carol = Raw::login(&server, "carol", "pw-c");
    server.ctl(&["user", "lock", "bob"], None).assert_ok();
    // SQLite resolves /proc/PID/root to the host's path, so check a copy, taken while
    // nothing writes (the WAL holds the recent changes, so it is copied too).
    let copy = tempfile::tempdir().unwrap();
    for name in ["chatd.db", "chatd.db-wal"] {
        std::fs::copy(inside.join(name), copy.path().join(name)).unwrap();
    }
    assert_eq!(integrity_check(&copy.path().join("chatd.db")), "ok");
    let copied = rusqlite::Connection::open(copy.path().join("chatd.db")).unwrap();
    let users: i64 = copied
        .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(users, 3, "alice, bob and carol");
    assert_eq!(server.stop_sigterm().code(), Some(0));
}

#[test]
fn a_locked_database_refuses_changes_clearly_keeps_serving_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // Past the edge: a lock held longer than db_busy_timeout_secs (1 s here).
    let mut server = Server::with_limits(dir.path(), "db_busy_timeout_secs = 1");
    let db = dir.path().join("state").join("chatd.db");
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let (home_a, home_b) = (ClientHome::new(), ClientHome::new());
    let mut alice = Chat::login(&server, "alice", "pw-a", &home_a);
    let mut bob = Chat::login(&server, "bob", "pw-b", &home_b);

    // Another process takes the write lock and keeps it past chatd's busy timeout.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let out = server.ctl(
        &["--json", "user", "add", "carol", "--password-stdin"],
        Some("pw-c\n"),
    );
    assert_eq!(
        out.assert_code(1),
        "chatctl: database locked by another process: the change was not saved; retry when it is released\n"
    );
    refused_storage_unavailable(&mut server, &out);
    // Reads and routing go on (WAL readers do not wait for the writer's lock), and a
    // known device still logs in (its last-seen time is not worth refusing a login).
    let list = server.ctl(&["--json", "user", "list"], None).json();
    assert_eq!(list["users"].as_array().unwrap().len(), 2, "{list}");
    message_passes(&mut alice, &mut bob, "alice", "no lock on routing");
    let mut again = Raw::login(&server, "bob", "pw-b");
    again.sync(1);

    // Released: the same change goes through.
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    server.add_user("carol", "pw-c");
    let _carol = Raw::login(&server, "carol", "pw-c");
    assert_eq!(integrity_check(&db), "ok");
}

/// Within the edge: a lock released while a change waits for it costs only the wait.
#[test]
fn a_change_waits_for_a_lock_released_within_the_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Far longer than the test takes to release the lock, on any machine.
    let mut server = Server::with_limits(dir.path(), "db_busy_timeout_secs = 300");
    let db = dir.path().join("state").join("chatd.db");
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let socket = server.control.clone();
    let pending = std::thread::spawn(move || {
        crate::harness::ctl_at(
            &socket,
            &["user", "add", "carol", "--password-stdin"],
            Some("pw-c\n"),
        )
    });
    // chatd has the request (and will wait for the lock); release it.
    server
        .log
        .expect_contains(r#"request=UserAdd { user: "carol""#);
    assert!(
        !pending.is_finished(),
        "the change did not wait for the lock"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    let out = pending.join().unwrap();
    out.assert_ok();
    assert_eq!(out.stdout, "user carol added\n");
    let _carol = Raw::login(&server, "carol", "pw-c");
}
