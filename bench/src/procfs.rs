//! What /proc says about the server process (CPU time, resident memory), and our file limit.

use anyhow::Context;

/// Raises the soft open-file limit to the hard limit (children such as chatd inherit it).
/// Returns the new soft limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    Ok(hard)
}

/// User plus system CPU seconds process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&stat).context("unexpected /proc/PID/stat format")?;
    Ok(ticks as f64 / clock_ticks_per_sec()? as f64)
}

/// User plus system CPU seconds of process `pid` and of its children: those still running
/// (PostgreSQL's backends, one per connection) and those it has waited for. A child that ends
/// between two readings moves its time from the first part to the second, so the difference
/// of two readings counts every child's CPU once.
pub fn tree_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let fields = parse_stat(&stat).context("unexpected /proc/PID/stat format")?;
    let mut ticks = fields.ticks + fields.children_ticks;
    for entry in std::fs::read_dir("/proc")
        .context("cannot read /proc")?
        .flatten()
    {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        // A process may end while we look: it is then counted in the parent's waited time.
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(child) = parse_stat(&text).filter(|c| c.ppid == pid) {
            ticks += child.ticks;
        }
    }
    Ok(ticks as f64 / clock_ticks_per_sec()? as f64)
}

/// Clock ticks per second, the unit of /proc/PID/stat's times.
fn clock_ticks_per_sec() -> anyhow::Result<i64> {
    Ok(nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("sysconf(CLK_TCK)")?
        .filter(|t| *t > 0)
        .unwrap_or(100))
}

/// The fields of /proc/PID/stat the bench reads.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    /// Parent process id.
    ppid: u32,
    /// utime + stime, clock ticks.
    ticks: u64,
    /// cutime + cstime: children it has waited for.
    children_ticks: u64,
}

/// [`Stat`] from the text of /proc/PID/stat.
fn parse_stat(stat: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may contain spaces; fields after it
    // start with the state (field 3), so ppid (4) is the 2nd, utime (14) to cstime (17) the
    // 12th to 15th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().take(15).collect();
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        ticks: number(11)? + number(12)?,
        children_ticks: number(13)? + number(14)?,
    })
}

/// utime + stime in clock ticks from the text of /proc/PID/stat.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    parse_stat(stat).map(|s| s.ticks)
}

/// Resident set size of process `pid` in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    parse_vm_rss(&status).context("no VmRSS in /proc/PID/status")
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Samples of some processes, summed (the nodes of a cluster), all optional: a `--target`
/// without `--pid` has none.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pids: Vec<u32>,
    /// Count each process's children too ([`tree_cpu_seconds`]).
    children: bool,
}

impl Probe {
    /// Samples `pid`, or nothing.
    pub fn new(pid: Option<u32>) -> Probe {
        Probe::all(pid.into_iter().collect())
    }

    /// Samples every one of `pids`, and sums them.
    pub fn all(pids: Vec<u32>) -> Probe {
        Probe {
            pids,
            children: false,
        }
    }

    /// Samples `pid` and its children (PostgreSQL's server and its backends).
    pub fn tree(pid: Option<u32>) -> Probe {
        Probe {
            pids: pid.into_iter().collect(),
            children: true,
        }
    }

    /// CPU seconds, if known for every process.
    pub fn cpu(&self) -> Option<f64> {
        self.cpu_each().map(|c| c.iter().sum())
    }

    /// Each process's CPU seconds, if known for every one.
    pub fn cpu_each(&self) -> Option<Vec<f64>> {
        let each = |p: &u32| {
            if self.children {
                tree_cpu_seconds(*p).ok()
            } else {
                cpu_seconds(*p).ok()
            }
        };
        let cpu: Option<Vec<f64>> = self.pids.iter().map(each).collect();
        cpu.filter(|c| !c.is_empty())
    }

    /// RSS bytes, if known for every process.
    pub fn rss(&self) -> Option<u64> {
        let rss: Option<Vec<u64>> = self.pids.iter().map(|p| rss_bytes(*p).ok()).collect();
        rss.filter(|r| !r.is_empty()).map(|r| r.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_name() {
        let stat = "1234 (chat d) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
    }

    #[test]
    fn stat_fields_parent_and_children() {
        let stat = "1234 (post gres) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 75 30 12 20 0 4 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                ppid: 77,
                ticks: 325,
                children_ticks: 42
            })
        );
        assert_eq!(parse_stat("1 (x) S 0 1 1 0 -1 0 0 0 0 0 1 2 3"), None);
    }

    #[test]
    fn a_tree_counts_a_busy_child() {
        let me = std::process::id();
        let alone = tree_cpu_seconds(me).unwrap();
        // A child that spins until killed.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        let with_child = tree_cpu_seconds(me).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let after = tree_cpu_seconds(me).unwrap();
        assert!(with_child - alone > 0.05, "{alone} {with_child}");
        assert!(
            after >= with_child - 0.02,
            "a waited-for child stays counted"
        );
        let probe = Probe::all(vec![me, me]);
        let (one, two) = (cpu_seconds(me).unwrap(), probe.cpu().unwrap());
        assert!(two >= 2.0 * one, "{one} {two}");
        assert_eq!(probe.cpu_each().map(|c| c.len()), Some(2));
        assert_eq!(Probe::new(None).cpu(), None);
        assert_eq!(
            Probe::all(vec![me, u32::MAX]).rss(),
            None,
            "one unknown: unknown"
        );
    }

    #[test]
    fn vm_rss() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_ok());
        assert!(rss_bytes(me).is_ok_and(|r| r > 0));
    }
}
