//! A malicious server: this test plays chatd towards a real `chat` and tries every trick the
//! end-to-end layer must catch (docs/SECURITY.md, "A malicious or compromised server").
//! Each one must end in a warning, never in a message shown as genuine. A second test forges
//! rosters, look-alike names and escape sequences.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::{
    DeviceKey, DevicePublicKey, Envelope, ReceiverChain, SenderChain, WrappedChain, open, seal,
    unwrap_chain, wrap_chain,
};
use serde_json::{Value, json};

use crate::harness::{Chat, ClientHome, FakeServer, exactly, key_b64, now_ms, test_key};

/// What `chat` seals: a JSON body (docs/PROTOCOL.md, "End-to-end messages").
fn body(text: &str) -> String {
    json!({ "text": text }).to_string()
}

fn device(user: &str, key: &DeviceKey) -> Value {
    json!({"user": user, "fingerprint": key.fingerprint().to_string(), "key": key_b64(key)})
}

fn envelope(from: &str, key: &DeviceKey, data: &str) -> Value {
    json!({"type":"envelope","from":from,"device":key.fingerprint().to_string(),"data":data,"ts":now_ms()})
}

fn chain(from: &str, key: &DeviceKey, data: &str) -> Value {
    json!({"type":"chain","from":from,"device":key.fingerprint().to_string(),"data":data})
}

#[test]
fn every_server_trick_is_caught_and_none_is_shown() {
    let fake = FakeServer::start();
    let home = ClientHome::new();
    let mut bob = Chat::spawn(
        &fake.addr.to_string(),
        "bob",
        "bob-pw",
        &home,
        &["--accept-fingerprint", &fake.fingerprint.to_string()],
    );
    let (alice, carol, mallory) = (test_key("alice"), test_key("carol"), test_key("mallory"));

    // The handshake, played straight.
    fake.recv_type("hello");
    fake.send(
        json!({"type":"hello","version":chatd_proto::PROTOCOL_VERSION,"server":"evil/1",
        "max_line_bytes":65536,"max_text_bytes":16384}),
    );
    let login = fake.recv_type("login");
    let bob_der = BASE64
        .decode(login["device_key"].as_str().unwrap())
        .unwrap();
    let bob_pub = DevicePublicKey::from_spki_der(&bob_der).unwrap();
    assert_eq!(bob_pub.fingerprint(), test_key("bob").fingerprint());
    fake.send(json!({"type":"login_ok","user":"bob","session":1,
        "device":bob_pub.fingerprint().to_string(),"online":["alice","bob","carol"],
        "devices":[device("alice", &alice), device("bob", &test_key("bob")), device("carol", &carol)]}));
    bob.out.expect_contains("-- logged in as bob");
    bob.out.expect_contains("pinned alice's device key");
    // Nothing stored (a frame that is never stored comes first, as chatd's message of the
    // day would): what follows is live, held to the clock-skew window.
    fake.send(json!({"type":"notice","text":"welcome"}));

    // A genuine message from alice, to show the channel works.
    let mut from_alice = SenderChain::new().unwrap();
    let w = wrap_chain(&from_alice, &alice, "alice", "all", &bob_pub).unwrap();
    fake.send(chain("alice", &alice, &w.to_base64().unwrap()));
    let seal_alice = |chain: &mut SenderChain, text: &str, when: u64| {
        seal(&alice, "alice", "all", chain, &body(text), when)
            .unwrap()
            .to_base64()
            .unwrap()
    };
    let genuine = seal_alice(&mut from_alice, "GENUINE-1", now_ms());
    fake.send(envelope("alice", &alice, &genuine));
    bob.out
        .expect("the genuine message", exactly("<alice> GENUINE-1"));

    // 1. A ciphertext altered in transit (one bit).
    let mut bytes = BASE64
        .decode(seal_alice(&mut from_alice, "ALTERED-2", now_ms()))
        .unwrap();
    let n = bytes.len();
    bytes[n - 260] ^= 0x01; // inside the AEAD tag: the last bytes before the signature
    fake.send(envelope("alice", &alice, &BASE64.encode(&bytes)));
    bob.out
        .expect_contains("dropped a message from alice: its signature does not verify");

    // 2. The server names another sender than the one who signed.
    let renamed = seal_alice(&mut from_alice, "RENAMED-3", now_ms());
    fake.send(envelope("carol", &carol, &renamed));
    bob.out.expect_contains(
        "dropped a message from carol: it is signed as alice but the server says it is from carol",
    );

    // 3. A replay of the genuine message.
    fake.send(envelope("alice", &alice, &genuine));
    bob.out
        .expect_contains("dropped a message from alice: it is a replay");

    // 4. A message held back for an hour (or a sender clock far off).
    let late = seal_alice(&mut from_alice, "STALE-4", now_ms() - 3_600_000);
    fake.send(envelope("alice", &alice, &late));
    bob.out
        .expect_contains("dropped a message from alice: its timestamp is more than 300 s away");

    // 5. A swapped key: the server announces mallory's key as a new device of alice, and
    //    mallory writes as alice with a chain of its own.
    fake.send(
        json!({"type":"device","user":"alice","fingerprint":mallory.fingerprint().to_string(),
        "key":key_b64(&mallory),"event":"online"}),
    );
    // No device of alice's that bob trusts vouched for it: pending, and said once, when it
    // first matters (here: mallory's chain, which is held unread).
    let mut from_mallory = SenderChain::new().unwrap();
    let w = wrap_chain(&from_mallory, &mallory, "alice", "all", &bob_pub).unwrap();
    fake.send(chain("alice", &mallory, &w.to_base64().unwrap()));
    bob.out.expect_contains(&format!(
        "alice has a NEW device key {} that none of alice's devices you trust approved",
        mallory.fingerprint()
    ));
    let impostor = seal(
        &mallory,
        "alice",
        "all",
        &mut from_mallory,
        &body("IMPOSTOR-5"),
        now_ms(),
    )
    .unwrap()
    .to_base64()
    .unwrap();
    // Held unread with the chain (checked at the end: never shown).
    fake.send(envelope("alice", &mallory, &impostor));

    // 6. An added recipient: alice's whisper to carol (chain and message), handed to bob.
    let mut to_carol = SenderChain::new().unwrap();
    let w = wrap_chain(&to_carol, &alice, "alice", "alice,carol", &carol.public()).unwrap();
    fake.send(chain("alice", &alice, &w.to_base64().unwrap()));
    bob.out
        .expect_contains("rejected a key from alice: it is for conversation \"alice,carol\"");
    let whisper = seal(
        &alice,
        "alice",
        "alice,carol",
        &mut to_carol,
        &body("WHISPER-6"),
        now_ms(),
    )
    .unwrap()
    .to_base64()
    .unwrap();
    fake.send(envelope("alice", &alice, &whisper));
    bob.out
        .expect_contains("dropped a message from alice: it was sent to \"alice,carol\"");

    // 7. Sending side: bob whispers alice while the swapped key is announced. Only alice's
    //    real device gets the chain; bob is told the other key was left out.
    bob.send("/w alice SENDER-7");
    let wrapped = fake.recv_type("chain");
    let wrapped = WrappedChain::from_base64(wrapped["data"].as_str().unwrap()).unwrap();
    assert_eq!(wrapped.header().recipient_device, alice.fingerprint());
    let sent = fake.recv_type("send");
    // alice (whose key the test holds) can read it: the text went to the right device only.
    let bob_real = test_key("bob").public();
    let mut rx: ReceiverChain = unwrap_chain(&wrapped, &bob_real, &alice).unwrap();
    let env = Envelope::from_base64(sent["data"].as_str().unwrap()).unwrap();
    assert_eq!(env.header().conversation, "alice,bob");
    let opened = open(&env, &bob_real, &mut rx, now_ms(), 60_000).unwrap();
    assert_eq!(opened.text, body("SENDER-7"));

    // A last genuine message: everything before it has been handled.
    let last = seal_alice(&mut from_alice, "GENUINE-LAST", now_ms());
    fake.send(envelope("alice", &alice, &last));
    bob.out
        .expect("the last message", exactly("<alice> GENUINE-LAST"));
    assert!(
        !bob.out.all().iter().any(|l| l.contains("IMPOSTOR-5")),
        "the swapped key's message was shown"
    );
    bob.send("/quit");
    fake.recv_type("quit");
    fake.send(json!({"type":"bye","reason":"quit"}));
    std::thread::sleep(Duration::from_millis(50));
    let exit = bob.wait();
    let shown: Vec<&String> = exit.stdout.iter().filter(|l| !l.contains(" !! ")).collect();
    for forged in [
        "ALTERED-2",
        "RENAMED-3",
        "STALE-4",
        "IMPOSTOR-5",
        "WHISPER-6",
    ] {
        assert!(
            !shown.iter().any(|l| l.contains(forged)),
            "{forged} was shown: {shown:?}"
        );
    }
    assert_eq!(
        shown.iter().filter(|l| l.contains("GENUINE-1")).count(),
        1,
        "the replay was shown again"
    );
    assert!(exit.status.success(), "{:?}", exit.stderr);
}

/// The devices a `chain` frame from chat is addressed to, until its `send`; and that send's
/// conversation.
fn chains_then_send(fake: &FakeServer) -> (Vec<Fingerprint>, String) {
    let mut to = Vec::new();
    loop {
        let f = fake.recv();
        match f["type"].as_str() {
            Some("chain") => {
                let w = WrappedChain::from_base64(f["data"].as_str().unwrap()).unwrap();
                to.push(w.header().recipient_device);
            }
            Some("send") => {
                let env = Envelope::from_base64(f["data"].as_str().unwrap()).unwrap();
                return (to, env.header().conversation.clone());
            }
            _ => panic!("expected a chain or send, got {f}"),
        }
    }
}

/// Forged rosters, look-alike names and escape sequences against a real `chat` (issue 25):
/// nothing moves bob into a room or adds a reader without his seeing it, and no server text
/// reaches his terminal raw.
#[test]
fn forged_rosters_look_alike_names_and_escapes_are_refused() {
    let fake = FakeServer::start();
    let home = ClientHome::new();
    let mut bob = Chat::spawn(
        &fake.addr.to_string(),
        "bob",
        "bob-pw",
        &home,
        &["--accept-fingerprint", &fake.fingerprint.to_string()],
    );
    let (alice, carol, mallory) = (test_key("alice"), test_key("carol"), test_key("mallory"));
    fake.recv_type("hello");
    fake.send(
        json!({"type":"hello","version":chatd_proto::PROTOCOL_VERSION,"server":"evil/1",
        "max_line_bytes":65536,"max_text_bytes":16384}),
    );
    fake.recv_type("login");
    let bob_key = test_key("bob");
    let room = |name: &str, members: &[&str], invite_only: bool| json!({"name": name, "topic": "", "members": members, "invite_only": invite_only});
    fake.send(json!({"type":"login_ok","user":"bob","session":1,
        "device":bob_key.fingerprint().to_string(),"online":["alice","bob","carol"],
        "devices":[device("alice", &alice), device("bob", &bob_key), device("carol", &carol)],
        "room":"lobby",
        "rooms":[room("lobby", &["alice", "bob", "carol"], false), room("ops", &["alice", "bob"], false)]}));
    bob.out.expect_contains("-- logged in as bob");
    bob.out.expect_contains("pinned carol's device key");

    // 1. An invite-only room bob never asked to join, claiming him and carol: no switch.
    fake.send(json!({"type":"members","room": room("secret", &["bob", "carol"], true)}));
    bob.out.expect_contains(
        "!! ignored a member list that puts you in or out of #secret without your /join or /part",
    );
    // 2. A room that looks like the lobby (a zero-width space), and mallory's key announced
    //    as alice's look-alike: both refused whole, the invisible character shown.
    fake.send(json!({"type":"members","room": room("lobby\u{200b}", &["bob", "carol"], false)}));
    bob.out
        .expect_contains("!! ignored a members frame from the server: it names \"lobby\\u{200b}\"");
    fake.send(
        json!({"type":"device","user":"alice\u{200b}","fingerprint":mallory.fingerprint().to_string(),
        "key":key_b64(&mallory),"event":"online"}),
    );
    bob.out
        .expect_contains("!! ignored a device frame from the server: it names \"alice\\u{200b}\"");
    // 3. Carol slipped into #ops without a join event: not added, said once.
    let forged_ops =
        json!({"type":"members","room": room("ops", &["alice", "bob", "carol"], false)});
    fake.send(forged_ops.clone());
    fake.send(forged_ops);
    bob.out.expect_contains(
        "!! the server lists carol in #ops without announcing a join: not added, nothing is encrypted to them",
    );
    // 4. Escapes in an error, and in an unreadable frame's type (quoted in chat's own error).
    let evil = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}";
    fake.send(json!({"type":"error","code":"refused","message":format!("ERR-{evil}-END")}));
    fake.send(json!({"type":format!("TYPE-{evil}")}));
    bob.out.expect_contains("ERR-");

    // Bob talks: to the lobby (everyone but mallory), then to #ops (alice only).
    bob.send("in the lobby");
    let (to, conversation) = chains_then_send(&fake);
    assert_eq!(conversation, "#lobby");
    assert!(!to.contains(&mallory.fingerprint()), "sealed to mallory");
    bob.send("/join ops\nin ops");
    bob.out.expect_contains("-- now talking in #ops");
    let (to, conversation) = chains_then_send(&fake);
    assert_eq!(
        (to, conversation.as_str()),
        (vec![alice.fingerprint()], "#ops")
    );
    // 5. A forged kick does not send bob's next line elsewhere: it is refused.
    fake.send(json!({"type":"room","room":"ops","user":"bob","event":"kick","by":"alice"}));
    bob.out
        .expect_contains("-- bob was removed from #ops by alice");
    bob.send("after the kick");
    bob.err
        .expect_contains("chat: message not sent: you are not in #ops");
    // 6. A refused join: the line typed behind it is not sent.
    bob.send("/join secret\nbehind the join");
    let join = fake.recv_type("command");
    assert_eq!(
        (&join["name"], &join["args"]),
        (&json!("join"), &json!("secret"))
    );
    let ping = fake.recv_type("ping");
    fake.send(json!({"type":"error","code":"refused","message":"#secret is invite-only"}));
    fake.send(json!({"type":"pong","nonce":ping["nonce"]}));
    bob.out
        .expect_contains("!! not in #secret: 1 line typed after /join not sent");
    bob.send("/quit");
    fake.recv_type("quit");
    fake.send(json!({"type":"bye","reason":format!("BYE-{evil}")}));
    let exit = bob.wait();
    for line in exit.stdout.iter().chain(&exit.stderr) {
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(!line.contains('\u{202e}'), "{line:?}");
    }
    assert!(
        exit.stderr.iter().any(|l| l.contains("TYPE-\u{fffd}[2J")),
        "{:?}",
        exit.stderr
    );
    assert!(exit.stdout.iter().any(|l| l.contains("BYE-\u{fffd}[2J")));
    assert_eq!(
        exit.stdout
            .iter()
            .filter(|l| l.contains("without announcing a join"))
            .count(),
        1,
        "{:?}",
        exit.stdout
    );
}
