//! The client's own commands in plain mode against a real chatd: `/help CMD` and one list
//! without duplicates, `/ping`'s round trip, `/ignore` (kept across a restart), `/verify`
//! by a fingerprint prefix, and the end-of-input message.

use crate::harness::{Chat, ClientHome, Server, exactly, unstamped};

/// `/ping`, and waits for its answer: every frame the server sent before it has been shown.
fn sync(who: &mut Chat) -> String {
    who.send("/ping");
    who.out.expect("the pong", |l| {
        unstamped(l).is_some_and(|t| t.starts_with("-- pong from server in "))
    })
}

/// The fingerprint of `peer`'s key, from the line that pinned it.
fn pinned(who: &mut Chat, peer: &str) -> String {
    let line = who
        .out
        .expect_contains(&format!("pinned {peer}'s device key SHA256:"));
    let at = line.find("SHA256:").unwrap();
    line[at..at + 7 + 64].to_string()
}

#[test]
fn help_for_one_command_and_one_list_without_duplicates() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    let home = ClientHome::new();
    let mut alice = Chat::login(&server, "alice", "alice-pw", &home);

    // A client command is described by the client; it wraps the server's join.
    alice.send("/help join");
    alice.out.expect(
        "the client's line for /join",
        exactly("-- /join ROOM - switch to a room you are in, or join it; plain text goes to the current room"),
    );
    // A server command is described by the server, by name or alias, slash optional.
    alice.send("/help /whois");
    alice.out.expect(
        "the server's line for /whois",
        exactly("-- /whois USER - show whether USER is online, their away message, rooms and device key fingerprints"),
    );
    alice.send("/help who");
    alice.out.expect("/list by its alias", |l| {
        unstamped(l).is_some_and(|t| t.starts_with("-- /list - ") && t.ends_with("(aliases: who)"))
    });
    alice.send("/help frobnicate");
    alice.out.expect(
        "an unknown command",
        exactly("!! unknown command /frobnicate; try /help"),
    );

    let from = alice.out.all().len();
    alice.send("/help");
    alice
        .out
        .expect("the server's part", exactly("-- server commands:"));
    sync(&mut alice);
    let listed: Vec<String> = alice
        .out
        .since(from)
        .iter()
        .filter_map(|l| l.strip_prefix("  /"))
        .map(|l| l.split([' ', '-']).next().unwrap_or("").to_string())
        .collect();
    for name in [
        "help", "join", "kick", "part", "topic", "ping", "whisper", "ignore", "whois", "list",
        "rooms",
    ] {
        let n = listed.iter().filter(|l| *l == name).count();
        assert_eq!(
            n,
            1,
            "/{name} listed {n} times in:\n{}",
            alice.out.since(from).join("\n")
        );
    }
    let exit = alice.wait();
    assert_eq!(exit.status.code(), Some(0), "{:?}", exit.stderr);
}

#[test]
fn ping_shows_the_round_trip() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    let home = ClientHome::new();
    let mut alice = Chat::login(&server, "alice", "alice-pw", &home);
    let line = sync(&mut alice);
    let text = unstamped(&line).unwrap();
    let rtt = text.trim_start_matches("-- pong from server in ");
    let (number, unit) = rtt.split_once(' ').unwrap();
    let number: f64 = number.parse().unwrap_or_else(|_| panic!("{line}"));
    assert!(number > 0.0 && ["ms", "s"].contains(&unit), "{line}");
    // The server's own `pong` notice is not what answered.
    assert!(
        !alice
            .out
            .all()
            .iter()
            .any(|l| unstamped(l) == Some("-- pong"))
    );
}

#[test]
fn ignore_hides_a_users_lines_and_is_kept_across_a_restart() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    let mut alice = Chat::login(&server, "alice", "alice-pw", &alice_home);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    pinned(&mut alice, "bob");
    pinned(&mut bob, "alice");

    alice.send("/ignore");
    alice.out.expect(
        "an empty list",
        exactly("-- nobody is ignored (/ignore USER hides someone's lines)"),
    );
    alice.send("/ignore bob");
    alice.out.expect("the change", |l| {
        unstamped(l).is_some_and(|t| t.starts_with("-- ignoring bob: "))
    });
    alice.send("/ignore alice");
    alice
        .out
        .expect("not oneself", exactly("!! not ignored: that is you"));

    let from = alice.out.all().len();
    bob.send("hidden in the room");
    bob.out
        .expect("bob's echo", exactly("<bob> hidden in the room"));
    bob.send("/w alice hidden whisper");
    bob.out
        .expect("bob's copy", exactly("-> *alice* hidden whisper"));
    // Bob leaves and comes back: no presence lines either.
    let bob_exit = bob.wait();
    assert_eq!(bob_exit.status.code(), Some(0));
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    bob.send("/ping");
    bob.out.expect_contains("-- pong from server in ");
    sync(&mut alice);
    let seen = alice.out.since(from);
    for hidden in [
        "hidden in the room",
        "hidden whisper",
        "bob left",
        "bob joined",
    ] {
        assert!(
            !seen.iter().any(|l| l.contains(hidden)),
            "{hidden:?} shown:\n{}",
            seen.join("\n")
        );
    }

    // A new chat reads the list back.
    let exit = alice.wait();
    assert_eq!(exit.status.code(), Some(0), "{:?}", exit.stderr);
    let mut alice = Chat::login(&server, "alice", "alice-pw", &alice_home);
    alice.send("/ignore");
    alice
        .out
        .expect("the kept list", exactly("-- ignoring: bob"));
    let from = alice.out.all().len();
    bob.send("still hidden");
    bob.out.expect("bob's echo", exactly("<bob> still hidden"));
    sync(&mut alice);
    assert!(
        !alice
            .out
            .since(from)
            .iter()
            .any(|l| l.contains("still hidden"))
    );

    alice.send("/unignore bob");
    alice
        .out
        .expect("the change", exactly("-- no longer ignoring bob"));
    bob.send("shown again");
    alice.out.expect("bob's line", exactly("<bob> shown again"));
}

#[test]
fn verify_takes_a_fingerprint_prefix_and_echoes_it_in_full() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());
    let mut alice = Chat::login(&server, "alice", "alice-pw", &alice_home);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    let bob_fp = pinned(&mut alice, "bob");
    pinned(&mut bob, "alice");
    let hex = &bob_fp[7..];

    alice.send(&format!("/verify bob {}", &hex[..15]));
    alice.out.expect(
        "a prefix too short",
        exactly(&format!(
            "!! fingerprint {} for bob: too short: 15 hex digits given, at least 16 are needed",
            &hex[..15]
        )),
    );
    alice.send("/verify bob 0000000000000000zz");
    alice.out.expect("not hex", |l| {
        unstamped(l).is_some_and(|t| t.starts_with("!! a fingerprint is written"))
    });
    // 16 digits, upper case, with colons: bob's key, named in full.
    let typed: Vec<String> = hex[..16]
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).to_string())
        .collect();
    alice.send(&format!("/verify bob {}", typed.join(":")));
    alice.out.expect(
        "verified, in full",
        exactly(&format!("-- bob's device key {bob_fp} is now verified")),
    );
}

#[test]
fn end_of_input_says_so_and_exits_zero() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    let home = ClientHome::new();
    let alice = Chat::login(&server, "alice", "alice-pw", &home);
    let exit = alice.wait();
    assert_eq!(exit.status.code(), Some(0), "{:?}", exit.stderr);
    let last = exit.stdout.last().map(String::as_str).and_then(unstamped);
    assert_eq!(last, Some("-- end of input: leaving"));
    assert!(
        !exit
            .stdout
            .iter()
            .any(|l| l.contains("server closed the connection")),
        "{:?}",
        exit.stdout
    );
}
