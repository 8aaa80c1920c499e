//! Unit tests of the end-to-end layer: honest routing, and every kind of forged, altered,
//! replayed and misrouted input a server could hand a client.

use super::fixtures::{device_info, fixed_key, room_state};
use super::*;
use chatd_proto::e2e::{Envelope, WrappedChain};
use chatd_proto::frame::{DeviceInfo, RoomState};

const NAMES: [&str; 3] = ["alice", "bob", "carol"];

fn key(i: usize) -> DeviceKey {
    fixed_key(i)
}

fn info(i: usize) -> DeviceInfo {
    device_info(NAMES[i], i)
}

/// The default room with all three in it.
fn lobby() -> RoomState {
    room_state("lobby", &NAMES)
}

/// Three logged-in clients that have seen each other come online.
fn trio() -> Vec<Secure> {
    let all: Vec<DeviceInfo> = (0..3).map(info).collect();
    (0..3)
        .map(|i| {
            let mut s = Secure::new(NAMES[i], key(i), Peers::in_memory(), 60_000, 4096);
            let events = s.on_login(&all, "lobby", &[lobby()]);
            assert_eq!(events.len(), 2, "two first-seen notices: {events:?}");
            s
        })
        .collect()
}

/// Acts as an honest server: chains to the device they name, the envelope to each member.
fn route(from: usize, sealed: &Sealed, clients: &mut [Secure]) -> Vec<Vec<Event>> {
    let fp = key(from).fingerprint();
    let mut seen = vec![Vec::new(); clients.len()];
    for frame in &sealed.chains {
        match frame {
            ClientFrame::Chain { data } => {
                let to = WrappedChain::from_base64(data)
                    .unwrap()
                    .header()
                    .recipient_device;
                let i = (0..3).find(|i| key(*i).fingerprint() == to).unwrap();
                seen[i].extend(clients[i].on_chain(NAMES[from], fp, data));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let conv = Envelope::decode(&sealed.envelope)
        .unwrap()
        .header()
        .conversation
        .clone();
    let conv = Conversation::parse(&conv).unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        if conv.includes(NAMES[i], |_| true) {
            seen[i].push(c.on_envelope(&json(NAMES[from], fp, &sealed.envelope)));
        }
    }
    seen
}

/// A JSON `envelope` frame naming `from`'s device `device`, as chatd sends it.
fn json(from: &str, device: Fingerprint, data: &Bytes) -> Delivered {
    Delivered {
        sent_by: SentBy::Named {
            user: from.into(),
            device,
        },
        data: Ok(data.clone()),
        ts: 7,
        stored: false,
    }
}

fn text_of(e: &Event) -> Option<&str> {
    match e {
        Event::Message(m) => Some(&m.text),
        _ => None,
    }
}

fn say(text: &str) -> Body {
    Body {
        text: text.into(),
        action: false,
    }
}

fn envelope_of(sealed: &Sealed) -> Bytes {
    sealed.envelope.clone()
}

fn warning(e: &Event) -> &Warning {
    match e {
        Event::Warning(w) => w,
        other => panic!("expected a warning, got {other:?}"),
    }
}

/// Why a message was dropped.
fn dropped(e: &Event) -> &Refusal {
    match warning(e) {
        Warning::Dropped { why, .. } => why,
        other => panic!("expected a dropped message, got {other:?}"),
    }
}

fn check_failed(e: &Event) -> E2eError {
    match dropped(e) {
        Refusal::Check { error, .. } => error.clone(),
        other => panic!("expected a failed check, got {other:?}"),
    }
}

#[test]
fn broadcast_reaches_everyone_once_wrapped_then_ratchets() {
    let mut c = trio();
    let sealed = c[0].seal(&Conversation::All, say("hello all")).unwrap();
    assert_eq!(sealed.chains.len(), 2, "one chain each for bob and carol");
    let seen = route(0, &sealed, &mut c);
    for s in &seen {
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(text_of(&s[0]), Some("hello all"));
    }
    // The next message reuses the chain: no RSA work, one frame.
    let sealed = c[0].seal(&Conversation::All, say("again")).unwrap();
    assert!(sealed.chains.is_empty());
    let seen = route(0, &sealed, &mut c);
    assert!(seen.iter().all(|s| text_of(&s[0]) == Some("again")));
}

#[test]
fn whispers_are_for_the_pair_only() {
    let mut c = trio();
    let conv = Conversation::pair("alice", "bob");
    let sealed = c[0].seal(&conv, say("psst")).unwrap();
    assert_eq!(sealed.chains.len(), 1, "only bob's device gets the chain");
    let seen = route(0, &sealed, &mut c);
    assert_eq!(text_of(&seen[1][0]), Some("psst"));
    let Event::Message(m) = &seen[1][0] else {
        panic!()
    };
    assert_eq!((m.from.as_str(), m.to.as_deref()), ("alice", Some("bob")));
    assert!(seen[2].is_empty());
    // A server that also hands the whisper to carol gets a warning there, not text.
    let data = envelope_of(&sealed);
    let e = c[2].on_envelope(&json("alice", key(0).fingerprint(), &data));
    assert!(matches!(dropped(&e), Refusal::NotForUs { .. }), "{e:?}");
    // Whispering to someone offline works: the server stores it for bob's device.
    c[0].device_offline(&key(1).fingerprint());
    let sealed = c[0].seal(&conv, say("later")).unwrap();
    assert_eq!(text_of(&route(0, &sealed, &mut c)[1][0]), Some("later"));
    // Once bob's only key is removed there is nobody to encrypt to.
    c[0].device_removed("bob", &key(1).fingerprint());
    let err = c[0].seal(&conv, say("never")).unwrap_err();
    assert_eq!(err, NotSent::NoKey { user: "bob".into() });
}

#[test]
fn forged_altered_replayed_and_misattributed_messages_are_dropped() {
    let mut c = trio();
    let sealed = c[0].seal(&Conversation::All, say("genuine")).unwrap();
    let data = envelope_of(&sealed);
    let genuine = data.clone();
    let seen = route(0, &sealed, &mut c);
    assert_eq!(text_of(&seen[1][0]), Some("genuine"));
    let alice = key(0).fingerprint();
    // Replayed.
    assert_eq!(
        check_failed(&c[1].on_envelope(&json("alice", alice, &data))),
        E2eError::Replay
    );
    // Altered: flip one bit in the ciphertext of a fresh message.
    let sealed = c[0].seal(&Conversation::All, say("second")).unwrap();
    let mut bytes = envelope_of(&sealed).to_vec();
    let n = bytes.len();
    bytes[n - 260] ^= 1; // in the AEAD tag, just before the 2048-bit signature
    let altered = Bytes::from(bytes);
    assert_eq!(
        check_failed(&c[1].on_envelope(&json("alice", alice, &altered))),
        E2eError::BadSignature
    );
    // The untouched one still opens afterwards: a failed check changes nothing.
    assert_eq!(
        text_of(&c[1].on_envelope(&json("alice", alice, &envelope_of(&sealed)))),
        Some("second")
    );
    // The server names another sender.
    let sealed = c[0].seal(&Conversation::All, say("third")).unwrap();
    let data = envelope_of(&sealed);
    let signed_as_alice = Refusal::SignedAs {
        signer: "alice".into(),
    };
    assert_eq!(
        dropped(&c[1].on_envelope(&json("carol", alice, &data))),
        &signed_as_alice
    );
    assert_eq!(
        dropped(&c[1].on_envelope(&json("carol", key(2).fingerprint(), &data))),
        &signed_as_alice
    );
    // Our own device, echoing something we never sent.
    assert_eq!(
        dropped(&c[0].on_envelope(&json("alice", alice, &genuine))),
        &Refusal::NotSentHere
    );
}

#[test]
fn a_binary_envelope_is_from_the_sender_its_signed_header_names() {
    let mut c = trio();
    route(
        0,
        &c[0].seal(&Conversation::All, say("first")).unwrap(),
        &mut c,
    );
    let sealed = c[0].seal(&Conversation::All, say("second")).unwrap();
    assert!(sealed.chains.is_empty());
    let binary = Delivered::binary(9, sealed.envelope.clone());
    match c[1].on_envelope(&binary) {
        Event::Message(m) => {
            // The signed time is shown; the server's, far from it, beside it.
            assert_eq!(
                (m.from.as_str(), m.text.as_str(), m.server_ts),
                ("alice", "second", Some(9))
            );
        }
        other => panic!("{other:?}"),
    }
    // Our own echo as a binary frame is ours; a second copy is a replay.
    assert!(matches!(c[0].on_envelope(&binary), Event::Message(m) if m.text == "second"));
    assert_eq!(dropped(&c[0].on_envelope(&binary)), &Refusal::NotSentHere);
    assert_eq!(check_failed(&c[1].on_envelope(&binary)), E2eError::Replay);
    // Unreadable bytes: a warning naming nobody (there is no sender to name), as a JSON
    // frame with bad base64 gets one naming the server's sender.
    let junk = Delivered::binary(9, Bytes::from_static(b"\x01E not an envelope"));
    assert!(
        matches!(
            warning(&c[1].on_envelope(&junk)),
            Warning::Unreadable { from: None, .. }
        ),
        "names nobody"
    );
    let bad = Delivered::json("alice".into(), key(0).fingerprint(), "no base64!", 9);
    assert_eq!(
        warning(&c[1].on_envelope(&bad)),
        &Warning::Unreadable {
            from: Some("alice".into()),
            error: E2eError::Malformed("base64"),
        }
    );
    // A header cannot borrow a name: carol's device signing as alice is no key of alice's.
    let mut mallory = Secure::new("alice", key(2), Peers::in_memory(), 60_000, 4096);
    mallory.on_login(&[info(1)], "lobby", &[lobby()]);
    let forged = mallory.seal(&Conversation::All, say("it's me")).unwrap();
    let e = c[1].on_envelope(&Delivered::binary(9, forged.envelope));
    assert!(matches!(dropped(&e), Refusal::Unannounced { .. }), "{e:?}");
    // None of that disturbed the chain: the next message still opens.
    let sealed = c[0].seal(&Conversation::All, say("third")).unwrap();
    let e = c[1].on_envelope(&Delivered::binary(9, sealed.envelope));
    assert_eq!(text_of(&e), Some("third"));
}

#[test]
fn a_swapped_key_is_announced_and_never_used() {
    let mut c = trio();
    // The server claims bob has a new key (really carol's key).
    let fake = DeviceInfo {
        user: "bob".into(),
        ..info(2)
    };
    let events = c[0].device_online("bob", fake.fingerprint, &fake.key, &[]);
    // Pending, and said when it first matters (here: the next message), once.
    assert!(events.is_empty(), "{events:?}");
    let sealed = c[0].seal(&Conversation::All, say("x")).unwrap();
    assert_eq!(
        sealed.events,
        [Event::Warning(Warning::PendingKey {
            user: "bob".into(),
            fingerprint: fake.fingerprint
        })]
    );
    let sealed = c[0].seal(&Conversation::All, say("y")).unwrap();
    assert!(sealed.events.is_empty(), "{:?}", sealed.events);
    // Without bob's real key, alice's whisper has no accepted key to go to.
    c[0].device_removed("bob", &key(1).fingerprint());
    let err = c[0]
        .seal(&Conversation::pair("alice", "bob"), say("x"))
        .unwrap_err();
    assert_eq!(err, NotSent::NoAcceptedKey { user: "bob".into() });
    // An impostor holding the new key, calling itself bob: its chain and message are
    // both refused, because that key is not accepted.
    let mut impostor = Secure::new("bob", key(2), Peers::in_memory(), 60_000, 4096);
    impostor.on_login(&[info(0)], "lobby", &[lobby()]);
    let sealed = impostor
        .seal(&Conversation::All, say("from the impostor"))
        .unwrap();
    let ClientFrame::Chain { data: chain } = &sealed.chains[0] else {
        panic!()
    };
    let unaccepted = Refusal::Unaccepted {
        user: "bob".into(),
        device: fake.fingerprint,
    };
    assert_eq!(
        warning(&c[0].on_chain("bob", fake.fingerprint, chain)[0]),
        &Warning::KeyRejected {
            from: "bob".into(),
            why: unaccepted.clone()
        }
    );
    let e = c[0].on_envelope(&json("bob", fake.fingerprint, &envelope_of(&sealed)));
    assert_eq!(dropped(&e), &unaccepted);
    // A key that does not hash to the announced fingerprint is ignored outright.
    let events = c[0].device_online("bob", Fingerprint::from_bytes([9; 32]), &info(1).key, &[]);
    assert!(
        matches!(warning(&events[0]), Warning::KeyMismatch { .. }),
        "{events:?}"
    );
    // Accepting it makes it usable.
    let accepted = c[0].trust("bob");
    assert!(matches!(
        &accepted[0],
        Event::Notice(Notice::Accepted { .. })
    ));
    assert!(
        c[0].seal(&Conversation::pair("alice", "bob"), say("x"))
            .is_ok()
    );
}

#[test]
fn a_removed_device_cannot_read_after_rotation() {
    let mut c = trio();
    let sealed = c[0].seal(&Conversation::All, say("before")).unwrap();
    route(0, &sealed, &mut c);
    // Carol going offline changes nothing: the server stores for her.
    c[0].device_offline(&key(2).fingerprint());
    let sealed = c[0].seal(&Conversation::All, say("while away")).unwrap();
    assert!(sealed.chains.is_empty(), "same chain, just the envelope");
    let seen = route(0, &sealed, &mut c);
    assert_eq!(text_of(&seen[2][0]), Some("while away"));
    // Carol's key is revoked; alice's next broadcast starts a new chain for bob only.
    c[0].device_removed("carol", &key(2).fingerprint());
    let sealed = c[0].seal(&Conversation::All, say("after")).unwrap();
    assert_eq!(sealed.chains.len(), 1, "a new chain, for bob only");
    let data = envelope_of(&sealed);
    let seen = route(0, &sealed, &mut c);
    assert_eq!(text_of(&seen[1][0]), Some("after"));
    // Carol still holds the old chain, but a copy of the new message does not open.
    let e = c[2].on_envelope(&json("alice", key(0).fingerprint(), &data));
    assert_eq!(dropped(&e), &Refusal::NoChain);
}

#[test]
fn verify_and_limits() {
    let mut c = trio();
    let listed = c[0].verify("bob", None);
    assert!(matches!(
        &listed[1],
        Event::Notice(Notice::Key {
            status: KeyStatus::Trusted,
            ..
        })
    ));
    let fp = key(1).fingerprint().to_string();
    assert!(matches!(
        &c[0].verify("bob", Some(&fp))[0],
        Event::Notice(Notice::Verified { .. })
    ));
    let wrong = key(2).fingerprint().to_string();
    assert!(matches!(
        warning(&c[0].verify("bob", Some(&wrong))[0]),
        Warning::NoSuchKey { .. }
    ));
    assert_eq!(
        warning(&c[0].verify("bob", Some("nope"))[0]),
        &Warning::NotAFingerprint
    );
    // A prefix of 16 hex digits names the key and the answer gives it in full.
    let short = &key(1).fingerprint().to_string()[..7 + 16];
    assert_eq!(
        c[0].verify("bob", Some(&short[7..]))[0],
        Event::Notice(Notice::Verified {
            user: "bob".into(),
            fingerprint: key(1).fingerprint()
        })
    );
    assert!(matches!(
        warning(&c[0].verify("bob", Some(&short[..short.len() - 1]))[0]),
        Warning::BadPrefix {
            why: crate::secure::prefix::PrefixError::TooShort(15),
            ..
        }
    ));
    // Messages from a verified key say so.
    let sealed = c[1].seal(&Conversation::All, say("hi")).unwrap();
    let seen = route(1, &sealed, &mut c);
    assert!(matches!(&seen[0][0], Event::Message(m) if m.verified));
    assert!(matches!(&seen[2][0], Event::Message(m) if !m.verified));
    // Encoded body over the server's limit: refused locally.
    let err = c[0]
        .seal(&Conversation::All, say(&"x".repeat(4096)))
        .unwrap_err();
    assert!(matches!(err, NotSent::TooLong { max: 4096, .. }), "{err:?}");
    assert!(
        c[0].seal(&Conversation::All, say(&"x".repeat(4096 - 11)))
            .is_ok()
    );
}

#[test]
fn a_chain_asked_for_again_is_given_once_from_that_index_to_members_only() {
    let mut c = trio();
    let room = Conversation::Room("lobby".into());
    let alice = key(0).fingerprint();
    let first = c[0].seal(&room, say("one")).unwrap();
    let second = c[0].seal(&room, say("two")).unwrap();
    let chain = Envelope::decode(&second.envelope)
        .unwrap()
        .header()
        .chain_id;
    let ask = |from: usize, conversation: &str, chain: [u8; 16], index: u32| RekeyRequest {
        from: NAMES[from].into(),
        device: key(from).fingerprint(),
        conversation: conversation.into(),
        chain: rekey::chain_hex(&chain),
        index,
    };
    // bob never got the chain (the server dropped it); he asks from index 1.
    let events = c[0].on_rekey(ask(1, "#lobby", chain, 1));
    assert!(
        matches!(&events[..], [Event::Notice(Notice::KeyGivenAgain { user, .. })] if user == "bob"),
        "{events:?}"
    );
    let frames = c[0].take_frames();
    let [ClientFrame::Chain { data }] = &frames[..] else {
        panic!("one chain frame: {frames:?}")
    };
    let to = WrappedChain::from_base64(data).unwrap();
    assert_eq!(to.header().recipient_device, key(1).fingerprint());
    assert_eq!(to.header().start_index, 1);
    assert!(c[1].on_chain("alice", alice, data).is_empty());
    let shown = c[1].on_envelope(&json("alice", alice, &second.envelope));
    assert_eq!(text_of(&shown), Some("two"));
    // Index 0 was not given: the chain starts after it.
    let not = c[1].on_envelope(&json("alice", alice, &first.envelope));
    assert!(text_of(&not).is_none(), "{not:?}");

    // The same request again is not answered twice.
    assert!(c[0].on_rekey(ask(1, "#lobby", chain, 1)).is_empty());
    assert!(c[0].take_frames().is_empty());
    // carol is not in alice and bob's whisper: nothing for her.
    let pair = Conversation::pair("alice", "bob");
    let whisper = c[0].seal(&pair, say("psst")).unwrap();
    let wchain = Envelope::decode(&whisper.envelope)
        .unwrap()
        .header()
        .chain_id;
    assert!(c[0].on_rekey(ask(2, "alice,bob", wchain, 0)).is_empty());
    assert!(c[0].take_frames().is_empty());
    // A chain alice does not have (any more): said once, nothing sent.
    let gone = c[0].on_rekey(ask(2, "#lobby", [9; 16], 0));
    assert!(
        matches!(&gone[..], [Event::Notice(Notice::KeyGone { user, .. })] if user == "carol"),
        "{gone:?}"
    );
    assert!(c[0].on_rekey(ask(2, "#lobby", [9; 16], 3)).is_empty());
    assert!(c[0].take_frames().is_empty());

    // After a reconnection the replaced chain can still be given again.
    c[0].disconnected();
    let all: Vec<DeviceInfo> = (0..3).map(info).collect();
    c[0].on_login(&all, "lobby", &[lobby()]);
    c[0].on_rekey(ask(2, "#lobby", chain, 0));
    let frames = c[0].take_frames();
    let [ClientFrame::Chain { data }] = &frames[..] else {
        panic!("one chain frame: {frames:?}")
    };
    assert!(c[2].on_chain("alice", alice, data).is_empty());
    let shown = c[2].on_envelope(&json("alice", alice, &first.envelope));
    assert_eq!(text_of(&shown), Some("one"));
}

#[test]
fn a_message_without_its_chain_waits_asks_once_and_opens_when_the_chain_comes() {
    let mut c = trio();
    c[1].enable_rekey(true);
    let room = Conversation::Room("lobby".into());
    let alice = key(0).fingerprint();
    // The server drops alice's chains; her messages reach bob without them.
    let one = c[0].seal(&room, say("one")).unwrap();
    let two = c[0].seal(&room, say("two")).unwrap();
    let asked = c[1].on_delivered(&json("alice", alice, &one.envelope));
    assert!(
        matches!(&asked[..], [Event::Notice(Notice::AskedForKey { user, .. })] if user == "alice"),
        "{asked:?}"
    );
    assert!(
        c[1].on_delivered(&json("alice", alice, &two.envelope))
            .is_empty()
    );
    let frames = c[1].take_frames();
    let [
        ClientFrame::Rekey {
            device,
            conversation,
            chain,
            index,
        },
    ] = &frames[..]
    else {
        panic!("one rekey: {frames:?}")
    };
    assert_eq!(
        (*device, conversation.as_str(), *index),
        (alice, "#lobby", 0)
    );
    // alice answers; the chain opens both, in order.
    c[0].on_rekey(RekeyRequest {
        from: "bob".into(),
        device: key(1).fingerprint(),
        conversation: conversation.clone(),
        chain: chain.clone(),
        index: *index,
    });
    let frames = c[0].take_frames();
    let [ClientFrame::Chain { data }] = &frames[..] else {
        panic!("one chain: {frames:?}")
    };
    let shown: Vec<_> = c[1]
        .on_chain("alice", alice, data)
        .iter()
        .filter_map(|e| text_of(e).map(str::to_string))
        .collect();
    assert_eq!(shown, ["one", "two"]);
    // Without the server's support nothing is asked: the old warning.
    let mut c = trio();
    let three = c[0].seal(&room, say("three")).unwrap();
    assert_eq!(
        dropped(&c[1].on_envelope(&json("alice", alice, &three.envelope))),
        &Refusal::NoChain
    );
    assert!(c[1].take_frames().is_empty());
}
