//! The malicious-server proxy (harness `proxy`) against who may read: ghost devices on one's
//! own account and on others', ghost users in the default room, forged room rosters and
//! joins, look-alike names and a revoked key brought back. The attacker's goal is always a
//! sealed copy for a key it holds; each test checks that no honest client wrapped a chain for
//! it and that the victim was told.

use chatd_proto::e2e::{SenderChain, seal, wrap_chain};
use serde_json::json;

use crate::harness::{
    Chat, Dir, Frame, Raw, Scene, Stage, attacker_key, device_entry, device_online, exactly,
    expect_warning, handled, is_warning, knows, no_sealed_copy, now_ms, saw, sync, test_key,
    times_shown,
};

/// `SHA256:` and the first 16 hex digits of `key`'s fingerprint: enough to name it in a
/// warning, whether the client shows it whole or shortened.
fn short_fp(key: &chatd_proto::e2e::DeviceKey) -> String {
    key.fingerprint().to_string()[..23].to_string()
}

/// A hook that adds `entry` to the `devices` of the next `login_ok` sent to `user`.
fn add_to_login_ok(
    user: &'static str,
    entry: serde_json::Value,
) -> impl FnMut(&crate::harness::Conn, Dir, Frame) -> Vec<Frame> + Send + 'static {
    let mut armed = true;
    move |c, dir, mut f| {
        if armed && dir == Dir::Down && c.is(user) && f.ty() == "login_ok" {
            armed = false;
            f.json["devices"]
                .as_array_mut()
                .unwrap()
                .push(entry.clone());
        }
        vec![f]
    }
}

#[test]
fn a_ghost_device_on_your_own_account_gets_nothing() {
    let s = Scene::new(&["alice", "bob"]);
    let mut alice = s.m.chat("alice", &s.homes[0]);
    let (mallory, mallory2) = (attacker_key(), test_key("mallory-2"));
    s.m.proxy
        .set_hook(add_to_login_ok("bob", device_entry("bob", &mallory, true)));
    let mut bob = s.m.chat("bob", &s.homes[1]);
    knows(&s.m, &mut alice, "alice", "bob");
    // Later in the session, another one.
    s.m.proxy
        .inject("bob", Dir::Down, device_online("bob", &mallory2));
    sync(&s.m, &mut bob, "bob");
    bob.send("LOBBY-1");
    alice.out.expect("bob's line", exactly("<bob> LOBBY-1"));
    bob.send("/w bob NOTE-2"); // a note to one's own devices
    s.m.proxy.wait_for("bob's note to himself", |r| {
        r.dir == Dir::Up
            && r.stage == Stage::Read
            && r.frame.ty() == "send"
            && r.frame.envelope().unwrap().header().conversation == "bob,bob"
    });
    bob.send("/w alice WHISPER-3");
    alice.out.expect("the whisper", exactly("*bob* WHISPER-3"));
    no_sealed_copy(&s.m);
    s.m.proxy.assert_no_chain_to(&mallory2.fingerprint());
    for key in [&mallory, &mallory2] {
        saw(&mut bob, "a warning about the ghost device", |l| {
            is_warning(l) && l.contains("account") && l.contains(&short_fp(key))
        });
    }
}

#[test]
fn a_ghost_device_for_a_user_already_known_gets_nothing() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let (mallory, mallory2) = (attacker_key(), test_key("mallory-2"));
    alice.send("/quit");
    assert!(alice.wait().status.success());

    // In alice's next session, the listing has one more device for bob.
    s.m.proxy.set_hook(add_to_login_ok(
        "alice",
        device_entry("bob", &mallory, true),
    ));
    let mut alice = s.m.chat("alice", &s.homes[0]);
    alice.send("LOBBY-1");
    bob.out.expect("alice's line", exactly("<alice> LOBBY-1"));
    alice.send("/w bob WHISPER-2");
    bob.out.expect("the whisper", exactly("*alice* WHISPER-2"));
    expect_warning(
        &mut alice,
        &[&["bob"], &[&mallory.fingerprint().to_string()]],
    );

    // And live: another device announced for bob.
    s.m.proxy
        .inject("alice", Dir::Down, device_online("bob", &mallory2));
    sync(&s.m, &mut alice, "alice");
    alice.send("/w bob WHISPER-3");
    bob.out.expect("the whisper", exactly("*alice* WHISPER-3"));
    saw(&mut alice, "a warning about the second key", |l| {
        is_warning(l) && l.contains("bob") && l.contains(&short_fp(&mallory2))
    });
    no_sealed_copy(&s.m);
    s.m.proxy.assert_no_chain_to(&mallory2.fingerprint());
}

#[test]
fn a_ghost_user_in_the_default_room_is_shown_before_anything_is_sealed_to_it() {
    // A user the server lists is, to a client, a new member of the default room: first
    // contact is trust on first use (docs/SECURITY.md). What the server cannot do is add a
    // reader unseen: the newcomer is shown before the first line sealed to them.
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let (mallory, mallory2) = (attacker_key(), test_key("mallory-2"));
    alice.send("/quit");
    assert!(alice.wait().status.success());

    s.m.proxy.set_hook(add_to_login_ok(
        "alice",
        device_entry("eve", &mallory, false),
    ));
    let mut alice = s.m.chat("alice", &s.homes[0]);
    saw(&mut alice, "eve shown as new in #lobby", |l| {
        l.contains("eve") && l.contains("#lobby")
    });
    // Shown, and nothing sealed to it yet.
    s.m.proxy.assert_no_chain_to(&mallory.fingerprint());
    alice.send("LOBBY-1");
    bob.out.expect("alice's line", exactly("<alice> LOBBY-1"));

    // Live, with no presence at all.
    let mark = s.m.proxy.mark();
    s.m.proxy
        .inject("alice", Dir::Down, device_online("frank", &mallory2));
    saw(&mut alice, "frank shown as new in #lobby", |l| {
        l.contains("frank") && l.contains("#lobby")
    });
    s.m.proxy
        .assert_no_chain_to_since(&mallory2.fingerprint(), mark);
    alice.send("LOBBY-2");
    bob.out.expect("alice's line", exactly("<alice> LOBBY-2"));
}

/// alice owns the invite-only #ops and bob joined it on her invitation; the attacker has an
/// account (and so a key every client pins on first contact, as a member of the default room).
fn ops_room(s: &Scene) -> (Chat, Chat) {
    drop(Raw::login(&s.m.server, "mallory", "mallory-pw"));
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let ops = |f: &Frame| f.ty() == "members" && f.json["room"]["name"] == "ops";
    alice.send("/join ops private");
    handled(&s.m, &mut alice, "alice", "#ops", ops);
    alice.send("/invite bob ops");
    handled(&s.m, &mut bob, "bob", "the invitation", |f| {
        f.ty() == "notice" && f.json["text"].as_str().unwrap().contains("ops")
    });
    bob.send("/join ops");
    handled(&s.m, &mut bob, "bob", "#ops", ops);
    handled(&s.m, &mut alice, "alice", "bob's join", |f| {
        f.ty() == "room" && f.json["user"] == "bob" && f.json["event"] == "join"
    });
    (alice, bob)
}

#[test]
fn an_unsolicited_members_frame_does_not_add_the_attacker_to_an_invite_only_room() {
    let s = Scene::new(&["alice", "bob", "mallory"]);
    let (mut alice, mut bob) = ops_room(&s);
    s.m.proxy.inject(
        "alice",
        Dir::Down,
        Frame::json(json!({"type":"members","room":{"name":"ops","topic":"",
            "members":["alice","bob","mallory"],"invite_only":true,"owner":"alice"}})),
    );
    sync(&s.m, &mut alice, "alice");
    alice.send("OPS-SECRET-1");
    bob.out
        .expect("alice's line", exactly("[#ops] <alice> OPS-SECRET-1"));
    no_sealed_copy(&s.m);
    saw(&mut alice, "a warning about the forged roster", |l| {
        is_warning(l) && l.contains("mallory") && l.contains("ops")
    });
}

#[test]
fn a_forged_join_is_shown_before_anything_is_sealed_to_the_joiner() {
    // What a server can still do (docs/SECURITY.md): claim that someone joined. It cannot do
    // it unseen: the join is shown (or refused) before a line is sealed to the joiner.
    let s = Scene::new(&["alice", "bob", "mallory"]);
    let (mut alice, mut bob) = ops_room(&s);
    s.m.proxy.inject(
        "alice",
        Dir::Down,
        Frame::json(json!({"type":"room","room":"ops","user":"mallory","event":"join"})),
    );
    sync(&s.m, &mut alice, "alice");
    saw(&mut alice, "the claimed join, shown", |l| {
        l.contains("mallory") && l.contains("#ops")
    });
    s.m.proxy.assert_no_chain_to(&attacker_key().fingerprint());
    alice.send("OPS-AFTER-1");
    bob.out
        .expect("alice's line", exactly("[#ops] <alice> OPS-AFTER-1"));
}

#[test]
fn a_members_frame_cannot_switch_the_room_to_a_look_alike_lobby() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    s.m.proxy.inject(
        "alice",
        Dir::Down,
        Frame::json(
            json!({"type":"members","room":{"name":"lobby\u{200b}","topic":"",
            "members":["alice","bob"],"invite_only":false,"owner":"bob"}}),
        ),
    );
    sync(&s.m, &mut alice, "alice");
    alice.send("WHERE-1");
    let sent = s.m.proxy.wait_sent("alice", "send");
    assert_eq!(
        sent.frame.envelope().unwrap().header().conversation,
        "#lobby"
    );
    bob.out.expect("alice's line", exactly("<alice> WHERE-1"));
    saw(&mut alice, "a warning about the room", |l| {
        is_warning(l) && l.contains("lobby")
    });
    let chains = s.m.proxy.chains_sent_since(0);
    assert!(
        chains
            .iter()
            .all(|(_, c)| c.header().conversation == "#lobby"),
        "a chain for another conversation than #lobby"
    );
    no_sealed_copy(&s.m);
}

#[test]
fn a_look_alike_user_name_is_refused() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let mallory = attacker_key();
    let fake = "bob\u{200b}";
    let alice_pub = test_key("alice").public();
    let mut chain = SenderChain::new().unwrap();
    let wrapped = wrap_chain(&chain, &mallory, fake, "#lobby", &alice_pub).unwrap();
    let forged = seal(
        &mallory,
        fake,
        "#lobby",
        &mut chain,
        r#"{"text":"I-AM-BOB"}"#,
        now_ms(),
    )
    .unwrap()
    .to_base64()
    .unwrap();
    let fp = mallory.fingerprint().to_string();
    for frame in [
        json!({"type":"presence","user":fake,"event":"join"}),
        device_online(fake, &mallory).json,
        json!({"type":"chain","from":fake,"device":fp,"data":wrapped.to_base64().unwrap()}),
        json!({"type":"envelope","from":fake,"device":fp,"data":forged,"ts":now_ms()}),
    ] {
        s.m.proxy.inject("alice", Dir::Down, Frame::json(frame));
    }
    sync(&s.m, &mut alice, "alice");
    assert_eq!(times_shown(&alice.out.all(), "I-AM-BOB"), 0);
    saw(&mut alice, "a warning about the name", |l| {
        is_warning(l) && l.contains("bob")
    });
    alice.send("HELLO-1");
    bob.out.expect("alice's line", exactly("<alice> HELLO-1"));
    no_sealed_copy(&s.m);
}

#[test]
fn a_revoked_key_announced_again_gets_nothing() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let bob_key = test_key("bob");
    alice.send("/w bob BEFORE-1");
    bob.out.expect("the whisper", exactly("*alice* BEFORE-1"));
    s.m.server
        .ctl(
            &["key", "revoke", "bob", &bob_key.fingerprint().to_string()],
            None,
        )
        .assert_ok();
    bob.out.expect_contains("device key revoked");
    drop(bob);
    handled(&s.m, &mut alice, "alice", "bob's key removed", |f| {
        f.ty() == "device" && f.json["event"] == "removed"
    });
    let mark = s.m.proxy.mark();

    // The server brings the revoked key back, as if bob had logged in with it again.
    s.m.proxy
        .inject("alice", Dir::Down, device_online("bob", &bob_key));
    alice.send("/w bob AFTER-2");
    alice.send("LOBBY-3");
    alice.out.expect("alice's line", exactly("<alice> LOBBY-3"));
    saw(&mut alice, "a warning about bob's key", |l| {
        is_warning(l) && l.contains("bob")
    });
    s.m.proxy
        .assert_no_chain_to_since(&bob_key.fingerprint(), mark);
    no_sealed_copy(&s.m);
}

#[test]
fn a_key_that_does_not_hash_to_its_fingerprint_is_ignored() {
    let s = Scene::new(&["alice", "bob", "carol"]);
    let mallory = attacker_key();
    let mut bob = s.m.chat("bob", &s.homes[1]);
    // alice meets bob for the first time in a listing that pairs bob's fingerprint with the
    // attacker's key.
    let bob_fp = test_key("bob").fingerprint().to_string();
    let mut armed = true;
    let key = crate::harness::key_b64(&mallory);
    s.m.proxy.set_hook(move |c, dir, mut f| {
        if armed && dir == Dir::Down && c.is("alice") && f.ty() == "login_ok" {
            armed = false;
            for d in f.json["devices"].as_array_mut().unwrap() {
                if d["fingerprint"] == bob_fp.as_str() {
                    d["key"] = json!(key);
                }
            }
        }
        vec![f]
    });
    let mut alice = s.m.chat("alice", &s.homes[0]);
    knows(&s.m, &mut bob, "bob", "alice");
    expect_warning(&mut alice, &[&["bob"], &["match"]]);
    // And live, for carol, whom alice has not met either.
    let mut forged = device_online("carol", &mallory);
    forged.json["fingerprint"] = json!(test_key("carol").fingerprint().to_string());
    s.m.proxy.inject("alice", Dir::Down, forged);
    expect_warning(&mut alice, &[&["carol"], &["match"]]);
    alice.send("LOBBY-1");
    alice.out.expect("the echo", exactly("<alice> LOBBY-1"));
    bob.send("LOBBY-2");
    alice.out.expect("bob's line is not readable: no key", |l| {
        is_warning(l) && l.contains("bob")
    });
    assert_eq!(times_shown(&alice.out.all(), "LOBBY-2"), 0);
    no_sealed_copy(&s.m);
}
