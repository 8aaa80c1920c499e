//! The process's own figures, read from `/proc/self` at each scrape: CPU seconds, resident
//! memory, open file descriptors, and the start time recorded by [`start_time`].
//!
//! Only `/proc/self` is read: the shipped unit's `ProcSubset=pid` hides `/proc/stat` (and
//! with it the boot time that `/proc/self/stat`'s start field counts from), so the start
//! time is the wall clock read once at start-up.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Clock ticks per second in `/proc/self/stat` (USER_HZ): 100 in Linux's ABI on every
/// architecture chatd is built for.
const USER_HZ: f64 = 100.0;

static STARTED: OnceLock<f64> = OnceLock::new();

/// Records (once) and returns the process's start time, in seconds since the Unix epoch.
pub(super) fn start_time() -> f64 {
    *STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// User plus system CPU seconds from the text of `/proc/self/stat`. The command name
/// (field 2) is in parentheses and may hold spaces or `)`, so fields are counted from the
/// last `)`.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid (4), ... utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Resident memory in bytes from the text of `/proc/self/status` (`VmRSS:  1234 kB`).
fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

/// The `process_*` metrics, computed when encoded. A figure that cannot be read is left out
/// rather than shown as 0.
#[derive(Debug)]
pub(super) struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        if let Some(cpu) = stat.as_deref().and_then(cpu_seconds) {
            let counter = ConstCounter::new(cpu);
            let e = encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(e)?;
        }
        let status = std::fs::read_to_string("/proc/self/status").ok();
        if let Some(rss) = status.as_deref().and_then(rss_bytes) {
            let gauge = ConstGauge::new(rss as i64);
            let e = encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory size",
                Some(&Unit::Bytes),
                gauge.metric_type(),
            )?;
            gauge.encode(e)?;
        }
        if let Some(fds) = open_fds() {
            let gauge = ConstGauge::new(fds);
            let e = encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(e)?;
        }
        let gauge = ConstGauge::new(start_time());
        let e = encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            gauge.metric_type(),
        )?;
        gauge.encode(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_counts_fields_after_the_last_parenthesis() {
        // A name with a space and a parenthesis must not shift the fields.
        let stat = "4242 (ch at)d) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1234";
        assert_eq!(cpu_seconds(stat), Some(3.25));
        assert_eq!(cpu_seconds("garbage"), None);
        assert_eq!(cpu_seconds("1 (x) S 1 2"), None);
    }

    #[test]
    fn rss_reads_vmrss_in_kib() {
        let status = "Name:\tchatd\nVmPeak:\t  9999 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(rss_bytes(status), Some(2048 * 1024));
        assert_eq!(rss_bytes("Name:\tchatd\n"), None);
    }

    #[test]
    fn this_process_figures_are_readable() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(cpu_seconds(&stat).is_some());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(rss_bytes(&status).unwrap() > 0);
        assert!(open_fds().unwrap() > 0);
    }
}
