//! End-to-end secrecy through a real chatd: text reaches exactly its recipients' `chat`, and
//! never the server's database, its log (at trace level, which includes every line it writes
//! to a client before TLS), or anyone else's screen.

use crate::harness::{Chat, ChatExit, ClientHome, Server, exactly};

/// A marker nobody could produce by accident; unique per test run.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("MARK-{what}-{}-{nanos:09}", std::process::id())
}

/// Waits until `who` has pinned the device key of `peer` (so it encrypts to it).
fn wait_pinned(who: &mut Chat, peer: &str) {
    who.out
        .expect_contains(&format!("pinned {peer}'s device key SHA256:"));
}

fn saw(exit: &ChatExit, text: &str) -> bool {
    exit.stdout.iter().any(|l| l.contains(text))
}

#[test]
fn text_reaches_only_its_recipients_and_never_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_trace(dir.path());
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, &format!("{user}-pw"));
    }
    let homes = [ClientHome::new(), ClientHome::new(), ClientHome::new()];
    let mut alice = Chat::login(&server, "alice", "alice-pw", &homes[0]);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &homes[1]);
    wait_pinned(&mut alice, "bob");
    let mut carol = Chat::login(&server, "carol", "carol-pw", &homes[2]);
    wait_pinned(&mut alice, "carol");
    wait_pinned(&mut bob, "carol");
    wait_pinned(&mut carol, "alice");
    wait_pinned(&mut carol, "bob");

    let all_from_alice = marker("alice-to-all");
    let all_from_carol = marker("carol-to-all");
    let alice_to_bob = marker("alice-to-bob");
    let bob_to_carol = marker("bob-to-carol");
    let action = marker("bob-waves");

    alice.send(&all_from_alice);
    for c in [&mut alice, &mut bob, &mut carol] {
        c.out.expect(
            "alice's broadcast",
            exactly(&format!("<alice> {all_from_alice}")),
        );
    }
    alice.send(&format!("/w bob {alice_to_bob}"));
    bob.out.expect(
        "alice's whisper",
        exactly(&format!("*alice* {alice_to_bob}")),
    );
    alice
        .out
        .expect("alice's copy", exactly(&format!("-> *bob* {alice_to_bob}")));
    bob.send(&format!("/msg carol {bob_to_carol}"));
    carol
        .out
        .expect("bob's whisper", exactly(&format!("*bob* {bob_to_carol}")));
    // One sender at a time: messages from different senders have no common order.
    bob.send(&format!("/me {action}"));
    for c in [&mut alice, &mut bob, &mut carol] {
        c.out
            .expect("bob's action", exactly(&format!("* bob {action}")));
    }
    carol.send(&all_from_carol);
    for c in [&mut alice, &mut bob, &mut carol] {
        c.out.expect(
            "carol's broadcast",
            exactly(&format!("<carol> {all_from_carol}")),
        );
    }

    // carol leaves; what alice whispers to her now is stored, sealed, in the database.
    carol.send("/quit");
    let carol_exit = carol.wait();
    let to_offline = marker("alice-to-offline-carol");
    alice.send(&format!("/w carol {to_offline}"));
    alice.out.expect(
        "stored for carol",
        exactly("-- stored for carol (offline): delivered at the next login"),
    );
    let status = server.ctl(&["--json", "status"], None).json();
    assert!(
        status["offline_stored"].as_u64() >= Some(2),
        "chain and envelope: {status}"
    );

    let mut exits: Vec<ChatExit> = [alice, bob]
        .into_iter()
        .map(|mut c| {
            c.send("/quit");
            c.wait()
        })
        .collect();
    exits.push(carol_exit);
    let [alice, _, carol] = &exits[..] else {
        unreachable!()
    };
    // Each whisper is on its two ends only.
    assert!(
        !saw(carol, &alice_to_bob),
        "carol saw alice's whisper to bob"
    );
    assert!(
        !saw(alice, &bob_to_carol),
        "alice saw bob's whisper to carol"
    );
    for e in &exits {
        assert!(
            !e.stdout.iter().chain(&e.stderr).any(|l| l.contains(" !! ")),
            "no warnings in an honest exchange: {:?}",
            e.stdout
        );
    }

    assert!(server.stop_sigterm().success());
    let log = server.log.all().join("\n");
    // The capture is real: every line written to clients is in the trace log. chat negotiates
    // binary frames, so its live envelopes are there as raw binary `envelope` frames.
    let binary_envelope = "<binary frame 'E'";
    assert!(
        log.contains("wire write")
            && (log.contains(r#""type":"envelope""#) || log.contains(binary_envelope)),
        "the trace log has no wire capture"
    );
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(
        files.iter().any(|(name, _)| name.ends_with(".db")),
        "no database among {:?}",
        files.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for m in [
        &all_from_alice,
        &all_from_carol,
        &alice_to_bob,
        &bob_to_carol,
        &action,
        &to_offline,
    ] {
        assert!(!log.contains(m.as_str()), "{m} is in chatd's log");
        for (name, bytes) in &files {
            assert!(
                !bytes.windows(m.len()).any(|w| w == m.as_bytes()),
                "{m} is in {name}"
            );
        }
    }
}

#[test]
fn a_second_device_is_held_until_trusted_and_reads_its_own_users_messages() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home, laptop_home) = (
        ClientHome::new(),
        ClientHome::new(),
        ClientHome::device("alice-laptop"),
    );
    let mut alice = Chat::login(&server, "alice", "alice-pw", &alice_home);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    wait_pinned(&mut alice, "bob");
    wait_pinned(&mut bob, "alice");

    // alice logs in from a laptop: new to her account, it shows a code to approve it with;
    // her phone warns loudly about a device none of hers approved, and seals nothing to it.
    let mut laptop = Chat::login(&server, "alice", "alice-pw", &laptop_home);
    let code = crate::devices::approval_code(&mut laptop);
    alice.out.expect_contains(
        "!! a device that none of your devices approved logged in to your account: SHA256:",
    );

    // bob writes: the laptop is left out until bob accepts it, and bob is told so, once.
    let held = marker("held");
    bob.send(&held);
    bob.out
        .expect_contains("alice has a NEW device key SHA256:");
    alice
        .out
        .expect("bob's message", exactly(&format!("<bob> {held}")));
    // The laptop has no chain for it and asks bob's device, which waits until it trusts the
    // laptop; then the laptop reads it too, without bob reconnecting.
    laptop
        .out
        .expect_contains("a message from bob in #lobby came without its key; asked bob's device");

    bob.send("/trust alice");
    bob.out
        .expect_contains("accepted alice's device key SHA256:");
    laptop
        .out
        .expect("bob's held message", exactly(&format!("<bob> {held}")));
    let trusted = marker("trusted");
    bob.send(&trusted);
    laptop
        .out
        .expect("bob's message", exactly(&format!("<bob> {trusted}")));

    // The phone approves the laptop with its code; from then on what the phone sends, the
    // laptop reads too.
    alice.send(&format!("/devices approve {code}"));
    laptop
        .out
        .expect_contains("-- this device was approved by your device SHA256:");
    let from_phone = marker("phone");
    alice.send(&format!("/w bob {from_phone}"));
    bob.out
        .expect("the whisper", exactly(&format!("*alice* {from_phone}")));
    laptop.out.expect(
        "the phone's whisper",
        exactly(&format!("-> *bob* {from_phone}")),
    );

    // What bob wrote while the laptop was not accepted reached it only after bob accepted it
    // (bob then gave it the chain), and once.
    let exit = laptop.wait();
    let shown: Vec<usize> = exit
        .stdout
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(&held))
        .map(|(i, _)| i)
        .collect();
    let asked = exit
        .stdout
        .iter()
        .position(|l| l.contains("came without its key"))
        .expect("the laptop asked for the chain");
    assert!(
        matches!(shown[..], [i] if i > asked),
        "{shown:?} {:#?}",
        exit.stdout
    );
}
