//! Hostile clients against logins (issue 26, items 3 and 4): guesses at an account from twelve
//! addresses must not keep its owner out when the owner's device proves itself, and a crowd of
//! never-finished handshakes at the connection cap must not keep the real `chat` out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use chatd_proto::Fingerprint;
use chatd_proto::e2e::{DeviceKey, LoginChallenge};
use serde_json::{Value, json};

use crate::harness::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The challenge of a server `hello`, decoded.
fn challenge_of(hello: &Value) -> [u8; 32] {
    let text = hello["challenge"]
        .as_str()
        .unwrap_or_else(|| panic!("no challenge in {hello}"));
    B64.decode(text)
        .expect("base64 challenge")
        .try_into()
        .expect("a 32-byte challenge")
}

/// `key`'s proof for `user` over `challenge` on `server`, base64.
fn proof(key: &DeviceKey, challenge: &[u8; 32], user: &str, server: &Server) -> String {
    let fp: Fingerprint = server.fingerprint.parse().expect("server fingerprint");
    let signed = LoginChallenge {
        challenge,
        user,
        server: &fp,
    };
    B64.encode(signed.sign(key).expect("sign the proof"))
}

/// A connection from 127.0.0.1 that said hello asking for `keyproof`; its server hello.
fn keyproof_hello(server: &Server) -> (Raw, Value) {
    let mut raw = Raw::connect(server);
    raw.send(json!({"type": "hello", "version": 2, "client": "e2e", "features": ["keyproof"]}));
    let hello = raw.recv_type("hello");
    assert!(
        hello["features"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "keyproof")),
        "{hello}"
    );
    (raw, hello)
}

/// Sends `login` as `user` presenting `key`, with `proof` if given; returns the answer.
fn login_with(
    raw: &mut Raw,
    user: &str,
    password: &str,
    key: &DeviceKey,
    proof: Option<String>,
) -> Value {
    let mut login = json!({
        "type": "login", "user": user, "password": password, "device_key": key_b64(key),
    });
    if let Some(proof) = proof {
        login["proof"] = Value::String(proof);
    }
    raw.send(login);
    raw.recv()
}

/// A login of `user` from 127.0.0.1 proven by `key`; the answer and how long it took from the
/// TCP connect on.
fn proven_login(server: &Server, user: &str, password: &str, key: &DeviceKey) -> (Value, Duration) {
    let start = Instant::now();
    let (mut raw, hello) = keyproof_hello(server);
    let proof = proof(key, &challenge_of(&hello), user, server);
    let answer = login_with(&mut raw, user, password, key, Some(proof));
    let took = start.elapsed();
    raw.send(json!({"type": "quit"}));
    (answer, took)
}

/// What the guessing attackers were told.
#[derive(Default)]
struct Seen {
    guesses: AtomicU64,
    wrong: AtomicU64,
    account_wait: AtomicU64,
    address_wait: AtomicU64,
}

/// Attacker `n` guesses `user`'s password on the server at `addr` until `stop`, a guess every
/// 50 ms.
fn guess(addr: SocketAddr, fp: &str, n: u8, user: &str, stop: &AtomicBool, seen: &Seen) {
    while !stop.load(Ordering::Relaxed) {
        let mut raw = Raw::connect_to_from(addr, attacker(n), fp);
        raw.hello();
        // chatd closes a connection after max_login_failures (3): a new one for each three.
        for i in 0..3 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let answer = login_with(
                &mut raw,
                user,
                &format!("guess{n}-{i}"),
                &test_key(user),
                None,
            );
            seen.guesses.fetch_add(1, Ordering::Relaxed);
            let message = answer["message"].as_str().unwrap_or_default();
            match answer["code"].as_str() {
                Some("invalid_credentials") => &seen.wrong,
                Some("rate_limited") if message.contains("for this account") => &seen.account_wait,
                Some("rate_limited") => &seen.address_wait,
                _ => panic!("attacker {n} got {answer}"),
            }
            .fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[test]
fn guesses_from_twelve_addresses_do_not_keep_a_proven_device_out() {
    const T: &str = "logins_guessing";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(dir.path(), "");
    server.add_user("alice", "right");
    let alice = test_key("alice");
    // The device registers its key with a first, quiet login (the real chat: the same key).
    let home = ClientHome::new();
    Chat::login(&server, "alice", "right", &home).kill();

    let watch = RssWatch::start(&server);
    let baseline = watch.baseline;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let attackers: Vec<_> = (1..=12u8)
        .map(|n| {
            let (stop, seen) = (stop.clone(), seen.clone());
            let (addr, fp) = (server.addr, server.fingerprint.clone());
            std::thread::spawn(move || guess(addr, &fp, n, "alice", &stop, &seen))
        })
        .collect();
    // The account's wait is in force once the guessers are told so.
    let deadline = Instant::now() + TIMEOUT;
    while seen.account_wait.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the guesses never locked the account"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The owner's device, proving itself: in every try, at once.
    let mut times = Vec::new();
    for _ in 0..8 {
        let (answer, took) = proven_login(&server, "alice", "right", &alice);
        assert_eq!(
            answer["type"], "login_ok",
            "a proven login was held up: {answer}"
        );
        times.push(took);
        std::thread::sleep(Duration::from_millis(200));
    }
    // The real chat, which proves itself when the server offers it.
    for _ in 0..2 {
        let start = Instant::now();
        let chat = Chat::login(&server, "alice", "right", &home);
        times.push(start.elapsed());
        chat.kill();
    }

    // Unknown devices and old clients still wait: the right password without a proof ...
    let mut plain = Raw::connect(&server);
    plain.hello();
    let refused = login_with(&mut plain, "alice", "right", &alice, None);
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("for this account"),
        "{refused}"
    );
    // ... a proof by another key than the one presented ...
    let (mut wrong_key, hello) = keyproof_hello(&server);
    let forged = proof(&test_key("bob"), &challenge_of(&hello), "alice", &server);
    let refused_wrong_key = login_with(&mut wrong_key, "alice", "right", &alice, Some(forged));
    assert_eq!(
        refused_wrong_key["code"], "rate_limited",
        "{refused_wrong_key}"
    );
    // ... a proof over another connection's challenge ...
    let (_first, first_hello) = keyproof_hello(&server);
    let (mut second, _) = keyproof_hello(&server);
    let replayed = proof(&alice, &challenge_of(&first_hello), "alice", &server);
    let refused_replay = login_with(&mut second, "alice", "right", &alice, Some(replayed));
    assert_eq!(refused_replay["code"], "rate_limited", "{refused_replay}");
    // ... and a valid proof by a device key the account never registered.
    let stranger = test_key("alice-new-laptop");
    let (mut new_device, hello) = keyproof_hello(&server);
    let valid = proof(&stranger, &challenge_of(&hello), "alice", &server);
    let refused_new = login_with(&mut new_device, "alice", "right", &stranger, Some(valid));
    assert_eq!(refused_new["code"], "rate_limited", "{refused_new}");

    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().expect("an attacker thread failed");
    }
    let grew = watch.finish();
    let (after, settled) = settle(&server, baseline, 0.10, Duration::from_secs(30));

    let mut sorted = times.clone();
    sorted.sort();
    figure(T, "attacker addresses", 12);
    figure(T, "guesses sent", seen.guesses.load(Ordering::Relaxed));
    figure(
        T,
        "guesses refused as wrong (argon2id run)",
        seen.wrong.load(Ordering::Relaxed),
    );
    figure(
        T,
        "guesses told the account waits",
        seen.account_wait.load(Ordering::Relaxed),
    );
    figure(
        T,
        "guesses told their address waits",
        seen.address_wait.load(Ordering::Relaxed),
    );
    figure(
        T,
        "proven logins (8 raw + 2 real chat)",
        format!("{} of {} logged in", times.len(), times.len()),
    );
    figure(
        T,
        "proven login time median",
        format!("{:?}", percentile(&sorted, 50)),
    );
    figure(
        T,
        "proven login time max",
        format!("{:?}", sorted[sorted.len() - 1]),
    );
    figure(
        T,
        "unproven / wrong-key / replayed / unknown-device login",
        "rate_limited (account wait) each",
    );
    figure(T, "RSS growth during the attack (MB)", format!("{grew:.1}"));
    figure(
        T,
        "RSS after vs baseline (MB), settled in",
        format!("{:.1} vs {:.1}, {settled:?}", mb(after), mb(baseline)),
    );
    for t in &times {
        assert!(
            *t < Duration::from_secs(2),
            "a proven login took {t:?}: {times:?}"
        );
    }
    assert!(grew <= 50.0, "RSS grew {grew:.1} MB");
    assert!(
        after as f64 <= baseline as f64 * 1.10,
        "RSS {after} KiB vs baseline {baseline} KiB"
    );
}

/// Holds a never-finished handshake from `from` to `addr` until `stop`: connect, send
/// nothing, and when chatd closes it, connect again at once.
async fn hold_open(
    addr: SocketAddr,
    from: std::net::IpAddr,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
) {
    use tokio::io::AsyncReadExt;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = chatd_testkit::tcp_from(addr, Some(from)).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let mut byte = [0u8; 1];
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut byte)).await {
                Err(_) => continue,
                Ok(_) => break,
            }
        }
        closed.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn forty_addresses_of_unfinished_handshakes_at_the_cap_do_not_keep_chat_out() {
    const T: &str = "logins_slots";
    const CAP: usize = 80;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(
        dir.path(),
        &format!(
            "max_connections = {CAP}\nmax_connections_per_ip = 2\nhandshake_timeout_secs = 10"
        ),
    );
    server.add_user("alice", "pw");
    let home = ClientHome::new();
    Chat::login(&server, "alice", "pw", &home).kill();

    let watch = RssWatch::start(&server);
    let baseline = watch.baseline;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let crowd = {
        let (stop, opened, closed) = (stop.clone(), opened.clone(), closed.clone());
        let addr = server.addr;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let tasks: Vec<_> = (0..CAP)
                    .map(|i| {
                        let from = attacker(1 + (i % 40) as u8);
                        tokio::spawn(hold_open(
                            addr,
                            from,
                            stop.clone(),
                            opened.clone(),
                            closed.clone(),
                        ))
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };
    let deadline = Instant::now() + TIMEOUT;
    while opened.load(Ordering::Relaxed) < CAP as u64 {
        assert!(Instant::now() < deadline, "the crowd never reached the cap");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let closed_before = closed.load(Ordering::Relaxed);

    // The real chat, several times, while the crowd keeps every slot taken.
    let mut times = Vec::new();
    for _ in 0..4 {
        let start = Instant::now();
        let chat = Chat::login(&server, "alice", "pw", &home);
        times.push(start.elapsed());
        chat.kill();
        std::thread::sleep(Duration::from_millis(300));
    }
    let evicted = closed.load(Ordering::Relaxed) - closed_before;

    stop.store(true, Ordering::Relaxed);
    crowd.join().expect("the crowd thread failed");
    let grew = watch.finish();
    let (after, settled) = settle(&server, baseline, 0.10, Duration::from_secs(30));

    figure(
        T,
        "connection cap (max_connections), attacker addresses",
        format!("{CAP}, 40"),
    );
    figure(
        T,
        "unfinished handshakes opened",
        opened.load(Ordering::Relaxed),
    );
    figure(
        T,
        "unfinished handshakes closed to make room while chat logged in",
        evicted,
    );
    figure(
        T,
        "real chat logins",
        format!("{} of {}", times.len(), times.len()),
    );
    figure(T, "real chat login times", format!("{times:?}"));
    figure(T, "RSS growth during the attack (MB)", format!("{grew:.1}"));
    figure(
        T,
        "RSS after vs baseline (MB), settled in",
        format!("{:.1} vs {:.1}, {settled:?}", mb(after), mb(baseline)),
    );
    assert!(
        evicted >= 1,
        "chat got in without closing anyone's connection: was the server full?"
    );
    assert!(grew <= 50.0, "RSS grew {grew:.1} MB");
    assert!(
        after as f64 <= baseline as f64 * 1.10,
        "RSS {after} KiB vs baseline {baseline} KiB"
    );
}

/// Attackers `first..first + 12` each open `per` connections and send one login for an
/// account that does not exist, all at once: each costs chatd an argon2id hash.
fn hash_flood(
    addr: SocketAddr,
    fp: &str,
    first: u8,
    per: usize,
) -> Vec<std::thread::JoinHandle<u64>> {
    (first..first + 12)
        .map(|n| {
            let fp = fp.to_string();
            std::thread::spawn(move || {
                let mut conns: Vec<Raw> = (0..per)
                    .map(|i| {
                        let mut raw = Raw::connect_to_from(addr, attacker(n), &fp);
                        raw.send(json!({"type": "hello", "version": 2, "client": "flood"}));
                        let user = format!("nobody{n}x{i}");
                        let key = test_key("alice-new-laptop");
                        raw.send(json!({
                            "type": "login", "user": user, "password": "guess",
                            "device_key": key_b64(&key),
                        }));
                        raw
                    })
                    .collect();
                let mut hashed = 0;
                for raw in &mut conns {
                    raw.recv_type("hello");
                    if raw.recv()["code"] == "invalid_credentials" {
                        hashed += 1;
                    }
                }
                hashed
            })
        })
        .collect()
}

#[test]
fn a_flood_of_password_hashes_does_not_starve_a_proven_login() {
    const T: &str = "logins_hash_flood";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(dir.path(), "");
    server.add_user("alice", "right");
    server.add_user("bob", "pw");
    let alice = test_key("alice");
    Raw::login(&server, "alice", "right").send(json!({"type": "quit"}));
    let watch = RssWatch::start(&server);
    let baseline = watch.baseline;
    let mut figures = Vec::new();
    for (round, first) in [1u8, 13].into_iter().enumerate() {
        let flood = hash_flood(server.addr, &server.fingerprint, first, 10);
        // Let the flood's logins reach the hashing queue first.
        std::thread::sleep(Duration::from_millis(300));
        let (addr, fp) = (server.addr, server.fingerprint.clone());
        let unproven = std::thread::spawn(move || {
            let start = Instant::now();
            let mut raw = Raw::connect_to(addr, &fp);
            raw.hello();
            let answer = login_with(&mut raw, "bob", "pw", &test_key("bob"), None);
            assert_eq!(answer["type"], "login_ok", "{answer}");
            start.elapsed()
        });
        let (answer, proven) = proven_login(&server, "alice", "right", &alice);
        assert_eq!(answer["type"], "login_ok", "{answer}");
        let unproven = unproven.join().expect("bob's login");
        let hashed: u64 = flood.into_iter().map(|t| t.join().expect("flood")).sum();
        figures.push((round + 1, hashed, proven, unproven));
    }
    let grew = watch.finish();
    let (after, settled) = settle(&server, baseline, 0.10, Duration::from_secs(30));
    for (round, hashed, proven, unproven) in &figures {
        figure(
            T,
            &format!("round {round}: flood hashes / proven login / unproven login meanwhile"),
            format!("{hashed} / {proven:?} / {unproven:?}"),
        );
    }
    figure(T, "RSS growth during the flood (MB)", format!("{grew:.1}"));
    figure(
        T,
        "RSS after vs baseline (MB), settled in",
        format!("{:.1} vs {:.1}, {settled:?}", mb(after), mb(baseline)),
    );
    for (_, _, proven, _) in &figures {
        assert!(
            *proven < Duration::from_secs(2),
            "a proven login took {proven:?}"
        );
    }
    assert!(grew <= 50.0, "RSS grew {grew:.1} MB");
    assert!(
        after as f64 <= baseline as f64 * 1.10,
        "RSS {after} KiB vs baseline {baseline} KiB"
    );
}

#[test]
fn chat_waits_for_a_server_full_of_sessions_and_says_so() {
    const T: &str = "logins_full_of_sessions";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(
        dir.path(),
        "max_connections = 1\nevict_unfinished_after_ms = 0",
    );
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    // The only slot holds a logged-in session, which is never closed to make room.
    let mut bob = Raw::login(&server, "bob", "pw");
    let start = Instant::now();
    let home = ClientHome::new();
    let mut chat = Chat::spawn(
        &server.server_arg(),
        "alice",
        "pw",
        &home,
        &["--accept-fingerprint", &server.fingerprint],
    );
    let said = chat.err.expect_contains("chat: waiting for ");
    let waited_before_saying = start.elapsed();
    assert!(said.contains("(TLS handshake, up to 30 s)"), "{said}");
    std::thread::sleep(Duration::from_secs(1));
    // bob is still there: the full server closed nobody for chat.
    bob.sync(1);
    bob.send(json!({"type": "quit"}));
    chat.out.expect_contains("-- logged in as alice; online: ");
    let logged_in = start.elapsed();
    figure(
        T,
        "chat said what it waits for after",
        format!("{waited_before_saying:?}: {said}"),
    );
    figure(
        T,
        "chat logged in once the session ended, after",
        format!("{logged_in:?}"),
    );
    let said_again = chat
        .err
        .all()
        .iter()
        .filter(|l| l.contains("waiting for"))
        .count();
    assert_eq!(said_again, 1, "said once, not on every tick");
}
