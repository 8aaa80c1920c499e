//! Abuse limits, each at its edge: what passes exactly at the limit, what the first frame over
//! it gets, and what persistent abuse ends in.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Raw, Server, TIMEOUT};

fn list() -> serde_json::Value {
    json!({"type": "command", "name": "list", "args": ""})
}

#[test]
fn message_rate_limit_drops_over_the_burst_and_closes_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    // One token a second: the test sends far faster than that, so refills do not blur the edge.
    let mut server = Server::with_limits(
        dir.path(),
        "messages_per_sec = 1\nmessage_burst = 3\nmax_rate_violations = 3",
    );
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut alice = Raw::login(&server, "alice", "pw");
    let mut bob = Raw::login(&server, "bob", "pw");
    alice.recv_type("presence");

    // Exactly the burst passes.
    for _ in 0..3 {
        alice.send(list());
        alice.recv_type("users");
    }
    // The next one is dropped with a clear error, and the session stays usable...
    alice.send(list());
    let msg = alice.expect_error("rate_limited");
    assert!(
        msg.contains("1 messages per second") && msg.contains("bursts of 3"),
        "{msg}"
    );
    // ...for other sessions too: bob has his own bucket.
    bob.send(list());
    bob.recv_type("users");
    // Envelopes count like commands.
    alice.say("dropped");
    alice.expect_error("rate_limited");
    // The third drop in a row ends the session.
    alice.send(list());
    alice.expect_bye("too many messages: rate limit exceeded repeatedly");
    alice.expect_closed();
    assert_eq!(bob.recv_type("presence")["event"], "leave");
    bob.send(list());
    bob.recv_type("users");
    server.log.expect_contains("closing a flooding session");
}

#[test]
fn pings_and_backlog_acks_count_against_the_message_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(
        dir.path(),
        "messages_per_sec = 1\nmessage_burst = 3\nmax_rate_violations = 3",
    );
    server.add_user("alice", "pw");
    let mut alice = Raw::login(&server, "alice", "pw");
    // Two pings and an acknowledgement use up the burst of three...
    for nonce in [1, 2] {
        alice.send(json!({"type": "ping", "nonce": nonce}));
        assert_eq!(alice.recv_type("pong")["nonce"], nonce);
    }
    alice.send(json!({"type": "backlog_ack", "upto": 0}));
    // ...so the next frame, a command, is dropped with the usual error.
    alice.send(list());
    alice.expect_error("rate_limited");
    // A ping is dropped the same way, not answered.
    alice.send(json!({"type": "ping", "nonce": 3}));
    alice.expect_error("rate_limited");
    // And a flood of them ends the session like any other flood.
    alice.send(json!({"type": "backlog_ack", "upto": 0}));
    alice.expect_bye("too many messages: rate limit exceeded repeatedly");
    alice.expect_closed();
}

/// What the server does with a fresh TCP connection: closes it at once (refused) or waits
/// for a TLS ClientHello (accepted).
fn tcp_fate(server: &Server) -> &'static str {
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1];
    match tcp.read(&mut buf) {
        Ok(0) => "refused",
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "refused",
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            "accepted"
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn connections_per_address_are_capped_before_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_limits(dir.path(), "max_connections_per_ip = 2");
    server.add_user("alice", "pw");
    // Exactly the limit: two full TLS sessions from 127.0.0.1.
    let first = Raw::login(&server, "alice", "pw");
    let mut second = Raw::connect(&server);
    second.hello();
    // One more is closed without a handshake.
    assert_eq!(tcp_fate(&server), "refused");
    server
        .log
        .expect_contains("connection refused: too many connections from this address");
    // A slot comes back when a connection ends.
    drop(first);
    let deadline = Instant::now() + TIMEOUT;
    while tcp_fate(&server) != "accepted" {
        assert!(Instant::now() < deadline, "the slot never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    second.send(json!({"type": "ping", "nonce": 7}));
    assert_eq!(second.recv_type("pong")["nonce"], 7);
}

#[test]
fn failed_logins_back_off_per_address_and_clear_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_limits(
        dir.path(),
        "login_free_failures = 2\nmax_login_failures = 20\nlogin_backoff_max_secs = 4",
    );
    server.add_user("alice", "right");
    let mut raw = Raw::connect(&server);
    raw.hello();
    let code = |frame: &serde_json::Value| frame["code"].as_str().unwrap_or("").to_string();
    // The two free failures, then one that sets the first wait (1 s).
    for _ in 0..3 {
        assert_eq!(
            code(&raw.try_login("alice", "wrong")),
            "invalid_credentials"
        );
    }
    // Right after a failure past the free ones, even the right password must wait.
    let refused = raw.try_login("alice", "right");
    assert_eq!(code(&refused), "rate_limited", "{refused}");
    let msg = refused["message"].as_str().unwrap();
    assert!(
        msg.starts_with("too many failed logins from your address; try again in "),
        "{msg}"
    );
    server
        .log
        .expect_contains("login throttled from your address");
    // Once the wait is over the right password works, and clears the record.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let reply = raw.try_login("alice", "right");
        if reply["type"] == "login_ok" {
            break;
        }
        assert_eq!(code(&reply), "rate_limited", "{reply}");
        assert!(Instant::now() < deadline, "the wait never ended");
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut again = Raw::connect(&server);
    again.hello();
    for _ in 0..2 {
        assert_eq!(
            code(&again.try_login("alice", "wrong")),
            "invalid_credentials"
        );
    }
}

#[test]
fn silent_connections_time_out_but_chat_keeps_itself_alive() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_limits(dir.path(), "idle_timeout_secs = 2");
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let home = crate::harness::ClientHome::new();
    let mut chat = crate::harness::Chat::login(&server, "bob", "pw", &home);
    // hello announces the timeout, so clients know how often to ping.
    let mut raw = Raw::connect(&server);
    assert_eq!(raw.hello()["idle_timeout_secs"], 2);
    raw.try_login("alice", "pw");
    // A client that says nothing is closed with a reason...
    loop {
        let frame = raw.recv();
        if frame["type"] == "bye" {
            assert_eq!(frame["reason"], "idle timeout: nothing received");
            break;
        }
    }
    raw.expect_closed();
    server.log.expect_contains("closing an idle connection");
    // ...while chat, which pings at a third of the timeout, outlives several timeouts.
    std::thread::sleep(Duration::from_secs(5));
    chat.send("still here");
    chat.out.expect(
        "bob's echo after 5 quiet seconds",
        crate::harness::exactly("<bob> still here"),
    );
    assert!(
        chat.out.all().iter().all(|l| !l.contains("server closed")),
        "{}",
        chat.out.dump()
    );
}
