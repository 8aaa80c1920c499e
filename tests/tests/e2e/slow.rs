//! Slow consumers: a client that stops reading is disconnected once its outbound queue
//! (`limits.outbound_queue`) is full, with the reason in the log and in everyone's leave
//! notice, while the others go on receiving every message, in order.
//!
//! The kernel's socket buffers take the first part of what the stalled client does not
//! read, so where the queue starts to fill is not known in advance. The trace-level wire
//! capture says it: chatd logs every batch its writer takes off a session's queue, so the
//! test knows exactly how many frames were still queued when each message arrived.

use std::collections::HashMap;

use serde_json::Value;

use crate::harness::{Chat, ClientHome, Raw, Server, exactly, unstamped};

/// Frames the stalled session may have queued.
const QUEUE: usize = 8;
/// Pong nonces of alice's sync after message k are `NONCE + k`.
const NONCE: u64 = 7_000_000;
/// The log line of the hub's verdict.
const VERDICT: &str = "outbound queue full; disconnecting slow client";
const REASON: &str = "too slow: outbound queue full";

/// Message k's text: numbered, and long, so the kernel's buffers fill after fewer messages.
fn text(k: usize) -> String {
    format!("m{k:04} {}", "x".repeat(12_000))
}

fn is_event(line: &str) -> bool {
    // Every log event starts with its RFC 3339 time; a wire batch's further frames do not.
    line.len() > 20 && line.as_bytes()[..4].iter().all(u8::is_ascii_digit) && line.contains("Z ")
}

/// Follows chatd's log: which of our envelopes the writer of slow's session (at `peer`) took
/// off its queue, and where the hub's verdict came.
struct WireLog {
    peer: String,
    /// Envelope data -> message number.
    numbers: HashMap<String, usize>,
    /// Lines read so far.
    read: usize,
    /// Whether the current event is a wire write of `peer`'s session.
    in_peer_write: bool,
    /// Messages taken by the writer, in the order the log shows them.
    taken: Vec<usize>,
    /// Set once the verdict is seen: how many messages had been taken before it.
    verdict: Option<usize>,
    /// Messages taken after the verdict (what was queued, flushed in the grace after the close).
    taken_after_verdict: Vec<usize>,
}

impl WireLog {
    fn new(peer: std::net::SocketAddr) -> WireLog {
        WireLog {
            peer: format!("session{{peer={peer} user=\"slow\"}}:"),
            numbers: HashMap::new(),
            read: 0,
            in_peer_write: false,
            taken: Vec::new(),
            verdict: None,
            taken_after_verdict: Vec::new(),
        }
    }

    /// Reads the log lines that came since the last call.
    fn advance(&mut self, server: &Server) {
        let lines = server.log.since(self.read);
        self.read += lines.len();
        for line in &lines {
            let frame = if is_event(line) {
                if line.contains(VERDICT) && line.contains("user=\"slow\"") {
                    assert!(self.verdict.is_none(), "a second verdict: {line}");
                    self.verdict = Some(self.taken.len());
                }
                self.in_peer_write = line.contains(&self.peer) && line.contains("wire write");
                if !self.in_peer_write {
                    continue;
                }
                match line.split_once(" out=") {
                    Some((_, frame)) => frame,
                    None => continue,
                }
            } else if self.in_peer_write {
                line.as_str()
            } else {
                continue;
            };
            let Ok(frame) = serde_json::from_str::<Value>(frame) else {
                continue;
            };
            if let Some(k) = frame["data"].as_str().and_then(|d| self.numbers.get(d)) {
                if self.verdict.is_some() {
                    self.taken_after_verdict.push(*k);
                } else {
                    self.taken.push(*k);
                }
            }
        }
    }
}

/// A server that stores messages for offline devices tells the sender which users' copies
/// it held; once slow is closing, that is slow, and only slow.
fn is_held_for_slow(frame: &Value) -> bool {
    if frame["type"] != "held" {
        return false;
    }
    assert_eq!(frame["users"], serde_json::json!(["slow"]), "{frame}");
    true
}

/// `sender` says message k; both see it at once; then `sender` pings, and slow's leave may
/// come before the pong once slow is closed (it is kept in `leave`, for either client).
fn exchange(
    sender: &mut Raw,
    receiver: &mut Raw,
    names: (&str, &str),
    k: usize,
    leave: &mut Option<Value>,
) -> String {
    let data = sender.say(&text(k));
    // Both receive it, in order, while slow is stuck: nothing waits for slow.
    for (client, name) in [(&mut *sender, names.0), (&mut *receiver, names.1)] {
        loop {
            let frame = client.recv();
            if is_held_for_slow(&frame) {
                continue;
            }
            if frame["type"] == "presence" {
                assert_eq!(frame["user"], "slow", "{name}: {frame}");
                if name == names.0 {
                    *leave = Some(frame);
                }
                continue;
            }
            assert_eq!(frame["type"], "envelope", "{name}: {frame}");
            assert_eq!(frame["from"], names.0, "{name}: {frame}");
            assert_eq!(
                frame["data"],
                data.as_str(),
                "{name} got another message than {k}"
            );
            break;
        }
    }
    sender.send(serde_json::json!({"type": "ping", "nonce": NONCE + k as u64}));
    loop {
        let frame = sender.recv();
        if is_held_for_slow(&frame) {
            continue;
        }
        if frame["type"] == "presence" {
            assert_eq!(frame["user"], "slow", "{frame}");
            *leave = Some(frame);
            continue;
        }
        assert_eq!(frame["nonce"], NONCE + k as u64, "{frame}");
        return data;
    }
}

#[test]
fn a_client_that_stops_reading_is_dropped_at_the_queue_edge_and_nobody_else_loses_anything() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::with_limits_env(
        dir.path(),
        // The senders go far faster than the default rate limit allows; not the subject here.
        &format!("outbound_queue = {QUEUE}\nmessages_per_sec = 10000\nmessage_burst = 10000"),
        &[("RUST_LOG", "info,chatd::wire=trace")],
    );
    for user in ["alice", "bob", "slow"] {
        server.add_user(user, "pw");
    }
    let mut alice = Raw::login(&server, "alice", "pw");
    let mut bob = Raw::login(&server, "bob", "pw");
    assert_eq!(alice.recv_type("presence")["user"], "bob");
    // The stalled one: logs in, then never reads again.
    let mut slow = Raw::login(&server, "slow", "pw");
    assert_eq!(alice.recv_type("presence")["user"], "slow");
    assert_eq!(bob.recv_type("presence")["user"], "slow");

    let mut wire = WireLog::new(slow.local);
    let mut sent = Vec::new();
    let (mut leave_a, mut leave_b) = (None, None);
    // alice and bob take turns. Message k is queued for slow, then the sender's ping: the
    // pong's wire write comes after the hub's verdict on message k, if there was one, so
    // reading the log up to it is reading everything the hub said about message k.
    let (k, taken) = loop {
        let k = sent.len() + 1;
        assert!(k < 5_000, "slow was never disconnected");
        let data = if k % 2 == 1 {
            exchange(&mut alice, &mut bob, ("alice", "bob"), k, &mut leave_a)
        } else {
            exchange(&mut bob, &mut alice, ("bob", "alice"), k, &mut leave_b)
        };
        wire.numbers.insert(data.clone(), k);
        sent.push(data);
        let pong = format!(r#""type":"pong","nonce":{}"#, NONCE + k as u64);
        server.log.expect_contains(&pong);
        wire.advance(&server);
        if let Some(taken) = wire.verdict {
            break (k, taken);
        }
    };
    // The edge: when message k-1 arrived the queue held exactly QUEUE frames (full, and no
    // verdict); message k found it full and ended the session.
    assert_eq!(
        k - 1 - taken,
        QUEUE,
        "message {k} closed slow with {taken} of {} taken off its queue",
        k - 1
    );
    assert!(taken >= 1, "the writer took some before the socket filled");
    assert_eq!(
        wire.taken,
        (1..=taken).collect::<Vec<_>>(),
        "the writer takes messages in order"
    );
    eprintln!(
        "slow was closed at message {k}: {taken} went into the kernel's buffers, {QUEUE} queued"
    );

    // Everyone else hears why, and the log says it.
    for (name, client, early) in [("alice", &mut alice, leave_a), ("bob", &mut bob, leave_b)] {
        let leave = early.unwrap_or_else(|| client.recv_type("presence"));
        assert_eq!(
            (&leave["user"], &leave["event"], &leave["reason"]),
            (&"slow".into(), &"leave".into(), &REASON.into()),
            "{name}: {leave}"
        );
    }
    // Logged by slow's own task just after it left the hub; the lines read while waiting for
    // pongs may already have passed it, so look at the whole log.
    let ended = format!("user=\"slow\"}}: session ended session=3 reason=\"{REASON}\"");
    let deadline = std::time::Instant::now() + crate::harness::TIMEOUT;
    while !server.log.since(0).iter().any(|l| l.contains(&ended)) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {ended:?} in the log"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // And they go on chatting.
    let mut none = None;
    for k in k + 1..=k + 10 {
        let data = if k % 2 == 1 {
            exchange(&mut alice, &mut bob, ("alice", "bob"), k, &mut none)
        } else {
            exchange(&mut bob, &mut alice, ("bob", "alice"), k, &mut none)
        };
        sent.push(data);
    }
    assert!(none.is_none(), "{none:?}");

    // slow, reading at last, finds a gapless prefix of the conversation that stops before
    // message k: the writer may still flush what was queued (for a short grace after the
    // close), but nothing from the verdict on reached the queue.
    let (frames, _how) = slow.recv_until_closed();
    let mut got = 0;
    for frame in &frames {
        match frame["type"].as_str() {
            Some("envelope") => {
                assert_eq!(
                    frame["data"],
                    sent[got].as_str(),
                    "message {} missing",
                    got + 1
                );
                got += 1;
            }
            Some("device") => {}
            // Only if there was room for it; a full queue has none.
            Some("bye") => assert_eq!(frame["reason"], REASON),
            _ => panic!("slow got {frame}"),
        }
    }
    assert!(got < k, "slow got {got} messages; message {k} closed it");
    wire.advance(&server);
    let all: Vec<usize> = wire
        .taken
        .iter()
        .chain(&wire.taken_after_verdict)
        .copied()
        .collect();
    assert_eq!(
        all,
        (1..=all.len()).collect::<Vec<_>>(),
        "the writer takes messages in order"
    );
    assert!(
        all.len() < k,
        "message {k} or later was queued for slow after the verdict"
    );
}

/// The same with real `chat --plain` clients: they keep talking, in both directions, through
/// slow's stall and after it, and neither misses or reorders a line.
#[test]
fn real_clients_keep_chatting_while_a_stalled_one_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    // A queue that takes a round's burst (each line comes back as an echo, and a server that
    // stores for offline devices adds a held notice) with room to spare: a queue that fills
    // before the writer task runs would drop a client that reads perfectly well.
    let server = Server::with_limits(
        dir.path(),
        "outbound_queue = 64\nmessages_per_sec = 10000\nmessage_burst = 10000",
    );
    for user in ["alice", "bob", "slow"] {
        server.add_user(user, "pw");
    }
    let (home_a, home_b) = (ClientHome::new(), ClientHome::new());
    let mut alice = Chat::login(&server, "alice", "pw", &home_a);
    let mut bob = Chat::login(&server, "bob", "pw", &home_b);
    let _slow = Raw::login(&server, "slow", "pw");
    let left = format!("-- slow left ({REASON})");
    for c in [&mut alice, &mut bob] {
        c.out.expect("slow joined", exactly("-- slow joined"));
    }
    // alice writes in rounds of 5 until bob hears that slow was dropped, then 20 more; bob
    // answers each round. Both wait for the round's last line, which is all the pacing there is.
    let mut n = 0;
    let mut replies = 0;
    let mut after = None;
    while after.is_none_or(|a| n < a + 20) {
        assert!(n < 5_000, "slow was never disconnected");
        for _ in 0..5 {
            n += 1;
            alice.send(&text(n));
        }
        let last = format!("<alice> {}", text(n));
        bob.out.expect(&format!("message {n}"), exactly(&last));
        replies += 1;
        bob.send(&format!("reply {replies}"));
        alice
            .out
            .expect("bob's reply", exactly(&format!("<bob> reply {replies}")));
        if after.is_none() && bob.out.all().iter().any(|l| unstamped(l) == Some(&left)) {
            after = Some(n);
        }
    }
    assert!(
        alice.out.all().iter().any(|l| unstamped(l) == Some(&left)),
        "alice was told why slow left"
    );
    // Everything, once, in order, on both sides.
    let said = |lines: &[String], who: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| unstamped(l))
            .filter_map(|t| t.strip_prefix(&format!("<{who}> ")).map(str::to_string))
            .collect()
    };
    let want: Vec<String> = (1..=n).map(text).collect();
    assert!(
        said(&bob.out.all(), "alice") == want,
        "bob missed or reordered alice's lines"
    );
    assert!(said(&alice.out.all(), "alice") == want, "alice's own echo");
    let replies: Vec<String> = (1..=replies).map(|r| format!("reply {r}")).collect();
    assert_eq!(said(&alice.out.all(), "bob"), replies);
    for (name, c) in [("alice", &alice), ("bob", &bob)] {
        assert!(
            !c.out.all().iter().any(|l| l.contains(" !! ")),
            "{name} saw an error"
        );
    }
}
