//! How steady the host is: how late a sleeping thread wakes on the idle machine, and how
//! much CPU time the hypervisor took from this machine's CPUs (steal) during the run.
//!
//! The paced latency figures are the end of a burst on two shared virtual CPUs. On this host
//! the same binaries gave a p99 of 4.9 ms and, minutes apart, 9.7 and 12.9 ms with chatd's
//! CPU time no higher: in those runs steal was 2-9 % of the CPU time instead of under 1 %, and
//! around them a 1 ms sleep on the idle machine now and then overslept by 2 ms or more. These
//! two figures, printed with every paced run, tell a slow server from a slow host
//! (docs/PERFORMANCE.md, "The host checks").

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::latency::Latency;

/// The sleep whose lateness is measured: short, so the check sees stalls of a millisecond.
const NAP: Duration = Duration::from_millis(1);

/// How late a 1 ms sleep woke, over `secs` seconds of sleeping and waking on an otherwise
/// idle process.
#[derive(Debug, Clone, Copy, Default)]
pub struct WakeDelay {
    /// Lateness beyond the 1 ms asked for.
    pub late: Latency,
    /// Sleeps measured.
    pub samples: u64,
    /// Seconds spent measuring.
    pub secs: f64,
}

/// Sleeps 1 ms at a time for `length` on the calling thread and measures how late each wake-up
/// was. Blocking: call it where nothing else is due (before a timed phase).
pub fn wake_delay(length: Duration) -> anyhow::Result<WakeDelay> {
    // Microseconds, up to a minute late.
    let mut late = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .context("wake-up histogram")?;
    let start = Instant::now();
    while start.elapsed() < length {
        let asleep = Instant::now();
        std::thread::sleep(NAP);
        let over = asleep.elapsed().saturating_sub(NAP);
        let us = u64::try_from(over.as_micros()).unwrap_or(u64::MAX);
        late.saturating_record(us.max(1));
    }
    Ok(WakeDelay {
        late: Latency::of(&late),
        samples: late.len(),
        secs: start.elapsed().as_secs_f64(),
    })
}

/// The machine's CPU time so far, from the first line of /proc/stat (clock ticks, summed over
/// CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time the hypervisor ran something else while a CPU of this machine wanted to run.
    steal: u64,
    /// All of it: user, nice, system, idle, iowait, irq, softirq and steal (guest time is
    /// already inside user and nice).
    total: u64,
}

impl CpuTimes {
    /// Reads /proc/stat now.
    pub fn now() -> anyhow::Result<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        parse_cpu_line(&stat).context("unexpected /proc/stat format")
    }

    /// Percent of all CPU time between `self` and `later` that was stolen; None when no time
    /// passed.
    pub fn steal_percent(&self, later: &CpuTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|t| *t > 0)?;
        let steal = later.steal.saturating_sub(self.steal);
        Some(steal as f64 * 100.0 / total as f64)
    }
}

/// The summed `cpu` line of /proc/stat's text.
fn parse_cpu_line(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // Kernels since 2.6.11 have steal as the eighth field.
    let steal = *ticks.get(7)?;
    Some(CpuTimes {
        steal,
        total: ticks.iter().sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_field_of_the_summed_cpu_line() {
        let stat = "cpu  9023583 2047865 715310 3310926 26484 0 144181 15216 0 0\n\
                    cpu0 4511791 1023932 357655 1655463 13242 0 72090 7608 0 0\n\
                    intr 1 2 3\n";
        let a = parse_cpu_line(stat).unwrap();
        assert_eq!(a.steal, 15216);
        assert_eq!(
            a.total,
            9023583 + 2047865 + 715310 + 3310926 + 26484 + 144181 + 15216
        );
        let later = "cpu  9024594 2050609 715753 3311959 26484 0 144449 15401 0 0\n";
        let b = parse_cpu_line(later).unwrap();
        let pct = a.steal_percent(&b).unwrap();
        // 185 of 1,011 + 2,744 + 443 + 1,033 + 268 + 185 = 5,684 ticks.
        assert!((pct - 185.0 * 100.0 / 5684.0).abs() < 1e-9, "{pct}");
        assert_eq!(a.steal_percent(&a), None, "no time passed");
        assert_eq!(b.steal_percent(&a), None, "time went backwards");
    }

    #[test]
    fn a_line_without_steal_or_with_garbage_is_refused() {
        assert_eq!(parse_cpu_line("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(parse_cpu_line("cpu  1 2 3 4 x 6 7 8\n"), None);
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(parse_cpu_line(""), None);
    }

    #[test]
    fn this_machine_has_a_cpu_line() {
        let t = CpuTimes::now().unwrap();
        assert!(t.total > 0);
    }

    #[test]
    fn every_sleep_is_measured_and_none_is_early() {
        let d = wake_delay(Duration::from_millis(50)).unwrap();
        assert!(d.samples > 0 && d.samples <= 50, "{d:?}");
        assert!(d.secs >= 0.05, "{d:?}");
        assert!(d.late.max_ms >= d.late.p99_ms && d.late.p99_ms >= d.late.p50_ms);
    }
}
