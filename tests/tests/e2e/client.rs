//! The `chat` binary in plain mode against a real chatd.

use serde_json::json;

use crate::harness::{Chat, ClientHome, Raw, Server, exactly, run_chat};

fn pinned_line(server: &Server) -> String {
    format!(
        "chat: pinned {} for {} in ",
        server.fingerprint, server.addr
    )
}

#[test]
fn two_clients_chat_whisper_list_help_and_quit() {
    let server = Server::start();
    server.add_user("alice", "alice-pw");
    server.add_user("bob", "bob-pw");
    let (alice_home, bob_home) = (ClientHome::new(), ClientHome::new());

    let mut alice = Chat::login(&server, "alice", "alice-pw", &alice_home);
    assert_eq!(alice.out.all(), ["-- logged in as alice; online: alice"]);
    let mut bob = Chat::login(&server, "bob", "bob-pw", &bob_home);
    assert_eq!(bob.out.all()[0], "-- logged in as bob; online: alice, bob");
    // Each pins the other's device key on first sight, before any text goes to it.
    bob.out
        .expect_contains("-- pinned alice's device key SHA256:");
    alice.out.expect("bob joined", exactly("-- bob joined"));
    alice
        .out
        .expect_contains("-- pinned bob's device key SHA256:");

    // A broadcast reaches the other user and is echoed to the sender.
    alice.send("hi");
    bob.out.expect("alice's message", exactly("<alice> hi"));
    alice.out.expect("the echo", exactly("<alice> hi"));

    alice.send("/whisper bob psst");
    bob.out.expect("the whisper", exactly("*alice* psst"));
    alice
        .out
        .expect("the whisper copy", exactly("-> *bob* psst"));

    alice.send("/me waves");
    bob.out.expect("the action", exactly("* alice waves"));

    bob.send("/list");
    bob.out.expect(
        "the online list",
        exactly("-- online: alice, bob (2 sessions)"),
    );

    bob.send("/help");
    bob.out
        .expect("client help", exactly("-- client commands:"));
    // Whispers are the client's own command: their text is sealed before it leaves.
    bob.out.expect("whisper in help", |l| {
        l == "  /whisper USER MESSAGE - private message, end-to-end encrypted (aliases: w, msg)"
    });
    bob.out
        .expect("server help", exactly("-- server commands:"));

    // A command the server does not know comes back as an error line.
    bob.send("/frobnicate");
    bob.out.expect(
        "unknown command",
        exactly("!! unknown command /frobnicate; try /help"),
    );

    bob.send("/quit");
    bob.out.expect("leaving", exactly("-- leaving"));
    let bob_exit = bob.wait();
    assert_eq!(
        bob_exit.status.code(),
        Some(0),
        "bob: {:?}",
        bob_exit.stderr
    );
    alice.out.expect("bob left", exactly("-- bob left (quit)"));

    // Nobody saw anything they should not have: bob never saw alice's copy of the whisper,
    // and the only stderr output is the pinning notice.
    assert!(!bob_exit.stdout.iter().any(|l| l.contains("-> *bob*")));
    assert_eq!(bob_exit.stderr.len(), 1, "{:?}", bob_exit.stderr);
    assert!(bob_exit.stderr[0].starts_with(&pinned_line(&server)));

    // End of stdin is a polite quit too.
    let alice_exit = alice.wait();
    assert_eq!(alice_exit.status.code(), Some(0), "{:?}", alice_exit.stderr);
    assert_eq!(
        alice_exit
            .stdout
            .last()
            .map(String::as_str)
            .and_then(crate::harness::unstamped),
        Some("-- end of input: leaving")
    );
    assert_eq!(alice_exit.stderr.len(), 1, "{:?}", alice_exit.stderr);
}

#[test]
fn killed_client_is_announced_as_disconnected() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let bob = Chat::login(&server, "bob", "pw-b", &ClientHome::new());
    assert_eq!(
        alice.recv(),
        json!({"type":"presence","user":"bob","event":"join"})
    );
    // SIGKILL: no quit frame, the kernel just closes the TCP connection.
    bob.kill();
    assert_eq!(
        alice.recv(),
        json!({"type":"presence","user":"bob","event":"leave","reason":"disconnected"})
    );
    let who = server.ctl(&["--json", "who"], None).json();
    let users: Vec<&str> = who["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice"]);
}

#[test]
fn refused_logins_exit_3_with_one_message() {
    let server = Server::start();
    server.add_user("alice", "right");
    server.add_user("bob", "bob-pw");
    assert!(server.ctl(&["user", "lock", "bob"], None).status.success());
    let home = ClientHome::new();
    let addr = server.server_arg();
    let accept = ["--accept-fingerprint", server.fingerprint.as_str()];

    let mut stderrs = Vec::new();
    for (user, password) in [("alice", "wrong"), ("zed", "whatever"), ("bob", "bob-pw")] {
        let exit = run_chat(&addr, user, &format!("{password}\nhello\n"), &home, &accept);
        assert_eq!(exit.status.code(), Some(3), "{user}: {:?}", exit.stderr);
        assert!(exit.stdout.is_empty(), "{user}: {:?}", exit.stdout);
        // A refused login writes no pin, so says nothing about one: the refusal is all.
        let refusal = exit.stderr;
        stderrs.push(refusal);
    }
    assert_eq!(stderrs[0], ["chat: login failed: invalid credentials"]);
    assert_eq!(
        stderrs[0], stderrs[1],
        "unknown user differs from wrong password"
    );
    assert_eq!(
        stderrs[0], stderrs[2],
        "locked account differs from wrong password"
    );

    // The right password still works, so the refusals above were about the credentials. A
    // refused login keeps no pin, so the fingerprint is given again.
    assert!(!home.known_servers().exists());
    let exit = run_chat(&addr, "alice", "right\n", &home, &accept);
    assert_eq!(exit.status.code(), Some(0), "{:?}", exit.stderr);
    assert_eq!(exit.stdout[0], "-- logged in as alice; online: alice");
}

#[test]
fn chat_applies_the_servers_text_limit_and_reports_errors() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let mut alice = Chat::login(&server, "alice", "pw", &ClientHome::new());

    // The limit is on what is sealed: the text in its envelope body, {"text":"..."}, 11
    // bytes more than an ASCII text. One byte over: refused locally, nothing sent.
    alice.send(&"x".repeat(16_374));
    alice.err.expect_contains(
        "chat: message not sent: it is 16385 bytes encoded, the server accepts at most 16384",
    );
    // Exactly at the limit: sent and echoed.
    let max = "y".repeat(16_373);
    alice.send(&max);
    alice
        .out
        .expect("the 16384-byte echo", exactly(&format!("<alice> {max}")));

    // A whisper (here to oneself: one's own devices) is held to the same edge.
    alice.send(&format!("/whisper alice {max}"));
    alice.out.expect(
        "the 16384-byte whisper",
        exactly(&format!("-> *alice* {max}")),
    );
    alice.send(&format!("/whisper alice {}", "z".repeat(16_374)));
    alice
        .err
        .expect_contains("chat: message not sent: it is 16385 bytes encoded");

    alice.send("/whisper zed hello");
    alice
        .err
        .expect_contains("chat: message not sent: zed has no device key");
    alice.send("//etc is a path");
    alice
        .out
        .expect("slash message", exactly("<alice> /etc is a path"));
    let exit = alice.wait();
    assert_eq!(exit.status.code(), Some(0));
    // Nothing but the two echoes, the error, the login line and the bye reached stdout.
    assert!(
        !exit.stdout.iter().any(|l| l.contains(&"x".repeat(100))),
        "the oversized line was sent"
    );
}
