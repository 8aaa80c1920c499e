//! Running under systemd: readiness and status notifications (`Type=notify`), the watchdog,
//! socket activation (`chatd.socket`) and detecting that stderr goes to the journal.
//!
//! Every function here is a no-op outside systemd (no `NOTIFY_SOCKET`, no `LISTEN_FDS`), so
//! `chatd` behaves the same when started by hand.

use std::os::unix::net::UnixListener;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// How often `STATUS=` is refreshed when there is no watchdog to keep pace with.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Sockets handed over by systemd (`LISTEN_FDS`), if chatd was socket-activated.
#[derive(Debug, Default)]
pub struct Activated {
    /// The TLS port (`ListenStream=8443`).
    pub tls: Option<std::net::TcpListener>,
    /// The control socket (`ListenStream=/run/chatd/control.sock`).
    pub control: Option<UnixListener>,
}

/// Takes the sockets systemd passed, by type: the first TCP listener serves TLS, the first
/// Unix stream listener is the control socket. Must run before any thread starts: it clears
/// `LISTEN_FDS` and `LISTEN_PID` so no child inherits them.
pub fn take_activated() -> Result<Activated, String> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut found = Activated::default();
    for idx in 0..fds.len() {
        if found.tls.is_none() {
            if let Ok(Some(l)) = fds.take_tcp_listener(idx) {
                found.tls = Some(l);
                continue;
            }
        }
        if found.control.is_none() {
            if let Ok(Some(l)) = fds.take_unix_listener(idx) {
                found.control = Some(l);
                continue;
            }
        }
        return Err(format!(
            "socket activation: passed socket #{idx} (fd {}) is neither a TCP nor a Unix stream listener, or a duplicate",
            idx + 3
        ));
    }
    Ok(found)
}

/// True when stderr is connected to the journal (systemd sets `JOURNAL_STREAM` to the
/// device and inode of that stream; a redirected stderr no longer matches).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `READY=1`: the TLS listener and the control socket are bound.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with the monotonic timestamp systemd ≥ 253 wants for `Type=notify-reload`.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// `READY=1` after a reload, with the outcome as the status line.
pub fn reloaded(status: &str, outcome: &str) {
    let status = format!("{status}; {outcome}");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `STOPPING=1`: the drain has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// One line for `systemctl status`.
pub fn status_line(sessions: usize, users: usize, up: Duration) -> String {
    format!(
        "{sessions} session(s), {users} user(s) online; up {}",
        human_duration(up)
    )
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Refreshes `STATUS=` and, when `WatchdogSec=` is set, pings the watchdog at half its
/// period, until `shutdown`; `status` tells the status line. Returns at once when not
/// started by systemd.
pub async fn keepalive(status: impl Fn() -> String, shutdown: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(STATUS_INTERVAL, |w| (w / 2).min(STATUS_INTERVAL));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let status = status();
        if watchdog.is_some() {
            notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
        } else {
            notify(&[NotifyState::Status(&status)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(59)), "59s");
        assert_eq!(human_duration(Duration::from_secs(61)), "1m01s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 120)), "3h02m");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 86400 + 3600)),
            "2d01h"
        );
    }
}
