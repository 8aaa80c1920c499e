//! Runs the real chat-bench binary against its own chatd with a tiny workload.
// The helpers below run only inside tests; a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/<profile>/chatd beside the bench binary, built first if it is missing.
fn chatd_binary() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_chat-bench"));
    let dir = bench.parent().expect("bench binary has a directory");
    let chatd = dir.join("chatd");
    if chatd.is_file() {
        return chatd;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench crate is inside the workspace");
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "-p", "chatd"]).current_dir(workspace);
    if dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    if let Some(target_dir) = dir.parent() {
        cargo.env("CARGO_TARGET_DIR", target_dir);
    }
    // Variables cargo sets for this test would make dependencies' build scripts rerun.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "CARGO_MANIFEST_DIR" || key.starts_with("CARGO_PKG_") {
            cargo.env_remove(key.as_ref());
        }
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p chatd failed");
    assert!(chatd.is_file(), "no chatd at {}", chatd.display());
    chatd
}

/// Runs a fan-out of `n` clients, `s` senders, `m` messages with `extra` arguments; checks
/// that nothing was lost and returns the JSON figures.
fn fanout(n: u64, s: u64, m: u64, extra: &[&str]) -> serde_json::Value {
    let (n_s, s_s, m_s) = (n.to_string(), s.to_string(), m.to_string());
    let mut args = vec!["-n", &n_s, "-s", &s_s, "-m", &m_s, "--timeout", "30"];
    // A short host check keeps the tests quick and still measures.
    if !extra.contains(&"--host-check") {
        args.extend_from_slice(&["--host-check", "0.1"]);
    }
    args.extend_from_slice(extra);
    let v = bench_json(&args);
    if !extra.contains(&"--host-check") {
        for key in [
            "host_wake_late_p50_ms",
            "host_wake_late_p99_ms",
            "host_wake_late_max_ms",
        ] {
            assert!(v[key].as_f64().is_some_and(|x| x >= 0.0), "{key}: {v}");
        }
    }
    // Steal needs a clock tick to pass: a paced run lasts long enough, an unpaced one of
    // a few messages may not.
    let steal = &v["host_steal_percent"];
    if extra.contains(&"--rate") {
        assert!(steal.as_f64().is_some_and(|x| x >= 0.0), "{v}");
    } else {
        assert!(
            steal.is_null() || steal.as_f64().is_some_and(|x| x >= 0.0),
            "{v}"
        );
    }
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["deliveries"], n * s * m, "{v}");
    assert_eq!(v["expected"], n * s * m, "{v}");
    assert_eq!(v["sealed"], s * m, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["corrupt"], 0, "{v}");
    assert_eq!(v["byes"], serde_json::json!({}), "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    v
}

/// Bytes of an envelope around a `text`-byte message with `bits`-bit keys, for user `benchK`
/// (K one digit) in the default room (docs/E2E-ENVELOPE.md).
fn envelope_bytes(text: u64, bits: u64) -> u64 {
    // The conversation is the default room, "#lobby" (6 bytes).
    let header = 2 + 16 + (2 + 6) + 32 + (2 + 6) + 16 + 4 + 8;
    header + (4 + text + 16) + (2 + bits / 8)
}

/// Binary `envelope` frame around an envelope: marker, kind, u32 length, u64 timestamp.
const BINARY_ENVELOPE_OVERHEAD: u64 = 1 + 1 + 4 + 8;

/// The default wire: every delivery is a binary frame, exactly the envelope plus its header.
#[test]
fn tiny_fanout_loses_nothing() {
    let v = fanout(3, 1, 20, &[]);
    assert_eq!(v["wire"], "binary", "{v}");
    assert_eq!(v["key_bits"], 2048, "{v}");
    assert_eq!(v["envelope_bytes"], envelope_bytes(100, 2048) as f64, "{v}");
    assert_eq!(
        v["bytes_per_delivery"],
        (envelope_bytes(100, 2048) + BINARY_ENVELOPE_OVERHEAD) as f64,
        "{v}"
    );
}

#[test]
fn tiny_fanout_over_json_lines_loses_nothing() {
    let v = fanout(3, 1, 20, &["--wire", "json"]);
    assert_eq!(v["wire"], "json", "{v}");
    assert_eq!(v["envelope_bytes"], envelope_bytes(100, 2048) as f64, "{v}");
    // base64 (4/3) inside a JSON line that also names the sender and its device.
    let per = v["bytes_per_delivery"]
        .as_f64()
        .expect("bytes_per_delivery");
    let b64 = (envelope_bytes(100, 2048) as f64 / 3.0).ceil() * 4.0;
    assert!(per > b64 && per < b64 + 200.0, "{v}");
}

#[test]
fn paced_fanout_with_generated_3072_bit_keys() {
    let v = fanout(
        3,
        2,
        5,
        &["--key-bits", "3072", "-b", "1000", "--rate", "50"],
    );
    assert_eq!(v["wire"], "binary", "{v}");
    assert_eq!(
        v["bytes_per_delivery"],
        (envelope_bytes(1000, 3072) + BINARY_ENVELOPE_OVERHEAD) as f64,
        "{v}"
    );
    assert_eq!(v["key_bits"], 3072, "{v}");
    assert_eq!(v["keys_generated"], true, "{v}");
    assert_eq!(v["rate"], 50.0, "{v}");
    assert_eq!(
        v["envelope_bytes"],
        envelope_bytes(1000, 3072) as f64,
        "{v}"
    );
}

#[test]
fn paced_fanout_over_json_lines() {
    let v = fanout(3, 2, 5, &["--wire", "json", "--rate", "50"]);
    assert_eq!(v["wire"], "json", "{v}");
    assert_eq!(v["rate"], 50.0, "{v}");
}

/// `--host-check 0` skips the wake-up check; steal is still read around the run.
#[test]
fn the_host_check_can_be_skipped() {
    let v = fanout(3, 1, 5, &["--host-check", "0", "--rate", "50"]);
    assert!(v["host_wake_late_p99_ms"].is_null(), "{v}");
}

/// The text output names the host's figures next to the run's.
#[test]
fn text_output_shows_the_host() {
    let text = bench_text(&[
        "-n",
        "2",
        "-s",
        "1",
        "-m",
        "3",
        "--rate",
        "20",
        "--host-check",
        "0.1",
    ]);
    assert!(
        text.contains("deliveries         6 of 6 expected, lost 0"),
        "{text}"
    );
    assert!(
        text.contains("host wake-ups      1 ms sleeps late by p50 "),
        "{text}"
    );
    assert!(text.contains("host steal         "), "{text}");
}

/// Receivers read on threads of their own by default; `--receiver-threads 0` keeps the tokio
/// reader, and more threads than receivers leaves some idle. All count the same.
#[test]
fn receivers_read_on_threads_or_as_tasks() {
    for (threads, wire) in [("0", "binary"), ("0", "json"), ("7", "binary")] {
        let v = fanout(5, 2, 15, &["--receiver-threads", threads, "--wire", wire]);
        assert_eq!(v["receiver_threads"].to_string(), threads, "{v}");
        assert_eq!(v["wire"], wire, "{v}");
    }
}

/// A fan-out of a few messages to three clients, with a short host check.
const TINY_RUN: [&str; 8] = ["-n", "3", "-s", "1", "-m", "4", "--host-check", "0.1"];

/// `--runs 2`: two runs, each against a chatd of its own, then the medians.
#[test]
fn runs_repeat_the_mode_and_report_medians() {
    let v = bench_json(&[&TINY_RUN[..], &["--runs", "2"]].concat());
    assert_eq!(v["runs"], 2, "{v}");
    let each = v["each"].as_array().expect("each");
    assert_eq!(each.len(), 2, "{v}");
    for run in each {
        assert_eq!(run["mode"], "fanout", "{v}");
        assert_eq!(run["deliveries"], 12, "{v}");
        assert_eq!(run["lost"], 0, "{v}");
    }
    assert_ne!(
        each[0]["chatd_pid"], each[1]["chatd_pid"],
        "a chatd each: {v}"
    );
    assert!(each[0]["chatd_pid"].is_u64(), "{v}");
    let p99: Vec<f64> = each
        .iter()
        .map(|r| r["latency_p99_ms"].as_f64().expect("p99"))
        .collect();
    // Within a rounding error: serde_json's default float parsing may be one ulp off the
    // value chat-bench printed, so an exact comparison fails now and then.
    let median = v["median"]["latency_p99_ms"].as_f64().expect("median p99");
    let mean_of_two = (p99[0] + p99[1]) / 2.0;
    assert!(
        (median - mean_of_two).abs() <= 1e-9 * mean_of_two.abs().max(1.0),
        "{v}"
    );
    assert_eq!(v["median"]["deliveries"], 12.0, "{v}");
    assert!(v["median"]["mode"].is_null(), "only numbers: {v}");
    assert!(v["median"]["chatd_pid"].is_null(), "not a figure: {v}");

    let text = bench_text(&["--idle", "2", "--idle-wait", "0", "--runs", "2"]);
    assert!(text.contains("== run 1 of 2\n"), "{text}");
    assert!(text.contains("== run 2 of 2\n"), "{text}");
    assert!(text.contains("== median of 2 runs"), "{text}");
    assert!(text.contains("RSS/connection B   "), "{text}");
    assert!(text.contains("dropped            0 [0, 0]\n"), "{text}");
}

/// `--compare`: the runs alternate between two chatd binaries (here the same one twice), and
/// the summary holds each side and the pairs' differences.
#[test]
fn compare_alternates_two_chatds() {
    let chatd = chatd_binary();
    let chatd = chatd.to_str().expect("a UTF-8 path");
    let v = bench_json(&[&TINY_RUN[..], &["--runs", "2", "--compare", chatd]].concat());
    assert_eq!(v["pairs"], 2, "{v}");
    for side in ["a", "b"] {
        assert_eq!(v[side]["chatd"], chatd, "{v}");
        let each = v[side]["each"].as_array().expect("each");
        assert_eq!(each.len(), 2, "{v}");
        assert!(
            each.iter().all(|r| r["deliveries"] == 12 && r["lost"] == 0),
            "{v}"
        );
        assert_eq!(v[side]["median"]["deliveries"], 12.0, "{v}");
    }
    assert_eq!(v["b_minus_a_median"]["deliveries"], 0.0, "{v}");
    assert!(v["b_minus_a_median"]["latency_p99_ms"].is_number(), "{v}");

    let text = bench_text(&[
        "--idle",
        "2",
        "--idle-wait",
        "0",
        "--runs",
        "1",
        "--compare",
        chatd,
    ]);
    assert!(text.contains("== pair 1 of 1, A: "), "{text}");
    assert!(text.contains("== pair 1 of 1, B: "), "{text}");
    assert!(text.contains("== B - A: median of 1 pairs"), "{text}");
    assert!(
        text.contains("dropped            0.000 [0.000]\n"),
        "{text}"
    );
}

#[test]
fn idle_mode_reports_memory_per_connection() {
    for wire in ["binary", "json"] {
        let v = bench_json(&["--idle", "3", "--idle-wait", "0", "--wire", wire]);
        assert_eq!(v["mode"], "idle");
        assert_eq!(v["wire"], wire);
        assert_eq!(v["clients"], 3);
        assert_eq!(v["dropped"], 0);
        assert!(v["rss_per_connection_bytes"].is_number(), "{v}");
    }
}

/// 40 clients as 2 users: 20 sessions each, more than chatd's default of 16, so this also
/// shows the started chatd is sized for it.
#[test]
fn idle_clients_can_share_users() {
    let v = bench_json(&["--idle", "40", "--users", "2", "--idle-wait", "0"]);
    assert_eq!(v["mode"], "idle");
    assert_eq!(v["clients"], 40);
    assert_eq!(v["dropped"], 0);
}

/// Runs chat-bench against its own chatd with `args`; it must succeed and print one JSON object.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let stdout = bench_text(&with_json);
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

/// Runs chat-bench against its own chatd with `args`; it must succeed. Its standard output.
fn bench_text(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .arg("--chatd")
        .arg(chatd_binary())
        .args(args)
        .output()
        .expect("chat-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chat-bench failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn startup_mode_times_a_fresh_and_an_existing_state_dir() {
    let v = bench_json(&["--startup", "2"]);
    assert_eq!(v["mode"], "startup", "{v}");
    assert!(v["fresh_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{v}");
    let existing = v["existing_ms"].as_array().expect("existing_ms");
    assert_eq!(existing.len(), 2, "{v}");
    assert!(
        existing
            .iter()
            .all(|ms| ms.as_f64().is_some_and(|ms| ms > 0.0)),
        "{v}"
    );
}

/// Binary: every server hello agreed. JSON: the hello asked for nothing.
#[test]
fn connect_rate_mode_counts_full_setups() {
    for wire in ["binary", "json"] {
        let v = bench_json(&[
            "--connect-rate",
            "20",
            "--connect-concurrency",
            "4",
            "--wire",
            wire,
        ]);
        assert_eq!(v["mode"], "connect_rate", "{v}");
        assert_eq!(v["wire"], wire, "{v}");
        assert_eq!(v["setups"], 20, "{v}");
        assert_eq!(v["failed"], serde_json::json!({}), "{v}");
        assert!(v["setups_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{v}");
    }
}

/// In the binary mode, the default: the storm users are in the room too, so their quits read
/// past binary envelope frames to the `bye`.
#[test]
fn login_storm_splits_latency_into_a_quiet_and_a_storm_phase() {
    // 40 msg/s over 2 senders, 1 s per phase: 20 messages each per phase, 40 in all.
    let v = bench_json(&[
        "-n",
        "20",
        "-s",
        "2",
        "--rate",
        "40",
        "--phase-secs",
        "1",
        "--login-storm",
        "12",
        "--storm-concurrency",
        "3",
        "--timeout",
        "30",
        "--host-check",
        "0.1",
    ]);
    assert_eq!(v["mode"], "login_storm", "{v}");
    assert_eq!(v["wire"], "binary", "{v}");
    assert_eq!(v["messages_per_sender"], 40, "{v}");
    assert_eq!(v["expected"], 20 * 2 * 40, "{v}");
    assert_eq!(v["deliveries"], 20 * 2 * 40, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["corrupt"], 0, "{v}");
    assert_eq!(v["byes"], serde_json::json!({}), "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    assert_eq!(v["storm_concurrency"], 3, "{v}");
    let logins = v["storm_logins"].as_u64().expect("storm_logins");
    assert!(logins > 0 && logins <= 12, "{v}");
    assert_eq!(v["storm_login_failed"], serde_json::json!({}), "{v}");
    for key in [
        "quiet_latency_p50_ms",
        "quiet_latency_p99_ms",
        "quiet_latency_max_ms",
        "storm_latency_p50_ms",
        "storm_latency_p99_ms",
        "storm_latency_max_ms",
        "p99_delta_ms",
        "storm_logins_per_sec",
        "storm_login_p50_ms",
        "storm_login_p99_ms",
        "quiet_chatd_cpu_secs",
        "storm_chatd_cpu_secs",
        "host_wake_late_p99_ms",
        "host_steal_percent",
    ] {
        assert!(v[key].is_number(), "{key}: {v}");
    }
    // Both phases were measured: every latency is at least the 1 µs floor.
    for key in ["quiet_latency_p50_ms", "storm_latency_p50_ms"] {
        assert!(v[key].as_f64().is_some_and(|ms| ms > 0.0), "{key}: {v}");
    }
}

/// `--cluster 2`: one pair, one chatd then two nodes on a throwaway PostgreSQL and
/// nats-server, with a sender on each node, so every message reaches the other node's members
/// over the bus; nothing is lost or out of order on either side, and the cluster's CPU counts
/// both nodes and nats-server.
#[test]
fn a_cluster_of_two_loses_nothing_and_counts_every_process() {
    if !chatd_testkit::postgres::available() || !chatd_testkit::nats::available() {
        return;
    }
    let v = bench_json(&[
        "--cluster",
        "2",
        "-n",
        "6",
        "-s",
        "2",
        "-m",
        "20",
        "--timeout",
        "30",
        "--host-check",
        "0.1",
    ]);
    assert_eq!(v["nodes"], 2, "{v}");
    assert_eq!(v["pairs"], 1, "{v}");
    assert_eq!(v["a"]["chatd"], "one chatd (SQLite)", "{v}");
    for side in ["a", "b"] {
        let run = &v[side]["each"][0];
        assert_eq!(run["lost"], 0, "{side}: {v}");
        assert_eq!(run["deliveries"], 6 * 2 * 20, "{side}: {v}");
        assert_eq!(run["out_of_order"], 0, "{side}: {v}");
        assert_eq!(run["corrupt"], 0, "{side}: {v}");
        assert_eq!(run["byes"], serde_json::json!({}), "{side}: {v}");
        assert_eq!(run["errors"], serde_json::json!({}), "{side}: {v}");
    }
    let (one, cluster) = (&v["a"]["each"][0], &v["b"]["each"][0]);
    assert_eq!(one["nodes"], 1, "{v}");
    assert!(one["nats_cpu_secs"].is_null(), "{v}");
    assert!(one["deliveries_per_cluster_cpu_sec"].is_null(), "{v}");
    assert_eq!(one["chatd_cpu_secs_each"], serde_json::json!([]), "{v}");
    assert_eq!(cluster["nodes"], 2, "{v}");
    assert_eq!(
        cluster["chatd_cpu_secs_each"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );
    for key in ["chatd_cpu_secs", "nats_cpu_secs", "postgres_cpu_secs"] {
        assert!(
            cluster[key].as_f64().is_some_and(|s| s >= 0.0),
            "{key}: {v}"
        );
    }
    assert!(cluster["deliveries_per_cluster_cpu_sec"].is_number(), "{v}");
    assert_eq!(
        v["cluster_over_one_node_percent"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
}
