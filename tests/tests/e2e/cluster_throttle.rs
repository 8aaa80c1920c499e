//! The login throttle shared through PostgreSQL: two real chatd processes on one database
//! (`[cluster] database`, no NATS), each with its own state dir and port. Wrong passwords
//! through node 1 slow the next login on node 2, for the address and for the account, with
//! the same message; a successful login on either node clears the counts for both.

use std::time::{Duration, Instant};

use chatd_testkit::postgres::TempPostgres;
use serde_json::Value;

use crate::harness::{Mode, Raw, Server, TIMEOUT, attacker, write_config};

/// Small limits, so the test waits seconds: two free failures, then 1 s, 2 s, 4 s (the
/// address's cap), and 3 s at most for the account.
const LIMITS: &str = "[limits]\nlogin_free_failures = 2\nmax_login_failures = 100\n\
                      login_backoff_max_secs = 4\naccount_backoff_max_secs = 3\n";

/// chatd as node `node` in `dir`, on the database at `url`.
fn node(dir: &std::path::Path, node: &str, url: &str) -> Server {
    let (file, control) = write_config(
        dir,
        &format!("{LIMITS}[cluster]\nnode = {node:?}\ndatabase = {url:?}\n"),
    );
    Server::try_start(Mode::Config {
        file: &file,
        control: &control,
    })
    .unwrap_or_else(|f| panic!("chatd {node} failed to start ({}):\n{}", f.status, f.stderr))
}

fn code(frame: &Value) -> &str {
    frame["code"].as_str().unwrap_or("")
}

/// The seconds a `rate_limited` refusal says to wait, checking the rest of its message.
fn throttled(frame: &Value, whom: &str) -> u64 {
    assert_eq!(code(frame), "rate_limited", "{frame}");
    let msg = frame["message"].as_str().unwrap_or("");
    let prefix = format!("too many failed logins {whom}; try again in ");
    msg.strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" s"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a throttle message {whom}: {msg:?}"))
}

#[test]
fn wrong_passwords_through_one_node_slow_logins_on_the_other() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let url = pg.url(&pg.create_database().unwrap());
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node1 = node(dir1.path(), "node-1", &url);
    let mut node2 = node(dir2.path(), "node-2", &url);
    node1.add_user("alice", "right");

    // Connected before the guessing, so node 2 is asked at once when it ends.
    let mut guesser = Raw::connect(&node1);
    guesser.hello();
    let mut same_address = Raw::connect(&node2);
    same_address.hello();
    let mut elsewhere = Raw::connect_from(&node2, attacker(7));
    elsewhere.hello();

    // Wrong passwords through node 1, sitting out each wait, until five have counted: the
    // address now waits 4 s (its cap) and the account 3 s (its cap).
    let deadline = Instant::now() + TIMEOUT;
    let mut counted = 0;
    while counted < 5 {
        let reply = guesser.try_login("alice", "wrong");
        if code(&reply) == "invalid_credentials" {
            counted += 1;
        } else {
            throttled(&reply, "from your address");
            assert!(Instant::now() < deadline, "the waits never ended");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(counted == 5 && Instant::now() < deadline);

    // Node 2 has seen none of this, yet even the right password must wait there: from the
    // same address, and from another one for the account.
    let wait = throttled(
        &same_address.try_login("alice", "right"),
        "from your address",
    );
    assert!((1..=4).contains(&wait), "{wait}");
    let wait = throttled(&elsewhere.try_login("alice", "right"), "for this account");
    assert!((1..=3).contains(&wait), "{wait}");
    node2
        .log
        .expect_contains("login throttled from your address");
    node2
        .log
        .expect_contains("login throttled for this account");

    // Once the wait is over the right password works on node 2 ...
    loop {
        let reply = same_address.try_login("alice", "right");
        if reply["type"] == "login_ok" {
            break;
        }
        throttled(&reply, "from your address");
        assert!(Instant::now() < deadline, "the wait never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    // ... and clears the counts for node 1 too: the account at once from elsewhere, and the
    // address with its free failures again.
    let mut other = Raw::connect_from(&node1, attacker(8));
    other.hello();
    let reply = other.try_login("alice", "right");
    assert_eq!(reply["type"], "login_ok", "{reply}");
    let mut again = Raw::connect(&node1);
    again.hello();
    for _ in 0..2 {
        let reply = again.try_login("alice", "wrong");
        assert_eq!(code(&reply), "invalid_credentials", "{reply}");
    }
}
