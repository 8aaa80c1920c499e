//! The hub's tests: routing, presence, replay holds, slow consumers, `login_ok`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use chatd_proto::Fingerprint;
use chatd_proto::conversation::Conversation;
use chatd_proto::frame::{self, ServerFrame};
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::outgoing::serialize;
use super::*;
use crate::outbox::Outbox;

/// The writer's side of an [`Outbox`], a line at a time, never waiting.
pub(super) struct Rx {
    q: Arc<Outbox>,
    pending: std::collections::VecDeque<Bytes>,
}

impl Rx {
    fn try_recv(&mut self) -> Result<Bytes, ()> {
        if self.pending.is_empty() {
            let mut batch = Vec::new();
            if let Some(true) = self.q.take(&mut batch).now_or_never() {
                self.pending.extend(batch);
            }
        }
        self.pending.pop_front().ok_or(())
    }
}

fn channel(cap: usize) -> (Arc<Outbox>, Rx) {
    let q = Arc::new(Outbox::new(cap));
    let rx = Rx {
        q: Arc::clone(&q),
        pending: Default::default(),
    };
    (q, rx)
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1))
}

pub(super) fn device_of(user: &str, n: u8) -> Fingerprint {
    Fingerprint::of(format!("{user}{n}").as_bytes())
}

fn new_session(user: &str, n: u8, tx: Arc<Outbox>, closer: Closer) -> NewSession {
    NewSession {
        user: user.to_string(),
        device: device_of(user, n),
        key: Arc::from(format!("key-of-{user}{n}")),
        peer: peer(),
        outbox: tx,
        closer,
        replay: false,
        binary: false,
        vouch: false,
        rekey: false,
    }
}

/// Registers a session with device `n` and swallows its own `login_ok`.
fn join_dev(hub: &Hub, user: &str, n: u8, cap: usize) -> (SessionId, Rx, Closer) {
    let (tx, mut rx) = channel(cap);
    let closer = Closer::default();
    let (id, _) = hub
        .register(new_session(user, n, tx, closer.clone()))
        .unwrap();
    assert!(text(&rx.try_recv().unwrap()).contains(r#""type":"login_ok""#));
    (id, rx, closer)
}

pub(super) fn join(hub: &Hub, user: &str, cap: usize) -> (SessionId, Rx, Closer) {
    join_dev(hub, user, 0, cap)
}

/// The lines queued for a session, as its client reads them.
pub(super) fn drain(rx: &mut Rx) -> Vec<String> {
    drain_entries(rx)
        .iter()
        .flat_map(|e| e.lines().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// The queue entries themselves (one wake-up and write each).
fn drain_entries(rx: &mut Rx) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(b) = rx.try_recv() {
        out.push(text(&b));
    }
    out
}

fn text(b: &Bytes) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn presence_only_on_first_and_last_session() {
    let hub = Hub::new(4, 8);
    let (_a, mut ra, _) = join(&hub, "alice", 8);
    let (b1, _rb1, _) = join_dev(&hub, "bob", 1, 8);
    let entries = drain_entries(&mut ra);
    assert_eq!(
        entries.len(),
        1,
        "join and device share one entry: {entries:?}"
    );
    let seen: Vec<&str> = entries[0].lines().collect();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].contains(r#""event":"join""#));
    assert!(seen[1].contains(r#""type":"device""#) && seen[1].contains("key-of-bob1"));
    let (b2, _rb2, _) = join_dev(&hub, "bob", 2, 8);
    let seen = drain(&mut ra);
    assert_eq!(seen.len(), 1, "second device is not a new join: {seen:?}");
    assert!(seen[0].contains(r#""event":"online""#) && seen[0].contains("key-of-bob2"));
    hub.unregister(b1, "quit");
    let seen = drain(&mut ra);
    assert_eq!(seen.len(), 1, "bob is still online: {seen:?}");
    assert!(seen[0].contains(r#""event":"offline""#) && !seen[0].contains("key-of"));
    hub.unregister(b2, "disconnected");
    let entries = drain_entries(&mut ra);
    assert_eq!(
        entries.len(),
        1,
        "offline and leave share one entry: {entries:?}"
    );
    let seen: Vec<&str> = entries[0].lines().collect();
    assert!(seen[0].contains(r#""event":"offline""#));
    assert!(seen[1].contains(r#""event":"leave""#) && seen[1].contains("disconnected"));
    assert_eq!(hub.online().len(), 1);
}

/// alice online with JSON envelopes, bob with binary ones, carol's device offline;
/// returns the offline jobs and the two queues.
fn json_binary_and_offline(hub: &Hub) -> (mpsc::Receiver<OfflineJob>, Rx, Rx) {
    let jobs = with_writer(hub);
    hub.set_known([(
        "carol".to_string(),
        device_of("carol", 1),
        "key-of-carol1".to_string(),
    )]);
    let (_a, ra, _) = join(hub, "alice", 8);
    let (tx, rb) = channel(8);
    let bob = NewSession {
        binary: true,
        ..new_session("bob", 1, tx, Closer::default())
    };
    hub.register(bob).unwrap();
    (jobs, ra, rb)
}

#[test]
fn each_session_gets_the_envelope_form_it_negotiated_and_json_is_stored() {
    let hub = Hub::new(4, 8);
    let (mut jobs, mut ra, mut rb) = json_binary_and_offline(&hub);
    drain(&mut ra);
    drain(&mut rb);
    let lines = EnvelopeLines {
        json: Bytes::from_static(b"{\"type\":\"envelope\"}\n"),
        binary: Bytes::from_static(b"\x00E\x00\x00\x00\x00"),
    };
    let all = Conversation::All;
    assert_eq!(hub.route_conversation(&all, &lines, None), 2);
    assert_eq!(ra.try_recv().unwrap(), lines.json);
    assert_eq!(rb.try_recv().unwrap(), lines.binary);
    // carol is offline: what is stored is the JSON form, which every client reads.
    assert_eq!(jobs.try_recv().unwrap().line, lines.json);
}

/// Envelope `n` in both wire forms, and a sender's note for it.
fn envelope(n: u8) -> (EnvelopeLines, Notify) {
    let lines = EnvelopeLines {
        json: Bytes::from(format!("{{\"envelope\":{n}}}\n")),
        binary: Bytes::from(vec![0, b'E', 0, 0, 0, 1, n]),
    };
    let note = Notify {
        session: 99,
        message: format!("m{n}"),
        conversation: "all".into(),
    };
    (lines, note)
}

#[test]
fn a_run_is_one_entry_per_session_held_one_by_one_and_stored_one_by_one() {
    let hub = Hub::new(4, 8);
    let (mut jobs, mut ra, mut rb) = json_binary_and_offline(&hub);
    // dave is replaying what was stored for him: live lines wait, one frame per slot.
    let (tx, mut rd) = channel(8);
    let mut dave = new_session("dave", 1, tx, Closer::default());
    dave.replay = true;
    let (d, _) = hub.register(dave).unwrap();
    drain(&mut ra);
    drain(&mut rb);
    drain(&mut rd);

    let run: Vec<_> = (1..=3).map(envelope).collect();
    assert_eq!(hub.route_batch(&Conversation::All, run.clone()), 3);
    // One queue entry holding the three, in each session's form.
    assert_eq!(
        drain_entries(&mut ra),
        ["{\"envelope\":1}\n{\"envelope\":2}\n{\"envelope\":3}\n"]
    );
    assert_eq!(
        rb.try_recv().unwrap(),
        Bytes::from(vec![
            0, b'E', 0, 0, 0, 1, 1, 0, b'E', 0, 0, 0, 1, 2, 0, b'E', 0, 0, 0, 1, 3
        ])
    );
    assert!(rb.try_recv().is_err());
    // carol is offline: each envelope is stored on its own, with its own note, in order.
    for (lines, note) in &run {
        let job = jobs.try_recv().unwrap();
        assert_eq!((&job.line, job.notify.as_ref()), (&lines.json, Some(note)));
    }
    assert!(jobs.try_recv().is_err());
    // dave's held frames go to his queue one by one once his replay ends.
    assert!(rd.try_recv().is_err(), "held during replay");
    assert!(hub.end_replay(d));
    assert_eq!(
        drain_entries(&mut rd),
        [
            "{\"envelope\":1}\n",
            "{\"envelope\":2}\n",
            "{\"envelope\":3}\n"
        ]
    );
    // A run of one is a plain envelope.
    assert_eq!(hub.route_batch(&Conversation::All, vec![envelope(4)]), 3);
    assert_eq!(drain_entries(&mut ra), ["{\"envelope\":4}\n"]);
}

#[test]
fn a_run_counts_as_its_frames_against_the_queue_and_the_held_limit() {
    // Queues of 4 frames: a run of 3 fits once, not twice.
    let hub = Hub::new(4, 4);
    let (_a, _ra, alice) = join(&hub, "alice", 4);
    let (tx, _rb) = channel(8);
    let bob_closer = Closer::default();
    let mut bob = new_session("bob", 1, tx, bob_closer.clone());
    bob.replay = true;
    hub.register(bob).unwrap();
    let run: Vec<_> = (1..=3).map(envelope).collect();
    assert_eq!(hub.route_batch(&Conversation::All, run.clone()), 2);
    assert!(!alice.is_closed() && !bob_closer.is_closed());
    assert_eq!(hub.route_batch(&Conversation::All, run), 0);
    assert_eq!(
        alice.reason().as_deref(),
        Some("too slow: outbound queue full")
    );
    assert_eq!(
        bob_closer.reason().as_deref(),
        Some("too slow: outbound queue full")
    );
}

#[tokio::test(start_paused = true)]
async fn login_notices_wait_for_a_shared_wake_up_or_the_flush() {
    use tokio::time::{Duration, Instant};
    const DELAY: Duration = Duration::from_millis(25);
    let hub = Arc::new(Hub::new(4, 8));
    let stop = CancellationToken::new();
    let flusher = tokio::spawn({
        let (hub, stop) = (Arc::clone(&hub), stop.clone());
        async move { hub.flush_quiet(DELAY, stop).await }
    });
    tokio::task::yield_now().await;
    // alice's writer: each take, with when it happened.
    let (q, _) = channel(64);
    hub.register(new_session("alice", 0, Arc::clone(&q), Closer::default()))
        .unwrap();
    let (took, mut taken) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut batch = Vec::new();
        while q.take(&mut batch).await {
            let lines: Vec<String> = batch
                .drain(..)
                .flat_map(|b| text(&b).lines().map(str::to_string).collect::<Vec<_>>())
                .collect();
            let _ = took.send((Instant::now(), lines));
        }
    });
    assert!(taken.recv().await.unwrap().1[0].contains("login_ok"));
    let kinds = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .collect()
    };

    // bob's login notices wait for the flush.
    let t0 = Instant::now();
    hub.register(new_session("bob", 1, channel(64).0, Closer::default()))
        .unwrap();
    let (at, lines) = taken.recv().await.unwrap();
    assert_eq!(at - t0, DELAY);
    assert_eq!(
        kinds(&lines),
        [
            r#"{"type":"presence","user":"bob""#,
            r#"{"type":"device","user":"bob""#
        ]
    );
    // carol's go out at once with the message routed right after them.
    let t0 = Instant::now();
    hub.register(new_session("carol", 1, channel(64).0, Closer::default()))
        .unwrap();
    hub.route_conversation(
        &Conversation::All,
        &Bytes::from_static(b"{\"m\":1}\n"),
        None,
    );
    let (at, lines) = taken.recv().await.unwrap();
    assert_eq!(at, t0);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[2], r#"{"m":1}"#);
    // Without a flusher (stopped), they are queued like any other line.
    stop.cancel();
    flusher.await.unwrap();
    let t0 = Instant::now();
    hub.register(new_session("dave", 1, channel(64).0, Closer::default()))
        .unwrap();
    let (at, lines) = taken.recv().await.unwrap();
    assert_eq!((at, lines.len()), (t0, 2));
}

#[test]
fn full_queue_closes_only_the_slow_session() {
    let hub = Hub::new(4, 8);
    let (_s, mut rs, slow) = join(&hub, "slow", 1);
    let (_f, mut rf, fast) = join(&hub, "fast", 64);
    // fast saw nothing yet; slow's queue is now full with fast's join and device (one entry).
    let msg = ServerFrame::Notice { text: "x".into() };
    // The slow client frees its slot after each broadcast; once closed it must get
    // nothing more, or it would see a gap before its bye.
    let mut fed_after_close = 0;
    for _ in 0..10 {
        let was_closed = slow.is_closed();
        hub.broadcast(&msg, None);
        while rs.try_recv().is_ok() {
            if was_closed {
                fed_after_close += 1;
            }
        }
    }
    assert_eq!(
        slow.reason().as_deref(),
        Some("too slow: outbound queue full")
    );
    assert_eq!(fed_after_close, 0, "a closed session was still fed");
    assert!(fast.reason().is_none());
    let mut n = 0;
    while rf.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 10);
}

#[test]
fn session_cap_and_targeted_send() {
    let hub = Hub::new(2, 8);
    let (_a1, mut r1, _) = join(&hub, "alice", 8);
    let (_a2, mut r2, _) = join(&hub, "alice", 8);
    let _ = drain(&mut r1);
    let (tx, _rx) = channel(1);
    assert_eq!(
        hub.register(new_session("alice", 3, tx, Closer::default()))
            .err(),
        Some(HubError::TooManySessions(2))
    );
    let line = serialize(&ServerFrame::Notice { text: "hi".into() }).unwrap();
    let n = hub.route_conversation(&Conversation::pair("alice", "alice"), &line, None);
    assert_eq!(n, 2);
    assert!(r1.try_recv().is_ok() && r2.try_recv().is_ok());
    // Both alice sessions use device 0: the device is routed to both, once each.
    let line = Bytes::from_static(b"x\n");
    assert_eq!(
        hub.route_to_device(&device_of("alice", 0), &line, None),
        Routed::Online
    );
    assert!(r1.try_recv().is_ok() && r2.try_recv().is_ok());
    assert_eq!(
        hub.route_to_device(&device_of("bob", 0), &line, None),
        Routed::Unknown
    );
    assert_eq!(
        hub.close_device("alice", &device_of("alice", 9), "revoked"),
        0
    );
    assert_eq!(hub.close_user("alice", "kicked"), 2);
    assert_eq!(
        hub.session_count("alice"),
        2,
        "closing is the session's job"
    );
}

/// A hub with an offline writer channel; returns the job receiver.
pub(super) fn with_writer(hub: &Hub) -> mpsc::Receiver<OfflineJob> {
    let (tx, rx) = mpsc::channel(64);
    hub.attach_offline(tx);
    rx
}

#[test]
fn offline_members_get_jobs_in_order_and_login_lists_every_device() {
    let hub = Hub::new(4, 8);
    let mut jobs = with_writer(&hub);
    hub.set_known([
        (
            "bob".to_string(),
            device_of("bob", 1),
            "key-of-bob1".to_string(),
        ),
        (
            "carol".to_string(),
            device_of("carol", 1),
            "key-of-carol1".to_string(),
        ),
    ]);
    let (a, mut ra, _) = join(&hub, "alice", 8);
    let line = Bytes::from_static(b"to-all\n");
    // alice is online; bob and carol are registered but offline.
    let note = Notify {
        session: a,
        message: "m1".into(),
        conversation: "all".into(),
    };
    assert_eq!(
        hub.route_conversation(&Conversation::All, &line, Some(note.clone())),
        1
    );
    let job = jobs.try_recv().unwrap();
    assert_eq!(job.seq, 1);
    assert_eq!(job.notify, Some(note));
    let users: Vec<&str> = job.targets.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(users, ["bob", "carol"]);
    let pair = Conversation::pair("alice", "bob");
    hub.route_conversation(&pair, &Bytes::from_static(b"whisper\n"), None);
    let job = jobs.try_recv().unwrap();
    assert_eq!((job.seq, job.targets.len()), (2, 1));
    assert_eq!(job.targets[0], ("bob".to_string(), device_of("bob", 1)));
    // A chain for an offline device is stored too; an unknown device is not.
    assert_eq!(
        hub.route_to_device(&device_of("carol", 1), &line, None),
        Routed::Stored
    );
    assert_eq!(jobs.try_recv().unwrap().seq, 3);
    assert_eq!(
        hub.route_to_device(&device_of("dave", 1), &line, None),
        Routed::Unknown
    );
    assert!(jobs.try_recv().is_err());
    assert_eq!(hub.offline_seq(), 3);
    // Nobody offline in the conversation: no job.
    hub.route_conversation(&Conversation::pair("alice", "alice"), &line, None);
    assert!(jobs.try_recv().is_err());
    let _ = drain(&mut ra);
    // bob logs in: login_ok lists all three devices with their state; the offline event
    // and the removal reach alice.
    // A queue of one frame: a held line that does not fit waits for the writer's take.
    let (tx, mut rb) = channel(1);
    let mut new = new_session("bob", 1, tx, Closer::default());
    new.replay = true;
    let (b, seq) = hub.register(new).unwrap();
    assert_eq!(
        seq, 3,
        "every job routed before bob's login is numbered <= seq"
    );
    let ok = text(&rb.try_recv().unwrap());
    assert!(
        ok.contains(r#""user":"carol""#) && ok.contains(r#""online":false"#),
        "{ok}"
    );
    assert!(
        ok.contains("key-of-alice0") && ok.contains(r#""online":true"#),
        "{ok}"
    );
    // While bob replays, live lines wait in the hub, in order, then go to his queue.
    hub.route_conversation(&pair, &Bytes::from_static(b"live1\n"), None);
    hub.route_conversation(&pair, &Bytes::from_static(b"live2\n"), None);
    assert!(jobs.try_recv().is_err(), "bob is online: nothing stored");
    assert!(rb.try_recv().is_err(), "held during replay");
    assert!(
        !hub.end_replay(b),
        "one slot: one line moves, one stays held"
    );
    assert!(
        !hub.end_replay(b),
        "still full: nothing moves, nobody is closed"
    );
    assert_eq!(text(&rb.try_recv().unwrap()), "live1\n");
    assert!(hub.end_replay(b));
    assert_eq!(text(&rb.try_recv().unwrap()), "live2\n");
    hub.route_conversation(&pair, &Bytes::from_static(b"live3\n"), None);
    assert_eq!(text(&rb.try_recv().unwrap()), "live3\n");
    hub.forget_device("carol", &device_of("carol", 1));
    assert!(
        drain(&mut rb)
            .iter()
            .any(|l| l.contains(r#""event":"removed""#))
    );
    hub.route_conversation(&Conversation::All, &line, None);
    assert!(
        jobs.try_recv().is_err(),
        "a removed device gets nothing stored"
    );
}

#[test]
fn a_device_whose_sessions_are_closing_gets_lines_stored() {
    let hub = Hub::new(4, 8);
    let mut jobs = with_writer(&hub);
    let (_a, _ra, _) = join(&hub, "alice", 8);
    let (_b, _rb, bob) = join(&hub, "bob", 8);
    bob.close("too slow: outbound queue full");
    let pair = Conversation::pair("alice", "bob");
    assert_eq!(
        hub.route_conversation(&pair, &Bytes::from_static(b"x\n"), None),
        1
    );
    let job = jobs.try_recv().unwrap();
    assert_eq!(*job.targets, [("bob".to_string(), device_of("bob", 0))]);
    assert_eq!(
        hub.route_to_device(&device_of("bob", 0), &Bytes::from_static(b"c\n"), None),
        Routed::Stored
    );
    // The same for a message to everyone, whatever the last scan said.
    jobs.try_recv().unwrap();
    hub.route_conversation(&Conversation::All, &Bytes::from_static(b"a\n"), None);
    let job = jobs.try_recv().unwrap();
    assert_eq!(*job.targets, [("bob".to_string(), device_of("bob", 0))]);
}

#[test]
fn the_everyone_scan_is_redone_after_every_change() {
    let hub = Hub::new(4, 8);
    let mut jobs = with_writer(&hub);
    let all =
        |hub: &Hub| hub.route_conversation(&Conversation::All, &Bytes::from_static(b"x\n"), None);
    let (_a, _ra, _) = join(&hub, "alice", 64);
    let (b, _rb, _) = join(&hub, "bob", 64);
    all(&hub);
    assert!(jobs.try_recv().is_err(), "everyone online");
    hub.unregister(b, "quit");
    all(&hub);
    assert_eq!(jobs.try_recv().unwrap().targets[0].0, "bob");
    let (_b, _rb, _) = join(&hub, "bob", 64);
    all(&hub);
    assert!(jobs.try_recv().is_err(), "bob is back");
    hub.set_known([("carol".to_string(), device_of("carol", 0), "k".to_string())]);
    all(&hub);
    assert_eq!(jobs.try_recv().unwrap().targets[0].0, "carol");
    hub.forget_user("carol");
    all(&hub);
    assert!(jobs.try_recv().is_err(), "carol is gone");
}

#[test]
fn login_ok_is_byte_for_byte_the_protocol_frame() {
    let hub = Hub::new(4, 64);
    hub.set_known([
        (
            "b\"ob".to_string(),
            device_of("b\"ob", 0),
            "k\\1/é".to_string(),
        ),
        ("alice".to_string(), device_of("alice", 0), "k2".to_string()),
    ]);
    hub.room_created("lobby", Some("alice"), false);
    hub.room_joined("lobby", "alice");
    let _bob = join(&hub, "b\"ob", 4);
    let (tx, mut rx) = channel(4);
    hub.register(new_session("alice", 1, tx, Closer::default()))
        .unwrap();
    let line = text(&rx.try_recv().unwrap());
    let frame: ServerFrame = frame::decode(line.trim_end()).unwrap();
    let ServerFrame::LoginOk {
        online,
        devices,
        rooms,
        ..
    } = &frame
    else {
        panic!("not login_ok: {line}");
    };
    assert_eq!(online, &["alice", "b\"ob"]);
    assert_eq!(rooms.len(), 1, "{line}");
    let listed: Vec<_> = devices
        .iter()
        .map(|d| (d.user.as_str(), d.key.as_str(), d.online))
        .collect();
    assert_eq!(
        listed,
        [
            ("alice", "k2", false),
            ("alice", "key-of-alice1", true),
            ("b\"ob", "k\\1/é", true),
        ]
    );
    assert_eq!(text(&frame::encode(&frame).unwrap()), line);
}

#[test]
fn login_ok_comes_first_while_another_thread_broadcasts() {
    // login_ok is serialized after the hub lock is let go; what is routed meanwhile
    // must still reach the new session after it, in order, and none of it lost.
    const LOGINS: u64 = 50;
    const PER_LOGIN: u64 = 200;
    let hub = Arc::new(Hub::new(4, 1 << 16));
    hub.set_known((0..200u8).map(|n| {
        let user = format!("user{n}");
        let key = format!("key-of-{user}0");
        (user.clone(), device_of(&user, 0), key)
    }));
    // Logins and broadcasts take turns by the hundred, so they overlap throughout.
    let (sent, logged_in) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let broadcaster = {
        let (hub, sent, logged_in) = (Arc::clone(&hub), Arc::clone(&sent), Arc::clone(&logged_in));
        std::thread::spawn(move || {
            for n in 1..=(LOGINS + 1) * PER_LOGIN {
                while n > (logged_in.load(Ordering::Acquire) + 1) * PER_LOGIN {
                    std::thread::yield_now();
                }
                let line = Bytes::from(format!("{n}\n"));
                hub.route_conversation(&Conversation::All, &line, None);
                sent.store(n, Ordering::Release);
            }
        })
    };
    let mut sessions = Vec::new();
    for i in 0..LOGINS {
        while sent.load(Ordering::Acquire) < i * PER_LOGIN + PER_LOGIN / 2 {
            // A broadcaster that panicked fails the test instead of hanging it.
            assert!(!broadcaster.is_finished(), "the broadcaster stopped early");
            std::thread::yield_now();
        }
        let (tx, rx) = channel(1 << 15);
        let closer = Closer::default();
        hub.register(new_session(&format!("new{i}"), 0, tx, closer.clone()))
            .unwrap();
        logged_in.store(i + 1, Ordering::Release);
        sessions.push((rx, closer));
    }
    broadcaster.join().unwrap();
    for (mut rx, closer) in sessions {
        let lines = drain(&mut rx);
        assert!(lines[0].contains(r#""type":"login_ok""#), "{}", lines[0]);
        let numbers: Vec<u64> = lines[1..].iter().filter_map(|l| l.parse().ok()).collect();
        assert_eq!(numbers.last(), Some(&((LOGINS + 1) * PER_LOGIN)));
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert_eq!(closer.reason(), None);
    }
}

#[test]
fn a_replaying_session_that_holds_too_much_is_closed() {
    let hub = Hub::new(4, 2);
    let (tx, _rb) = channel(8);
    let closer = Closer::default();
    let mut new = new_session("bob", 1, tx, closer.clone());
    new.replay = true;
    let (_b, _) = hub.register(new).unwrap();
    let pair = Conversation::pair("alice", "bob");
    for _ in 0..3 {
        hub.route_conversation(&pair, &Bytes::from_static(b"x\n"), None);
    }
    assert_eq!(
        closer.reason().as_deref(),
        Some("too slow: outbound queue full")
    );
}

#[test]
fn vouches_go_only_to_sessions_that_asked_and_go_with_their_keys() {
    let hub = Hub::new(4, 8);
    let join_vouch = |user: &str, n: u8| {
        let (tx, mut rx) = channel(8);
        let new = NewSession {
            vouch: true,
            rekey: false,
            ..new_session(user, n, tx, Closer::default())
        };
        let (id, _) = hub.register(new).unwrap();
        let login_ok = text(&rx.try_recv().unwrap());
        (id, rx, login_ok)
    };
    let (_a, mut ra, _) = join_vouch("alice", 0);
    let (_c, mut rc, _) = join(&hub, "carol", 8);
    let (_b1, _rb1, _) = join_dev(&hub, "bob", 1, 8);
    let (b2, _rb2, _) = join_dev(&hub, "bob", 2, 8);
    drain(&mut ra);
    drain(&mut rc);
    let (d1, d2) = (device_of("bob", 1), device_of("bob", 2));

    // Neither a self-vouch nor one across users nor one for an unknown key is recorded.
    assert!(!hub.add_vouch("bob", &d1, &d1, "X".into()));
    assert!(!hub.add_vouch("bob", &device_of("alice", 0), &d1, "X".into()));
    assert!(!hub.add_vouch("bob", &device_of("bob", 9), &d1, "X".into()));
    assert!(drain(&mut ra).is_empty());

    assert!(hub.add_vouch("bob", &d2, &d1, "OLD".into()));
    assert!(hub.add_vouch("bob", &d2, &d1, "VOUCH".into()));
    let seen = drain(&mut ra);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1], r#"{"type":"vouch","user":"bob","data":"VOUCH"}"#);
    assert!(drain(&mut rc).is_empty(), "carol did not ask for vouches");

    // A new session that asked sees the latest vouch in login_ok; an old client does not.
    let (_a2, _ra2, login_ok) = join_vouch("alice", 1);
    assert!(login_ok.contains(r#""vouches":["VOUCH"]"#), "{login_ok}");
    assert!(!login_ok.contains("OLD"));
    drain(&mut ra);
    drain(&mut rc);
    let (_c2, _rc2, _) = join_dev(&hub, "carol", 5, 8);
    drain(&mut ra);

    // bob's device 2 comes online again: its vouches travel with it, to those who asked.
    hub.unregister(b2, "quit");
    drain(&mut ra);
    drain(&mut rc);
    let (_b2, _rb2, _) = join_dev(&hub, "bob", 2, 8);
    let seen = drain(&mut ra);
    assert!(
        seen[0].contains(r#""event":"online""#) && seen[0].contains(r#""vouches":["VOUCH"]"#),
        "{seen:?}"
    );
    let seen = drain(&mut rc);
    assert!(seen[0].contains(r#""event":"online""#) && !seen[0].contains("vouches"));

    // Revoking the voucher takes its vouches with it.
    hub.forget_device("bob", &d1);
    let (_a3, _ra3, login_ok) = join_vouch("alice", 2);
    assert!(!login_ok.contains("VOUCH"), "{login_ok}");
    assert!(!hub.add_vouch("bob", &d2, &d1, "LATE".into()));
}
