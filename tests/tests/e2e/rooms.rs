//! Rooms through a real chatd: join/part/topic/members/rooms/invite/kick with their denied
//! and bad-argument paths, persistence across a restart, the `[rooms]` limits at their edges,
//! and end-to-end encrypted room messages between real `chat` clients.

use serde_json::{Value, json};

use crate::harness::{Chat, ChatExit, ClientHome, Raw, Server, exactly, loopback0};

fn notice(raw: &mut Raw) -> String {
    raw.recv_type("notice")["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The next frame is `members` for `room`; returns its member list.
fn members(raw: &mut Raw, room: &str) -> Value {
    let frame = raw.recv_type("members");
    assert_eq!(frame["room"]["name"], room, "{frame}");
    frame["room"]["members"].clone()
}

fn room_event(raw: &mut Raw, room: &str, user: &str, event: &str) {
    let frame = raw.recv_type("room");
    assert_eq!(
        (&frame["room"], &frame["user"], &frame["event"]),
        (&json!(room), &json!(user), &json!(event)),
        "{frame}"
    );
}

#[test]
fn rooms_route_only_to_members_and_persist_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), loopback0());
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    let mut carol = Raw::login(&server, "carol", "pw-c");
    alice.recv_type("presence");
    alice.recv_type("presence");
    bob.recv_type("presence");

    // Creating: the creator owns it and gets its state.
    alice.command("join", "#dev");
    let frame = alice.recv_type("members");
    assert_eq!(
        frame["room"],
        json!({"name":"dev","topic":"","members":["alice"],"invite_only":false,"owner":"alice"})
    );
    bob.command("join", "dev");
    assert_eq!(members(&mut bob, "dev"), json!(["alice", "bob"]));
    room_event(&mut alice, "dev", "bob", "join");
    alice.command("join", "dev");
    assert_eq!(
        members(&mut alice, "dev"),
        json!(["alice", "bob"]),
        "joining again: state only"
    );

    // A room message reaches its members only; an outsider cannot send to it.
    let data = alice.seal("#dev", "for dev only");
    alice.send_envelope(&data);
    alice.expect_envelope("alice", &data);
    bob.expect_envelope("alice", &data);
    carol.sync(1);
    let data = carol.seal("#dev", "let me in");
    carol.send_envelope(&data);
    assert_eq!(
        carol.expect_error("not_in_room"),
        "you are not in #dev; /join dev first"
    );

    // Topics: members set them and everyone in the room hears; outsiders are refused.
    bob.command("topic", "#dev release on friday \u{7}");
    for c in [&mut alice, &mut bob] {
        assert_eq!(
            c.recv(),
            json!({"type":"topic","room":"dev","topic":"release on friday","by":"bob"})
        );
    }
    carol.command("topic", "#dev hijack");
    assert_eq!(carol.expect_error("not_in_room"), "you are not in #dev");
    carol.command("members", "dev");
    assert_eq!(members(&mut carol, "dev"), json!(["alice", "bob"]));
    carol.command("rooms", "");
    assert_eq!(
        carol.recv(),
        json!({"type":"rooms","rooms":[
            {"name":"dev","members":2,"topic":"release on friday","invite_only":false,"joined":false},
            {"name":"lobby","members":3,"topic":"","invite_only":false,"joined":true}]})
    );
    for (cmd, args, usage) in [
        ("join", "", "usage: /join ROOM [private]"),
        ("join", "Bad!", "usage: /join ROOM [private]"),
        ("join", "dev public", "usage: /join ROOM [private]"),
        ("part", "", "usage: /part ROOM"),
        ("topic", "", "usage: /topic ROOM [TEXT|-]"),
        ("members", "#", "usage: /members ROOM"),
    ] {
        carol.command(cmd, args);
        assert_eq!(carol.expect_error("bad_arguments"), usage, "/{cmd} {args}");
    }
    carol.command("part", "lobby");
    assert_eq!(
        carol.expect_error("refused"),
        "everyone is in #lobby; it cannot be left"
    );
    carol.command("part", "dev");
    assert_eq!(carol.expect_error("not_in_room"), "you are not in #dev");

    // Restart: rooms, members and topics are kept.
    drop((alice, bob, carol));
    assert!(server.stop_sigterm().success());
    let server = Server::start_in(dir.path(), loopback0());
    let mut bob = Raw::connect(&server);
    bob.hello();
    let ok = bob.try_login("bob", "pw-b");
    assert_eq!(ok["room"], "lobby");
    let rooms: Vec<&str> = ok["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, ["dev", "lobby"]);
    assert_eq!(ok["rooms"][0]["topic"], "release on friday");
    // Leaving: the others hear it; the last one out takes the room with them.
    let mut alice = Raw::login(&server, "alice", "pw-a");
    bob.recv_type("presence");
    bob.command("part", "#dev");
    room_event(&mut bob, "dev", "bob", "part");
    room_event(&mut alice, "dev", "bob", "part");
    alice.command("part", "dev");
    room_event(&mut alice, "dev", "alice", "part");
    alice.command("rooms", "");
    assert_eq!(alice.recv()["rooms"].as_array().map(Vec::len), Some(1));
}

#[test]
fn invite_only_rooms_and_owner_kicks() {
    let server = Server::start();
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    server
        .ctl(
            &["user", "add", "root", "--admin", "--password-stdin"],
            Some("pw-r\n"),
        )
        .assert_ok();
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    let mut carol = Raw::login(&server, "carol", "pw-c");
    for _ in 0..2 {
        alice.recv_type("presence");
    }
    bob.recv_type("presence");

    alice.command("join", "secret private");
    assert_eq!(alice.recv_type("members")["room"]["invite_only"], true);
    bob.command("join", "secret");
    assert_eq!(
        bob.expect_error("refused"),
        "#secret is invite-only; ask its owner to /invite you"
    );
    // Only the owner (or an admin) invites; outsiders do not even see the room.
    carol.command("invite", "bob secret");
    assert_eq!(
        carol.expect_error("forbidden"),
        "/invite in #secret is for its owner and administrators"
    );
    carol.command("members", "secret");
    assert_eq!(
        carol.expect_error("not_in_room"),
        "there is no room #secret"
    );
    carol.command("rooms", "");
    assert_eq!(carol.recv()["rooms"].as_array().map(Vec::len), Some(1));
    alice.command("invite", "zed secret");
    assert_eq!(alice.expect_error("no_such_user"), "no such user: zed");
    alice.command("invite", "bob");
    assert_eq!(
        alice.expect_error("bad_arguments"),
        "usage: /invite USER ROOM"
    );
    alice.command("invite", "bob #secret");
    assert_eq!(notice(&mut alice), "invited bob to #secret");
    assert_eq!(
        notice(&mut bob),
        "alice invited you to #secret: /join secret"
    );
    bob.command("join", "secret");
    assert_eq!(members(&mut bob, "secret"), json!(["alice", "bob"]));
    room_event(&mut alice, "secret", "bob", "join");
    // /whois shows an invite-only room only to those in it.
    bob.command("whois", "alice");
    assert_eq!(bob.recv_type("whois")["rooms"], json!(["lobby", "secret"]));
    carol.command("whois", "alice");
    assert_eq!(carol.recv_type("whois")["rooms"], json!(["lobby"]));

    // A member who is not the owner cannot kick; the owner can.
    bob.command("kick", "alice secret");
    assert_eq!(
        bob.expect_error("forbidden"),
        "/kick in #secret is for its owner and administrators"
    );
    alice.command("kick", "carol secret");
    assert_eq!(alice.expect_error("not_in_room"), "carol is not in #secret");
    alice.command("kick", "bob lobby");
    assert_eq!(
        alice.expect_error("forbidden"),
        "/kick in #lobby is for its owner and administrators"
    );
    alice.command("kick", "bob secret");
    for c in [&mut alice, &mut bob] {
        assert_eq!(
            c.recv(),
            json!({"type":"room","room":"secret","user":"bob","event":"kick","by":"alice"})
        );
    }
    let data = bob.seal("#secret", "still here?");
    bob.send_envelope(&data);
    bob.expect_error("not_in_room");
    // The invitation was used up: bob needs a new one.
    bob.command("join", "secret");
    bob.expect_error("refused");

    // An admin may kick anywhere, and see and join any room.
    let mut root = Raw::login(&server, "root", "pw-r");
    alice.recv_type("presence");
    root.command("members", "secret");
    assert_eq!(members(&mut root, "secret"), json!(["alice"]));
    root.command("join", "secret");
    members(&mut root, "secret");
    root.command("kick", "alice secret");
    root.recv_type("room");
    room_event(&mut alice, "secret", "root", "join");
    let frame = alice.recv_type("room");
    assert_eq!(
        (&frame["event"], &frame["by"]),
        (&json!("kick"), &json!("root"))
    );
    root.command("kick", "alice lobby");
    assert_eq!(
        root.expect_error("refused"),
        "everyone is in #lobby; /disconnect ends a user's sessions instead"
    );
}

#[test]
fn room_limits_at_their_edges() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_toml(
        dir.path(),
        "",
        "[rooms]\nmax_rooms = 3\nmax_rooms_per_user = 2\nmax_topic_chars = 10\n",
    );
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    alice.recv_type("presence");
    // Two rooms per user: the lobby and one more.
    alice.command("join", "one");
    members(&mut alice, "one");
    alice.command("join", "two");
    assert_eq!(
        alice.expect_error("refused"),
        "you are in 2 rooms, the most allowed (2); /part one first"
    );
    // Three rooms on the server: lobby, one, two (the refusal above created nothing).
    bob.command("join", "two");
    members(&mut bob, "two");
    server.add_user("carol", "pw-c");
    let mut carol = Raw::login(&server, "carol", "pw-c");
    carol.command("join", "three");
    assert_eq!(
        carol.expect_error("refused"),
        "the server has its maximum of 3 rooms"
    );
    // Topics up to 10 characters.
    alice.recv_type("presence");
    alice.command("topic", "#one 0123456789");
    assert_eq!(alice.recv_type("topic")["topic"], "0123456789");
    alice.command("topic", "#one 0123456789a");
    assert_eq!(
        alice.expect_error("refused"),
        "a topic is at most 10 characters"
    );
    alice.command("topic", "#one -");
    assert_eq!(alice.recv_type("topic")["topic"], "");
    alice.command("topic", "#one");
    assert_eq!(notice(&mut alice), "#one has no topic");

    let dir = tempfile::tempdir().unwrap();
    let closed = Server::with_toml(dir.path(), "", "[rooms]\nusers_can_create = false\n");
    closed.add_user("carol", "pw-c");
    let mut dave = Raw::login(&closed, "carol", "pw-c");
    dave.command("join", "new");
    assert_eq!(
        dave.expect_error("refused"),
        "there is no room #new, and only administrators can create rooms here"
    );
}

#[test]
fn chat_clients_talk_in_rooms_end_to_end() {
    let server = Server::start();
    for (u, p) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ] {
        server.add_user(u, p);
    }
    let homes = [ClientHome::new(), ClientHome::new(), ClientHome::new()];
    let mut alice = Chat::login(&server, "alice", "alice-pw", &homes[0]);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &homes[1]);
    let mut carol = Chat::login(&server, "carol", "carol-pw", &homes[2]);
    alice.out.expect_contains("-- pinned carol's device key");
    bob.out.expect_contains("-- pinned carol's device key");

    alice.send("/join dev");
    alice.out.expect(
        "switched",
        exactly("-- now talking in #dev (plain text goes there; /join lobby switches back)"),
    );
    bob.send("/join #dev");
    bob.out.expect_contains("-- now talking in #dev");
    alice.out.expect("bob joins", exactly("-- bob joined #dev"));
    alice.send("/topic ship it");
    bob.out
        .expect("topic", exactly("-- alice set the topic of #dev: ship it"));

    // Plain text goes to the current room: members read it, carol does not.
    alice.send("hello dev");
    bob.out
        .expect("room message", exactly("[#dev] <alice> hello dev"));
    alice
        .out
        .expect("own copy", exactly("[#dev] <alice> hello dev"));
    // The lobby is still everyone's.
    bob.send("/join lobby");
    bob.out.expect("back", exactly("-- now talking in #lobby"));
    bob.send("lobby news");
    carol.out.expect("lobby", exactly("<bob> lobby news"));

    // bob leaves #dev; alice's next message is sealed under a new chain he never gets.
    bob.send("/part dev");
    alice.out.expect("bob leaves", exactly("-- bob left #dev"));
    alice.send("after bob left");
    alice
        .out
        .expect("own copy", exactly("[#dev] <alice> after bob left"));
    alice.send("/members");
    alice.out.expect("members", |l| {
        l.ends_with("-- #dev (owner alice; topic: ship it): alice")
    });
    for c in [&mut bob, &mut carol] {
        c.send("/quit");
    }
    let exits = [bob.wait(), carol.wait()];
    for e in &exits {
        assert!(
            !e.stdout
                .iter()
                .any(|l| l.contains("after bob left")
                    || l.contains("hello dev") && l.contains("carol")),
            "{:?}",
            e.stdout
        );
    }
    assert!(
        !exits[1].stdout.iter().any(|l| l.contains("hello dev")),
        "carol is not in #dev"
    );
}

/// `/join ops` and a line typed right behind it, in line mode (issue 25): the line waits for
/// the join's answer and reaches #ops only; after a refused join (invite-only room) the lines
/// typed behind it are sent nowhere, and the user is told.
#[test]
fn a_line_typed_right_after_join_goes_to_the_joined_room_or_nowhere() {
    let server = Server::start();
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    let homes = [ClientHome::new(), ClientHome::new(), ClientHome::new()];
    let mut alice = Chat::login(&server, "alice", "pw-a", &homes[0]);
    let mut bob = Chat::login(&server, "bob", "pw-b", &homes[1]);
    let mut carol = Chat::login(&server, "carol", "pw-c", &homes[2]);
    alice.out.expect_contains("-- pinned carol's device key");
    bob.out.expect_contains("-- pinned carol's device key");
    bob.send("/join ops");
    bob.out.expect_contains("-- now talking in #ops");
    bob.send("/join secret private");
    bob.out.expect_contains("-- now talking in #secret");

    // One write: both lines are in chat's stdin before the server can answer the join.
    alice.send("/join ops\nfor ops only");
    bob.out
        .expect("the line, in #ops", exactly("[#ops] <alice> for ops only"));
    alice
        .out
        .expect("own copy", exactly("[#ops] <alice> for ops only"));

    alice.send("/join secret\nnever sent\n/me never either");
    alice.out.expect(
        "the refusal",
        exactly("!! #secret is invite-only; ask its owner to /invite you"),
    );
    // The lines behind it are dropped, whether chat read them before the answer (held, then
    // dropped and counted) or after (refused one by one: #secret stays the current room).
    alice.send("/join ops");
    alice
        .out
        .expect("back in #ops", exactly("-- now talking in #ops"));
    alice.send("still ops");
    bob.out
        .expect("still ops", exactly("[#ops] <alice> still ops"));
    // A lobby line marks the end: carol, in the lobby only, saw nothing before it.
    alice.send("/join lobby\nto the lobby");
    carol
        .out
        .expect("the lobby line", exactly("<alice> to the lobby"));
    bob.out
        .expect("the lobby line", exactly("<alice> to the lobby"));
    for c in [&mut alice, &mut bob, &mut carol] {
        c.send("/quit");
    }
    let exits = [alice.wait(), bob.wait(), carol.wait()];
    let seen = |exit: &ChatExit, text: &str| exit.stdout.iter().any(|l| l.contains(text));
    let carol = &exits[2];
    assert!(
        !seen(carol, "for ops only") && !seen(carol, "still ops"),
        "carol is not in #ops: {:?}",
        carol.stdout
    );
    for exit in &exits {
        assert!(!seen(exit, "never"), "{:?}", exit.stdout);
        assert!(!seen(exit, "!! dropped"), "{:?}", exit.stdout);
    }
}
