//! A malicious server made of the real chatd (issue 25, "Must show"): a proxy holding chatd's
//! own certificate and key sits between chatd and real `chat` clients and tampers with what
//! they exchange (harness `proxy`). Here: tampering with sealed bytes, who they are said to be
//! from and whom they reach, replays, loss, reordering, time and terminal escapes. Ghosts,
//! forged rosters and look-alike names are in `proxy_roster`.
//!
//! Every test checks that no honest client wrapped a chain for the attacker's key (so the
//! attacker holds no sealed copy) and what the victim's `chat` printed. Tests that need the
//! trust work of issue 25 to pass are ignored until it lands, each saying what must land.

use std::sync::atomic::{AtomicBool, Ordering};

use chatd_proto::e2e::{SenderChain, seal, wrap_chain};
use serde_json::json;

use crate::harness::{
    Chat, ClientHome, Dir, Frame, Mitm, Stage, attacker_key, exactly, expect_warning, now_ms,
    test_key, times_shown,
};

/// Clients logged in through a fresh [`Mitm`], each in its own home, every one having pinned
/// every other (so what follows is not about first contact).
struct Scene {
    m: Mitm,
    homes: Vec<ClientHome>,
}

impl Scene {
    fn new(users: &[&str]) -> Scene {
        let m = Mitm::start();
        m.users(users);
        let homes = users.iter().map(|_| ClientHome::new()).collect();
        Scene { m, homes }
    }

    /// Logs everyone in, in order, and waits until each has pinned the others.
    fn login_all(&self, users: &[&str]) -> Vec<Chat> {
        let mut chats: Vec<Chat> = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let mut chat = self.m.chat(user, &self.homes[i]);
            for earlier in &users[..i] {
                pinned(&mut chat, earlier);
            }
            for (j, c) in chats.iter_mut().enumerate() {
                assert!(j < i);
                pinned(c, user);
            }
            chats.push(chat);
        }
        chats
    }
}

/// Waits until `chat` has pinned `peer`'s key (the line may already have been printed).
fn pinned(chat: &mut Chat, peer: &str) {
    let needle = format!("pinned {peer}'s device key");
    if !chat.out.all().iter().any(|l| l.contains(&needle)) {
        chat.out.expect_contains(&needle);
    }
}

/// `chat`'s own echo of what it said in the lobby: the server has routed it.
fn echoed(chat: &mut Chat, user: &str, text: &str) {
    chat.out
        .expect("the echo", exactly(&format!("<{user}> {text}")));
}

/// A frame for `to` from `from`, of type `ty`, as chatd sent it (read by the proxy).
fn is_down(c: &crate::harness::Conn, dir: Dir, f: &Frame, to: &str, ty: &str, from: &str) -> bool {
    dir == Dir::Down && c.is(to) && f.ty() == ty && f.json["from"] == from
}

/// The attacker key holds no sealed copy, and the check was not empty.
fn no_sealed_copy(m: &Mitm) {
    let checked = m.proxy.assert_no_chain_to(&attacker_key().fingerprint());
    assert!(checked > 0, "no chain was sent at all: nothing was checked");
}

#[test]
fn a_flipped_bit_in_an_envelope_is_dropped_with_a_warning() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let armed = AtomicBool::new(true);
    s.m.proxy.set_hook(move |c, dir, mut f| {
        if is_down(c, dir, &f, "bob", "envelope", "alice") && armed.swap(false, Ordering::SeqCst) {
            let mut bytes = f.data_bytes();
            let n = bytes.len();
            // In the AEAD tag: the last bytes before the u16-prefixed 256-byte signature.
            bytes[n - 260] ^= 0x01;
            f.set_data(&bytes);
        }
        vec![f]
    });
    alice.send("FLIPPED-1");
    expect_warning(&mut bob, &[&["alice"], &["signature", "altered"]]);
    alice.send("INTACT-2");
    bob.out
        .expect("the next message", exactly("<alice> INTACT-2"));
    echoed(&mut alice, "alice", "INTACT-2");
    assert_eq!(times_shown(&bob.out.all(), "FLIPPED-1"), 0);
    // chat asked for binary frames: the flipped envelope went as one (both codings are relayed).
    assert!(
        s.m.proxy
            .records()
            .iter()
            .any(|r| r.frame.binary && r.dir == Dir::Down)
    );
    no_sealed_copy(&s.m);
}

#[test]
fn a_flipped_bit_in_a_chain_is_rejected_and_its_messages_dropped() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    s.m.proxy.set_hook(move |c, dir, mut f| {
        if is_down(c, dir, &f, "bob", "chain", "alice") {
            let mut bytes = f.data_bytes();
            let n = bytes.len();
            bytes[n - 1] ^= 0x80; // the signature's last byte
            f.set_data(&bytes);
        }
        vec![f]
    });
    alice.send("UNKEYED-1");
    expect_warning(&mut bob, &[&["alice"], &["rejected"]]);
    expect_warning(&mut bob, &[&["alice"], &["dropped"]]);
    echoed(&mut alice, "alice", "UNKEYED-1");
    assert_eq!(times_shown(&bob.out.all(), "UNKEYED-1"), 0);
    no_sealed_copy(&s.m);
}

#[test]
fn a_sender_relabelled_by_the_server_is_dropped_with_a_warning() {
    let s = Scene::new(&["alice", "bob", "carol"]);
    let [mut alice, mut bob, _carol] = s
        .login_all(&["alice", "bob", "carol"])
        .try_into()
        .ok()
        .unwrap();
    let carol_fp = test_key("carol").fingerprint().to_string();
    s.m.proxy.set_hook(move |c, dir, mut f| {
        if is_down(c, dir, &f, "bob", "envelope", "alice") {
            f.json["from"] = json!("carol");
            f.json["device"] = json!(carol_fp);
        }
        vec![f]
    });
    alice.send("RELABELLED-1");
    let w = expect_warning(&mut bob, &[&["carol"], &["signed"]]);
    assert!(w.contains("alice"), "{w}");
    echoed(&mut alice, "alice", "RELABELLED-1");
    assert_eq!(times_shown(&bob.out.all(), "RELABELLED-1"), 0);
    no_sealed_copy(&s.m);
}

#[test]
fn chains_and_envelopes_delivered_to_a_device_they_were_not_for_are_refused() {
    let s = Scene::new(&["alice", "bob", "carol"]);
    let [mut alice, mut bob, mut carol] = s
        .login_all(&["alice", "bob", "carol"])
        .try_into()
        .ok()
        .unwrap();
    let to_carol = |ty: &'static str| {
        move |r: &crate::harness::Record| {
            r.dir == Dir::Down
                && r.stage == Stage::Written
                && r.user.as_deref() == Some("carol")
                && r.frame.ty() == ty
        }
    };

    // A whisper for carol (its chain and its envelope) handed to bob as well.
    alice.send("/w carol WHISPER-1");
    carol
        .out
        .expect("the whisper", exactly("*alice* WHISPER-1"));
    let chain =
        s.m.proxy
            .wait_for("alice's chain for carol", to_carol("chain"));
    let envelope = s.m.proxy.wait_for("alice's whisper", to_carol("envelope"));
    s.m.proxy.inject("bob", Dir::Down, chain.frame);
    expect_warning(&mut bob, &[&["alice"], &["rejected"]]);
    s.m.proxy.inject("bob", Dir::Down, envelope.frame);
    expect_warning(&mut bob, &[&["alice"], &["dropped"]]);

    // A lobby chain wrapped for carol's device, handed to bob after his own: it must not
    // replace the one bob holds.
    alice.send("LOBBY-2");
    bob.out.expect("the lobby line", exactly("<alice> LOBBY-2"));
    carol
        .out
        .expect("the lobby line", exactly("<alice> LOBBY-2"));
    let lobby_chain = s.m.proxy.wait_for("alice's lobby chain for carol", |r| {
        to_carol("chain")(r) && r.frame.chain().unwrap().header().conversation == "#lobby"
    });
    s.m.proxy.inject("bob", Dir::Down, lobby_chain.frame);
    expect_warning(&mut bob, &[&["alice"], &["rejected"]]);
    alice.send("LOBBY-3");
    bob.out.expect("the next line", exactly("<alice> LOBBY-3"));

    let shown = bob.out.all();
    assert_eq!(times_shown(&shown, "WHISPER-1"), 0, "{shown:#?}");
    assert_eq!(times_shown(&shown, "LOBBY-2"), 1, "{shown:#?}");
    no_sealed_copy(&s.m);
}

#[test]
fn an_envelope_signed_by_the_attackers_key_claiming_to_be_bob_is_refused() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let (mallory, bob_fp) = (attacker_key(), test_key("bob").fingerprint().to_string());
    let alice_pub = test_key("alice").public();

    // The server presents bob's real device as the sender; the attacker signs.
    let mut chain = SenderChain::new().unwrap();
    let wrapped = wrap_chain(&chain, &mallory, "bob", "#lobby", &alice_pub).unwrap();
    s.m.proxy.inject(
        "alice",
        Dir::Down,
        Frame::json(json!({"type":"chain","from":"bob","device":bob_fp,
            "data":wrapped.to_base64().unwrap()})),
    );
    expect_warning(&mut alice, &[&["bob"], &["rejected"]]);
    let forged = seal(
        &mallory,
        "bob",
        "#lobby",
        &mut chain,
        r#"{"text":"FORGED-1"}"#,
        now_ms(),
    )
    .unwrap()
    .to_base64()
    .unwrap();
    s.m.proxy.inject(
        "alice",
        Dir::Down,
        Frame::json(json!({"type":"envelope","from":"bob","device":bob_fp,
            "data":forged,"ts":now_ms()})),
    );
    expect_warning(&mut alice, &[&["bob"], &["dropped"]]);

    // bob's genuine messages still arrive, and alice's replies reach bob's real key only.
    bob.send("GENUINE-2");
    alice.out.expect("bob's line", exactly("<bob> GENUINE-2"));
    alice.send("REPLY-3");
    bob.out.expect("alice's reply", exactly("<alice> REPLY-3"));
    assert_eq!(times_shown(&alice.out.all(), "FORGED-1"), 0);
    no_sealed_copy(&s.m);
}

#[test]
fn an_envelope_replayed_live_is_dropped_as_a_replay() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let armed = AtomicBool::new(true);
    s.m.proxy.set_hook(move |c, dir, f| {
        if is_down(c, dir, &f, "bob", "envelope", "alice") && armed.swap(false, Ordering::SeqCst) {
            return vec![f.clone(), f];
        }
        vec![f]
    });
    alice.send("TWICE-1");
    bob.out.expect("the message", exactly("<alice> TWICE-1"));
    expect_warning(&mut bob, &[&["alice"], &["replay"]]);
    alice.send("AFTER-2");
    bob.out
        .expect("the next message", exactly("<alice> AFTER-2"));
    assert_eq!(times_shown(&bob.out.all(), "TWICE-1"), 1);
    no_sealed_copy(&s.m);
}
