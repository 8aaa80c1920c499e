//! Metrics: the real chatd with `[metrics] listen`, a scripted workload (two good logins, one
//! bad, a client cut off as too slow, a whisper stored for it), then a scrape over plain TCP
//! with a hand-written HTTP request: exact counts, `# EOF`, and no user name, room name,
//! address or message text anywhere. `chatctl metrics` shows the same text, also with the
//! listener off.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use std::ffi::OsStr;

use crate::harness::{Mode, Raw, Server, TIMEOUT, run_chatd, write_config};

/// Names and text that must never show in the metrics.
const ALICE: &str = "quokka";
const SLOW: &str = "wombat";
const ROOM: &str = "hideout";
const SECRET: &str = "zebra-crossing";
/// Frames the stalled session may have queued.
const QUEUE: usize = 8;

/// The `metrics at http://ADDR/metrics` line chatd logs at start-up.
fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server
        .log
        .all()
        .into_iter()
        .find(|l| l.contains("metrics at http://"))
        .expect("chatd logged no metrics address");
    let rest = &line[line.find("http://").expect("http://") + 7..];
    rest.trim()
        .trim_end_matches("/metrics")
        .parse()
        .expect("metrics address")
}

/// One HTTP/1.1 request written by hand; returns the status line, the headers (lower-case
/// names) and the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, Vec<(String, String)>, String) {
    let mut tcp = TcpStream::connect(addr).expect("connect to metrics");
    tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text\r\n\
         Connection: close\r\n\r\n"
    )
    .expect("write request");
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// The value of the sample line `name` (with its labels, exactly as written).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
        .split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad value for {name}"))
}

/// Seals `text` for the default room and sends it; returns the envelope.
fn say(raw: &mut Raw, text: &str) -> String {
    let data = raw.seal(&format!("#{ROOM}"), text);
    raw.send_envelope(&data);
    data
}

/// Reads alice's frames up to the pong for `nonce`: whether `held` for the stalled user came
/// (her line was stored for it rather than queued), and whether its leave came.
fn until_pong(alice: &mut Raw, nonce: u64, data: &str) -> (bool, bool) {
    let (mut held, mut left) = (false, false);
    loop {
        let frame = alice.recv();
        match frame["type"].as_str() {
            Some("envelope") => assert_eq!(frame["data"], data, "{frame}"),
            Some("held") => {
                assert_eq!(frame["users"], json!([SLOW]), "{frame}");
                assert_eq!(frame["conversation"], format!("#{ROOM}"), "{frame}");
                held = true;
            }
            Some("presence") => {
                assert_eq!(
                    (&frame["user"], &frame["event"]),
                    (&SLOW.into(), &"leave".into())
                );
                left = true;
            }
            Some("pong") => {
                assert_eq!(frame["nonce"], nonce, "{frame}");
                return (held, left);
            }
            _ => panic!("unexpected frame: {frame}"),
        }
    }
}

#[test]
fn a_scrape_after_a_workload_counts_exactly_and_names_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_config(
        dir.path(),
        &format!(
            "[limits]\noutbound_queue = {QUEUE}\nmessages_per_sec = 10000\nmessage_burst = 10000\n\
             [rooms]\ndefault = \"{ROOM}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
        ),
    );
    let addr = metrics_addr(&server);
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    server.add_user(ALICE, "pw-a");
    server.add_user(SLOW, "pw-w");

    // Two good logins; the second never reads again.
    let mut alice = Raw::login(&server, ALICE, "pw-a");
    let _slow = Raw::login(&server, SLOW, "pw-w");
    assert_eq!(alice.recv_type("presence")["user"], SLOW);
    // One bad login.
    let mut bad = Raw::connect(&server);
    bad.hello();
    assert_eq!(bad.try_login(ALICE, "wrong")["code"], "invalid_credentials");

    // Long lines fill the stalled client's socket buffers, then its queue: it is cut off.
    let (mut sent, mut held) = (0usize, 0usize);
    loop {
        assert!(sent < 5_000, "the stalled client was never cut off");
        let text = format!("{SECRET} {sent} {}", "x".repeat(12_000));
        let data = say(&mut alice, &text);
        sent += 1;
        alice.send(json!({"type":"ping","nonce": sent}));
        let (was_held, left) = until_pong(&mut alice, sent as u64, &data);
        held += usize::from(was_held);
        if left {
            break;
        }
    }
    // Its device is offline now: a whisper is stored for it. The offline writer commits in
    // order, so every `held` for a room line comes before the whisper's.
    let data = alice.whisper(SLOW, SECRET);
    loop {
        let frame = alice.recv();
        match (frame["type"].as_str(), frame["conversation"].as_str()) {
            (Some("envelope"), _) => assert_eq!(frame["data"], data, "{frame}"),
            (Some("held"), Some(room)) if room == format!("#{ROOM}") => held += 1,
            (Some("held"), _) => {
                assert_eq!(frame["users"], json!([SLOW]), "{frame}");
                break;
            }
            _ => panic!("unexpected frame: {frame}"),
        }
    }

    // The cut-off session's task ends a moment after its leave; wait for the gauge.
    let deadline = Instant::now() + TIMEOUT;
    let text = loop {
        let (status, headers, body) = http_get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        let content_type = headers.iter().find(|(k, _)| k == "content-type");
        assert_eq!(
            content_type.map(|(_, v)| v.as_str()),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        if sample(&body, "chatd_sessions{wire=\"json\"}") == 1.0 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the slow session never ended:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("{sent} lines sent, {held} stored for the stalled client; scraped:\n{text}");
    assert!(held >= 1, "the line that found the queue full is stored");

    assert!(text.ends_with("# EOF\n"), "{text}");
    let expect = [
        ("chatd_logins_total{result=\"ok\"}", 2),
        ("chatd_logins_total{result=\"bad_credentials\"}", 1),
        ("chatd_logins_total{result=\"throttled\"}", 0),
        ("chatd_logins_total{result=\"refused\"}", 0),
        ("chatd_login_duration_seconds_count", 3),
        ("chatd_sessions{wire=\"json\"}", 1),
        ("chatd_sessions{wire=\"binary\"}", 0),
        ("chatd_password_hash_queue{lane=\"first\"}", 0),
        ("chatd_password_hash_queue{lane=\"rest\"}", 0),
        // The room lines and the whisper.
        ("chatd_envelopes_routed_total", sent + 1),
        // alice gets every one; the stalled client each room line not stored for it (from
        // the one that found its queue full on, each is stored, and alice hears `held`).
        ("chatd_deliveries_total", (sent + 1) + (sent - held)),
        ("chatd_slow_consumer_disconnects_total", 1),
        ("chatd_rate_limited_total", 0),
        ("chatd_offline_stored_total", held + 1),
        ("chatd_offline_delivered_total", 0),
        ("chatd_offline_expired_total", 0),
        ("chatd_storage_unavailable_total{reason=\"disk_full\"}", 0),
        ("chatd_storage_unavailable_total{reason=\"locked\"}", 0),
        ("chatd_storage_unavailable_total{reason=\"down\"}", 0),
    ];
    for (name, value) in expect {
        assert_eq!(sample(&text, name), value as f64, "{name} in:\n{text}");
    }
    assert!(sample(&text, "chatd_offline_commit_duration_seconds_count") >= 1.0);
    assert!(sample(&text, "process_resident_memory_bytes") > 1e6);
    assert!(sample(&text, "process_open_fds") > 3.0);
    assert!(sample(&text, "process_cpu_seconds_total") > 0.0);
    assert!(sample(&text, "process_start_time_seconds") > 1.7e9);
    assert!(text.contains(&format!(
        "chatd_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    for word in [ALICE, SLOW, ROOM, SECRET, "127.0.0.1", "pw-"] {
        assert!(!text.contains(word), "{word:?} in the metrics:\n{text}");
    }

    // Anything but GET /metrics is 404.
    assert_eq!(http_get(addr, "/").0, "HTTP/1.1 404 Not Found");
    assert_eq!(http_get(addr, "/metrics?x").0, "HTTP/1.1 200 OK");
    let mut post = TcpStream::connect(addr).unwrap();
    post.write_all(
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    post.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // chatctl metrics: the same families, over the control socket.
    let out = server.ctl(&["metrics"], None);
    out.assert_ok();
    assert!(out.stdout.ends_with("# EOF\n"), "{}", out.stdout);
    assert_eq!(
        sample(&out.stdout, "chatd_logins_total{result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        sample(&out.stdout, "chatd_slow_consumer_disconnects_total"),
        1.0
    );
    // --prometheus: the format node_exporter's textfile collector reads.
    let prom = server.ctl(&["metrics", "--prometheus"], None);
    prom.assert_ok();
    assert!(
        prom.stdout.contains("# TYPE chatd_logins_total counter\n"),
        "{}",
        prom.stdout
    );
    assert!(
        prom.stdout.contains("# TYPE chatd_build_info gauge\n"),
        "{}",
        prom.stdout
    );
    assert!(!prom.stdout.contains("# EOF") && !prom.stdout.contains("# UNIT"));
    assert_eq!(
        sample(
            &prom.stdout,
            "chatd_logins_total{result=\"bad_credentials\"}"
        ),
        1.0
    );
    let json = server.ctl(&["--json", "metrics"], None);
    json.assert_ok();
    let reply: Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(reply["type"], "metrics");
    assert!(reply["text"].as_str().unwrap().ends_with("# EOF\n"));
}

#[test]
fn chatctl_metrics_works_without_the_listener() {
    let server = Server::start();
    assert!(!server.log.all().iter().any(|l| l.contains("metrics at")));
    let out = server.ctl(&["metrics"], None);
    out.assert_ok();
    assert!(
        out.stdout.contains("chatd_logins_total{result=\"ok\"} 0"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("# EOF\n"), "{}", out.stdout);
}

#[test]
fn check_config_refuses_a_bad_metrics_listen_and_a_busy_port_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let check = |metrics: &str| {
        let (file, _) = write_config(dir.path(), &format!("[metrics]\n{metrics}\n"));
        let (status, out, err) = run_chatd(&[
            OsStr::new("--check-config"),
            OsStr::new("--config"),
            file.as_os_str(),
        ]);
        (status.code(), out, err)
    };
    let (code, _, err) = check("listen = \"localhost:9464\"");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("listen"), "{err}");
    let (code, _, err) = check("listen = \"127.0.0.1\"");
    assert_eq!(code, Some(1), "{err}");
    let (code, out, err) = check("listen = \"127.0.0.1:9464\"");
    assert_eq!(code, Some(0), "{out}{err}");

    // A port already taken: chatd does not start, and says which address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let (file, control) = write_config(dir.path(), &format!("[metrics]\nlisten = \"{busy}\"\n"));
    let failure = Server::try_start(Mode::Config {
        file: &file,
        control: &control,
    })
    .err()
    .expect("chatd started on a busy metrics port");
    assert!(!failure.status.success());
    assert!(
        failure
            .stderr
            .contains(&format!("cannot listen for metrics on {busy}")),
        "{}",
        failure.stderr
    );
}
