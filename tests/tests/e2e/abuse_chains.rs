//! Hostile senders of wrapped chains (issue 26, item 1): the chain budgets at their edges (per
//! session, per account, per recipient device), junk chains at an online user and at an
//! offline one, a big flood with chatd's memory, log and logins watched, the real `chat`
//! staying inside the defaults in normal use, and the offline writer's bounded queue.
//!
//! Attackers log in from their own loopback addresses ([`attacker`]) and write chains in
//! bulk without waiting, reconnecting whenever chatd closes them; each test prints its
//! figures (`-- --nocapture | grep FIGURE`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::e2e::{DeviceKey, SenderChain, wrap_chain};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::harness::{
    Chat, ClientHome, Raw, RssWatch, Server, attacker, figure, key_b64, loopback0, mb, rss_kib,
    settle, test_key,
};

/// The attackers' device key (one, shared by their accounts: generating keys is slow).
fn mallory_key() -> DeviceKey {
    test_key("mallory")
}

/// A `chain` frame (one line) from `user` with `key`, for the device whose public key is
/// `to`'s test key.
fn chain_line(user: &str, key: &DeviceKey, to: &DeviceKey) -> String {
    let w = wrap_chain(&SenderChain::new().unwrap(), key, user, "all", &to.public()).unwrap();
    format!(
        "{}\n",
        json!({"type":"chain","data":w.to_base64().unwrap()})
    )
}

/// [`chain_line`] readdressed to a made-up device `n` (its header's recipient patched; chatd
/// reads only the clear header, so this is a chain for a device that does not exist).
fn chain_to_nobody(user: &str, key: &DeviceKey, n: u32) -> String {
    let via = test_key("bob");
    let w = wrap_chain(
        &SenderChain::new().unwrap(),
        key,
        user,
        "all",
        &via.public(),
    )
    .unwrap();
    let mut bytes = w.encode().unwrap();
    let fp = via.fingerprint();
    let at = bytes
        .windows(32)
        .position(|w| w == fp.as_bytes())
        .expect("recipient in the header");
    bytes[at..at + 4].copy_from_slice(&n.to_le_bytes());
    bytes[at + 4] ^= 0x5a;
    format!("{}\n", json!({"type":"chain","data":BASE64.encode(&bytes)}))
}

/// Logs in as `user` with `key` from `source` (a raw client, reading synchronously).
fn login_with(
    server: &Server,
    source: Option<IpAddr>,
    user: &str,
    pw: &str,
    key: DeviceKey,
) -> Raw {
    let mut raw = match source {
        Some(ip) => Raw::connect_from(server, ip),
        None => Raw::connect(server),
    };
    raw.hello();
    raw.key = Some(key);
    let ok = raw.try_login(user, pw);
    assert_eq!(ok["type"], "login_ok", "{ok}");
    raw
}

/// Every frame up to the pong for `nonce` (sent now), the pong excluded.
fn until_pong(raw: &mut Raw, nonce: u64) -> Vec<Value> {
    raw.send(json!({"type":"ping","nonce":nonce}));
    let mut out = Vec::new();
    loop {
        let f = raw.recv();
        if f["type"] == "pong" && f["nonce"] == nonce {
            return out;
        }
        out.push(f);
    }
}

fn of_type<'a>(frames: &'a [Value], ty: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == ty).collect()
}

#[test]
fn chain_and_message_budgets_hold_at_their_edges_per_session_account_and_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(
        dir.path(),
        "messages_per_sec = 1\nmessage_burst = 2\naccount_messages_per_sec = 1\n\
         account_message_burst = 3\nchains_per_sec = 1\nchain_burst = 4\n\
         account_chains_per_sec = 1\naccount_chain_burst = 6\ndevice_chains_per_sec = 1\n\
         device_chain_burst = 3\nmax_rate_violations = 3",
    );
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    let mut bob = Raw::login(&server, "bob", "pw-b");
    let mut carol = Raw::login(&server, "carol", "pw-c");
    let mut a1 = Raw::login(&server, "alice", "pw-a");
    let mut a2 = Raw::login(&server, "alice", "pw-a");
    let alice = test_key("alice");
    let to_bob = chain_line("alice", &alice, &test_key("bob"));
    let to_carol = chain_line("alice", &alice, &test_key("carol"));
    let to_nobody = chain_to_nobody("alice", &alice, 1);
    let pings = |n: u64| -> String {
        (0..n)
            .map(|i| format!("{}\n", json!({"type":"ping","nonce":100 + i})))
            .collect()
    };

    // Messages: two per session, three per account. a1 takes two; a2 gets one more, then
    // the account says no.
    a1.send_raw(pings(2).as_bytes());
    a1.recv_type("pong");
    a1.recv_type("pong");
    a2.send_raw(pings(2).as_bytes());
    a2.recv_type("pong");
    let why = a2.expect_error("rate_limited");
    assert!(
        why.contains("your sessions together may send 1 messages"),
        "{why}"
    );

    // Chains to one device: three, then refused for that device.
    a1.send_raw(to_bob.repeat(4).as_bytes());
    let why = a1.expect_error("rate_limited");
    assert!(
        why.contains("chains per second to one device (bursts of 3)"),
        "{why}"
    );
    // The session's fourth chain goes (to another device); its fifth is over its own burst.
    a1.send_raw(to_carol.repeat(2).as_bytes());
    let why = a1.expect_error("rate_limited");
    assert!(
        why.contains("the limit is 1 chains per second (bursts of 4,"),
        "{why}"
    );
    // The account's burst of six: alice's other session has two left.
    a2.send_raw(to_nobody.repeat(3).as_bytes());
    let why = a2.expect_error("rate_limited");
    assert!(
        why.contains("your sessions together may send 1 chains"),
        "{why}"
    );
    // Refused frames in a row end the session (max_rate_violations = 3 counts this one).
    a2.send_raw(to_nobody.repeat(2).as_bytes());
    a2.expect_error("rate_limited");
    a2.expect_bye("too many messages: rate limit exceeded repeatedly");

    let at_bob = until_pong(&mut bob, 1);
    let at_carol = until_pong(&mut carol, 1);
    assert_eq!(of_type(&at_bob, "chain").len(), 3, "{at_bob:?}");
    assert_eq!(of_type(&at_carol, "chain").len(), 1, "{at_carol:?}");
    // a1 is still there, once a message token has come back.
    std::thread::sleep(Duration::from_millis(1100));
    a1.sync(7);
}

/// What the attackers' readers saw.
#[derive(Default)]
struct Tally {
    rate_limited: AtomicU64,
    queue_full: AtomicU64,
    logins: AtomicU64,
}

const PING: &[u8] = b"{\"type\":\"ping\",\"nonce\":1}\n";

/// One attacker: logs in as `m{n}` from [`attacker`]`(n)` and writes `batch` (`per_batch`
/// chain lines, then a ping) and waits for the pong, over and over, logging in again
/// whenever chatd closes it, until it wrote `quota` chains or `stop` is set. Waiting for
/// the pong means chatd read each batch (but the one it closed the session in) instead
/// of letting it pile up in socket buffers. Returns the chains written.
async fn attack(
    target: (std::net::SocketAddr, String),
    n: u8,
    batch: Arc<Vec<u8>>,
    per_batch: u64,
    quota: u64,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> u64 {
    let (addr, fingerprint) = target;
    let key = key_b64(&mallory_key());
    let connector = chatd_testkit::connector(fingerprint.parse().unwrap()).unwrap();
    let mut with_ping = batch.to_vec();
    with_ping.extend_from_slice(PING);
    let mut written = 0;
    while !stop.load(Ordering::Relaxed) && written < quota {
        let connect = chatd_testkit::connect_from(addr, Some(attacker(n)), &connector);
        let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(10), connect).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let login = chatd_testkit::log_in(
            &mut tls,
            chatd_testkit::hello("e2e", false),
            chatd_testkit::login(&format!("m{n}"), "pw-m", &key),
        );
        if !matches!(
            tokio::time::timeout(Duration::from_secs(10), login).await,
            Ok(Ok(_))
        ) {
            continue;
        }
        tally.logins.fetch_add(1, Ordering::Relaxed);
        let (r, mut w) = tokio::io::split(tls);
        let (t, pongs) = (Arc::clone(&tally), Arc::new(AtomicU64::new(0)));
        let p = Arc::clone(&pongs);
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await
            {
                if line.starts_with("{\"type\":\"pong\"") {
                    p.fetch_add(1, Ordering::Relaxed);
                } else if line.contains("\"rate_limited\"") {
                    t.rate_limited.fetch_add(1, Ordering::Relaxed);
                } else if line.contains("\"offline_queue_full\"") {
                    t.queue_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        while !stop.load(Ordering::Relaxed) && written < quota {
            let before = pongs.load(Ordering::Relaxed);
            let wrote = tokio::time::timeout(Duration::from_secs(5), w.write_all(&with_ping)).await;
            if !matches!(wrote, Ok(Ok(()))) {
                break;
            }
            written += per_batch;
            let waited = Instant::now();
            while pongs.load(Ordering::Relaxed) == before
                && !reader.is_finished()
                && waited.elapsed() < Duration::from_secs(10)
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if reader.is_finished() {
                // Closed by chatd (flooding): log in again and go on.
                break;
            }
        }
        let _ = w.shutdown().await;
        reader.abort();
    }
    written
}

/// Attackers m1..m{n} under way on their own runtime (see [`attack`]).
struct Attack {
    tally: Arc<Tally>,
    thread: std::thread::JoinHandle<u64>,
}

impl Attack {
    /// Starts one attacker per batch (the first is m1) writing until `total` chains are
    /// written among them, or `limit` passes.
    fn start(
        server: &Server,
        batches: Vec<Vec<u8>>,
        per_batch: u64,
        total: u64,
        limit: Duration,
    ) -> Attack {
        let target = (server.addr, server.fingerprint.clone());
        let tally = Arc::new(Tally::default());
        let t = Arc::clone(&tally);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let quota = total.div_ceil(batches.len() as u64);
                let stop = Arc::new(AtomicBool::new(false));
                let tasks: Vec<_> = batches
                    .into_iter()
                    .zip(1u8..)
                    .map(|(batch, n)| {
                        tokio::spawn(attack(
                            target.clone(),
                            n,
                            Arc::new(batch),
                            per_batch,
                            quota,
                            Arc::clone(&stop),
                            Arc::clone(&t),
                        ))
                    })
                    .collect();
                let s = Arc::clone(&stop);
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(limit).await;
                    s.store(true, Ordering::Relaxed);
                });
                let mut written = 0;
                for task in tasks {
                    written += task.await.unwrap_or(0);
                }
                timer.abort();
                written
            })
        });
        Attack { tally, thread }
    }

    /// Waits for the attackers to finish; the chains they wrote.
    fn finish(self) -> (u64, Arc<Tally>) {
        (self.thread.join().unwrap(), self.tally)
    }
}

/// Adds attacker accounts m1..=m`n` (they share [`mallory_key`]).
fn add_attackers(server: &Server, n: u8) {
    for i in 1..=n {
        server.add_user(&format!("m{i}"), "pw-m");
    }
}

/// `n` copies of `line(user)` for attackers m1..m{accounts}, one batch each.
fn batches(accounts: u8, n: usize, line: impl Fn(&str) -> String) -> Vec<Vec<u8>> {
    (1..=accounts)
        .map(|i| line(&format!("m{i}")).repeat(n).into_bytes())
        .collect()
}

#[test]
fn junk_chains_at_an_online_user_leave_them_connected_and_receiving() {
    let t = "junk_chains_online";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), loopback0());
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b")] {
        server.add_user(u, p);
    }
    add_attackers(&server, 6);
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    let _ = until_pong(&mut alice, 1);
    let _ = until_pong(&mut bob, 1);
    // bob reads all along, until alice's last line.
    let reader = std::thread::spawn(move || {
        let (mut chains, mut real) = (0usize, Vec::new());
        loop {
            let f = bob.recv();
            match f["type"].as_str() {
                Some("chain") => chains += 1,
                Some("envelope") if f["from"] == "alice" => {
                    real.push(f["data"].as_str().unwrap_or_default().to_string());
                    if real.len() == 21 {
                        return (bob, chains, real);
                    }
                }
                _ => {}
            }
        }
    });
    let mallory = mallory_key();
    let bob_key = test_key("bob");
    let per_batch = 50;
    let total = 3000;
    let started = Instant::now();
    let attack = Attack::start(
        &server,
        batches(6, per_batch, |m| chain_line(m, &mallory, &bob_key)),
        per_batch as u64,
        total,
        Duration::from_secs(25),
    );
    // Meanwhile alice whispers to bob.
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(alice.whisper("bob", &format!("real {i}")));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (written, tally) = attack.finish();
    let secs = started.elapsed().as_secs_f64();
    sent.push(alice.whisper("bob", "the last one"));
    let (mut bob, chains, got) = reader.join().unwrap();
    figure(t, "junk chains written (6 attacker accounts)", written);
    figure(t, "attack seconds", format!("{secs:.1}"));
    figure(t, "attacker logins", tally.logins.load(Ordering::Relaxed));
    figure(
        t,
        "rate_limited refusals read by the attackers",
        tally.rate_limited.load(Ordering::Relaxed),
    );
    figure(t, "junk chains that reached bob", chains);
    figure(
        t,
        "alice's whispers bob received",
        format!("{} of {}", got.len(), sent.len()),
    );
    assert!(written >= total, "the attack ran short: {written}");
    assert_eq!(got, sent, "bob missed or reordered real messages");
    // Per account to one device: a burst of 100, then 1 a second.
    let bound = 6 * (100 + secs.ceil() as usize + 1);
    assert!(
        chains <= bound,
        "{chains} junk chains reached bob (bound {bound})"
    );
    bob.sync(9);
}

#[test]
fn junk_chains_at_an_offline_user_leave_room_for_everyone_else() {
    let t = "junk_chains_offline";
    let dir = tempfile::tempdir().unwrap();
    // The per-device chain budget is opened wide: the share of the queue must hold by itself.
    let server = Server::with_limits(
        dir.path(),
        // The writer's queue holds the whole burst, so only the share refuses (a loaded host
        // could otherwise fill it first: that refusal is abuse_chains' offline_writer_queue).
        "device_chains_per_sec = 100000\ndevice_chain_burst = 100000\noffline_jobs_max = 4096",
    );
    for (u, p) in [("alice", "pw-a"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    add_attackers(&server, 1);
    // carol registers her device, then goes offline.
    let mut carol = Raw::login(&server, "carol", "pw-c");
    carol.send(json!({"type":"quit"}));
    let _ = carol.recv_until_closed();
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let _ = until_pong(&mut alice, 1);
    let carol_key = test_key("carol");
    let mallory = mallory_key();
    // 1200 chains at carol's device, past offline_queue_max (1000): her share (half) is
    // stored, the rest refused, each with a reason.
    let sent = 1200;
    let mut m = login_with(&server, Some(attacker(1)), "m1", "pw-m", mallory.clone());
    m.send_raw(
        chain_line("m1", &mallory, &carol_key)
            .repeat(sent)
            .as_bytes(),
    );
    let mut refused = 0;
    while refused < 700 {
        let f = m.recv();
        if f["type"] == "error" {
            assert_eq!(f["code"], "offline_queue_full", "{f}");
            let why = f["message"].as_str().unwrap_or_default();
            assert!(why.contains("500 of your messages already wait"), "{why}");
            refused += 1;
        }
    }
    m.sync(5);
    // A real whisper from someone else is still stored, and acknowledged.
    let data = alice.whisper("carol", "still room for me");
    let held = loop {
        let f = alice.recv();
        assert_ne!(f["type"], "error", "{f}");
        if f["type"] == "held" {
            break f;
        }
    };
    assert_eq!(held["users"], json!(["carol"]), "{held}");
    // carol logs in: the attackers' share, then alice's whisper.
    let started = Instant::now();
    let mut carol = Raw::login(&server, "carol", "pw-c");
    let login = started.elapsed();
    let (mut chains, mut whisper) = (0, false);
    while !whisper {
        let f = carol.recv();
        match f["type"].as_str() {
            Some("chain") => chains += 1,
            Some("envelope") => {
                assert_eq!(f["data"], data.as_str(), "{f}");
                whisper = true;
            }
            _ => {}
        }
    }
    figure(t, "junk chains sent at offline carol (1 account)", sent);
    figure(
        t,
        "refused for the senders' share (offline_queue_full)",
        refused,
    );
    figure(t, "junk chains stored for carol", chains);
    figure(
        t,
        "alice's whisper held and delivered at carol's login",
        whisper,
    );
    figure(t, "carol's login with the backlog, ms", login.as_millis());
    assert_eq!(chains, 500, "the attacker stores its share (500), no more");
}

#[test]
fn a_chain_flood_costs_bounded_memory_and_log_and_logins_stay_fast() {
    let t = "chain_flood";
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), loopback0());
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    let accounts = 8;
    add_attackers(&server, accounts);
    let mut carol = Raw::login(&server, "carol", "pw-c");
    carol.send(json!({"type":"quit"}));
    let _ = carol.recv_until_closed();
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let mut bob = Raw::login(&server, "bob", "pw-b");
    let _ = until_pong(&mut alice, 1);
    let _ = until_pong(&mut bob, 1);
    drop(alice);
    // bob reads all along.
    let reader = std::thread::spawn(move || {
        let mut real = 0;
        while real < 2 {
            let f = bob.recv();
            if f["type"] == "envelope" && f["from"] == "alice" {
                real += 1;
            }
        }
        bob
    });
    let (mallory, bob_key, carol_key) = (mallory_key(), test_key("bob"), test_key("carol"));
    // Each batch: 10 chains at bob (online), 10 at carol (offline), 30 at devices that
    // do not exist.
    let per_batch = 50;
    let mut unknown = 0u32;
    let lines: Vec<Vec<u8>> = (1..=accounts)
        .map(|i| {
            let m = format!("m{i}");
            let mut b = chain_line(&m, &mallory, &bob_key).repeat(10);
            b += &chain_line(&m, &mallory, &carol_key).repeat(10);
            for _ in 0..30 {
                unknown += 1;
                b += &chain_to_nobody(&m, &mallory, unknown);
            }
            b.into_bytes()
        })
        .collect();
    settle(&server, rss_kib(&server), 0.0, Duration::from_millis(500));
    let log_from = server.log.all().len();
    let watch = RssWatch::start(&server);
    // A fixed number of chains, not a time: a loaded host writes them more slowly, and the
    // deadline is only there so a broken build fails instead of hanging.
    let total = 20_000;
    let started = Instant::now();
    let attack = Attack::start(
        &server,
        lines,
        per_batch as u64,
        total,
        Duration::from_secs(120),
    );
    // During the flood: a real login, a whisper to bob (online) and one to carol (offline).
    std::thread::sleep(Duration::from_secs(2));
    let login_started = Instant::now();
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let login = login_started.elapsed();
    alice.whisper("bob", "during the flood");
    let to_carol = alice.whisper("carol", "stored during the flood");
    loop {
        let f = alice.recv();
        if f["type"] == "held" {
            assert_eq!(f["users"], json!(["carol"]), "{f}");
            break;
        }
        assert_ne!(f["type"], "error", "{f}");
    }
    let (written, tally) = attack.finish();
    let secs = started.elapsed().as_secs_f64();
    let peak = watch.peak();
    let baseline = watch.baseline;
    let growth = watch.finish();
    alice.whisper("bob", "after the flood");
    let mut bob = reader.join().unwrap();
    bob.sync(4);
    let (after, took) = settle(&server, baseline, 0.10, Duration::from_secs(30));
    let warns = server
        .log
        .since(log_from)
        .iter()
        .filter(|l| l.contains(" WARN "))
        .count();
    // carol gets alice's whisper at her next login.
    let mut carol = Raw::login(&server, "carol", "pw-c");
    loop {
        let f = carol.recv();
        if f["type"] == "envelope" && f["from"] == "alice" {
            assert_eq!(f["data"], to_carol.as_str());
            break;
        }
    }
    figure(
        t,
        "chains written",
        format!("{written} by {accounts} accounts in {secs:.1} s"),
    );
    figure(t, "attacker logins", tally.logins.load(Ordering::Relaxed));
    figure(
        t,
        "refusals read by the attackers (rate_limited)",
        tally.rate_limited.load(Ordering::Relaxed),
    );
    figure(
        t,
        "refusals read by the attackers (offline_queue_full)",
        tally.queue_full.load(Ordering::Relaxed),
    );
    figure(t, "real login during the flood, ms", login.as_millis());
    figure(t, "RSS baseline, MB", format!("{:.1}", mb(baseline)));
    figure(
        t,
        "RSS peak growth during the flood, MB",
        format!("{growth:.1} (peak {:.1})", mb(peak)),
    );
    figure(
        t,
        "RSS after, MB",
        format!("{:.1} after {:.1} s", mb(after), took.as_secs_f64()),
    );
    figure(t, "WARN lines logged", warns);
    assert!(
        written >= total,
        "the flood stopped early: {written} of {total}"
    );
    assert!(growth <= 50.0, "RSS grew by {growth:.1} MB");
    assert!(login < Duration::from_secs(2), "login took {login:?}");
    assert!(
        after as f64 <= baseline as f64 * 1.10,
        "RSS {} MB is not back within 10 % of {} MB",
        mb(after),
        mb(baseline)
    );
    assert!(
        warns <= 2 * tally.logins.load(Ordering::Relaxed) as usize + 10,
        "{warns} WARN lines"
    );
    server.stop_sigterm();
}

/// chat's line for switching to room `r{r}` (with a hint the first time).
fn talking_in(r: usize) -> impl Fn(&str) -> bool {
    let line = format!("-- now talking in #r{r}");
    move |l: &str| {
        crate::harness::unstamped(l)
            .is_some_and(|u| u == line || u.starts_with(&format!("{line} (")))
    }
}

#[test]
fn the_real_chat_stays_inside_the_chain_budgets_at_login_and_on_join() {
    let t = "chat_within_budgets";
    let server = Server::start();
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b"), ("carol", "pw-c")] {
        server.add_user(u, p);
    }
    let homes = [ClientHome::new(), ClientHome::new(), ClientHome::new()];
    let mut bob = Chat::login(&server, "bob", "pw-b", &homes[1]);
    let mut carol = Chat::login(&server, "carol", "pw-c", &homes[2]);
    let rooms = 12;
    for r in 0..rooms {
        bob.send(&format!("/join r{r}"));
        bob.out.expect("the join", talking_in(r));
    }
    // Twice: a fresh `chat` has no sending chains, so each round gives every member device
    // a chain per conversation, all at once (the bursts a real client makes).
    let mut lines = 0;
    for round in 0..2 {
        let mut alice = Chat::login(&server, "alice", "pw-a", &homes[0]);
        if round == 0 {
            alice.out.expect_contains("-- pinned carol's device key");
        }
        // At a brisk typist's pace: the message rate limit (10 a second) is not the subject.
        for r in 0..rooms {
            alice.send(&format!("/join r{r}"));
            alice.out.expect("the join", talking_in(r));
            std::thread::sleep(Duration::from_millis(120));
            alice.send(&format!("round {round} in r{r}"));
            std::thread::sleep(Duration::from_millis(120));
        }
        alice.send(&format!("/join lobby\nround {round} in the lobby"));
        for r in 0..rooms {
            bob.out.expect(
                "alice's room line",
                crate::harness::exactly(&format!("[#r{r}] <alice> round {round} in r{r}")),
            );
            lines += 1;
        }
        for c in [&mut bob, &mut carol] {
            c.out
                .expect_contains(&format!("<alice> round {round} in the lobby"));
        }
        lines += 1;
        alice.send("/quit");
        let exit = alice.wait();
        let refused: Vec<&String> = exit
            .stdout
            .iter()
            .chain(&exit.stderr)
            .filter(|l| l.contains("slow down") || l.contains("rate_limited"))
            .collect();
        assert!(
            refused.is_empty(),
            "the real client hit a budget: {refused:?}"
        );
    }
    figure(t, "rooms shared with bob", rooms);
    figure(
        t,
        "lines alice sent from two fresh starts, each to a new chain",
        lines,
    );
    figure(t, "refusals alice saw", 0);
}

#[test]
fn a_writer_queue_of_one_refuses_what_does_not_fit_and_loses_nothing_acknowledged() {
    let t = "offline_writer_queue";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_limits(
        dir.path(),
        "offline_jobs_max = 1\nmessages_per_sec = 100000\nmessage_burst = 100000\n\
         account_messages_per_sec = 100000\naccount_message_burst = 100000",
    );
    for (u, p) in [("alice", "pw-a"), ("bob", "pw-b")] {
        server.add_user(u, p);
    }
    let mut bob = Raw::login(&server, "bob", "pw-b");
    bob.send(json!({"type":"quit"}));
    let _ = bob.recv_until_closed();
    let mut alice = Raw::login(&server, "alice", "pw-a");
    let _ = until_pong(&mut alice, 1);
    // 300 whispers to offline bob in one write: the writer takes one line at a time.
    let n = 300;
    let sealed: Vec<String> = (0..n)
        .map(|i| alice.seal("alice,bob", &format!("w{i}")))
        .collect();
    let lines: String = sealed
        .iter()
        .map(|d| format!("{}\n", json!({"type":"send","data":d})))
        .collect();
    alice.send_raw(lines.as_bytes());
    // Each is echoed, then either held (stored) or refused with a reason.
    let (mut echoes, mut held, mut busy) = (0, Vec::new(), 0);
    while echoes < n || held.len() + busy < n {
        let f = alice.recv();
        match f["type"].as_str() {
            Some("envelope") => echoes += 1,
            Some("held") => held.push(f["message"].as_str().unwrap_or_default().to_string()),
            Some("error") => {
                assert_eq!(f["code"], "offline_queue_full", "{f}");
                let why = f["message"].as_str().unwrap_or_default();
                assert!(why.contains("the server is busy storing"), "{why}");
                busy += 1;
            }
            _ => panic!("unexpected {f}"),
        }
    }
    // bob gets exactly the acknowledged ones, in order.
    let mut bob = Raw::login(&server, "bob", "pw-b");
    let mut got = Vec::new();
    while got.len() < held.len() {
        let f = bob.recv();
        if f["type"] == "envelope" {
            got.push(f["data"].as_str().unwrap_or_default().to_string());
        }
    }
    let mut extra = until_pong(&mut bob, 3);
    extra.retain(|f| f["type"] == "envelope");
    figure(t, "whispers to an offline user in one write", n);
    figure(t, "held (stored, acknowledged)", held.len());
    figure(
        t,
        "refused: the writer's queue (offline_jobs_max = 1) was full",
        busy,
    );
    figure(t, "delivered at the next login", got.len() + extra.len());
    assert!(
        extra.is_empty(),
        "more delivered than acknowledged: {extra:?}"
    );
    let order: Vec<&String> = sealed.iter().filter(|d| got.contains(d)).collect();
    assert_eq!(order, got.iter().collect::<Vec<_>>(), "out of order");
}
