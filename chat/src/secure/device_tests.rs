//! Unit tests of the device trust rules: first contact, devices vouched for by devices, new
//! devices approved with a code, ghosts on one's own account and others', refused vouches,
//! revoked keys, and what pending keys send held until they are accepted.

use super::fixtures::{device_info, fixed_key, room_state};
use super::*;
use chatd_proto::e2e::{Envelope, WrappedChain};
use chatd_proto::frame::{DeviceInfo, RoomState};

/// Key indexes: alice's, bob's first and second device, carol's, and a ghost's.
const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const BOB2: usize = 3;
const GHOST: usize = 4;

fn key(i: usize) -> DeviceKey {
    fixed_key(i)
}

fn fp(i: usize) -> Fingerprint {
    key(i).fingerprint()
}

fn info(user: &str, i: usize) -> DeviceInfo {
    device_info(user, i)
}

fn lobby() -> RoomState {
    room_state("lobby", &["alice", "bob", "carol"])
}

fn client(user: &str, i: usize, peers: Peers) -> Secure {
    let mut s = Secure::new(user, key(i), peers, 60_000, 4096);
    s.set_vouch_supported(true);
    s
}

fn vouch(by: usize, user: &str, of: usize, secret: Option<&str>) -> String {
    Vouch::sign(&key(by), user, fp(of), now_ms(), secret.map(str::as_bytes))
        .unwrap()
        .to_base64()
        .unwrap()
}

fn say(text: &str) -> Body {
    Body {
        text: text.into(),
        action: false,
    }
}

fn status(s: &Secure, user: &str, i: usize) -> Option<KeyStatus> {
    s.peers.status(user, &fp(i))
}

/// The recipient fingerprints of the chains a sealed message carries.
fn wrapped_for(sealed: &Sealed) -> Vec<Fingerprint> {
    sealed
        .chains
        .iter()
        .map(|f| match f {
            ClientFrame::Chain { data } => {
                WrappedChain::from_base64(data)
                    .unwrap()
                    .header()
                    .recipient_device
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Hands `sealed` (from `user`'s device `from`) to `to` as a server would.
fn deliver(sealed: &Sealed, user: &str, from: usize, to: &mut Secure) -> Vec<Event> {
    let mut events = Vec::new();
    for f in &sealed.chains {
        if let ClientFrame::Chain { data } = f {
            let header = WrappedChain::from_base64(data).unwrap();
            if header.header().recipient_device == to.device() {
                events.extend(to.receive_chain(user, fp(from), data));
            }
        }
    }
    let data = BASE64.encode(&sealed.envelope);
    events.extend(to.receive_envelope(&Delivered::json(user.into(), fp(from), &data, 1)));
    events
}

fn texts(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.text.as_str()),
            _ => None,
        })
        .collect()
}

fn warnings(events: &[Event]) -> Vec<&Warning> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning(w) => Some(w),
            _ => None,
        })
        .collect()
}

/// alice, who already knows bob's first device and carol.
fn alice() -> Secure {
    let mut a = client("alice", ALICE, Peers::in_memory());
    a.on_login(
        &[info("bob", BOB), info("carol", CAROL)],
        "lobby",
        &[lobby()],
    );
    a
}

#[test]
fn first_contact_trusts_every_listed_key_and_shows_the_user_first() {
    let mut a = client("alice", ALICE, Peers::in_memory());
    let events = a.on_login(
        &[info("alice", ALICE), info("bob", BOB), info("bob", BOB2)],
        "lobby",
        &[lobby()],
    );
    assert_eq!(
        events,
        [Event::Notice(Notice::NewUser {
            user: "bob".into(),
            fingerprints: vec![fp(BOB), fp(BOB2)],
            room: "lobby".into(),
        })]
    );
    assert_eq!(status(&a, "bob", BOB2), Some(KeyStatus::Trusted));
    // carol first seen later: shown when she comes online, before any message.
    let events = a.device_online("carol", fp(CAROL), &info("carol", CAROL).key, &[]);
    assert!(
        matches!(&events[..], [Event::Notice(Notice::NewUser { user, .. })] if user == "carol")
    );
    let sealed = a
        .seal(&Conversation::Room("lobby".into()), say("hi"))
        .unwrap();
    assert_eq!(wrapped_for(&sealed).len(), 3);
    assert!(sealed.events.is_empty());
}

#[test]
fn a_new_device_vouched_by_a_trusted_one_is_used_and_what_it_sent_meanwhile_shown() {
    let mut a = alice();
    // bob's second device logs in and talks before alice has the vouch: held, said once.
    assert!(
        a.device_online("bob", fp(BOB2), &info("bob", BOB2).key, &[])
            .is_empty()
    );
    let mut bob2 = client("bob", BOB2, Peers::in_memory());
    bob2.on_login(
        &[info("alice", ALICE), info("bob", BOB)],
        "lobby",
        &[lobby()],
    );
    let first = bob2
        .seal(&Conversation::Room("lobby".into()), say("one"))
        .unwrap();
    let second = bob2
        .seal(&Conversation::Room("lobby".into()), say("two"))
        .unwrap();
    let events = deliver(&first, "bob", BOB2, &mut a);
    assert_eq!(
        events,
        [Event::Warning(Warning::PendingKey {
            user: "bob".into(),
            fingerprint: fp(BOB2)
        })]
    );
    assert!(
        deliver(&second, "bob", BOB2, &mut a).is_empty(),
        "said once"
    );
    // Bob's first device vouches for it: used from now on, and what it sent is shown.
    let events = a.on_vouch("bob", &vouch(BOB, "bob", BOB2, None));
    assert_eq!(
        events[0],
        Event::Notice(Notice::KeyVouched {
            user: "bob".into(),
            fingerprint: fp(BOB2),
            by: fp(BOB)
        })
    );
    assert_eq!(texts(&events), ["one", "two"]);
    assert!(warnings(&events).is_empty(), "{events:?}");
    assert_eq!(status(&a, "bob", BOB2), Some(KeyStatus::Vouched));
    let sealed = a
        .seal(&Conversation::Room("lobby".into()), say("both"))
        .unwrap();
    assert!(wrapped_for(&sealed).contains(&fp(BOB2)));
    assert!(sealed.events.is_empty());
    // A vouch listed with the key at login works the same, silently but for the notice.
    let mut c = client("carol", CAROL, Peers::in_memory());
    c.on_login(&[info("bob", BOB)], "lobby", &[lobby()]);
    let mut listed = info("bob", BOB2);
    listed.vouches = vec![vouch(BOB, "bob", BOB2, None)];
    let events = c.device_online("bob", fp(BOB2), &listed.key, &listed.vouches);
    assert!(warnings(&events).is_empty(), "{events:?}");
    assert_eq!(status(&c, "bob", BOB2), Some(KeyStatus::Vouched));
}

#[test]
fn a_ghost_on_my_own_account_is_never_sealed_to_and_warned_about_in_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let peers = dir.path().join("peers.json");
    // alice's device has been in use alone; then a ghost appears on her account.
    let mut a = client("alice", ALICE, Peers::load(&peers).unwrap());
    a.on_login(
        &[info("alice", ALICE), info("bob", BOB)],
        "lobby",
        &[lobby()],
    );
    let events = a.device_online("alice", fp(GHOST), &info("alice", GHOST).key, &[]);
    assert_eq!(
        events,
        [Event::Warning(Warning::UnapprovedOwnDevice {
            fingerprint: fp(GHOST)
        })]
    );
    for session in 0..2 {
        let mut a = client("alice", ALICE, Peers::load(&peers).unwrap());
        let events = a.on_login(
            &[info("alice", ALICE), info("alice", GHOST), info("bob", BOB)],
            "lobby",
            &[lobby()],
        );
        assert!(
            events.contains(&Event::Warning(Warning::UnapprovedOwnDevice {
                fingerprint: fp(GHOST)
            })),
            "session {session}: {events:?}"
        );
        assert_eq!(status(&a, "alice", GHOST), Some(KeyStatus::Pending));
        let sealed = a
            .seal(&Conversation::Room("lobby".into()), say("x"))
            .unwrap();
        assert_eq!(wrapped_for(&sealed), [fp(BOB)]);
        assert!(sealed.events.is_empty(), "said once: {:?}", sealed.events);
        let note = a
            .seal(&Conversation::pair("alice", "alice"), say("n"))
            .unwrap();
        assert!(wrapped_for(&note).is_empty());
        // /trust does not approve one's own devices, and a vouch signed by the ghost itself
        // (or for it by another unapproved key) changes nothing.
        assert_eq!(a.trust("alice"), [Event::Warning(Warning::TrustOwn)]);
        a.on_vouch("alice", &vouch(GHOST, "alice", GHOST, None));
        assert_eq!(status(&a, "alice", GHOST), Some(KeyStatus::Pending));
    }
    // A device new to an account that already has a key cannot tell a ghost from a real
    // older device: it asks to be approved, warns about the other key (it is not ours if we
    // have no other device), and seals nothing to it meanwhile.
    let mut fresh = client("alice", CAROL, Peers::in_memory());
    let events = fresh.on_login(
        &[info("alice", CAROL), info("alice", GHOST)],
        "lobby",
        &[lobby()],
    );
    assert!(
        matches!(&events[..], [
            Event::Notice(Notice::NotApproved { .. }),
            Event::Warning(Warning::OtherOwnDevice { fingerprint }),
        ] if *fingerprint == fp(GHOST)),
        "{events:?}"
    );
    let note = fresh
        .seal(&Conversation::pair("alice", "alice"), say("n"))
        .unwrap();
    assert!(wrapped_for(&note).is_empty());
    // A version 1 pin file that trusted the ghost on first use: demoted on upgrade.
    let mut p = Peers::in_memory();
    p.pin(
        "alice",
        fp(GHOST),
        &info("alice", GHOST).key,
        KeyStatus::Trusted,
    )
    .unwrap();
    let mut a = client("alice", ALICE, p);
    let events = a.on_login(&[info("alice", ALICE), info("alice", GHOST)], "lobby", &[]);
    assert_eq!(status(&a, "alice", GHOST), Some(KeyStatus::Pending));
    assert!(!events.is_empty());
}

#[test]
fn a_ghost_of_bob_vouched_by_a_key_that_is_not_bobs_trusted_key_stays_pending() {
    let mut a = alice();
    a.device_online("bob", fp(GHOST), &info("bob", GHOST).key, &[]);
    a.device_online("bob", fp(BOB2), &info("bob", BOB2).key, &[]);
    // By carol's key, which is no key of bob's (the signed user says bob).
    let events = a.on_vouch("bob", &vouch(CAROL, "bob", GHOST, None));
    assert!(events.is_empty(), "{events:?}");
    // Carol's key announced as bob's too: a pending key of "bob" vouching.
    a.device_online("bob", fp(CAROL), &info("bob", CAROL).key, &[]);
    a.on_vouch("bob", &vouch(CAROL, "bob", GHOST, None));
    assert_eq!(status(&a, "bob", GHOST), Some(KeyStatus::Pending));
    // By itself.
    a.on_vouch("bob", &vouch(GHOST, "bob", GHOST, None));
    assert_eq!(status(&a, "bob", GHOST), Some(KeyStatus::Pending));
    // bob's real vouch for his second device is not one for the ghost.
    a.on_vouch("bob", &vouch(BOB, "bob", BOB2, None));
    assert_eq!(status(&a, "bob", BOB2), Some(KeyStatus::Vouched));
    assert_eq!(status(&a, "bob", GHOST), Some(KeyStatus::Pending));
    let sealed = a
        .seal(&Conversation::Room("lobby".into()), say("x"))
        .unwrap();
    assert!(!wrapped_for(&sealed).contains(&fp(GHOST)));
}

#[test]
fn forged_misaddressed_and_replayed_vouches_are_refused() {
    let mut a = alice();
    a.device_online("bob", fp(GHOST), &info("bob", GHOST).key, &[]);
    // Signed by the ghost, relabelled as made by bob's trusted device.
    let mut bytes = BASE64.decode(vouch(GHOST, "bob", GHOST, None)).unwrap();
    let at = 2 + 2 + 3;
    bytes[at..at + 32].copy_from_slice(fp(BOB).as_bytes());
    let events = a.on_vouch("bob", &BASE64.encode(&bytes));
    assert!(
        matches!(
            warnings(&events)[..],
            [Warning::VouchRefused {
                why: VouchRefusal::BadSignature(_),
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(status(&a, "bob", GHOST), Some(KeyStatus::Pending));
    // bob's genuine vouch, named by the server as carol's.
    let events = a.on_vouch("carol", &vouch(BOB, "bob", GHOST, None));
    assert_eq!(
        warnings(&events),
        [&Warning::VouchRefused {
            user: "carol".into(),
            why: VouchRefusal::OtherUser {
                signed_user: "bob".into()
            }
        }]
    );
    // Garbage.
    let events = a.on_vouch("bob", "AAAA");
    assert!(matches!(
        warnings(&events)[..],
        [Warning::VouchRefused {
            why: VouchRefusal::Unreadable(_),
            ..
        }]
    ));
    assert_eq!(status(&a, "bob", GHOST), Some(KeyStatus::Pending));
}

#[test]
fn a_new_device_shows_a_code_and_trusts_the_device_that_used_it() {
    // bob's first device, which once approved a third one.
    let mut b1 = client("bob", BOB, Peers::in_memory());
    b1.on_login(
        &[info("bob", BOB), info("alice", ALICE)],
        "lobby",
        &[lobby()],
    );
    // The new device logs in to an account that has other keys: it shows a code.
    let mut b2 = client("bob", BOB2, Peers::in_memory());
    let mut listing = vec![info("bob", BOB), info("bob", BOB2), info("bob", GHOST)];
    listing[2].vouches = vec![vouch(BOB, "bob", GHOST, None)];
    let events = b2.on_login(&listing, "lobby", &[lobby()]);
    let code = b2.approval_code().unwrap();
    assert!(code.starts_with(&hex_of_fp(BOB2)[..16]));
    assert_eq!(code.len(), 16 + 1 + 10);
    assert!(events.contains(&Event::Notice(Notice::NotApproved { code: code.clone() })));
    // Each other key of the account is named once, loudly: this device cannot tell its
    // owner's other devices from keys that are not theirs.
    assert_eq!(
        warnings(&events).len(),
        2,
        "the other keys named: {events:?}"
    );
    assert_eq!(status(&b2, "bob", BOB), Some(KeyStatus::Pending));
    // The old device sees the new one as a device nobody approved, until it approves it.
    let events = b1.device_online("bob", fp(BOB2), &info("bob", BOB2).key, &[]);
    assert_eq!(
        events,
        [Event::Warning(Warning::UnapprovedOwnDevice {
            fingerprint: fp(BOB2)
        })]
    );
    // A code with a wrong secret: the vouch carries a MAC the new device refuses.
    let wrong = format!("{}-AAAAAAAAAA", &code[..16]);
    let (_, frame) = b1.approve_device(&wrong);
    let Some(ClientFrame::Vouch { data }) = frame else {
        panic!("{frame:?}")
    };
    let events = b2.on_vouch("bob", &data);
    assert_eq!(
        warnings(&events),
        [&Warning::VouchRefused {
            user: "bob".into(),
            why: VouchRefusal::WrongCode
        }]
    );
    assert_eq!(status(&b2, "bob", BOB), Some(KeyStatus::Pending));
    // The right code (typed in lower case): approved both ways, and transitively.
    let (events, frame) = b1.approve_device(&code.to_lowercase());
    assert!(events.contains(&Event::Notice(Notice::DeviceApproved {
        fingerprint: fp(BOB2)
    })));
    assert_eq!(status(&b1, "bob", BOB2), Some(KeyStatus::Vouched));
    let Some(ClientFrame::Vouch { data }) = frame else {
        panic!("{frame:?}")
    };
    let events = b2.on_vouch("bob", &data);
    assert!(
        events.contains(&Event::Notice(Notice::Approved { by: fp(BOB) })),
        "{events:?}"
    );
    assert_eq!(status(&b2, "bob", BOB), Some(KeyStatus::Vouched));
    assert_eq!(
        status(&b2, "bob", GHOST),
        Some(KeyStatus::Vouched),
        "vouched by bob's first device"
    );
    assert_eq!(b2.approval_code(), None);
    let sealed = b1
        .seal(&Conversation::pair("bob", "bob"), say("n"))
        .unwrap();
    assert_eq!(wrapped_for(&sealed), [fp(BOB2)]);
}

fn hex_of_fp(i: usize) -> String {
    fp(i)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn devices_lists_approves_by_fingerprint_and_revokes() {
    let mut b1 = client("bob", BOB, Peers::in_memory());
    b1.on_login(&[info("bob", BOB)], "lobby", &[lobby()]);
    b1.on_login(&[info("bob", BOB), info("bob", BOB2)], "lobby", &[lobby()]);
    let listed = b1.list_devices();
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&Event::Notice(Notice::OwnDevice {
        fingerprint: fp(BOB),
        status: KeyStatus::Verified,
        online: true,
        this: true
    })));
    let too_short = &hex_of_fp(BOB2)[..15];
    assert!(matches!(
        warnings(&b1.approve_device(too_short).0)[..],
        [Warning::BadPrefix {
            why: crate::secure::prefix::PrefixError::TooShort(15),
            ..
        }]
    ));
    assert_eq!(
        warnings(&b1.approve_device(&fp(BOB).to_string()).0),
        [&Warning::ThisDevice]
    );
    let (events, frame) = b1.revoke_device(&hex_of_fp(BOB2)[..16]);
    assert_eq!(
        events,
        [Event::Notice(Notice::RevokeAsked {
            fingerprint: fp(BOB2)
        })]
    );
    assert_eq!(
        frame,
        Some(ClientFrame::Command {
            name: "revoke".into(),
            args: fp(BOB2).to_string(),
            room: None
        })
    );
    let prefix = format!("SHA256:{}", &hex_of_fp(BOB2)[..20]);
    let (_, frame) = b1.approve_device(&prefix);
    assert!(matches!(frame, Some(ClientFrame::Vouch { .. })));
    assert_eq!(status(&b1, "bob", BOB2), Some(KeyStatus::Vouched));
    // A server without device vouches: nothing is signed or sent.
    b1.set_vouch_supported(false);
    assert_eq!(
        b1.approve_device(&prefix),
        (vec![Event::Warning(Warning::ServerTooOld)], None)
    );
}

#[test]
fn a_revoked_key_announced_again_stays_revoked() {
    let mut a = alice();
    a.device_removed("bob", &fp(BOB));
    assert_eq!(status(&a, "bob", BOB), Some(KeyStatus::Revoked));
    let events = a.device_online("bob", fp(BOB), &info("bob", BOB).key, &[]);
    assert_eq!(
        events,
        [Event::Warning(Warning::RevokedKeyAnnounced {
            user: "bob".into(),
            fingerprint: fp(BOB)
        })]
    );
    assert!(
        a.on_login(&[info("bob", BOB)], "lobby", &[lobby()])
            .is_empty(),
        "said once"
    );
    a.trust("bob");
    a.verify("bob", Some(&fp(BOB).to_string()));
    assert_eq!(status(&a, "bob", BOB), Some(KeyStatus::Revoked));
    let err = a
        .seal(&Conversation::pair("alice", "bob"), say("x"))
        .unwrap_err();
    assert_eq!(err, NotSent::NoKey { user: "bob".into() });
    // What it sends is refused, not held.
    let mut b = client("bob", BOB, Peers::in_memory());
    b.on_login(&[info("alice", ALICE)], "lobby", &[lobby()]);
    let sealed = b
        .seal(&Conversation::Room("lobby".into()), say("zombie"))
        .unwrap();
    let events = deliver(&sealed, "bob", BOB, &mut a);
    assert!(texts(&events).is_empty());
    assert!(!warnings(&events).is_empty());
}

#[test]
fn what_a_pending_key_sent_survives_a_restart_and_is_shown_once_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (peers, pending) = (
        dir.path().join("peers.json"),
        dir.path().join("pending.json"),
    );
    let start = || {
        let mut a = client("alice", ALICE, Peers::load(&peers).unwrap())
            .with_pending_file(&pending)
            .unwrap();
        a.on_login(&[info("bob", BOB), info("bob", BOB2)], "lobby", &[lobby()]);
        a
    };
    let mut a = client("alice", ALICE, Peers::load(&peers).unwrap())
        .with_pending_file(&pending)
        .unwrap();
    a.on_login(&[info("bob", BOB)], "lobby", &[lobby()]);
    a.device_online("bob", fp(BOB2), &info("bob", BOB2).key, &[]);
    let mut bob2 = client("bob", BOB2, Peers::in_memory());
    bob2.on_login(&[info("alice", ALICE)], "lobby", &[lobby()]);
    let sealed = bob2
        .seal(&Conversation::pair("alice", "bob"), say("while pending"))
        .unwrap();
    let events = deliver(&sealed, "bob", BOB2, &mut a);
    assert!(texts(&events).is_empty());
    drop(a);
    let mode = std::fs::metadata(&pending).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&pending).unwrap();
    assert!(!text.contains("while pending"), "held sealed");
    // After a restart alice accepts the key by hand: the held message is shown, once.
    let mut a = start();
    let events = a.trust("bob");
    assert_eq!(texts(&events), ["while pending"]);
    let mut a = start();
    assert!(texts(&a.trust("bob")).is_empty());
}

#[test]
fn what_is_held_is_bounded_in_frames_and_bytes() {
    let mut a = alice();
    a.device_online("bob", fp(BOB2), &info("bob", BOB2).key, &[]);
    let full = Event::Warning(Warning::HeldFull { user: "bob".into() });
    // Too big at once.
    let events = a.receive_chain("bob", fp(BOB2), &"A".repeat((4 << 20) + 1));
    assert_eq!(events.last(), Some(&full));
    // Too many.
    for i in 0..1000 {
        let events = a.receive_chain("bob", fp(BOB2), "AAAA");
        assert!(!events.contains(&full), "frame {i}");
    }
    assert_eq!(a.receive_chain("bob", fp(BOB2), "AAAA"), [full]);
    // Released once the key is accepted (and refused: these are no chains); new frames from
    // it are opened at once.
    let events = a.trust("bob");
    assert_eq!(warnings(&events).len(), 1000);
    let events = a.receive_chain("bob", fp(BOB2), "AAAA");
    assert!(
        matches!(warnings(&events)[..], [Warning::KeyRejected { .. }]),
        "{events:?}"
    );
}

#[test]
fn a_chain_asked_for_by_a_pending_device_is_given_only_once_that_device_is_vouched_for() {
    // alice knows bob's first device; bob's second one is new to her, hence pending.
    let mut a = client("alice", ALICE, Peers::in_memory());
    a.enable_rekey(true);
    a.on_login(
        &[info("alice", ALICE), info("bob", BOB)],
        "lobby",
        &[lobby()],
    );
    a.device_online("bob", fp(BOB2), &info("bob", BOB2).key, &[]);
    assert_eq!(status(&a, "bob", BOB2), Some(KeyStatus::Pending));
    let sealed = a
        .seal(&Conversation::Room("lobby".into()), say("for bob"))
        .unwrap();
    assert!(!wrapped_for(&sealed).contains(&fp(BOB2)));
    let chain = Envelope::decode(&sealed.envelope)
        .unwrap()
        .header()
        .chain_id;
    // bob's second device got the envelope without a chain and asks: held, nothing sent.
    let ask = RekeyRequest {
        from: "bob".into(),
        device: fp(BOB2),
        conversation: "#lobby".into(),
        chain: rekey::chain_hex(&chain),
        index: 0,
    };
    assert!(a.on_rekey(ask.clone()).is_empty());
    assert!(a.take_frames().is_empty(), "nothing for a pending key");
    // A ghost claiming to be bob asks the same: never answered, not even later.
    let ghost = RekeyRequest {
        device: fp(GHOST),
        ..ask
    };
    assert!(a.on_rekey(ghost).is_empty());
    // bob's first device vouches for the second: the held request is answered now.
    let events = a.on_vouch("bob", &vouch(BOB, "bob", BOB2, None));
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Notice(Notice::KeyGivenAgain { user, .. }) if user == "bob")
        ),
        "{events:?}"
    );
    let frames = a.take_frames();
    let to: Vec<Fingerprint> = frames
        .iter()
        .map(|f| match f {
            ClientFrame::Chain { data } => {
                WrappedChain::from_base64(data)
                    .unwrap()
                    .header()
                    .recipient_device
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(to, [fp(BOB2)]);
}
