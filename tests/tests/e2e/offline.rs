//! Offline delivery: what is sent to a registered device while it is offline is stored
//! (sealed, as sent), survives restarts and crashes, and reaches it in order at its next
//! login, until it acknowledges; per-device cap and time-to-live.

use serde_json::{Value, json};

use crate::harness::{Chat, ClientHome, Raw, Server, exactly, loopback0};

/// No rate limit in the way of a quick stream of messages.
const FAST: &str = "messages_per_sec = 100000\nmessage_burst = 100000";

/// Logs `user` in once so the server knows its device key, then leaves.
fn register_device(server: &Server, user: &str, password: &str) {
    let mut raw = Raw::login(server, user, password);
    raw.send(json!({"type":"quit"}));
    raw.expect_bye("quit");
}

/// The next frame must be `held` for `message` naming exactly `users`.
fn expect_held(raw: &mut Raw, users: &[&str]) -> Value {
    let held = raw.recv_type("held");
    assert_eq!(held["users"], json!(users), "{held}");
    assert_eq!(held["message"].as_str().map(str::len), Some(32), "{held}");
    held
}

/// alice whispers `n` messages to offline bob, each echoed and then acknowledged as stored;
/// returns them in order.
fn whisper_stored(alice: &mut Raw, n: usize, what: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let data = alice.whisper("bob", &format!("{what} {i}"));
            alice.expect_envelope("alice", &data);
            expect_held(alice, &["bob"]);
            data
        })
        .collect()
}

/// Logs in and collects the replayed envelopes up to the final `backlog` marker; returns
/// them (data) and the marker.
fn login_and_replay(server: &Server, user: &str, password: &str) -> (Raw, Vec<String>, Value) {
    let mut raw = Raw::login(server, user, password);
    let mut got = Vec::new();
    loop {
        let frame = raw.recv();
        match frame["type"].as_str() {
            Some("envelope") => got.push(frame["data"].as_str().unwrap_or_default().to_string()),
            Some("backlog") if frame["more"] == false => return (raw, got, frame),
            Some("backlog") => {}
            _ => panic!("unexpected frame during replay: {frame}"),
        }
    }
}

#[test]
fn stored_messages_arrive_in_order_survive_a_restart_and_go_once_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), loopback0());
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    register_device(&server, "bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");

    // bob is offline: each whisper is echoed, then acknowledged as stored for bob.
    let mut sent = whisper_stored(&mut alice, 3, "whisper");
    // A room message is stored for every member device that is offline (carol has none).
    let data = alice.say("to everyone");
    alice.expect_envelope("alice", &data);
    let held = expect_held(&mut alice, &["bob"]);
    assert_eq!(held["conversation"], "#lobby");
    sent.push(data);
    alice.sync(1);

    // Stored means durable: a restart keeps them.
    drop(alice);
    assert!(server.stop_sigterm().success());
    let server = Server::start_in(dir.path(), loopback0());

    // bob's login replays them in order, ended by the marker; live traffic comes after.
    let (bob, got, marker) = login_and_replay(&server, "bob", "pw-b");
    assert_eq!(got, sent);
    assert_eq!(marker["count"], 4);
    // Not acknowledged: a reconnection gets them again.
    drop(bob);
    let (mut bob, again, marker) = login_and_replay(&server, "bob", "pw-b");
    assert_eq!(again, sent);
    bob.send(json!({"type":"backlog_ack","upto":marker["upto"]}));
    bob.sync(2);
    drop(bob);
    // Acknowledged: gone. The next login's first frame after login_ok is the pong.
    let mut bob = Raw::login(&server, "bob", "pw-b");
    bob.sync(3);
    let status = server.ctl(&["--json", "status"], None).json();
    assert_eq!(status["offline_stored"], 0, "{status}");
}

#[test]
fn live_messages_wait_behind_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(dir.path(), FAST);
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    register_device(&server, "bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut sent = Vec::new();
    for i in 0..300 {
        let data = alice.whisper("bob", &format!("stored {i}"));
        sent.push(data);
    }
    // Every one is stored before bob logs in: 300 echoes (in order) and 300 `held`.
    let (mut echoes, mut held) = (Vec::new(), 0);
    while echoes.len() < sent.len() || held < sent.len() {
        let frame = alice.recv();
        match frame["type"].as_str() {
            Some("envelope") => echoes.push(frame["data"].as_str().unwrap_or_default().to_string()),
            Some("held") => held += 1,
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(echoes, sent);
    // bob logs in while alice keeps sending: nothing live overtakes what was stored.
    let mut bob = Raw::connect(&server);
    bob.hello();
    bob.key = Some(crate::harness::test_key("bob"));
    let key = crate::harness::key_b64(&crate::harness::test_key("bob"));
    bob.send(json!({"type":"login","user":"bob","password":"pw-b","device_key":key}));
    let mut live = Vec::new();
    for i in 0..20 {
        live.push(alice.whisper("bob", &format!("live {i}")));
    }
    assert_eq!(bob.recv_type("login_ok")["user"], "bob");
    let mut order = Vec::new();
    let (mut markers, mut last_marker) = (0, false);
    while order.len() < sent.len() + live.len() || !last_marker {
        let frame = bob.recv();
        match frame["type"].as_str() {
            Some("envelope") => order.push(frame["data"].as_str().unwrap_or_default().to_string()),
            Some("backlog") => {
                markers += 1;
                last_marker = frame["more"] == false;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    // Some of the live ones may have been stored too (sent before bob registered): either
    // way, the order is the sending order.
    let expected: Vec<String> = sent.iter().chain(&live).cloned().collect();
    assert_eq!(order, expected);
    assert!(markers >= 2, "300 stored lines come in batches of 256");
}

#[test]
fn exactly_one_batch_ends_with_a_final_marker() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(dir.path(), FAST);
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    register_device(&server, "bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let sent: Vec<String> = (0..256)
        .map(|i| alice.whisper("bob", &format!("m{i}")))
        .collect();
    let mut held = 0;
    while held < sent.len() {
        if alice.recv()["type"] == "held" {
            held += 1;
        }
    }
    // 256 is one full batch: its marker already says nothing more follows.
    let (mut bob, got, marker) = login_and_replay(&server, "bob", "pw-b");
    assert_eq!(got, sent);
    assert_eq!(
        (&marker["count"], &marker["more"]),
        (&json!(256), &json!(false))
    );
    bob.sync(1);
}

#[test]
fn the_per_device_cap_refuses_more_and_tells_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    // The whole queue may be one sender's: the total is what this is about.
    let server = Server::with_limits(
        dir.path(),
        "offline_queue_max = 3\noffline_queue_per_sender = 3",
    );
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    register_device(&server, "bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let kept = whisper_stored(&mut alice, 3, "fits");
    // The fourth is one over the cap: delivered to nobody offline, and the sender is told.
    let data = alice.whisper("bob", "one too many");
    alice.expect_envelope("alice", &data);
    let msg = alice.expect_error("offline_queue_full");
    assert_eq!(
        msg,
        "not stored for bob: their offline queue is full (3 messages); they will not receive this message"
    );
    let (_bob, got, _) = login_and_replay(&server, "bob", "pw-b");
    assert_eq!(got, kept);
}

#[test]
fn stored_messages_expire_after_their_time_to_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(dir.path(), "offline_ttl_secs = 1");
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    // The hello announces it, so clients accept stored messages for exactly that long.
    assert_eq!(Raw::connect(&server).hello()["offline_ttl_secs"], 1);
    register_device(&server, "bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let data = alice.whisper("bob", "soon stale");
    alice.expect_envelope("alice", &data);
    expect_held(&mut alice, &["bob"]);
    // Past the time to live (1 s), with margin: nothing is replayed.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let mut bob = Raw::login(&server, "bob", "pw-b");
    bob.sync(1);
}

#[test]
fn a_revoked_device_gets_nothing_stored() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    register_device(&server, "bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    alice.skip_devices = false;
    let fp = crate::harness::test_key("bob").fingerprint().to_string();
    server.ctl(&["key", "revoke", "bob", &fp], None).assert_ok();
    assert_eq!(
        alice.recv(),
        json!({"type":"device","user":"bob","fingerprint":fp,"event":"removed"})
    );
    alice.whisper("bob", "to nobody");
    assert_eq!(
        alice.expect_error("user_offline"),
        "bob has no device key (no such user, or never logged in)"
    );
}

#[test]
fn acknowledged_stored_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_limits(dir.path(), FAST);
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    register_device(&server, "bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    // A stream of whispers; chatd dies while some are still unacknowledged.
    let mut sent = Vec::new();
    for i in 0..40 {
        sent.push(alice.whisper("bob", &format!("crash {i}")));
    }
    let mut acked = 0;
    while acked < 10 {
        let frame = alice.recv();
        if frame["type"] == "held" {
            acked += 1;
        }
    }
    let status = server.stop_with(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(status.code(), None, "killed by a signal");
    drop(alice);
    let server = Server::with_limits(dir.path(), FAST);
    let (_bob, got, _) = login_and_replay(&server, "bob", "pw-b");
    // Every acknowledged one is there, in order, and nothing else.
    assert!(
        got.len() >= acked,
        "{} stored, {acked} acknowledged",
        got.len()
    );
    assert_eq!(got, sent[..got.len()]);
}

#[test]
fn chat_clients_deliver_to_a_user_who_was_offline() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    // bob's chat has logged in before (so his device key is registered), and left.
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    bob.close_stdin();
    assert_eq!(bob.wait().status.code(), Some(0));

    let mut alice = Chat::login(&server, "alice", "alice-pw", &alice_home);
    alice
        .out
        .expect_contains("-- pinned bob's device key SHA256:");
    alice.send("/whisper bob are you there?");
    alice
        .out
        .expect("the whisper copy", exactly("-> *bob* are you there?"));
    alice.out.expect(
        "the stored notice",
        exactly("-- stored for bob (offline): delivered at the next login"),
    );
    alice.send("meeting at 3");
    alice
        .out
        .expect("the echo", exactly("<alice> meeting at 3"));

    // bob comes back: both arrive, decrypted, in order, before anything live.
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    bob.out
        .expect("the stored whisper", exactly("*alice* are you there?"));
    bob.out
        .expect("the stored broadcast", exactly("<alice> meeting at 3"));
    bob.out.expect(
        "the end of the backlog",
        exactly("-- end of what was stored while you were offline"),
    );
    // Acknowledged: nothing is left stored.
    bob.close_stdin();
    assert_eq!(bob.wait().status.code(), Some(0));
    let status = server.ctl(&["--json", "status"], None).json();
    assert_eq!(
        (&status["offline_stored"], &status["offline_queued"]),
        (&json!(0), &json!(0)),
        "{status}"
    );
}

/// The `held` notice says who is offline once per change, not per message (issue 25: a
/// 60-line script printed "stored for bob, carol (offline)" 60 times). (Changes through
/// users coming back are unit-tested in chat/src/screen.rs.)
#[test]
fn the_stored_notice_is_said_once_per_change() {
    let server = Server::start();
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    register_device(&server, "bob", "pw-b");
    register_device(&server, "carol", "pw-c");
    let home = ClientHome::new();
    let mut alice = Chat::login(&server, "alice", "pw-a", &home);
    alice.out.expect_contains("-- pinned carol's device key");
    for i in 0..6 {
        alice.send(&format!("line {i}"));
        alice.send(&format!("/w bob whisper {i}"));
    }
    // Both notices (in either order); any later `held` can only repeat them. Every echo
    // comes before the answer to /quit.
    for _ in 0..2 {
        alice.out.expect_contains("-- stored for ");
    }
    alice.send("/quit");
    let exit = alice.wait();
    let lines = |text: &str| exit.stdout.iter().filter(|l| l.contains(text)).count();
    assert_eq!(lines("<alice> line "), 6, "{:?}", exit.stdout);
    assert_eq!(lines("-> *bob* whisper "), 6, "{:?}", exit.stdout);
    assert_eq!(
        lines("-- stored for bob, carol (offline): delivered at the next login"),
        1,
        "{:?}",
        exit.stdout
    );
    assert_eq!(
        lines("-- stored for bob (offline): delivered at the next login"),
        1,
        "{:?}",
        exit.stdout
    );
}
