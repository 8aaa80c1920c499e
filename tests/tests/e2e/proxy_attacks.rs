//! A malicious server made of the real chatd (issue 25, "Must show"): a proxy holding chatd's
//! own certificate and key sits between chatd and real `chat` clients and tampers with what
//! they exchange (harness `proxy`). Here: tampering with sealed bytes, who they are said to be
//! from and whom they reach, replays, loss, reordering, time and terminal escapes. Ghosts,
//! forged rosters and look-alike names are in `proxy_roster`.
//!
//! Every test checks that no honest client wrapped a chain for the attacker's key (so the
//! attacker holds no sealed copy) and what the victim's `chat` printed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chatd_proto::e2e::{SenderChain, seal, wrap_chain};
use serde_json::json;

use crate::harness::{
    Chat, Dir, Frame, Mitm, Scene, Stage, attacker_key, exactly, expect_warning, handled,
    no_sealed_copy, now_ms, saw, sync, test_key, times_shown,
};

/// `chat`'s own echo of what it said in the lobby: the server has routed it.
fn echoed(chat: &mut Chat, user: &str, text: &str) {
    chat.out
        .expect("the echo", exactly(&format!("<{user}> {text}")));
}

/// A frame for `to` from `from`, of type `ty`, as chatd sent it (read by the proxy).
fn is_down(c: &crate::harness::Conn, dir: Dir, f: &Frame, to: &str, ty: &str, from: &str) -> bool {
    dir == Dir::Down && c.is(to) && f.ty() == ty && f.json["from"] == from
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
fn a_flipped_bit_in_a_chain_is_rejected_and_its_messages_never_shown() {
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
    // bob asks alice for the chain again; every copy is flipped too, and rejected.
    saw(&mut bob, "the chain asked for", |l| {
        l.contains("alice") && l.contains("without its key")
    });
    echoed(&mut alice, "alice", "UNKEYED-1");
    saw(&mut alice, "alice told", |l| {
        l.contains("bob") && l.contains("could not open")
    });
    expect_warning(&mut bob, &[&["alice"], &["rejected"]]);
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

/// The first `ty` frame from alice the proxy wrote to bob.
fn first_to_bob(m: &Mitm, ty: &str) -> Frame {
    m.proxy
        .wait_for(&format!("a {ty} from alice to bob"), |r| {
            r.dir == Dir::Down
                && r.stage == Stage::Written
                && r.user.as_deref() == Some("bob")
                && r.frame.ty() == ty
                && r.frame.json["from"] == "alice"
        })
        .frame
}

#[test]
fn a_chain_resent_live_does_not_replay_its_messages() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    alice.send("ONCE-1");
    bob.out.expect("the message", exactly("<alice> ONCE-1"));
    let (chain, envelope) = (first_to_bob(&s.m, "chain"), first_to_bob(&s.m, "envelope"));
    s.m.proxy.inject("bob", Dir::Down, chain);
    s.m.proxy.inject("bob", Dir::Down, envelope);
    sync(&s.m, &mut bob, "bob");
    // Shown once; whether the re-sent copy is warned about or skipped quietly is the
    // client's choice (docs/PROTOCOL.md: an identical re-delivery may be skipped quietly).
    let out = bob.out.all();
    assert_eq!(times_shown(&out, "ONCE-1"), 1, "{out:#?}");
    alice.send("TWO-2");
    bob.out.expect("the next message", exactly("<alice> TWO-2"));
    no_sealed_copy(&s.m);
}

#[test]
fn a_chain_resent_after_a_restart_does_not_replay_its_messages() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    alice.send("ONCE-1");
    bob.out.expect("the message", exactly("<alice> ONCE-1"));
    let (chain, envelope) = (first_to_bob(&s.m, "chain"), first_to_bob(&s.m, "envelope"));
    bob.send("/quit");
    assert!(bob.wait().status.success());

    let mut bob = s.m.chat("bob", &s.homes[1]);
    s.m.proxy.inject("bob", Dir::Down, chain);
    s.m.proxy.inject("bob", Dir::Down, envelope);
    sync(&s.m, &mut bob, "bob");
    let out = bob.out.all();
    assert_eq!(times_shown(&out, "ONCE-1"), 0, "{out:#?}");
    alice.send("TWO-2");
    bob.out.expect("the next message", exactly("<alice> TWO-2"));
    no_sealed_copy(&s.m);
}

#[test]
fn a_chain_resent_as_a_stored_line_does_not_replay_its_messages() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    alice.send("ONCE-1");
    bob.out.expect("the message", exactly("<alice> ONCE-1"));
    let (mut chain, mut envelope) = (first_to_bob(&s.m, "chain"), first_to_bob(&s.m, "envelope"));
    bob.send("/quit");
    assert!(bob.wait().status.success());
    handled(&s.m, &mut alice, "alice", "bob's leave", |f| {
        f.ty() == "presence" && f.json["event"] == "leave"
    });
    alice.send("STORED-2");
    handled(&s.m, &mut alice, "alice", "held", |f| f.ty() == "held");

    // At bob's next login the old chain and message come first among the stored lines
    // (stored lines are JSON, never binary frames).
    (chain.binary, envelope.binary) = (false, false);
    let armed = AtomicBool::new(true);
    s.m.proxy.set_hook(move |c, dir, f| {
        if dir == Dir::Down
            && c.is("bob")
            && f.ty() == "login_ok"
            && armed.swap(false, Ordering::SeqCst)
        {
            return vec![f, chain.clone(), envelope.clone()];
        }
        vec![f]
    });
    let mut bob = s.m.chat("bob", &s.homes[1]);
    handled(&s.m, &mut bob, "bob", "the last backlog marker", |f| {
        f.ty() == "backlog" && f.json["more"] == false
    });
    let out = bob.out.all();
    assert_eq!(times_shown(&out, "ONCE-1"), 0, "{out:#?}");
    assert_eq!(times_shown(&out, "STORED-2"), 1, "{out:#?}");
    no_sealed_copy(&s.m);
}

#[test]
fn a_dropped_envelope_is_reported_as_missing() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let seen = AtomicUsize::new(0);
    s.m.proxy.set_hook(move |c, dir, f| {
        if is_down(c, dir, &f, "bob", "envelope", "alice")
            && seen.fetch_add(1, Ordering::SeqCst) == 1
        {
            return Vec::new();
        }
        vec![f]
    });
    for text in ["KEPT-1", "DROPPED-2", "KEPT-3"] {
        alice.send(text);
        echoed(&mut alice, "alice", text);
    }
    bob.out
        .expect("the last message", exactly("<alice> KEPT-3"));
    saw(&mut bob, "a missing-message report", |l| {
        l.contains("alice") && l.contains("missing")
    });
    assert_eq!(times_shown(&bob.out.all(), "DROPPED-2"), 0);
    no_sealed_copy(&s.m);
}

#[test]
fn reordered_envelopes_are_marked_late() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let held: Mutex<Option<Frame>> = Mutex::new(None);
    let seen = AtomicUsize::new(0);
    s.m.proxy.set_hook(move |c, dir, f| {
        if is_down(c, dir, &f, "bob", "envelope", "alice") {
            match seen.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    *held.lock().unwrap() = Some(f);
                    return Vec::new();
                }
                1 => {
                    return [Some(f), held.lock().unwrap().take()]
                        .into_iter()
                        .flatten()
                        .collect();
                }
                _ => {}
            }
        }
        vec![f]
    });
    for text in ["FIRST-1", "SECOND-2"] {
        alice.send(text);
        echoed(&mut alice, "alice", text);
    }
    bob.out.expect_contains("FIRST-1");
    saw(&mut bob, "the first message, marked late", |l| {
        l.contains("late") && (l.contains("FIRST-1") || l.contains("alice"))
    });
    let out = bob.out.all();
    assert_eq!(times_shown(&out, "SECOND-2"), 1, "{out:#?}");
    assert_eq!(times_shown(&out, "FIRST-1"), 1, "{out:#?}");
    no_sealed_copy(&s.m);
}

#[test]
fn a_timestamp_moved_by_the_server_does_not_move_the_message() {
    use chrono::TimeZone;
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    let signed: Arc<Mutex<Option<u64>>> = Arc::default();
    let signed2 = Arc::clone(&signed);
    const MOVED_MS: u64 = 19 * 3600 * 1000;
    s.m.proxy.set_hook(move |c, dir, mut f| {
        if is_down(c, dir, &f, "bob", "envelope", "alice") {
            let ts = f.envelope().unwrap().header().timestamp_ms;
            *signed2.lock().unwrap() = Some(ts);
            f.json["ts"] = json!(ts - MOVED_MS);
        }
        vec![f]
    });
    alice.send("MOVED-1");
    let line = bob.out.expect_contains("MOVED-1");
    let signed = signed
        .lock()
        .unwrap()
        .expect("the envelope went through the hook");
    let stamp = |ms: u64, fmt: &str| {
        chrono::Local
            .timestamp_millis_opt(i64::try_from(ms).unwrap())
            .single()
            .unwrap()
            .format(fmt)
            .to_string()
    };
    assert!(
        line.starts_with(&format!("[{}]", stamp(signed, "%H:%M:%S"))),
        "not shown at its signed time {}: {line}",
        stamp(signed, "%H:%M:%S")
    );
    assert!(
        line.contains(&stamp(signed - MOVED_MS, "%H:%M")),
        "the server's different time is not marked: {line}"
    );
    no_sealed_copy(&s.m);
}

#[test]
fn garbage_binary_frames_are_skipped_and_the_stream_goes_on() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    // An envelope frame whose payload is no envelope, then a frame of an unknown kind.
    let garbage = chatd_proto::codec::binary_envelope(now_ms(), &[0xab; 40]);
    s.m.proxy.inject_raw("bob", Dir::Down, &garbage);
    expect_warning(&mut bob, &[&["dropped"], &["read"]]);
    s.m.proxy
        .inject_raw("bob", Dir::Down, &[0x00, b'X', 0, 0, 0, 3, 1, 2, 3]);
    alice.send("STILL-HERE-1");
    bob.out
        .expect("the next message", exactly("<alice> STILL-HERE-1"));
    no_sealed_copy(&s.m);
}

#[test]
fn a_message_replayed_to_its_own_sender_in_a_later_session_is_not_shown() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    alice.send("MINE-1");
    echoed(&mut alice, "alice", "MINE-1");
    bob.out.expect("the message", exactly("<alice> MINE-1"));
    let echo = s.m.proxy.wait_for("alice's echo", |r| {
        r.dir == Dir::Down
            && r.stage == Stage::Written
            && r.user.as_deref() == Some("alice")
            && r.frame.ty() == "envelope"
    });
    alice.send("/quit");
    assert!(alice.wait().status.success());

    let mut alice = s.m.chat("alice", &s.homes[0]);
    s.m.proxy.inject("alice", Dir::Down, echo.frame);
    sync(&s.m, &mut alice, "alice");
    let out = alice.out.all();
    assert_eq!(times_shown(&out, "MINE-1"), 0, "{out:#?}");
    no_sealed_copy(&s.m);
}

/// True if no line has a control character (an escape sequence, a bell) in it.
fn clean(lines: &[String]) -> bool {
    lines.iter().all(|l| !l.chars().any(char::is_control))
}

#[test]
fn terminal_escapes_in_server_text_never_reach_the_terminal() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    alice.send("BEFORE-1");
    bob.out.expect("a message", exactly("<alice> BEFORE-1"));
    for frame in [
        json!({"type":"error","code":"internal","message":"EVIL-ERROR\u{1b}[2J\u{7}"}),
        json!({"type":"notice","text":"EVIL-NOTICE\u{1b}]0;pwned\u{7}"}),
        json!({"type":"presence","user":"alice","event":"leave","reason":"EVIL-LEAVE\u{1b}[31m"}),
        json!({"type":"bye","reason":"EVIL-BYE\u{1b}[H\r\n-- forged line"}),
    ] {
        s.m.proxy.inject("bob", Dir::Down, Frame::json(frame));
    }
    expect_warning(&mut bob, &[&["EVIL-ERROR"]]);
    bob.out.expect_contains("EVIL-NOTICE");
    bob.out.expect_contains("EVIL-LEAVE");
    bob.out.expect_contains("EVIL-BYE");
    let exit = bob.wait();
    assert!(clean(&exit.stdout), "{:#?}", exit.stdout);
    assert!(clean(&exit.stderr), "{:#?}", exit.stderr);
    assert!(
        !exit.stdout.iter().any(|l| l.starts_with("-- forged line")),
        "{:#?}",
        exit.stdout
    );
    no_sealed_copy(&s.m);
}

#[test]
fn terminal_escapes_in_an_unreadable_frame_never_reach_the_terminal() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    alice.send("BEFORE-1");
    bob.out.expect("a message", exactly("<alice> BEFORE-1"));
    for frame in [
        json!({"type":"EVIL-TYPE\u{1b}[2J"}),
        json!({"type":"notice","text":1,"EVIL\u{1b}[2J":true}),
        json!({"type":"device","user":"alice","fingerprint":"SHA256:\u{1b}[2J","event":"online"}),
    ] {
        s.m.proxy.inject("bob", Dir::Down, Frame::json(frame));
    }
    s.m.proxy
        .inject_raw("bob", Dir::Down, b"EVIL-LINE\x1b[2J is not JSON\n");
    sync(&s.m, &mut bob, "bob");
    bob.send("/quit");
    let exit = bob.wait();
    assert!(clean(&exit.stdout), "{:#?}", exit.stdout);
    assert!(clean(&exit.stderr), "{:#?}", exit.stderr);
    no_sealed_copy(&s.m);
}
