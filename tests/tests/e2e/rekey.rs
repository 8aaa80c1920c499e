//! No silent loss for honest users: a message whose chain never reached a device is held
//! there, the sending device is asked for the chain again (`rekey`, through the real chatd),
//! and the message is shown once it comes, without the sender reconnecting; the sender is
//! told. The server here is the real chatd behind the malicious-server proxy, which drops the
//! chain.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::harness::{Dir, Scene, Stage, exactly, no_sealed_copy, saw, test_key};

#[test]
fn a_chain_the_server_dropped_is_asked_for_again_and_the_messages_are_shown() {
    let s = Scene::new(&["alice", "bob"]);
    let [mut alice, mut bob] = s.login_all(&["alice", "bob"]).try_into().ok().unwrap();
    // The first chain alice wraps for bob never reaches chatd.
    let armed = AtomicBool::new(true);
    s.m.proxy.set_hook(move |c, dir, f| {
        if dir == Dir::Up
            && c.is("alice")
            && f.ty() == "chain"
            && armed.swap(false, Ordering::SeqCst)
        {
            return Vec::new();
        }
        vec![f]
    });
    for text in ["KEYLESS-1", "KEYLESS-2"] {
        alice.send(text);
        alice
            .out
            .expect("the echo", exactly(&format!("<alice> {text}")));
    }
    // bob asks alice's device (once), alice answers, bob shows both, in order.
    let asked = s.m.proxy.wait_sent("bob", "rekey");
    assert_eq!(
        asked.frame.json["device"],
        test_key("alice").fingerprint().to_string(),
        "{:?}",
        asked.frame.json
    );
    bob.out
        .expect("the first message", exactly("<alice> KEYLESS-1"));
    bob.out
        .expect("the second message", exactly("<alice> KEYLESS-2"));
    saw(&mut alice, "the sender told", |l| {
        l.contains("bob") && l.contains("could not open") && l.contains("again")
    });
    let rekeys =
        s.m.proxy
            .records()
            .iter()
            .filter(|r| {
                r.user.as_deref() == Some("bob")
                    && r.dir == Dir::Up
                    && r.stage == Stage::Read
                    && r.frame.ty() == "rekey"
            })
            .count();
    assert_eq!(rekeys, 1, "asked once per chain");
    no_sealed_copy(&s.m);
}
