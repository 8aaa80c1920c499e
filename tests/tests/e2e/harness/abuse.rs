//! What the hostile-client tests share: attackers' source addresses on loopback, chatd's
//! resident memory sampled while an attack runs, and the figures each test prints.
//!
//! Figures are printed (run with `--nocapture` to see them) and only checked against the
//! issue's generous bounds (memory in MB, a login within seconds), never as tight timings:
//! these machines are shared and noisy.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::chatd::Server;

/// The source address standing for attacker `n` (1..=250): 127.0.0.(n + 1), so 127.0.0.1,
/// which real clients use, is never an attacker's.
pub fn attacker(n: u8) -> IpAddr {
    assert!((1..=250).contains(&n), "attacker numbers are 1..=250");
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n + 1))
}

/// chatd's resident set size in KiB, from /proc.
pub fn rss_kib(server: &Server) -> u64 {
    let pid = server.pid().expect("chatd is running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// Samples chatd's RSS every 50 ms from a baseline until [`RssWatch::finish`], keeping the peak.
pub struct RssWatch {
    /// RSS (KiB) when the watch started.
    pub baseline: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl RssWatch {
    /// Starts sampling `server`'s RSS now; the first sample is the baseline.
    pub fn start(server: &Server) -> RssWatch {
        let pid = server.pid().expect("chatd is running");
        let baseline = rss_kib(server);
        let peak = Arc::new(AtomicU64::new(baseline));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let sampler = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
                let rss = status.ok().and_then(|st| {
                    st.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                });
                match rss {
                    Some(kib) => {
                        p.fetch_max(kib, Ordering::Relaxed);
                    }
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssWatch {
            baseline,
            peak,
            stop,
            sampler: Some(sampler),
        }
    }

    /// The highest RSS (KiB) sampled so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops sampling; returns the peak growth over the baseline in MB (10^6 bytes).
    pub fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
        mb(self.peak().saturating_sub(self.baseline))
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// KiB as MB (10^6 bytes), as the bounds are stated.
pub fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// Waits up to `within` for chatd's RSS to come back within `ratio` (0.10: 10 %) of
/// `baseline` KiB; returns the last RSS seen (KiB) and how long it took.
pub fn settle(server: &Server, baseline: u64, ratio: f64, within: Duration) -> (u64, Duration) {
    let start = Instant::now();
    let bound = baseline as f64 * (1.0 + ratio);
    loop {
        let rss = rss_kib(server);
        if rss as f64 <= bound || start.elapsed() >= within {
            return (rss, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Prints one figure of a hostile-client test, in a form easy to grep out of a test run
/// (`cargo test -p chatd-e2e --test e2e abuse -- --nocapture | grep FIGURE`).
pub fn figure(test: &str, what: &str, value: impl std::fmt::Display) {
    println!("FIGURE {test}: {what} = {value}");
}
