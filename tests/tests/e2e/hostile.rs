//! Hostile clients, tried for real against a running chatd: garbage before and after TLS,
//! old TLS versions, crowds of silent connections, huge and deeply nested lines, tricky names.
//! After each, the server must still serve a normal client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Raw, RssWatch, Server, TIMEOUT, attacker, figure, mb, rss_kib, settle};

/// A normal client still gets through: log in, ping, pong.
fn still_serving(server: &Server, user: &str) {
    let mut raw = Raw::login(server, user, "pw");
    raw.send(json!({"type": "ping", "nonce": 42}));
    assert_eq!(raw.recv_type("pong")["nonce"], 42);
}

/// Reads until the server closes the TCP connection; what it sent first is returned.
fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
    }
}

#[test]
fn garbage_instead_of_a_tls_handshake_is_dropped() {
    let server = Server::start();
    server.add_user("alice", "pw");
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"{\"type\":\"hello\",\"version\":2}\n".to_vec(),
        (0..=255u8).cycle().take(70_000).collect::<Vec<u8>>(),
    ] {
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        // The server may close before all of it is written; that is its right.
        let _ = tcp.write_all(&garbage);
        let answer = read_until_closed(&mut tcp);
        // At most a TLS alert record (type 21); never anything in clear.
        assert!(
            answer.is_empty() || answer[0] == 21,
            "answered {:?}",
            &answer[..answer.len().min(16)]
        );
    }
    still_serving(&server, "alice");
}

/// A TLS ClientHello that offers only `version` (0x0301 = TLS 1.0, 0x0302 = TLS 1.1), with
/// the usual suites of that era and no supported_versions extension.
fn old_client_hello(version: u16) -> Vec<u8> {
    let [vh, vl] = version.to_be_bytes();
    let suites: [u16; 4] = [0xc013, 0xc014, 0x002f, 0x0035];
    let mut body = vec![vh, vl];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut handshake = vec![1u8]; // ClientHello
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    handshake.extend_from_slice(&len[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22u8, 3, 1]; // handshake record, TLS 1.0 record layer
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls_1_0_and_1_1_are_refused_with_an_alert() {
    let server = Server::start();
    server.add_user("alice", "pw");
    for version in [0x0301u16, 0x0302] {
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        tcp.write_all(&old_client_hello(version)).unwrap();
        let answer = read_until_closed(&mut tcp);
        // An alert record (21) whose description is protocol_version (70) or
        // handshake_failure (40): never a ServerHello (22).
        assert!(answer.len() >= 7, "no alert: {answer:?}");
        assert_eq!(answer[0], 21, "not an alert: {answer:?}");
        assert!(matches!(answer[6], 70 | 40), "alert {answer:?}");
    }
    still_serving(&server, "alice");
}

#[test]
fn a_thousand_silent_connections_do_not_stop_anyone_and_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(
        dir.path(),
        "handshake_timeout_secs = 2\nmax_connections = 1100\nmax_connections_per_ip = 1100",
    );
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let watch = RssWatch::start(&server);
    // Half-open: TCP connected, nothing ever sent; ten attackers, a hundred each.
    let mut silent: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let from = attacker(1 + (i % 10) as u8);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let tcp = rt
                .block_on(chatd_testkit::tcp_from(server.addr, Some(from)))
                .unwrap()
                .into_std()
                .unwrap();
            tcp.set_nonblocking(false).unwrap();
            tcp
        })
        .collect();
    // An eleventh finishes TLS and says hello: still answered.
    let mut probe = Raw::connect_from(&server, attacker(11));
    assert_eq!(probe.hello()["type"], "hello");
    let mut alice = Raw::login(&server, "alice", "pw");
    let mut bob = Raw::login(&server, "bob", "pw");
    alice.recv_type("presence");
    let sent = bob.say("through the crowd");
    alice.expect_envelope("bob", &sent);
    // Each silent one is closed once its handshake deadline passes.
    let deadline = Instant::now() + TIMEOUT;
    for tcp in silent.iter_mut().step_by(100) {
        let left = deadline.saturating_duration_since(Instant::now());
        tcp.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 64];
        match tcp.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a silent connection was not closed: {other:?}"),
        }
    }
    drop(silent);
    drop(probe);
    alice.send(json!({"type": "ping", "nonce": 1}));
    assert_eq!(alice.recv_type("pong")["nonce"], 1);
    let test = "silent_connections";
    let baseline = watch.baseline;
    figure(
        test,
        "RSS peak growth (MB)",
        format!("{:.1}", watch.finish()),
    );
    let (rss, took) = settle(&server, baseline, 0.10, Duration::from_secs(2));
    figure(
        test,
        "RSS after (MB)",
        format!("{:.1} (baseline {:.1}, {took:?})", mb(rss), mb(baseline)),
    );
    assert!(rss_kib(&server) > 0);
}

#[test]
fn a_ten_megabyte_line_and_deep_nesting_are_errors_not_crashes() {
    let server = Server::start();
    server.add_user("alice", "pw");
    let mut raw = Raw::login(&server, "alice", "pw");
    let mut huge = vec![b'a'; 10 * 1024 * 1024];
    huge.push(b'\n');
    raw.send_raw(&huge);
    raw.expect_error("frame_too_long");
    // 30,000 levels of nesting fit in a 64 KiB line; the parser's depth limit refuses them.
    let deep = format!("{}{}\n", "[".repeat(30_000), "]".repeat(30_000));
    raw.send_raw(deep.as_bytes());
    raw.expect_error("bad_frame");
    let deep_object = format!("{}1{}\n", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    raw.send_raw(deep_object.as_bytes());
    raw.expect_error("bad_frame");
    raw.send(json!({"type": "ping", "nonce": 9}));
    assert_eq!(raw.recv_type("pong")["nonce"], 9);
}

#[test]
fn lookalike_and_invisible_names_cannot_be_created() {
    // Eight failed logins from one address: keep the login backoff (limits.rs) out of it.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(dir.path(), "login_free_failures = 100");
    server.add_user("alice", "pw");
    for name in [
        "\u{430}lice",        // Cyrillic a: looks like alice
        "\u{202e}ecila",      // right-to-left override
        "ali\u{200b}ce",      // zero-width space
        "al\u{7}ice",         // a control character
        "alice\u{301}",       // a combining accent
        "Alice",              // case: alice and Alice must not be two people
        "\u{ff41}lice",       // fullwidth a
        "alice\n[00:00] bob", // a line break to fake log lines
    ] {
        let out = server.ctl(&["user", "add", name, "--password-stdin"], Some("pw\n"));
        let err = out.assert_code(1);
        assert!(
            err.starts_with("chatctl: invalid user name"),
            "{name:?}: {err}"
        );
        // And a login under such a name is just a failed login.
        let mut raw = Raw::connect(&server);
        raw.hello();
        assert_eq!(raw.try_login(name, "pw")["code"], "invalid_credentials");
    }
    still_serving(&server, "alice");
}
