//! Command line: where the server is, what workload to run, how to print it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatd_proto::Fingerprint;
use chatd_proto::e2e::{ALLOWED_KEY_BITS, MAX_CIPHERTEXT_BYTES};
use clap::Parser;

/// Bytes of Poly1305 tag in every envelope's ciphertext.
const AEAD_TAG_BYTES: usize = 16;

/// Load generator for chatd: fan-out throughput, latency, server CPU and memory.
///
/// Without `--target` it starts its own chatd (found next to this executable, or `--chatd`)
/// on 127.0.0.1 with a generated configuration in a temporary directory, and stops it at the end.
///
/// Messages are end-to-end envelopes (protocol version 2), all sealed before the timed phase.
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
    /// Plaintext bytes per message. Each is sealed into an envelope of about B + 110 +
    /// key-bits/8 bytes, sent base64 in JSON (the figures give the mean line per delivery).
    #[arg(short = 'b', long, default_value_t = 100)]
    pub bytes: usize,
    /// RSA modulus of the bench's device keys: 2048 (default: proto's fixed test keys, no key
    /// generation, the same fingerprints every run), 3072 (chatd clients' default) or 4096
    /// (generated at startup). The envelope signature is key-bits/8 bytes; sealing costs one
    /// RSA signature per message, done for all messages before the timed phase.
    #[arg(long, value_name = "BITS", default_value_t = 2048)]
    pub key_bits: usize,
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

    /// Startup mode: start chatd on a fresh state dir, then N more times on the same one, and
    /// report the time to ready of each.
    #[arg(long, value_name = "N", conflicts_with_all = ["rate", "idle"])]
    pub startup: Option<usize>,

    /// Connect-rate mode: N full connection setups (TCP, TLS handshake, hello; no login), as
    /// fast as `--connect-concurrency` allows, and report setups per second.
    #[arg(long, value_name = "N", conflicts_with_all = ["rate", "idle", "startup"])]
    pub connect_rate: Option<usize>,
    /// Connection setups in flight at once in the connect-rate mode.
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,

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
            anyhow::ensure!(
                u32::try_from(self.messages).is_ok(),
                "--messages cannot exceed a sender chain's {} indexes",
                u32::MAX
            );
            anyhow::ensure!(
                self.bytes + AEAD_TAG_BYTES <= MAX_CIPHERTEXT_BYTES,
                "--bytes cannot exceed {} (the largest envelope text)",
                MAX_CIPHERTEXT_BYTES - AEAD_TAG_BYTES
            );
            if let Some(rate) = self.rate {
                anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
            }
        }
        anyhow::ensure!(
            ALLOWED_KEY_BITS.contains(&self.key_bits),
            "--key-bits must be one of {ALLOWED_KEY_BITS:?}"
        );
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
        assert_eq!(a.key_bits, 2048);
        assert!(a.validate().is_ok());
    }

    #[test]
    fn key_bits_and_text_size_are_checked() {
        let a = Args::parse_from(["chat-bench", "--key-bits", "1024"]);
        assert!(a.validate().is_err());
        let a = Args::parse_from(["chat-bench", "--key-bits", "4096", "-b", "65520"]);
        assert!(a.validate().is_ok());
        let a = Args::parse_from(["chat-bench", "-b", "65521"]);
        assert!(a.validate().is_err());
        let a = Args::parse_from(["chat-bench", "-m", "4294967296"]);
        assert!(a.validate().is_err());
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
