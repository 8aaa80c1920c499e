//! Command line: where the server is, what workload to run, how to print it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatd_proto::Fingerprint;
use clap::Parser;

/// Load generator for chatd: fan-out throughput, latency, server CPU and memory.
///
/// Without `--target` it starts its own chatd (found next to this executable, or `--chatd`)
/// on 127.0.0.1 with a generated configuration in a temporary directory, and stops it at the end.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Benchmark a running server at HOST:PORT (needs `--control` and `--fingerprint`).
    #[arg(long, value_name = "HOST:PORT", requires_all = ["control", "fingerprint"])]
    pub target: Option<SocketAddr>,
    /// Control socket of the `--target` server (users are created through it).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Certificate fingerprint of the `--target` server.
    #[arg(long, value_name = "SHA256:...")]
    pub fingerprint: Option<Fingerprint>,
    /// Process id of the `--target` server, for its CPU time and RSS (/proc).
    #[arg(long, value_name = "PID", requires = "target")]
    pub pid: Option<u32>,
    /// chatd binary to start (default: `chatd` next to this executable).
    #[arg(long, value_name = "PATH", conflicts_with = "target")]
    pub chatd: Option<PathBuf>,
    /// `[limits] outbound_queue` of the started chatd (frames queued per client).
    #[arg(
        long,
        value_name = "FRAMES",
        default_value_t = 1024,
        conflicts_with = "target"
    )]
    pub outbound_queue: usize,

    /// Clients logged in (fan-out: every one receives every message).
    #[arg(short = 'n', long, default_value_t = 500)]
    pub clients: usize,
    /// Clients that also send (the first S of the N).
    #[arg(short = 's', long, default_value_t = 5)]
    pub senders: usize,
    /// Messages each sender sends.
    #[arg(short = 'm', long, default_value_t = 2000)]
    pub messages: u64,
    /// Payload bytes per message (at least the embedded header, about 30 bytes).
    #[arg(short = 'b', long, default_value_t = 100)]
    pub bytes: usize,
    /// Total send rate over all senders in messages per second (default: as fast as possible).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// Most messages a sender may be ahead of the slowest receiver (0: no limit). Without a
    /// window, senders outrun the fan-out and chatd disconnects receivers whose outbound queue
    /// (1024 frames by default) fills; keep senders x window well below it.
    #[arg(long, value_name = "MSGS", default_value_t = 100)]
    pub window: u64,
    /// Give up waiting for deliveries after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,

    /// Idle mode: log N clients in, wait, and report chatd's RSS per connection.
    #[arg(long, value_name = "N", conflicts_with_all = ["rate"])]
    pub idle: Option<usize>,
    /// Seconds the idle mode waits after the last login before measuring.
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    pub idle_wait: u64,

    /// Users created at once on the control socket (each costs an argon2 hash).
    #[arg(long, default_value_t = 8)]
    pub create_concurrency: usize,
    /// Logins in flight at once (each costs an argon2 verification).
    #[arg(long, default_value_t = 16)]
    pub login_concurrency: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// The workload's clients: `--idle N` or `--clients`.
    pub fn client_count(&self) -> usize {
        self.idle.unwrap_or(self.clients)
    }

    /// The send window, None for unlimited.
    pub fn window(&self) -> Option<u64> {
        (self.window > 0).then_some(self.window)
    }

    /// How long to wait for the fan-out to complete.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// Checks the combinations clap cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.client_count() > 0, "need at least one client");
        if self.idle.is_none() {
            anyhow::ensure!(self.senders > 0, "need at least one sender");
            anyhow::ensure!(
                self.senders <= self.clients,
                "--senders ({}) cannot exceed --clients ({})",
                self.senders,
                self.clients
            );
            anyhow::ensure!(self.messages > 0, "need at least one message per sender");
            if let Some(rate) = self.rate {
                anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
            }
        }
        anyhow::ensure!(
            self.create_concurrency > 0,
            "--create-concurrency must be positive"
        );
        anyhow::ensure!(
            self.login_concurrency > 0,
            "--login-concurrency must be positive"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_issue_workload() {
        let a = Args::parse_from(["chat-bench"]);
        assert_eq!(
            (a.clients, a.senders, a.messages, a.bytes),
            (500, 5, 2000, 100)
        );
        assert!(a.validate().is_ok());
    }

    #[test]
    fn target_needs_control_and_fingerprint() {
        assert!(Args::try_parse_from(["chat-bench", "--target", "127.0.0.1:1"]).is_err());
    }

    #[test]
    fn more_senders_than_clients_is_refused() {
        let a = Args::parse_from(["chat-bench", "-n", "2", "-s", "3"]);
        assert!(a.validate().is_err());
    }
}
