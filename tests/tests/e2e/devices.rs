//! Devices vouched for by devices: chatd's checks of `vouch` frames, their storage and
//! announcement, `/revoke`; and the new-laptop story with real `chat` processes: a new
//! device approved with its code (`/devices approve`, `chat --approve-device`), used by
//! everyone without a warning, and one never approved that reads nothing.

use chatd_proto::e2e::Vouch;
use serde_json::{Value, json};

use crate::harness::{
    Chat, ClientHome, Raw, Server, exactly, loopback0, now_ms, run_chat, test_key, unstamped,
};

/// Waits for the new device's "not approved yet" notice and returns its code.
pub fn approval_code(chat: &mut Chat) -> String {
    let line = chat.out.expect_contains(
        "-- this device is not approved yet: on one of your other devices type /devices approve ",
    );
    let after = line
        .split("/devices approve ")
        .nth(1)
        .unwrap_or_else(|| panic!("no code in {line:?}"));
    after.split_whitespace().next().unwrap().to_string()
}

fn marker(what: &str) -> String {
    format!("MARK-{what}-{}", now_ms())
}

/// No `!!` line in what `chat` printed.
fn no_warnings(chat: &Chat, who: &str) {
    only_warnings(chat, who, &[]);
}

/// No `!!` line in what `chat` printed but ones naming all of one of `expected`'s word lists.
fn only_warnings(chat: &Chat, who: &str, expected: &[&[&str]]) {
    let warnings: Vec<String> = chat
        .out
        .all()
        .into_iter()
        .filter(|l| unstamped(l).is_some_and(|t| t.starts_with("!!")))
        .filter(|l| {
            !expected
                .iter()
                .any(|words| words.iter().all(|w| l.contains(w)))
        })
        .collect();
    assert!(warnings.is_empty(), "{who} was warned: {warnings:#?}");
}

fn vouch_b64(by: &str, user: &str, of: &str) -> String {
    Vouch::sign(
        &test_key(by),
        user,
        test_key(of).fingerprint(),
        now_ms(),
        None,
    )
    .unwrap()
    .to_base64()
    .unwrap()
}

/// The `vouches` chatd lists for `user`'s key of `label` in a `login_ok`.
fn listed_vouches(login_ok: &Value, label: &str) -> Option<Value> {
    let fp = test_key(label).fingerprint().to_string();
    login_ok["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["fingerprint"] == fp.as_str())
        .map(|d| d["vouches"].clone())
}

#[test]
fn chatd_checks_stores_and_announces_vouches_and_revokes_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), loopback0());
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, &format!("{u}-pw"));
    }
    let vouch = ["vouch"];
    let (mut alice, hello, _) =
        Raw::login_device(&server, "alice", "alice-pw", test_key("alice"), &vouch);
    assert_eq!(hello["features"], json!(["vouch"]));
    // An old client asks for nothing and is told nothing.
    let (mut carol, hello, _) =
        Raw::login_device(&server, "carol", "carol-pw", test_key("carol"), &[]);
    assert!(hello.get("features").is_none(), "{hello}");
    let (mut bob1, _, _) = Raw::login_device(&server, "bob", "bob-pw", test_key("bob"), &vouch);
    let (mut bob2, _, _) =
        Raw::login_device(&server, "bob", "bob-pw", test_key("bob-laptop"), &vouch);

    // Refused, each a bad_envelope: another user's name, another key's signature, a key
    // that is not bob's, a vouch for itself.
    bob1.send(json!({"type":"vouch","data":vouch_b64("bob", "alice", "bob-laptop")}));
    assert!(bob1.expect_error("bad_envelope").contains("another user"));
    bob1.send(json!({"type":"vouch","data":vouch_b64("bob-laptop", "bob", "bob")}));
    assert!(
        bob1.expect_error("bad_envelope")
            .contains("not signed by this session's device key")
    );
    bob1.send(json!({"type":"vouch","data":vouch_b64("bob", "bob", "carol")}));
    assert!(
        bob1.expect_error("bad_envelope")
            .contains("not a registered device key of bob")
    );
    bob1.send(json!({"type":"vouch","data":vouch_b64("bob", "bob", "bob")}));
    assert!(bob1.expect_error("bad_envelope").contains("itself"));
    // An altered vouch (its timestamp), and garbage, from the other device.
    let mut bytes = base64_decode(&vouch_b64("bob-laptop", "bob", "bob"));
    bytes[2 + 2 + 3 + 64] ^= 1;
    bob2.send(json!({"type":"vouch","data":base64_encode(&bytes)}));
    assert!(bob2.expect_error("bad_envelope").contains("signature"));
    bob2.send(json!({"type":"vouch","data":"!!"}));
    bob2.expect_error("bad_envelope");

    // A good one: stored and sent to every session that asked, the sender's included.
    let good = vouch_b64("bob", "bob", "bob-laptop");
    bob1.send(json!({"type":"vouch","data":good}));
    let expected = json!({"type":"vouch","user":"bob","data":good});
    for raw in [&mut alice, &mut bob1, &mut bob2] {
        assert_eq!(next_of(raw, "vouch"), expected);
    }
    // carol did not ask: up to her pong, no vouch.
    carol.send(json!({"type":"ping","nonce":7}));
    loop {
        let frame = carol.recv();
        assert_ne!(frame["type"], "vouch", "an old client got a vouch");
        if frame["type"] == "pong" {
            break;
        }
    }

    // Listed with the key at login, for those who asked only.
    let (_a2, _, login_ok) =
        Raw::login_device(&server, "alice", "alice-pw", test_key("alice"), &vouch);
    assert_eq!(listed_vouches(&login_ok, "bob-laptop"), Some(json!([good])));
    assert_eq!(listed_vouches(&login_ok, "bob"), Some(Value::Null));
    let (_c2, _, login_ok) =
        Raw::login_device(&server, "carol", "carol-pw", test_key("carol"), &[]);
    assert_eq!(listed_vouches(&login_ok, "bob-laptop"), Some(Value::Null));
    // And with the device when it comes online again.
    bob2.send(json!({"type":"quit"}));
    bob2.expect_bye("quit");
    alice.skip_devices = false;
    let offline = next_of(&mut alice, "device");
    assert_eq!(offline["event"], "offline");
    let (bob2, _, _) = Raw::login_device(&server, "bob", "bob-pw", test_key("bob-laptop"), &vouch);
    let online = next_of(&mut alice, "device");
    assert_eq!(online["event"], "online");
    assert_eq!(online["vouches"], json!([good]));
    // Kept over a restart of chatd.
    drop((alice, carol, bob1, bob2));
    assert!(server.stop_sigterm().success());
    let server = Server::start_in(dir.path(), loopback0());
    let (mut alice, _, login_ok) =
        Raw::login_device(&server, "alice", "alice-pw", test_key("alice"), &vouch);
    assert_eq!(listed_vouches(&login_ok, "bob-laptop"), Some(json!([good])));

    // bob revokes the laptop from his first device; not his own session's key, and nobody
    // else's.
    let (mut bob1, _, _) = Raw::login_device(&server, "bob", "bob-pw", test_key("bob"), &vouch);
    let (mut bob2, _, _) =
        Raw::login_device(&server, "bob", "bob-pw", test_key("bob-laptop"), &vouch);
    let own = test_key("bob").fingerprint().to_string();
    bob1.send(json!({"type":"command","name":"revoke","args":own}));
    assert!(
        bob1.expect_error("refused")
            .contains("this session's own device key")
    );
    let carols = test_key("carol").fingerprint().to_string();
    bob1.send(json!({"type":"command","name":"revoke","args":carols}));
    assert!(bob1.expect_error("refused").contains("no device key"));
    let laptop = test_key("bob-laptop").fingerprint().to_string();
    bob1.send(json!({"type":"command","name":"revoke","args":laptop}));
    let notice = bob1.recv_type("notice");
    assert!(
        notice["text"]
            .as_str()
            .unwrap()
            .contains("revoked (1 session(s) ended)"),
        "{notice}"
    );
    bob2.expect_bye("device key revoked");
    alice.skip_devices = false;
    loop {
        let frame = alice.recv();
        if frame["type"] == "device" && frame["event"] == "removed" {
            assert_eq!(frame["fingerprint"], laptop.as_str());
            break;
        }
    }
    // Gone with its vouches; its logins are refused.
    let (_a3, _, login_ok) =
        Raw::login_device(&server, "alice", "alice-pw", test_key("alice"), &vouch);
    assert_eq!(listed_vouches(&login_ok, "bob-laptop"), None);
    let mut again = Raw::connect(&server);
    again.hello();
    again.key = Some(test_key("bob-laptop"));
    let refused = again.try_login("bob", "bob-pw");
    assert_eq!(refused["code"], "key_revoked", "{refused}");
}

/// The next frame of type `ty`, skipping others (presence, devices coming and going).
fn next_of(raw: &mut Raw, ty: &str) -> Value {
    loop {
        let frame = raw.recv();
        if frame["type"] == ty {
            return frame;
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// alice, carol and bob's first device, logged in and knowing each other.
struct Three {
    server: Server,
    alice: Chat,
    carol: Chat,
    bob: Chat,
    bob_home: ClientHome,
    _homes: (ClientHome, ClientHome),
}

fn three() -> Three {
    let server = Server::start();
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, &format!("{u}-pw"));
    }
    let (alice_home, bob_home, carol_home) =
        (ClientHome::new(), ClientHome::new(), ClientHome::new());
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    let mut alice = Chat::login(&server, "alice", "alice-pw", &alice_home);
    alice.out.expect_contains("pinned bob's device key SHA256:");
    let mut carol = Chat::login(&server, "carol", "carol-pw", &carol_home);
    carol
        .out
        .expect_contains("pinned alice's device key SHA256:");
    carol.out.expect_contains("pinned bob's device key SHA256:");
    alice
        .out
        .expect_contains("pinned carol's device key SHA256:");
    bob.out.expect_contains("pinned alice's device key SHA256:");
    bob.out.expect_contains("pinned carol's device key SHA256:");
    Three {
        server,
        alice,
        carol,
        bob,
        bob_home,
        _homes: (alice_home, carol_home),
    }
}

/// `line` as the room message of `from`.
fn said(from: &str, line: &str) -> String {
    format!("<{from}> {line}")
}

#[test]
fn a_new_laptop_approved_from_the_first_device_talks_with_everyone_and_loses_nothing() {
    let Three {
        server,
        mut alice,
        mut carol,
        mut bob,
        bob_home,
        _homes,
    } = three();
    let laptop_home = ClientHome::device("bob-laptop");
    let mut laptop = Chat::login(&server, "bob", "bob-pw", &laptop_home);
    let code = approval_code(&mut laptop);
    // bob's first device sees a device nobody approved, until bob approves it.
    bob.out.expect_contains(
        "!! a device that none of your devices approved logged in to your account: SHA256:",
    );
    bob.send(&format!("/devices approve {code}"));
    bob.out.expect_contains("-- approved your device SHA256:");
    laptop
        .out
        .expect_contains("-- this device was approved by your device SHA256:");
    for who in [&mut alice, &mut carol] {
        who.out.expect_contains("-- bob's new device key SHA256:");
    }

    // alice and carol send to both of bob's devices, and read both.
    let (from_alice, from_carol) = (marker("alice"), marker("carol"));
    alice.send(&from_alice);
    for dev in [&mut bob, &mut laptop] {
        dev.out
            .expect("alice's message", exactly(&said("alice", &from_alice)));
    }
    carol.send(&format!("/w bob {from_carol}"));
    for dev in [&mut bob, &mut laptop] {
        dev.out
            .expect("carol's whisper", exactly(&format!("*carol* {from_carol}")));
    }
    let (from_laptop, from_phone) = (marker("laptop"), marker("phone"));
    laptop.send(&from_laptop);
    for who in [&mut alice, &mut carol, &mut bob] {
        who.out
            .expect("the laptop's message", exactly(&said("bob", &from_laptop)));
    }
    bob.send(&from_phone);
    for who in [&mut alice, &mut carol, &mut laptop] {
        who.out
            .expect("the phone's message", exactly(&said("bob", &from_phone)));
    }
    no_warnings(&alice, "alice");
    no_warnings(&carol, "carol");
    // Before its approval the laptop could not tell bob's first device from a key that is not
    // his, and said so once; nothing else.
    let first = test_key("bob").fingerprint().to_string();
    only_warnings(
        &laptop,
        "bob's laptop",
        &[&["has not approved this device", &first]],
    );

    // A tablet, approved by a script on bob's first device: `chat --approve-device`.
    let tablet_home = ClientHome::device("bob-tablet");
    let mut tablet = Chat::login(&server, "bob", "bob-pw", &tablet_home);
    let code = approval_code(&mut tablet);
    let args = [
        "--accept-fingerprint",
        &server.fingerprint,
        "--approve-device",
    ];
    let wrong = format!("{}-AAAAAAAAAA", "0".repeat(16));
    let exit = run_chat(
        &server.server_arg(),
        "bob",
        "bob-pw\n",
        &bob_home,
        &[&args[..], &[wrong.as_str()]].concat(),
    );
    assert_eq!(exit.status.code(), Some(1), "{:?}", exit.stderr);
    assert!(
        exit.stderr
            .iter()
            .any(|l| l.contains("is not one of your devices")),
        "{:?}",
        exit.stderr
    );
    let exit = run_chat(
        &server.server_arg(),
        "bob",
        "bob-pw\n",
        &bob_home,
        &[&args[..], &[code.as_str()]].concat(),
    );
    assert!(exit.status.success(), "{:?} {:?}", exit.stdout, exit.stderr);
    tablet
        .out
        .expect_contains("-- this device was approved by your device SHA256:");
    alice.out.expect_contains("-- bob's new device key SHA256:");
    let to_tablet = marker("tablet");
    alice.send(&to_tablet);
    tablet
        .out
        .expect("alice's message", exactly(&said("alice", &to_tablet)));
    no_warnings(&alice, "alice");

    // A device never approved: warned about, and it reads nothing.
    let stray_home = ClientHome::device("bob-stray");
    let mut stray = Chat::login(&server, "bob", "bob-pw", &stray_home);
    approval_code(&mut stray);
    // What it says is held unread by alice, who is warned once.
    let stray_says = marker("stray");
    stray.send(&stray_says);
    alice
        .out
        .expect_contains("!! bob has a NEW device key SHA256:");
    let secret = marker("secret");
    alice.send(&secret);
    for dev in [&mut bob, &mut laptop] {
        dev.out
            .expect("alice's secret", exactly(&said("alice", &secret)));
    }
    carol.send(&secret);
    for dev in [&mut bob, &mut laptop] {
        dev.out
            .expect("carol's secret", exactly(&said("carol", &secret)));
    }
    // It lacks the chain and asks carol's device for it; carol never gives it to a key she
    // has not accepted.
    stray
        .out
        .expect_contains("a message from carol in #lobby came without its key");
    let exit = stray.wait();
    assert!(
        !alice.out.all().iter().any(|l| l.contains(&stray_says)),
        "alice was shown what the unapproved device said"
    );
    assert!(
        !exit.stdout.iter().any(|l| l.contains(&secret)),
        "the unapproved device read: {:#?}",
        exit.stdout
    );
}

#[test]
fn what_a_new_device_sent_while_pending_is_shown_once_accepted_by_hand() {
    let Three {
        server,
        mut alice,
        carol: _carol,
        bob: _bob,
        bob_home: _bob_home,
        _homes,
    } = three();
    let laptop_home = ClientHome::device("bob-laptop");
    let mut laptop = Chat::login(&server, "bob", "bob-pw", &laptop_home);
    approval_code(&mut laptop);
    // Never approved by bob's first device; it talks anyway.
    let early = marker("early");
    laptop.send(&early);
    alice
        .out
        .expect_contains("!! bob has a NEW device key SHA256:");
    alice.send("/trust bob");
    alice
        .out
        .expect_contains("-- accepted bob's device key SHA256:");
    alice.out.expect(
        "what the laptop sent while pending",
        exactly(&said("bob", &early)),
    );
    let reply = marker("reply");
    alice.send(&reply);
    laptop
        .out
        .expect("alice's reply", exactly(&said("alice", &reply)));
    let exit = alice.wait();
    let shown = exit.stdout.iter().filter(|l| l.contains(&early)).count();
    assert_eq!(shown, 1, "{:#?}", exit.stdout);
}
