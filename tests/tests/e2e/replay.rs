//! Replay, loss and time with the real `chat`: messages stored for a device that was away
//! for ten minutes or six days (its clock moved with libfaketime; nothing sleeps) are shown
//! exactly once, also across restarts; a scripted server replaying stored lines and chains to
//! a restarted `chat` gets nothing shown twice (docs/PROTOCOL.md, "End-to-end messages").

use std::os::unix::fs::PermissionsExt;

use chatd_proto::e2e::{ChainSnapshot, DeviceKey, SenderChain, seal, wrap_chain};
use serde_json::{Value, json};

use crate::harness::{
    Chat, ClientHome, FakeServer, Server, exactly, key_b64, loopback0, now_ms, test_key,
};

/// How often `line` (a message's text, so unique per test) appears in `out`.
fn count(out: &[String], text: &str) -> usize {
    out.iter().filter(|l| l.contains(text)).count()
}

/// Lines that are warnings (`!! ...`).
fn warnings(out: &[String]) -> Vec<&String> {
    out.iter().filter(|l| l.contains("!! ")).collect()
}

#[test]
fn stored_for_ten_minutes_or_six_days_is_shown_once_also_after_a_restart() {
    for offset in ["+10m", "+6d"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_in(dir.path(), loopback0());
        server.add_user("alice", "pw-a");
        server.add_user("bob", "pw-b");
        let alice_home = ClientHome::new();
        let mut bob_home = ClientHome::new();

        // Both devices meet once (each pins the other), then bob leaves.
        let mut alice = Chat::login(&server, "alice", "pw-a", &alice_home);
        let bob = Chat::login(&server, "bob", "pw-b", &bob_home);
        alice.out.expect_contains("pinned bob's device key");
        let first = bob.wait();
        assert!(first.status.success(), "{:?}", first.stderr);
        alice.out.expect_contains("-- bob left");

        // A whisper and a room message, stored for bob's offline device.
        let (whisper, room) = (format!("WHISPER{offset}"), format!("ROOM{offset}"));
        alice.send(&format!("/w bob {whisper}"));
        alice.out.expect_contains("-- stored for bob (offline)");
        alice.send(&room);
        alice.out.expect("the room message stored too", |l| {
            l.contains("-- stored for bob (offline)") && !l.contains(&whisper)
        });

        // bob comes back with a clock moved far ahead: live messages would be refused at
        // that distance, stored ones are accepted for the server's whole offline TTL.
        bob_home.set_clock(offset);
        let mut bob = Chat::login(&server, "bob", "pw-b", &bob_home);
        bob.out
            .expect("the whisper", exactly(&format!("*alice* {whisper}")));
        bob.out
            .expect("the room message", exactly(&format!("<alice> {room}")));
        bob.out
            .expect_contains("-- end of what was stored while you were offline");
        let run = bob.wait();
        assert!(run.status.success(), "{:?}", run.stderr);
        assert_eq!(count(&run.stdout, &whisper), 1, "{:?}", run.stdout);
        assert_eq!(count(&run.stdout, &room), 1, "{:?}", run.stdout);
        assert!(warnings(&run.stdout).is_empty(), "{:?}", run.stdout);

        // The receiver chains were kept, in a private file that holds no text in clear.
        let state = bob_home.key_args("bob")[1].clone() + ".state";
        let meta = std::fs::metadata(&state).expect("the state file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let bytes = std::fs::read(&state).unwrap();
        assert!(bytes.starts_with(b"CHATSTATE"));
        assert!(
            !bytes
                .windows(whisper.len())
                .any(|w| w == whisper.as_bytes())
        );

        // Started again: nothing is shown again.
        let again = Chat::login(&server, "bob", "pw-b", &bob_home).wait();
        assert!(again.status.success(), "{:?}", again.stderr);
        assert_eq!(count(&again.stdout, &whisper), 0, "{:?}", again.stdout);
        assert_eq!(count(&again.stdout, &room), 0, "{:?}", again.stdout);
        assert!(warnings(&again.stdout).is_empty(), "{:?}", again.stdout);
        drop(alice);
    }
}

/// What the replay test has the scripted server do.
impl FakeServer {
    /// `chat` for bob against this server, through hello and login.
    fn login_bob(&self, home: &ClientHome, alice: &DeviceKey) -> Chat {
        let bob = Chat::spawn(
            &self.addr.to_string(),
            "bob",
            "bob-pw",
            home,
            &["--accept-fingerprint", &self.fingerprint.to_string()],
        );
        self.recv_type("hello");
        self.send(
            json!({"type":"hello","version":chatd_proto::PROTOCOL_VERSION,
            "server":"evil/1","max_line_bytes":65536,"max_text_bytes":16384,
            "offline_ttl_secs":604800}),
        );
        self.recv_type("login");
        let bob_key = test_key("bob");
        self.send(json!({"type":"login_ok","user":"bob","session":1,
            "device":bob_key.fingerprint().to_string(),"online":["bob"],"room":"lobby",
            "devices":[device("alice", alice), device("bob", &bob_key)]}));
        bob
    }

    /// Quits `chat` the way chatd would answer, and returns its output.
    fn quit(&self, mut bob: Chat) -> Vec<String> {
        bob.send("/quit");
        self.recv_type("quit");
        self.send(json!({"type":"bye","reason":"quit"}));
        let exit = bob.wait();
        assert!(exit.status.success(), "{:?}", exit.stderr);
        exit.stdout
    }
}

fn device(user: &str, key: &DeviceKey) -> Value {
    json!({"user": user, "fingerprint": key.fingerprint().to_string(), "key": key_b64(key),
        "online": false})
}

fn chain(from: &DeviceKey, data: &str) -> Value {
    json!({"type":"chain","from":"alice","device":from.fingerprint().to_string(),"data":data})
}

fn envelope(from: &DeviceKey, data: &str) -> Value {
    json!({"type":"envelope","from":"alice","device":from.fingerprint().to_string(),
        "data":data,"ts":now_ms()})
}

fn backlog(upto: u64) -> Value {
    json!({"type":"backlog","upto":upto,"count":1,"more":false})
}

#[test]
fn a_replayed_stored_message_or_resent_chain_shows_nothing_twice_after_a_restart() {
    let fake = FakeServer::start();
    let home = ClientHome::new();
    let alice = test_key("alice");
    let bob_pub = test_key("bob").public();
    let conversation = "alice,bob";
    let mut from_alice = SenderChain::new().unwrap();
    let wrapped = wrap_chain(&from_alice, &alice, "alice", conversation, &bob_pub)
        .unwrap()
        .to_base64()
        .unwrap();
    let say = |chain: &mut SenderChain, text: &str| {
        let body = json!({ "text": text }).to_string();
        seal(&alice, "alice", conversation, chain, &body, now_ms())
            .unwrap()
            .to_base64()
            .unwrap()
    };
    let stored_1 = say(&mut from_alice, "STORED-1");
    let stored_2 = say(&mut from_alice, "STORED-2");
    let live_3 = say(&mut from_alice, "LIVE-3");

    // First run: the chain and one message were stored while bob was away.
    let mut bob = fake.login_bob(&home, &alice);
    bob.out.expect_contains("pinned alice's device key");
    fake.send(chain(&alice, &wrapped));
    fake.send(envelope(&alice, &stored_1));
    fake.send(backlog(2));
    bob.out
        .expect("the stored message", exactly("*alice* STORED-1"));
    // Acknowledged only after it was shown and the state saved.
    assert_eq!(fake.recv_type("backlog_ack")["upto"], 2);
    let first = fake.quit(bob);

    // bob restarts; the server delivers the same stored lines again, and tries a different
    // chain under the same id (it would reset what bob has seen if it were taken).
    let mut bob = fake.login_bob(&home, &alice);
    let forged = SenderChain::from_snapshot(&ChainSnapshot {
        chain_id: from_alice.chain_id(),
        index: 0,
        chain_key: [7; 32],
    });
    let forged = wrap_chain(&forged, &alice, "alice", conversation, &bob_pub)
        .unwrap()
        .to_base64()
        .unwrap();
    fake.send(chain(&alice, &wrapped));
    fake.send(envelope(&alice, &stored_1));
    fake.send(chain(&alice, &forged));
    fake.send(envelope(&alice, &stored_2));
    fake.send(backlog(4));
    bob.out.expect_contains(
        "!! ignored a chain from alice that reuses the id of one already received",
    );
    bob.out
        .expect("the new stored message", exactly("*alice* STORED-2"));
    bob.out.expect_contains(
        "-- skipped 1 message delivered again by the server: already shown here before",
    );
    assert_eq!(fake.recv_type("backlog_ack")["upto"], 4);

    // Live: the chain sent again resets nothing, the old message is a replay.
    fake.send(chain(&alice, &wrapped));
    fake.send(envelope(&alice, &stored_1));
    bob.out
        .expect_contains("dropped a message from alice: it is a replay");
    fake.send(envelope(&alice, &live_3));
    bob.out
        .expect("the live message", exactly("*alice* LIVE-3"));
    let second = fake.quit(bob);

    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    for text in ["STORED-1", "STORED-2", "LIVE-3"] {
        let shown = all
            .iter()
            .filter(|l| l.contains(text) && !l.contains("!! "))
            .count();
        assert_eq!(shown, 1, "{text} shown {shown} times: {all:?}");
    }
    assert_eq!(warnings(&second).len(), 2, "{second:?}");
}
