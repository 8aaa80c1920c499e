//! Binary envelope frames (docs/PROTOCOL.md, "Binary envelope frames"): negotiated in
//! `hello`, mixed with JSON clients in one room, at the frame-size edge, and never used for
//! what was stored while a device was offline.

use serde_json::{Value, json};

use crate::harness::{Raw, Server, test_key};

/// Connects, asks for binary frames (the server must agree) and logs in.
fn login_binary(server: &Server, user: &str, password: &str) -> Raw {
    let mut raw = Raw::connect(server);
    let hello = raw.hello_binary();
    assert_eq!(hello["binary"], true, "{hello}");
    let ok = raw.try_login(user, password);
    assert_eq!(ok["type"], "login_ok", "login as {user}: {ok}");
    raw
}

/// The next envelope, skipping presence notices from the other logins.
fn next_envelope(raw: &mut Raw) -> Value {
    loop {
        let frame = raw.recv();
        match frame["type"].as_str() {
            Some("envelope") => return frame,
            Some("presence") => {}
            _ => panic!("expected an envelope, got {frame}"),
        }
    }
}

/// `frame` carries `data` from `from`'s test device, in binary (`true`) or JSON form.
fn check(frame: &Value, from: &str, data: &str, binary: bool) {
    assert_eq!(frame["from"], from, "{frame}");
    assert_eq!(
        frame["device"],
        test_key(from).fingerprint().to_string(),
        "{frame}"
    );
    assert_eq!(frame["data"], data, "{frame}");
    assert!(frame["ts"].as_u64().is_some_and(|ts| ts > 0), "{frame}");
    let form = if binary { json!(true) } else { Value::Null };
    assert_eq!(frame["binary"], form, "wrong wire form: {frame}");
}

#[test]
fn each_member_gets_the_form_it_negotiated() {
    let server = Server::start();
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    let mut alice = login_binary(&server, "alice", "pw-a");
    let mut bob = Raw::connect(&server);
    let hello = bob.hello();
    assert_eq!(
        hello["binary"],
        Value::Null,
        "not asked, not offered: {hello}"
    );
    assert_eq!(bob.try_login("bob", "pw-b")["type"], "login_ok");
    let mut carol = login_binary(&server, "carol", "pw-c");

    // A binary send reaches the JSON member as JSON, the binary ones (the echo too) as binary,
    // all with the same envelope bytes and the same server time.
    let data = alice.seal("#lobby", "binary out");
    alice.send_envelope_binary(&data);
    let (a, b, c) = (
        next_envelope(&mut alice),
        next_envelope(&mut bob),
        next_envelope(&mut carol),
    );
    check(&a, "alice", &data, true);
    check(&b, "alice", &data, false);
    check(&c, "alice", &data, true);
    assert!(a["ts"] == b["ts"] && b["ts"] == c["ts"], "{a} {b} {c}");

    // And a JSON send reaches binary members as binary.
    let data = bob.say("json out");
    check(&next_envelope(&mut alice), "bob", &data, true);
    check(&next_envelope(&mut bob), "bob", &data, false);
    check(&next_envelope(&mut carol), "bob", &data, true);

    // A binary whisper goes to the pair only.
    let conv = chatd_proto::conversation::Conversation::pair("alice", "carol").name();
    let data = carol.seal(&conv, "psst");
    carol.send_envelope_binary(&data);
    check(&next_envelope(&mut alice), "carol", &data, true);
    check(&next_envelope(&mut carol), "carol", &data, true);
    bob.sync(1);
    // Everything else stays JSON on a binary session.
    alice.sync(2);
}

#[test]
fn a_binary_envelope_is_checked_like_a_json_one() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("mallory", "pw-m");
    let mut alice = login_binary(&server, "alice", "pw-a");
    let mut mallory = login_binary(&server, "mallory", "pw-m");
    alice.recv_type("presence");
    // mallory replays alice's envelope as her own: the header names alice's device.
    let data = alice.seal("#lobby", "mine");
    mallory.send_envelope_binary(&data);
    let msg = mallory.expect_error("bad_envelope");
    assert!(msg.contains("not this session's user"), "{msg}");
    alice.sync(1);
}

#[test]
fn binary_frames_at_the_size_edge_and_malformed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "max_line_bytes = 2048\nmax_text_bytes = 512\nmax_protocol_errors = 20";
    let server = Server::with_limits(dir.path(), limits);
    server.add_user("alice", "pw-a");
    let mut raw = Raw::connect(&server);
    raw.hello_binary();

    // Before login a binary send is refused like a JSON one.
    raw.send_raw(&chatd_proto::codec::binary_send(b"early"));
    raw.expect_error("not_logged_in");
    assert_eq!(raw.try_login("alice", "pw-a")["type"], "login_ok");

    // A payload of exactly max_line_bytes is a frame (and not an envelope) ...
    raw.send_raw(&chatd_proto::codec::binary_send(&[0x41; 2048]));
    raw.expect_error("bad_envelope");
    // ... one byte more is refused unread, and the frame's bytes are skipped, not parsed.
    raw.send_raw(&chatd_proto::codec::binary_send(&[b'\n'; 2049]));
    assert_eq!(
        raw.recv(),
        json!({"type":"error","code":"frame_too_long","message":"line longer than 2048 bytes"})
    );
    raw.sync(1);
    // A far longer one, in many TLS records, is reported once.
    let mut huge = chatd_proto::codec::binary_send(&[b'{'; 300_000]).to_vec();
    huge.extend_from_slice(b"{\"type\":\"ping\",\"nonce\":2}\n");
    raw.send_raw(&huge);
    raw.expect_error("frame_too_long");
    assert_eq!(raw.recv(), json!({"type":"pong","nonce":2}));

    // Unknown kinds, and the server's own kind, are bad frames; the session goes on.
    raw.send_raw(&[0, b'Z', 0, 0, 0, 3, 1, 2, 3]);
    let msg = raw.expect_error("bad_frame");
    assert!(msg.contains("unknown binary frame kind 0x5a"), "{msg}");
    raw.send_raw(&chatd_proto::codec::binary_envelope(1, b"x"));
    raw.expect_error("bad_frame");
    raw.send_raw(&[0, b'E', 0, 0, 0, 2, 1, 2]);
    raw.expect_error("bad_frame");

    // A real envelope still goes through after all that.
    let data = raw.seal("#lobby", "still here");
    raw.send_envelope_binary(&data);
    check(&next_envelope(&mut raw), "alice", &data, true);
}

#[test]
fn stored_messages_reach_a_binary_client_as_json_then_live_ones_in_binary() {
    let server = Server::start();
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    // bob's device is registered, then goes offline.
    let mut bob = Raw::login(&server, "bob", "pw-b");
    bob.send(json!({"type":"quit"}));
    bob.expect_bye("quit");
    let mut alice = login_binary(&server, "alice", "pw-a");
    let stored = alice.seal("#lobby", "while you were out");
    alice.send_envelope_binary(&stored);
    check(&next_envelope(&mut alice), "alice", &stored, true);
    let held = alice.recv_type("held");
    assert_eq!(held["users"], json!(["bob"]), "{held}");

    let mut bob = login_binary(&server, "bob", "pw-b");
    check(&bob.recv_type("envelope"), "alice", &stored, false);
    let marker = bob.recv_type("backlog");
    assert_eq!(marker["more"], false, "{marker}");
    bob.send(json!({"type":"backlog_ack","upto":marker["upto"]}));
    let live = alice.seal("#lobby", "welcome back");
    alice.send_envelope_binary(&live);
    check(&next_envelope(&mut bob), "alice", &live, true);
}

/// Envelopes as one write of binary `send` frames, so that chatd reads them together and
/// routes them as runs; `None` is a frame that is not an envelope at all. Also returns the
/// envelopes (base64), in order.
fn pipelined(raw: &mut Raw, items: &[Option<&str>]) -> (Vec<u8>, Vec<String>) {
    use base64::Engine;
    let (mut bytes, mut sealed) = (Vec::new(), Vec::new());
    for item in items {
        let envelope = match item {
            Some(text) => {
                let data = raw.seal("#lobby", text);
                let envelope = base64::engine::general_purpose::STANDARD
                    .decode(&data)
                    .unwrap();
                sealed.push(data);
                envelope
            }
            None => b"not an envelope".to_vec(),
        };
        bytes.extend_from_slice(&chatd_proto::codec::binary_send(&envelope));
    }
    (bytes, sealed)
}

/// The next `n` envelopes `raw` gets (base64), in order.
fn envelopes(raw: &mut Raw, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let frame = next_envelope(raw);
            frame["data"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_pipelined_run_arrives_in_order_in_both_forms_and_is_stored_one_by_one() {
    let server = Server::start();
    for (u, p) in [
        ("alice", "pw-a"),
        ("bob", "pw-b"),
        ("carol", "pw-c"),
        ("dave", "pw-d"),
    ] {
        server.add_user(u, p);
    }
    // dave's device is registered, then offline: each envelope is stored for it.
    let mut dave = Raw::login(&server, "dave", "pw-d");
    dave.send(json!({"type":"quit"}));
    dave.expect_bye("quit");
    let mut alice = login_binary(&server, "alice", "pw-a");
    let mut bob = login_binary(&server, "bob", "pw-b");
    let mut carol = Raw::login(&server, "carol", "pw-c");

    // Ten envelopes, and a frame that is not one after the fifth: chatd reads them together.
    let texts: Vec<String> = (0..10).map(|i| format!("run {i}")).collect();
    let mut items: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    items.insert(5, None);
    let (bytes, sent) = pipelined(&mut alice, &items);
    alice.send_raw(&bytes);

    // Members get the ten in order, each in the form it negotiated.
    let (b, c) = (next_envelope(&mut bob), next_envelope(&mut carol));
    check(&b, "alice", &sent[0], true);
    check(&c, "alice", &sent[0], false);
    assert_eq!(envelopes(&mut bob, 9), sent[1..]);
    assert_eq!(envelopes(&mut carol, 9), sent[1..]);
    // The sender gets its echoes, and the refusal exactly where its frame was; `held` (dave
    // offline) comes once per envelope, whenever each is stored.
    let mut seen = Vec::new();
    let mut held = 0;
    while seen.len() < 11 || held < 10 {
        let frame = alice.recv();
        match frame["type"].as_str() {
            Some("envelope") => {
                let at = sent.iter().position(|d| frame["data"] == d.as_str());
                seen.push(at.map_or_else(|| format!("stray {frame}"), |i| texts[i].clone()));
            }
            Some("error") => {
                assert_eq!(frame["code"], "bad_envelope", "{frame}");
                seen.push("refused".into());
            }
            Some("held") => {
                assert_eq!(frame["users"], json!(["dave"]), "{frame}");
                held += 1;
            }
            Some("presence") => {}
            _ => panic!("unexpected {frame}"),
        }
    }
    let mut expected = texts.clone();
    expected.insert(5, "refused".into());
    assert_eq!(seen, expected);

    // dave gets the ten stored one by one, in order.
    let mut dave = Raw::login(&server, "dave", "pw-d");
    assert_eq!(envelopes(&mut dave, 10), sent);
    let marker = dave.recv_type("backlog");
    assert_eq!(marker["count"], 10, "{marker}");
    // Nothing else, once dave's return is announced: no envelope came twice.
    for raw in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(raw.recv_type("presence")["user"], "dave");
        raw.sync(1);
    }
}

#[test]
fn the_rate_limit_cuts_a_pipelined_run_where_it_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "messages_per_sec = 1\nmessage_burst = 6\nmax_rate_violations = 10";
    let server = Server::with_limits(dir.path(), limits);
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    let mut alice = login_binary(&server, "alice", "pw-a");
    let mut bob = login_binary(&server, "bob", "pw-b");
    alice.recv_type("presence");

    let texts: Vec<String> = (0..9).map(|i| format!("burst {i}")).collect();
    let items: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    let (bytes, sent) = pipelined(&mut alice, &items);
    alice.send_raw(&bytes);

    // The burst's six go through, in order; the other three are refused after them.
    assert_eq!(envelopes(&mut alice, 6), sent[..6]);
    for _ in 0..3 {
        alice.expect_error("rate_limited");
    }
    assert_eq!(envelopes(&mut bob, 6), sent[..6]);
    bob.sync(1);
    // A ping counts against the same empty bucket; its refusal, as the very next frame, shows
    // that nothing else was queued for alice.
    alice.send(json!({"type": "ping", "nonce": 2}));
    assert_eq!(alice.recv()["code"], "rate_limited");
}
