//! Memory under replay and slow readers (issue 26, item 2): sessions that log in and never
//! read cost at most their outbound queue's bytes, a stored line is held once however many
//! sessions replay it, and chatd's RSS comes back once they are gone; the byte limit of the
//! outbound queue at its edge.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Raw, RssWatch, Server, attacker, figure, mb, rss_kib, settle};

/// Stored lines per device, as in the issue (under `offline_queue_max`, 1000).
const LINES: usize = 970;
/// Sessions of one account that log in and never read (`max_sessions_per_user`, 16).
const SESSIONS: u8 = 16;
/// Whispers sent before their echoes and `held` are read.
const PIPELINE: usize = 32;

/// Message `i`'s text: numbered, and 16 KiB (the default `max_text_bytes`) long.
fn text(i: usize) -> String {
    let head = format!("m{i:04} ");
    format!("{head}{}", "x".repeat(16 * 1024 - head.len()))
}

/// alice whispers `n` long messages to bob, whose one device is offline; each is echoed and
/// acknowledged as stored. Returns the envelopes in order.
fn store_backlog(server: &Server, n: usize) -> Vec<String> {
    let mut alice = Raw::login(server, "alice", "pw-a");
    let mut sent = Vec::with_capacity(n);
    while sent.len() < n {
        let first = sent.len();
        let chunk: Vec<String> = (first..n.min(first + PIPELINE))
            .map(|i| alice.whisper("bob", &text(i)))
            .collect();
        let (mut echoed, mut held) = (0, 0);
        while echoed < chunk.len() || held < chunk.len() {
            let frame = alice.recv();
            match frame["type"].as_str() {
                Some("envelope") => {
                    assert_eq!(frame["data"], chunk[echoed].as_str(), "echo out of order");
                    echoed += 1;
                }
                Some("held") => {
                    assert_eq!(frame["users"], json!(["bob"]), "{frame}");
                    held += 1;
                }
                _ => panic!("alice got {frame}"),
            }
        }
        sent.extend(chunk);
    }
    alice.send(json!({"type":"quit"}));
    alice.expect_bye("quit");
    sent
}

/// Logs bob in and reads the whole replay: the envelopes in order, and the last marker.
fn read_replay(server: &Server) -> (Raw, Vec<String>, Value) {
    let mut bob = Raw::login(server, "bob", "pw-b");
    let mut got = Vec::new();
    loop {
        let frame = bob.recv();
        match frame["type"].as_str() {
            Some("envelope") => got.push(frame["data"].as_str().unwrap_or_default().to_string()),
            Some("backlog") if frame["more"] == false => return (bob, got, frame),
            Some("backlog") => {}
            _ => panic!("unexpected frame during replay: {frame}"),
        }
    }
}

#[test]
fn sixteen_sessions_replaying_a_backlog_without_reading_cost_one_queue_and_memory_comes_back() {
    const T: &str = "abuse_memory::replay";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits_env(
        dir.path(),
        // The sender goes faster than the default rate limit, and fills the whole queue (not
        // only a sender's share of it); neither is the subject here.
        "messages_per_sec = 100000\nmessage_burst = 100000\noffline_queue_per_sender = 1000",
        &[("RUST_LOG", "info,chatd::memory=debug")],
    );
    server.add_user("alice", "pw-a");
    server.add_user("bob", "pw-b");
    // bob's device becomes known, then goes offline; alice fills its queue.
    let mut bob = Raw::login(&server, "bob", "pw-b");
    bob.send(json!({"type":"quit"}));
    bob.expect_bye("quit");
    let start = std::time::Instant::now();
    let sent = store_backlog(&server, LINES);
    figure(
        T,
        "time to store them (s)",
        format!("{:.1}", start.elapsed().as_secs_f64()),
    );
    let stored_mb = sent.iter().map(|d| d.len() as u64).sum::<u64>() as f64 / 1e6;
    figure(
        T,
        "stored lines",
        format!("{LINES} x {} KB", sent[0].len() / 1000),
    );
    figure(T, "stored backlog (MB)", format!("{stored_mb:.1}"));

    // Quiet for a moment: chatd gives back what the sending freed (memory::CHECK_EVERY, 5 s),
    // so the baseline is what chatd holds, not what an earlier burst left behind.
    std::thread::sleep(Duration::from_secs(6));
    let watch = RssWatch::start(&server);
    let baseline = watch.baseline;
    figure(T, "baseline RSS (MB)", format!("{:.1}", mb(baseline)));
    // The attack: 16 sessions of bob's account, from 16 addresses, log in and never read.
    let silent: Vec<Raw> = (1..=SESSIONS)
        .map(|n| Raw::login_from(&server, Some(attacker(n)), "bob", "pw-b"))
        .collect();
    // Let chatd push all it can (the kernel's buffers fill, then the queues).
    std::thread::sleep(Duration::from_secs(4));
    let during = rss_kib(&server);
    drop(silent);
    // Peak while they were connected, and a moment after, while they are torn down.
    std::thread::sleep(Duration::from_millis(500));
    let growth = watch.finish();
    figure(T, "sessions that did not read", SESSIONS);
    figure(T, "RSS growth during (MB, peak)", format!("{growth:.1}"));
    figure(
        T,
        "RSS growth 4 s in (MB)",
        format!("{:.1}", mb(during.saturating_sub(baseline))),
    );
    assert!(
        growth <= 50.0,
        "RSS grew by {growth:.1} MB with {SESSIONS} silent sessions replaying {stored_mb:.1} MB each"
    );
    let (after, took) = settle(&server, baseline, 0.10, Duration::from_secs(30));
    figure(T, "RSS after they closed (MB)", format!("{:.1}", mb(after)));
    figure(
        T,
        "RSS after / baseline",
        format!(
            "{:.2} (after {:.1} s)",
            after as f64 / baseline as f64,
            took.as_secs_f64()
        ),
    );
    assert!(
        after as f64 <= baseline as f64 * 1.10,
        "RSS {:.1} MB, baseline {:.1} MB, 30 s after the sessions closed",
        mb(after),
        mb(baseline)
    );
    // And once chatd has had a quiet check (memory::CHECK_EVERY) to give freed memory back.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(took));
    let later = rss_kib(&server);
    figure(
        T,
        "RSS 6 s after they closed (MB)",
        format!(
            "{:.1} ({:.2} of baseline)",
            mb(later),
            later as f64 / baseline as f64
        ),
    );

    // Nothing was lost: a normal login reads every stored line, in order, once.
    let (mut bob, got, last) = read_replay(&server);
    figure(T, "lines read by the real login", got.len());
    assert_eq!(got.len(), sent.len(), "every stored line, once");
    assert!(got == sent, "in order, unchanged");
    let read_at = rss_kib(&server);
    let (read_after, read_took) = settle(&server, baseline, 0.10, Duration::from_secs(30));
    figure(
        T,
        "RSS after the real login read it all (MB)",
        format!(
            "{:.1} right after, {:.1} after {:.1} s",
            mb(read_at),
            mb(read_after),
            read_took.as_secs_f64()
        ),
    );
    // Acknowledged, they are gone.
    bob.send(json!({"type":"backlog_ack","upto":last["upto"]}));
    bob.sync(1);
    drop(bob);
    let (_bob, again, _) = read_replay_or_none(&server);
    assert!(
        again.is_empty(),
        "acknowledged lines came back: {}",
        again.len()
    );
    let trims = server
        .log
        .since(0)
        .iter()
        .filter(|l| l.contains("gave freed memory back"))
        .count();
    figure(T, "times chatd gave freed memory back", trims);
}

/// Logs bob in; the envelopes replayed before the first `pong` (nothing stored: none).
fn read_replay_or_none(server: &Server) -> (Raw, Vec<String>, ()) {
    let mut bob = Raw::login(server, "bob", "pw-b");
    bob.send(json!({"type":"ping","nonce":9}));
    let mut got = Vec::new();
    loop {
        let frame = bob.recv();
        match frame["type"].as_str() {
            Some("envelope") => got.push(frame["data"].as_str().unwrap_or_default().to_string()),
            Some("backlog") => {}
            Some("pong") => return (bob, got, ()),
            _ => panic!("unexpected frame: {frame}"),
        }
    }
}

/// The byte limit at its edge: set under its floor it counts as two of the longest lines
/// (131072 bytes with `max_line_bytes` 65536), and then a reader of lines that long keeps up
/// while a reader that stopped is closed as too slow, long before the frame limit.
#[test]
fn the_byte_limit_at_its_floor_still_takes_the_longest_lines_and_cuts_a_stalled_reader() {
    const T: &str = "abuse_memory::byte_limit";
    const REASON: &str = "too slow: outbound queue full";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(
        dir.path(),
        // 48000 bytes of text make a ~65 KB envelope line, just under max_line_bytes (65536).
        // The frame limit is far away: only bytes can end the stalled session.
        "outbound_queue_bytes = 1\noutbound_queue = 100000\nmax_text_bytes = 48000\n\
         messages_per_sec = 100000\nmessage_burst = 100000",
    );
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("slow", "pw-s")] {
        server.add_user(u, p);
    }
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    assert_eq!(alice.recv_type("presence")["user"], "bob");
    let slow = Raw::login(&server, "slow", "pw-s");
    assert_eq!(alice.recv_type("presence")["user"], "slow");
    assert_eq!(bob.recv_type("presence")["user"], "slow");

    // alice talks; bob reads each message as it comes; slow never reads.
    let mut leave = None;
    let mut line = 0;
    let mut k = 0;
    while leave.is_none() {
        k += 1;
        assert!(k <= 1000, "slow was never closed");
        let data = alice.say(&format!("{k:05} {}", "y".repeat(48000 - 6)));
        line = data.len();
        loop {
            let frame = alice.recv();
            match frame["type"].as_str() {
                Some("envelope") => {
                    assert_eq!(frame["data"], data.as_str());
                    break;
                }
                Some("presence") => leave = Some(frame),
                // slow is gone, its device offline: the message is stored for it.
                Some("held") => assert_eq!(frame["users"], json!(["slow"]), "{frame}"),
                _ => panic!("alice got {frame}"),
            }
        }
        loop {
            let frame = bob.recv();
            match frame["type"].as_str() {
                Some("envelope") => {
                    assert_eq!(frame["data"], data.as_str(), "bob missed a message");
                    break;
                }
                Some("presence") => {}
                _ => panic!("bob got {frame}"),
            }
        }
    }
    let leave = leave.unwrap_or_default();
    assert_eq!(
        (&leave["user"], &leave["event"], &leave["reason"]),
        (&"slow".into(), &"leave".into(), &REASON.into()),
        "{leave}"
    );
    figure(T, "envelope line (bytes)", line);
    figure(T, "queue byte limit in force (bytes)", 131072);
    figure(
        T,
        "stalled reader closed at message",
        format!(
            "{k} (~{:.1} MB sent to it, most in the kernel's buffers)",
            (k * line) as f64 / 1e6
        ),
    );
    figure(T, "messages the reading client got", k);
    drop(slow);
}
