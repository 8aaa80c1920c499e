//! Crash safety: `kill -9` in the middle of a stream of acknowledged writes loses none of
//! them, and the database stays intact (docs/ARCHITECTURE.md, "Durability").

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::harness::{Raw, Server, ctl_at, loopback0, test_key};

/// `PRAGMA integrity_check` on the state dir's database, read while chatd may be running
/// (WAL lets a reader in beside the writer).
pub fn integrity_check(db: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("\n")
}

/// A small deterministic generator (xorshift64*), so a failing kill point can be replayed
/// with `CHATD_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// What the writer thread was told was done.
#[derive(Default, Debug)]
struct Acked {
    added: Vec<String>,
    locked: Vec<String>,
    /// Added, but the lock request was cut off by the kill: either state is right.
    lock_unknown: Option<String>,
}

/// Adds users (every third also locked) until chatctl fails, announcing each acknowledged
/// change on `tx`. A change counts only if chatctl exited 0 with its success line.
fn write_stream(socket: &Path, round: u32, tx: mpsc::Sender<usize>) -> Acked {
    let mut acked = Acked::default();
    for i in 0.. {
        let name = format!("r{round}u{i}");
        let out = ctl_at(
            socket,
            &["user", "add", &name, "--password-stdin"],
            Some(&format!("pw-{name}\n")),
        );
        if !out.status.success() {
            break;
        }
        assert_eq!(out.stdout, format!("user {name} added\n"));
        acked.added.push(name.clone());
        let _ = tx.send(acked.added.len() + acked.locked.len());
        if i % 3 == 2 {
            let out = ctl_at(socket, &["user", "lock", &name], None);
            if !out.status.success() {
                acked.lock_unknown = Some(name);
                break;
            }
            assert!(
                out.stdout.starts_with(&format!("user {name} locked")),
                "{out:?}"
            );
            acked.locked.push(name);
            let _ = tx.send(acked.added.len() + acked.locked.len());
        }
    }
    acked
}

#[test]
fn kill_9_during_a_stream_of_writes_loses_nothing_acknowledged() {
    let seed = std::env::var("CHATD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de_u64);
    eprintln!("kill points from CHATD_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("chatd.db");
    let mut server = Server::start_in(data.path(), loopback0());
    // Every acknowledged change so far, over all rounds: (name, locked).
    let mut users: Vec<(String, bool)> = Vec::new();
    // Users whose device key was registered (by a login) before a crash.
    let mut keyed: Vec<String> = Vec::new();
    for round in 0..5u32 {
        // Kill after the k-th acknowledgement (k from 1 to 12), then a little later still
        // (0 to 30 ms), so the kill lands at varying points of the next request: argon2,
        // the SQLite commit, or writing the answer.
        let k = 1 + rng.below(12) as usize;
        let jitter = Duration::from_millis(rng.below(31));
        let (tx, rx) = mpsc::channel();
        let socket = server.control.clone();
        let writer = std::thread::spawn(move || write_stream(&socket, round, tx));
        loop {
            let n = rx
                .recv_timeout(crate::harness::TIMEOUT)
                .expect("the write stream stalled before the kill point");
            if n >= k {
                break;
            }
        }
        std::thread::sleep(jitter);
        let status = server.stop_with(Signal::SIGKILL);
        assert_eq!(status.code(), None, "chatd was killed, it did not exit");
        let acked = writer.join().expect("writer thread");
        eprintln!(
            "round {round}: killed after ack {k} (+{jitter:?}); {} added, {} locked acknowledged",
            acked.added.len(),
            acked.locked.len()
        );
        assert!(acked.added.len() + acked.locked.len() >= k);
        users.extend(
            acked
                .added
                .iter()
                .filter(|n| acked.lock_unknown.as_ref() != Some(*n))
                .map(|n| (n.clone(), acked.locked.contains(n))),
        );

        server = Server::start_in(data.path(), loopback0());
        assert_eq!(integrity_check(&db), "ok", "after crash {round}");
        let list = server.ctl(&["--json", "user", "list"], None).json();
        let listed: Vec<(String, bool)> = list["users"]
            .as_array()
            .expect("users array")
            .iter()
            .map(|u| {
                (
                    u["user"].as_str().expect("name").to_string(),
                    u["locked"].as_bool().expect("locked"),
                )
            })
            .collect();
        for (name, locked) in &users {
            // An unacknowledged add may or may not have landed; an acknowledged one must have,
            // with its acknowledged lock.
            assert!(
                listed.contains(&(name.clone(), *locked)),
                "acknowledged {name} (locked: {locked}) lost after crash {round}: {list}"
            );
        }
        // Keys registered before this crash survived it.
        let keys = server.ctl(&["--json", "key", "list"], None).json();
        let key_owners: Vec<&str> = keys["keys"]
            .as_array()
            .expect("keys array")
            .iter()
            .filter_map(|k| k["user"].as_str())
            .collect();
        for name in &keyed {
            assert!(
                key_owners.contains(&name.as_str()),
                "{name}'s device key lost: {keys}"
            );
        }
        // Every acknowledged, unlocked user of this round can log in (which registers a key
        // the next crash must keep); a locked one is refused.
        for name in &acked.added {
            if let Some(unknown) = &acked.lock_unknown {
                if unknown == name {
                    assert!(
                        listed.iter().any(|(n, _)| n == name),
                        "acknowledged {name} lost: {list}"
                    );
                    continue;
                }
            }
            let mut raw = Raw::connect(&server);
            // One fixed key for all: generating a key per user would dominate the test.
            raw.key = Some(test_key("alice"));
            raw.hello();
            let answer: Value = raw.try_login(name, &format!("pw-{name}"));
            if acked.locked.contains(name) {
                assert_eq!(answer["code"], "invalid_credentials", "{name}: {answer}");
            } else {
                assert_eq!(answer["type"], "login_ok", "{name}: {answer}");
                keyed.push(name.clone());
            }
        }
    }
    assert_eq!(server.stop_sigterm().code(), Some(0));
    assert_eq!(integrity_check(&db), "ok", "after the final clean stop");
}
