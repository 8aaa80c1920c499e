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

#[test]
fn tiny_fanout_loses_nothing() {
    let (n, s, m) = (3u64, 1u64, 20u64);
    let out = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .arg("--chatd")
        .arg(chatd_binary())
        .args([
            "-n",
            &n.to_string(),
            "-s",
            &s.to_string(),
            "-m",
            &m.to_string(),
        ])
        .args(["--timeout", "30", "--json"])
        .output()
        .expect("chat-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chat-bench failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["deliveries"], n * s * m, "{v}");
    assert_eq!(v["expected"], n * s * m, "{v}");
    assert_eq!(v["out_of_order"], 0, "{v}");
    assert_eq!(v["corrupt"], 0, "{v}");
    assert_eq!(v["byes"], serde_json::json!({}), "{v}");
}

#[test]
fn idle_mode_reports_memory_per_connection() {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .arg("--chatd")
        .arg(chatd_binary())
        .args(["--idle", "3", "--idle-wait", "0", "--json"])
        .output()
        .expect("chat-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chat-bench failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["mode"], "idle");
    assert_eq!(v["clients"], 3);
    assert_eq!(v["dropped"], 0);
    assert!(v["rss_per_connection_bytes"].is_number(), "{v}");
}
