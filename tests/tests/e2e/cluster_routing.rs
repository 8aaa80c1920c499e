//! Three chatd nodes on one real PostgreSQL database and one real nats-server: room lines and
//! whispers cross nodes once each and in order; lines stored through one node are replayed
//! at a login on another; `/list` and `/whois` see the whole cluster; `chatctl user lock` on
//! one node ends a session on another; nothing on the bus or in the database is readable.

use serde_json::{Value, json};

use crate::harness::{Mode, Raw, Server, TestCluster, run_chatd, write_config};

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
    let stored: Vec<String> = (0..5)
        .map(|i| {
            let data = alice.whisper("dave", &format!("for dave {i}"));
            assert_eq!(
                next_envelope(&mut alice)["data"].as_str(),
                Some(data.as_str())
            );
            // (The room's lines may still be being acknowledged as stored.)
            let held = loop {
                let f = alice.recv_type("held");
                if f["conversation"] != "#lobby" {
                    break f;
                }
            };
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

    // chatctl on node 1 sees the cluster: its nodes, and sessions on every node.
    let status = cluster.node(1).ctl(&["status"], None);
    status.assert_ok();
    let nodes = status
        .stdout
        .lines()
        .find(|l| l.starts_with("nodes:"))
        .unwrap_or_else(|| panic!("no nodes line: {}", status.stdout));
    assert!(
        nodes.contains("3: n1 (this node), n2 (heard") && nodes.contains("n3 (heard"),
        "{nodes}"
    );
    let who = cluster.node(1).ctl(&["who"], None);
    who.assert_ok();
    for (user, node) in [
        ("alice", "n1"),
        ("bob", "n2"),
        ("carol", "n3"),
        ("dave", "n3"),
    ] {
        assert!(
            who.stdout
                .lines()
                .any(|l| l.contains(&format!(" {user} ")) && l.trim_end().ends_with(node)),
            "{user} on {node} missing:\n{}",
            who.stdout
        );
    }
    // A node that does not answer (paused for less than the timeout) is named, not skipped.
    let pid = nix::unistd::Pid::from_raw(cluster.node(2).pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let who = cluster.node(1).ctl(&["who"], None);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    who.assert_ok();
    assert!(
        who.stdout
            .contains("node n2 did not answer: its sessions are not listed"),
        "{}",
        who.stdout
    );
    assert!(!who.stdout.contains(" bob "), "{}", who.stdout);

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

#[test]
fn the_bus_token_comes_from_a_file_and_a_wrong_one_stops_start_up() {
    if !chatd_testkit::nats::available() {
        return;
    }
    let Some(pg) = chatd_testkit::postgres::TempPostgres::shared() else {
        return;
    };
    let db = pg.create_database().unwrap();
    let url = format!(
        "postgresql://postgres@/{db}?host={}&port=5432",
        pg.socket_dir().display()
    );
    let mut nats = chatd_testkit::nats::TempNats::start_with_token("bus-token-5Hq").unwrap();
    let nats_url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("nats-token");
    let config = |extra: &str| {
        format!("[cluster]\nnode = \"n1\"\ndatabase = {url:?}\nnats = {nats_url:?}\n{extra}\n")
    };
    let start = |extra: &str| {
        let (file, control) = write_config(dir.path(), &config(extra));
        Server::try_start(Mode::Config {
            file: &file,
            control: &control,
        })
    };
    // No token, and a wrong one: start-up stops, naming the bus and the reason, never the token.
    for extra in ["", &format!("nats_token_file = {token:?}")] {
        std::fs::write(&token, "not-the-token\n").unwrap();
        let failed = start(extra)
            .err()
            .expect("chatd started with a wrong token");
        assert!(
            failed
                .stderr
                .contains(&format!("cluster bus {}", nats.url()))
                && failed.stderr.contains("authorization violation"),
            "{}",
            failed.stderr
        );
        assert!(
            !failed.stderr.contains("not-the-token"),
            "{}",
            failed.stderr
        );
    }
    // --check-config says the same, and with the right token names the server.
    let check = |extra: &str| {
        let (file, _) = write_config(dir.path(), &config(extra));
        run_chatd(&[
            std::ffi::OsStr::new("--check-config"),
            std::ffi::OsStr::new("--config"),
            file.as_os_str(),
        ])
    };
    let with_file = format!("nats_token_file = {token:?}");
    let (status, _, err) = check(&with_file);
    assert!(
        !status.success() && err.contains("authorization violation"),
        "{err}"
    );
    std::fs::write(&token, "bus-token-5Hq\n").unwrap();
    let (status, out, err) = check(&with_file);
    assert!(status.success(), "{err}");
    assert!(out.contains("cluster bus: nats-server "), "{out}");
    // The right one joins.
    let server = start(&format!("nats_token_file = {token:?}")).unwrap();
    let log = server.log.all().join("\n");
    assert!(log.contains("cluster: joining over NATS node=n1"), "{log}");
    assert!(!log.contains("bus-token-5Hq"), "{log}");
    // A bus that is down: the check warns and passes (start-up would go on without it).
    nats.stop();
    let (status, _, err) = check(&with_file);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("chatd: warning: cluster bus nats://127.0.0.1:")
            && err.contains("unreachable"),
        "{err}"
    );
}

/// Publishes `payload` on `subject` from a plain NATS connection to `nats`.
fn publish_raw(nats: &chatd_testkit::nats::TempNats, subject: &str, payload: &[u8]) {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", nats.port())).unwrap();
    let mut info = String::new();
    BufReader::new(&s).read_line(&mut info).unwrap();
    let mut msg = format!(
        "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n",
        payload.len()
    )
    .into_bytes();
    msg.extend_from_slice(payload);
    msg.extend_from_slice(b"\r\nPING\r\n");
    s.write_all(&msg).unwrap();
    let mut pong = String::new();
    BufReader::new(&s).read_line(&mut pong).unwrap();
    assert!(pong.starts_with("PONG"), "{pong}");
}

#[test]
fn junk_and_another_bus_version_on_the_bus_are_refused_and_routing_goes_on() {
    let Some(mut cluster) = TestCluster::start(2, FAST) else {
        return;
    };
    cluster.wait_all_joined();
    // A node of another version: named once in the log, never counted as a peer.
    let beat =
        br#"J{"kind":"heartbeat","from":{"name":"n9","incarnation":7},"sent_ms":1,"version":99}"#;
    for _ in 0..3 {
        publish_raw(&cluster.nats, "chatd.hello", beat);
    }
    cluster
        .node_mut(1)
        .log
        .expect_contains("a cluster node speaks another version of the bus and is ignored");
    // Junk where routed lines go: dropped and said, nothing else happens.
    for junk in [&b"R\x05"[..], b"Jnot json", b"", b"\xff\xfe"] {
        publish_raw(&cluster.nats, "chatd.node.n2", junk);
    }
    cluster
        .node_mut(2)
        .log
        .expect_contains("dropped a message from the cluster bus");
    for user in ["alice", "bob"] {
        cluster.node(1).add_user(user, "pw");
    }
    let mut alice = Raw::login(cluster.node(1), "alice", "pw");
    let mut bob = Raw::login(cluster.node(2), "bob", "pw");
    wait_listed(&mut alice, &["alice", "bob"]);
    let data = alice.whisper("bob", "still routed");
    assert_eq!(
        next_envelope(&mut bob)["data"].as_str(),
        Some(data.as_str())
    );
    let status = cluster.node(1).ctl(&["status"], None);
    assert!(
        status
            .stdout
            .contains("nodes:                   2: n1 (this node), n2"),
        "{}",
        status.stdout
    );
    let log = cluster.node_mut(1).log.all().join("\n");
    assert_eq!(
        log.matches("speaks another version of the bus").count(),
        1,
        "said once per incarnation:\n{log}"
    );
}
