//! Raw JSON-lines frames over TLS, checked against docs/PROTOCOL.md and chatd's session code.

use serde_json::{Value, json};

use chatd_proto::PROTOCOL_VERSION;

use crate::harness::{Closed, Raw, Server, key_b64, test_key};

/// A `ping` line padded with an ignored field to exactly `len` bytes (newline excluded).
fn padded_ping(nonce: u64, len: usize) -> String {
    let head = format!(r#"{{"type":"ping","nonce":{nonce},"pad":""#);
    let tail = r#""}"#;
    let pad = len
        .checked_sub(head.len() + tail.len())
        .expect("length too small");
    let line = format!("{head}{}{tail}", "p".repeat(pad));
    assert_eq!(line.len(), len);
    line
}

/// `frame` is the envelope `data` from `from`'s test device, unchanged, with a server time.
fn envelope(from: &str, data: &str, frame: &Value) {
    assert_eq!(frame["type"], "envelope", "{frame}");
    assert_eq!(frame["from"], from, "{frame}");
    assert_eq!(
        frame["device"],
        test_key(from).fingerprint().to_string(),
        "{frame}"
    );
    assert_eq!(frame["data"], data, "{frame}");
    assert!(frame["ts"].as_u64().is_some_and(|ts| ts > 0), "{frame}");
}

/// A server with alice and bob logged in over raw TLS; alice has seen bob join.
fn alice_and_bob() -> (Server, Raw, Raw) {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let bob = Raw::login(&server, "bob", "pw-b");
    alice.recv_type("presence");
    (server, alice, bob)
}

#[test]
fn hello_announces_limits_and_login_lists_who_is_online() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");

    let mut alice = Raw::connect(&server);
    // ping is allowed before anything else.
    alice.send(json!({"type":"ping","nonce":7}));
    assert_eq!(alice.recv(), json!({"type":"pong","nonce":7}));
    let hello = alice.hello();
    assert_eq!(
        hello,
        json!({
            "type": "hello",
            "version": PROTOCOL_VERSION,
            "server": format!("chatd/{}", env!("CARGO_PKG_VERSION")),
            "max_line_bytes": 65536,
            "max_text_bytes": 16384,
            "idle_timeout_secs": 300,
            "offline_ttl_secs": 604800,
        })
    );
    // A second hello is refused but not fatal.
    alice.send(json!({"type":"hello","version":PROTOCOL_VERSION}));
    assert_eq!(
        alice.expect_error("already_logged_in"),
        "hello was already sent"
    );
    let ok = alice.try_login("alice", "pw-a");
    assert_eq!(ok["type"], "login_ok");
    assert_eq!(ok["user"], "alice");
    assert_eq!(ok["online"], json!(["alice"]));
    let (alice_key, bob_key) = (test_key("alice"), test_key("bob"));
    let alice_device = json!({"user":"alice","fingerprint":alice_key.fingerprint().to_string(),"key":key_b64(&alice_key),"online":true});
    let bob_device = json!({"user":"bob","fingerprint":bob_key.fingerprint().to_string(),"key":key_b64(&bob_key),"online":true});
    assert_eq!(ok["device"], alice_key.fingerprint().to_string());
    assert_eq!(ok["devices"], json!([alice_device]));
    let alice_session = ok["session"].as_u64().unwrap();

    let mut bob = Raw::connect(&server);
    bob.hello();
    let ok = bob.try_login("bob", "pw-b");
    assert_eq!(ok["online"], json!(["alice", "bob"]));
    assert_eq!(ok["devices"], json!([alice_device, bob_device]));
    assert_ne!(ok["session"].as_u64().unwrap(), alice_session);
    // The others hear of the user, then of its device key (which they need to encrypt to it).
    alice.skip_devices = false;
    assert_eq!(
        alice.recv(),
        json!({"type":"presence","user":"bob","event":"join"})
    );
    let online = json!({"type":"device","user":"bob","fingerprint":bob_key.fingerprint().to_string(),"key":key_b64(&bob_key),"event":"online"});
    assert_eq!(alice.recv(), online);

    // Broadcasts reach everyone, the sender included, in order, byte for byte as sent.
    let hi = alice.say("hi all");
    envelope("alice", &hi, &alice.recv());
    envelope("alice", &hi, &bob.recv());
    let waves = bob.say("waves");
    for conn in [&mut alice, &mut bob] {
        envelope("bob", &waves, &conn.recv());
    }

    // Logged-in sessions may still ping; login/hello again are refused but not fatal.
    alice.send(json!({"type":"ping","nonce":18446744073709551615u64}));
    assert_eq!(
        alice.recv(),
        json!({"type":"pong","nonce":18446744073709551615u64})
    );
    alice.send(json!({"type":"ping"}));
    assert_eq!(alice.recv(), json!({"type":"pong","nonce":0}));
    alice.send(json!({"type":"login","user":"alice","password":"pw-a","device_key":"x"}));
    assert_eq!(alice.expect_error("already_logged_in"), "already logged in");
    // Unknown fields are ignored; blank lines are keepalives.
    alice.send_raw(b"\n\r\n   \n");
    let extra = alice.seal("#lobby", "extra");
    alice.send(json!({"type":"send","data":extra,"future_field":{"x":1}}));
    envelope("alice", &extra, &alice.recv());
    envelope("alice", &extra, &bob.recv());
    // A CRLF line ending is accepted.
    alice.send_raw(b"{\"type\":\"ping\",\"nonce\":3}\r\n");
    assert_eq!(alice.recv(), json!({"type":"pong","nonce":3}));
}

#[test]
fn commands_help_list_and_argument_errors() {
    let (_server, mut alice, mut bob) = alice_and_bob();

    alice.command("help", "");
    let help = alice.recv_type("help");
    let names: Vec<&str> = help["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // Whispers and /me are the client's: their text is sealed, so the server has no part in it.
    // Admin-only ones (announce, kick) are not offered to a user.
    // (Room-owner ones, invite and kick, are: anyone may own a room.)
    assert_eq!(
        names,
        [
            "away", "help", "invite", "join", "kick", "list", "members", "motd", "part", "ping",
            "revoke", "rooms", "topic", "whois"
        ]
    );
    assert_eq!(help["commands"][5]["aliases"], json!(["who"]));

    for alias in ["list", "who"] {
        alice.command(alias, "");
        assert_eq!(
            alice.recv(),
            json!({"type":"users","users":[{"user":"alice","sessions":1},{"user":"bob","sessions":1}]})
        );
    }
    alice.command("nope", "");
    assert_eq!(
        alice.expect_error("unknown_command"),
        "unknown command /nope; try /help"
    );
    for gone in ["whisper", "me", "w"] {
        alice.command(gone, "bob psst");
        alice.expect_error("unknown_command");
    }
    // A whisper is an envelope for the pair; only sender and target see it.
    let psst = alice.whisper("bob", "psst");
    envelope("alice", &psst, &alice.recv());
    envelope("alice", &psst, &bob.recv());
    // None of the failed commands above reached bob.
    bob.sync(1);
}

#[test]
fn whisper_to_unknown_or_never_seen_user_delivers_nothing() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    server.add_user("carol", "pw-c");
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    alice.recv_type("presence");

    // Unknown and never-logged-in look the same: a whisper does not probe for accounts.
    // (Someone who has logged in before gets it stored: see offline.rs.)
    alice.whisper("zed", "hello?");
    assert_eq!(
        alice.recv(),
        json!({"type":"error","code":"user_offline","message":"zed has no device key (no such user, or never logged in)"})
    );
    alice.whisper("carol", "are you there");
    assert_eq!(
        alice.recv(),
        json!({"type":"error","code":"user_offline","message":"carol has no device key (no such user, or never logged in)"})
    );
    let bad = alice.seal("NOT/A/NAME,alice", "hi");
    alice.send_envelope(&bad);
    let msg = alice.expect_error("bad_envelope");
    assert!(msg.starts_with("unknown conversation"), "{msg}");
    // Nothing was queued for bob, and nothing more for alice.
    bob.sync(10);
    alice.sync(11);
}

#[test]
fn frames_before_login_are_refused() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    let mut raw = Raw::connect(&server);

    raw.send(json!({"type":"send","data":"AAAA"}));
    assert_eq!(
        raw.recv(),
        json!({"type":"error","code":"not_logged_in","message":"log in before sending send"})
    );
    raw.command("list", "");
    assert_eq!(
        raw.expect_error("not_logged_in"),
        "log in before sending command"
    );
    raw.send(json!({"type":"login","user":"alice","password":"pw-a","device_key":"x"}));
    assert_eq!(raw.expect_error("not_logged_in"), "send hello first");
    raw.hello();
    raw.send(json!({"type":"chain","data":"AAAA"}));
    raw.expect_error("not_logged_in");
    // Four violations so far, one below the limit: the connection still works.
    assert_eq!(raw.try_login("alice", "pw-a")["type"], "login_ok");
    let works = raw.say("now it works");
    envelope("alice", &works, &raw.recv());
}

#[test]
fn bad_lines_are_errors_and_the_connection_survives() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    let mut raw = Raw::login(&server, "alice", "pw-a");

    raw.send_line("{not json");
    assert!(raw.expect_error("bad_frame").starts_with("bad frame: "));
    raw.sync(1);
    raw.send_raw(b"\xff\xfe{\"type\":\"ping\"}\n");
    assert_eq!(raw.expect_error("not_utf8"), "line is not valid UTF-8");
    raw.sync(2);
    raw.send(json!({"type":"teleport"}));
    // The peer's own values are never quoted back (error frames are in the trace log).
    assert_eq!(
        raw.expect_error("bad_frame"),
        "bad frame: unknown or missing frame type"
    );
    raw.sync(3);
    raw.send(json!({"type":"send"}));
    let msg = raw.expect_error("bad_frame");
    assert!(
        msg.contains("data"),
        "the message names the missing field: {msg}"
    );
    // Four violations; the session is still fully usable.
    let survived = raw.say("survived");
    envelope("alice", &survived, &raw.recv());
}

#[test]
fn too_many_protocol_errors_end_the_connection() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    let mut raw = Raw::login(&server, "alice", "pw-a");
    bob.recv_type("presence");

    // Five different violations (max_protocol_errors defaults to 5); sent one at a time
    // so each is answered before the next.
    raw.send_line("[1,2]");
    raw.expect_error("bad_frame");
    raw.send_raw(b"\xc3\x28\n");
    raw.expect_error("not_utf8");
    raw.send_line(&"x".repeat(70_000));
    raw.expect_error("frame_too_long");
    raw.send(json!({"type":"whatever"}));
    raw.expect_error("bad_frame");
    raw.send_line("42");
    raw.expect_error("bad_frame");
    raw.expect_bye("too many protocol errors");
    assert_eq!(raw.expect_closed(), Closed::Clean);
    assert_eq!(
        bob.recv(),
        json!({"type":"presence","user":"alice","event":"leave","reason":"too many protocol errors"})
    );
}

#[test]
fn line_length_limit_at_the_edge() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    let mut raw = Raw::login(&server, "alice", "pw-a");

    // Exactly max_line_bytes (newline excluded) is a frame.
    raw.send_line(&padded_ping(1, 65_536));
    assert_eq!(raw.recv(), json!({"type":"pong","nonce":1}));
    // One byte more is refused, and the rest of that line is discarded, not parsed.
    raw.send_line(&padded_ping(2, 65_537));
    assert_eq!(
        raw.recv(),
        json!({"type":"error","code":"frame_too_long","message":"line longer than 65536 bytes"})
    );
    raw.sync(3);
    // A much longer line, arriving in many TLS records, is reported once and skipped.
    let mut huge = padded_ping(4, 300_000).into_bytes();
    huge.push(b'\n');
    huge.extend_from_slice(br#"{"type":"ping","nonce":5}"#);
    huge.push(b'\n');
    raw.send_raw(&huge);
    raw.expect_error("frame_too_long");
    assert_eq!(raw.recv(), json!({"type":"pong","nonce":5}));
    raw.sync(6);
}

#[test]
fn text_length_limit_at_the_edge() {
    let (_server, mut alice, mut bob) = alice_and_bob();

    // The server cannot read the text, but the sealed length is the plaintext's exactly
    // (ciphertext minus the 16-byte tag), so max_text_bytes still holds at the edge.
    let max = "m".repeat(16_384);
    let sent = alice.say(&max);
    envelope("alice", &sent, &alice.recv());
    envelope("alice", &sent, &bob.recv());
    // Multi-byte characters count in bytes: 16383 + 2 bytes is one over.
    let over = format!("{}é", "m".repeat(16_383));
    assert_eq!(over.len(), 16_385);
    alice.say(&over);
    assert_eq!(
        alice.recv(),
        json!({"type":"error","code":"bad_text","message":"message is 16385 bytes sealed; the limit is 16384"})
    );
    alice.whisper("bob", &over);
    alice.expect_error("bad_text");
    let sent = alice.whisper("bob", &max);
    envelope("alice", &sent, &alice.recv());
    envelope("alice", &sent, &bob.recv());
    // bob got the two valid messages and nothing else.
    bob.sync(1);
    // bad_text is not a protocol violation: far more than five are fine.
    for _ in 0..6 {
        alice.say(&over);
        alice.expect_error("bad_text");
    }
    alice.sync(2);
}

#[test]
fn unsupported_version_is_refused_and_closed() {
    let server = Server::start();
    let mut raw = Raw::connect(&server);
    raw.send(json!({"type":"hello","version":PROTOCOL_VERSION + 1,"client":"future"}));
    assert_eq!(
        raw.recv()["message"],
        format!(
            "this server speaks protocol version {PROTOCOL_VERSION}, not {}",
            PROTOCOL_VERSION + 1
        )
    );
    raw.expect_bye("unsupported protocol version");
    assert_eq!(raw.expect_closed(), Closed::Clean);
}

#[test]
fn quit_gets_bye_then_the_end() {
    let (server, mut alice, mut bob) = alice_and_bob();

    bob.send(json!({"type":"quit"}));
    assert_eq!(bob.recv(), json!({"type":"bye","reason":"quit"}));
    assert_eq!(bob.expect_closed(), Closed::Clean);
    assert_eq!(
        alice.recv(),
        json!({"type":"presence","user":"bob","event":"leave","reason":"quit"})
    );

    // Quit before login works the same way.
    let mut anon = Raw::connect(&server);
    anon.send(json!({"type":"quit"}));
    anon.expect_bye("quit");
    assert_eq!(anon.expect_closed(), Closed::Clean);
    alice.sync(1);
}

#[test]
fn refused_logins_are_indistinguishable() {
    // Per-connection behaviour only: the cross-connection backoff (limits.rs) stays out of it.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(dir.path(), "login_free_failures = 100");
    server.add_user("alice", "right");
    server.add_user("bob", "bob-pw");
    server.ctl(&["user", "lock", "bob"], None).assert_ok();

    let attempts = [
        ("alice", "wrong"),          // wrong password
        ("zed", "whatever"),         // unknown user
        ("bob", "bob-pw"),           // locked, right password
        ("Not A Name!", "whatever"), // not even a valid name
        ("alice", ""),               // empty password
    ];
    let mut refusals = Vec::new();
    for (user, password) in attempts {
        let mut raw = Raw::connect(&server);
        raw.hello();
        refusals.push(raw.try_login(user, password));
        // The connection stays open for another try.
        raw.sync(1);
    }
    let expected =
        json!({"type":"error","code":"invalid_credentials","message":"invalid credentials"});
    for (frame, attempt) in refusals.iter().zip(attempts) {
        assert_eq!(frame, &expected, "{attempt:?}");
    }

    // After max_login_failures (3) on one connection the server gives up on it.
    let mut raw = Raw::connect(&server);
    raw.hello();
    for _ in 0..3 {
        assert_eq!(raw.try_login("alice", "nope"), expected);
    }
    raw.expect_bye("too many failed logins");
    assert_eq!(raw.expect_closed(), Closed::Clean);

    // Two failures then the right password is fine.
    let mut raw = Raw::connect(&server);
    raw.hello();
    for _ in 0..2 {
        assert_eq!(raw.try_login("alice", "nope"), expected);
    }
    assert_eq!(raw.try_login("alice", "right")["type"], "login_ok");
}

#[test]
fn several_sessions_of_one_user() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut a1 = Raw::login(&server, "alice", "pw-a");
    let mut a2 = Raw::login(&server, "alice", "pw-a");
    let mut b1 = Raw::login(&server, "bob", "pw-b");
    let mut b2 = Raw::login(&server, "bob", "pw-b");
    // One join per user, not per session: only bob's first session was news.
    let join = json!({"type":"presence","user":"bob","event":"join"});
    assert_eq!(a1.recv(), join);
    assert_eq!(a2.recv(), join);
    for (n, conn) in [&mut a1, &mut a2, &mut b1, &mut b2].into_iter().enumerate() {
        conn.sync(n as u64);
    }

    // A whisper reaches every session of the target and of the sender, once each.
    let whisper = a1.whisper("bob", "to all your devices");
    for conn in [&mut a1, &mut a2, &mut b1, &mut b2] {
        envelope("alice", &whisper, &conn.recv());
    }
    let hello = b2.say("hello");
    for conn in [&mut a1, &mut a2, &mut b1, &mut b2] {
        envelope("bob", &hello, &conn.recv());
    }
    a2.command("list", "");
    assert_eq!(
        a2.recv(),
        json!({"type":"users","users":[{"user":"alice","sessions":2},{"user":"bob","sessions":2}]})
    );

    // bob's second device leaving is not news: bob is still online.
    b2.send(json!({"type":"quit"}));
    b2.expect_bye("quit");
    a1.sync(10);

    // A kick ends every session of the user; the others hear of it once.
    let out = server.ctl(&["kick", "alice"], None);
    out.assert_ok();
    assert_eq!(out.stdout, "kicked alice (2 session(s))\n");
    for conn in [&mut a1, &mut a2] {
        conn.expect_bye("kicked by administrator");
        assert_eq!(conn.expect_closed(), Closed::Clean);
    }
    assert_eq!(
        b1.recv(),
        json!({"type":"presence","user":"alice","event":"leave","reason":"kicked by administrator"})
    );
    b1.sync(11);
}

#[test]
fn envelopes_must_name_their_session_and_a_conversation_it_is_in() {
    let server = Server::start();
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, "pw");
    }
    let mut alice = Raw::login(&server, "alice", "pw");
    let mut bob = Raw::login(&server, "bob", "pw");
    let mut carol = Raw::login(&server, "carol", "pw");
    alice.recv_type("presence");
    alice.recv_type("presence");
    bob.recv_type("presence");

    // alice's envelope relayed by bob: the header names alice, the session is bob's.
    let forged = alice.seal("all", "not from bob");
    bob.send_envelope(&forged);
    assert_eq!(
        bob.expect_error("bad_envelope"),
        "the envelope's sender is not this session's user and device key"
    );
    // A whisper between two others.
    let meddle = bob.seal("alice,carol", "meddling");
    bob.send_envelope(&meddle);
    assert_eq!(
        bob.expect_error("bad_envelope"),
        "you are not part of that conversation"
    );
    // Not an envelope at all, and a wrapped chain that does not decode.
    bob.send(json!({"type":"send","data":"bm90IGFuIGVudmVsb3Bl"}));
    assert!(bob.expect_error("bad_envelope").starts_with("envelope: "));
    bob.send(json!({"type":"chain","data":"%%%"}));
    assert!(bob.expect_error("bad_envelope").starts_with("chain: "));
    // Four violations: still one short of the limit; nothing reached the others.
    for (n, conn) in [&mut alice, &mut bob, &mut carol].into_iter().enumerate() {
        conn.sync(n as u64);
    }
}

/// A `rekey` reaches the asked device with the asker as the server authenticated it, or is
/// stored for it while it is offline; malformed ones and ones from outside the conversation
/// are refused.
#[test]
fn rekey_reaches_the_asked_device_live_or_stored() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let (mut alice, hello, _) = Raw::login_device(
        &server,
        "alice",
        "pw-a",
        test_key("alice"),
        &["rekey", "later"],
    );
    assert_eq!(hello["features"], json!(["rekey"]));
    // A client of the same key that did not ask (an older one) is never sent a rekey.
    let (mut older, hello, _) = Raw::login_device(&server, "alice", "pw-a", test_key("alice"), &[]);
    assert!(hello.get("features").is_none(), "{hello}");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    alice.recv_type("presence");
    let alice_device = test_key("alice").fingerprint().to_string();
    let bob_device = test_key("bob").fingerprint().to_string();
    let chain = "0123456789abcdef0123456789abcdef";
    let rekey = |conversation: &str, chain: &str| json!({"type":"rekey","device":alice_device,"conversation":conversation,"chain":chain,"index":7});
    bob.send(rekey("alice,bob", chain));
    let got = alice.recv_type("rekey");
    assert_eq!(
        got,
        json!({"type":"rekey","from":"bob","device":bob_device,"conversation":"alice,bob","chain":chain,"index":7})
    );
    bob.send(rekey("#lobby", chain));
    assert_eq!(alice.recv_type("rekey")["conversation"], "#lobby");

    // Not bob's conversation: refused, not a violation.
    server.add_user("carol", "pw-c");
    bob.send(rekey("alice,carol", chain));
    bob.expect_error("not_in_room");
    // Not a chain id: a violation.
    bob.send(rekey("alice,bob", "0123"));
    bob.expect_error("bad_frame");
    bob.send(rekey("alice,bob", &chain.to_uppercase()));
    bob.expect_error("bad_frame");

    older.send(json!({"type":"ping","nonce":5}));
    loop {
        let frame = older.recv();
        assert_ne!(frame["type"], "rekey", "{frame}");
        if frame["type"] == "pong" {
            break;
        }
    }
    // alice offline: stored, and delivered at her next login.
    for raw in [&mut alice, &mut older] {
        raw.send(json!({"type":"quit"}));
        raw.recv_type("bye");
    }
    assert_eq!(bob.recv_type("presence")["event"], "leave");
    bob.send(rekey("alice,bob", chain));
    bob.sync(1);
    let (mut alice, _, _) =
        Raw::login_device(&server, "alice", "pw-a", test_key("alice"), &["rekey"]);
    let stored = alice.recv_type("rekey");
    assert_eq!(stored["from"], "bob", "{stored}");
    assert_eq!(stored["index"], 7, "{stored}");
}
