//! Three chatd nodes on one real PostgreSQL database and one real nats-server: room lines and
//! whispers cross nodes once each and in order; lines stored through one node are replayed
//! at a login on another; `/list` and `/whois` see the whole cluster; `chatctl user lock` on
//! one node ends a session on another; nothing on the bus or in the database is readable.

use serde_json::{Value, json};

use crate::harness::{Raw, TestCluster};

/// No rate limit in the way of a quick stream of messages.
const FAST: &str = "[limits]\nmessages_per_sec = 100000\nmessage_burst = 100000";

/// The next envelope `raw` receives, skipping presence, device and room notices.
fn next_envelope(raw: &mut Raw) -> Value {
    loop {
        let frame = raw.recv();
        if frame["type"] == "envelope" {
            return frame;
        }
        assert!(
            ["presence", "room", "members", "backlog", "notice", "held"]
                .contains(&frame["type"].as_str().unwrap_or("")),
            "unexpected frame: {frame}"
        );
    }
}

/// Waits until `raw`'s `/list` names every one of `users` as online.
fn wait_listed(raw: &mut Raw, users: &[&str]) -> Value {
    for _ in 0..100 {
        raw.command("list", "");
        let frame = loop {
            let f = raw.recv();
            if f["type"] == "users" {
                break f;
            }
        };
        let online: Vec<&str> = frame["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["user"].as_str())
            .collect();
        if users.iter().all(|u| online.contains(u)) {
            return frame;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{users:?} never all listed as online");
}

#[test]
fn lines_cross_nodes_once_in_order_and_stored_lines_replay_on_another_node() {
    let Some(mut cluster) = TestCluster::start(3, FAST) else {
        return;
    };
    cluster.wait_all_joined();
    for (user, pw) in [
        ("alice", "pw-a"),
        ("bob", "pw-b"),
        ("carol", "pw-c"),
        ("dave", "pw-d"),
    ] {
        cluster.node(1).add_user(user, pw);
    }
    // dave's device key is registered through node 2; he leaves.
    let mut dave = Raw::login(cluster.node(2), "dave", "pw-d");
    dave.send(json!({"type":"quit"}));
    dave.expect_bye("quit");

    let mut alice = Raw::login(cluster.node(1), "alice", "pw-a");
    let mut bob = Raw::login(cluster.node(2), "bob", "pw-b");
    let mut carol = Raw::login(cluster.node(3), "carol", "pw-c");
    // Everyone sees everyone, from every node.
    let list = wait_listed(&mut carol, &["alice", "bob", "carol"]);
    assert!(
        !list.to_string().contains("\"dave\""),
        "dave is offline: {list}"
    );
    wait_listed(&mut alice, &["alice", "bob", "carol"]);

    // Room lines from node 1 reach node 2 and 3 once each, in order.
    let sent: Vec<String> = (0..20).map(|i| alice.say(&format!("lobby {i}"))).collect();
    // (dave is offline: each line is stored for him too, and alice told so.)
    for data in &sent {
        assert_eq!(
            next_envelope(&mut alice)["data"].as_str(),
            Some(data.as_str())
        );
    }
    for raw in [&mut bob, &mut carol] {
        for data in &sent {
            let env = next_envelope(raw);
            assert_eq!(env["from"], "alice", "{env}");
            assert_eq!(
                env["data"].as_str(),
                Some(data.as_str()),
                "out of order or lost"
            );
        }
        raw.sync(7);
    }

    // Whispers across nodes, both ways; the third node hears nothing of them.
    let w = alice.whisper("carol", "to carol");
    assert_eq!(next_envelope(&mut alice)["data"].as_str(), Some(w.as_str()));
    assert_eq!(next_envelope(&mut carol)["data"].as_str(), Some(w.as_str()));
    let back = carol.whisper("alice", "to alice");
    carol.expect_envelope("carol", &back);
    assert_eq!(
        next_envelope(&mut alice)["data"].as_str(),
        Some(back.as_str())
    );
    bob.sync(8);

    // /whois on node 3 sees alice's session on node 1.
    carol.command("whois", "alice");
    let whois = loop {
        let f = carol.recv();
        if f["type"] == "whois" {
            break f;
        }
    };
    assert_eq!(whois["sessions"], 1, "{whois}");

    // Lines for dave (offline) sent through node 1 are stored; he logs in on node 3 and gets
    // them in order, then the live ones.
    alice.sync(9);
    let stored: Vec<String> = (0..5)
        .map(|i| {
            let data = alice.whisper("dave", &format!("for dave {i}"));
            alice.expect_envelope("alice", &data);
            let held = alice.recv_type("held");
            assert_eq!(held["users"], json!(["dave"]), "{held}");
            data
        })
        .collect();
    // He was offline for the room's lines too: those first, as sent.
    let mut dave = Raw::login(cluster.node(3), "dave", "pw-d");
    for data in sent.iter().chain(&stored) {
        assert_eq!(
            next_envelope(&mut dave)["data"].as_str(),
            Some(data.as_str())
        );
    }
    let live = alice.whisper("dave", "live for dave");
    assert_eq!(
        next_envelope(&mut dave)["data"].as_str(),
        Some(live.as_str())
    );

    // A lock through node 1's control socket ends carol's session on node 3.
    cluster
        .node(1)
        .ctl(&["user", "lock", "carol"], None)
        .assert_ok();
    let (_, closed) = carol.recv_until_closed();
    let _ = closed;
    assert!(
        cluster
            .node_mut(3)
            .log
            .all()
            .iter()
            .any(|l| l.contains("account locked")),
        "node 3 did not end carol's session for the lock"
    );
}
