//! Command line: where the server is, what workload to run, how to print it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chatd_proto::Fingerprint;
use chatd_proto::e2e::{ALLOWED_KEY_BITS, MAX_CIPHERTEXT_BYTES};
use clap::{Parser, ValueEnum};

/// Bytes of Poly1305 tag in every envelope's ciphertext.
const AEAD_TAG_BYTES: usize = 16;

/// Total send rate of the login-storm mode without `--rate`, messages per second: the issue's
/// 500-member room at 100 msg/s, a paced load whose latency a storm can visibly move.
pub const STORM_DEFAULT_RATE: f64 = 100.0;

/// Most `--runs`: enough for any median, few enough to end the same day.
const MAX_RUNS: usize = 100;

/// The most nodes `--cluster` starts: on one host more only share the same CPUs thinner.
pub const MAX_CLUSTER_NODES: usize = 8;

/// The longest `--host-check`: a minute says all there is to say about the host's stalls.
const MAX_HOST_CHECK_SECS: f64 = 60.0;

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
    /// A second chatd binary to compare with the first: each of the `--runs` becomes a pair,
    /// the first chatd then this one, and the summary adds each figure's median difference
    /// (this one minus the first) over the pairs. Alternating run by run is what makes two
    /// binaries comparable on a shared host whose speed drifts.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["target", "startup"])]
    pub compare: Option<PathBuf>,
    /// Cluster mode: the fan-out against N chatd nodes (2 to 8) started for it, sharing one
    /// TLS certificate, a throwaway PostgreSQL and a throwaway nats-server; the clients are
    /// spread over the nodes in turn, the senders too. Each of the `--runs` is a pair: the same
    /// workload on one ordinary chatd (SQLite), then on the cluster; the summary compares
    /// deliveries per CPU-second (the cluster's: every node's CPU plus nats-server's;
    /// PostgreSQL's is shown apart), latency, losses and order. Needs PostgreSQL's programs
    /// and nats-server installed.
    #[arg(
        long,
        value_name = "N",
        conflicts_with_all = ["target", "compare", "idle", "startup", "connect_rate", "login_storm"]
    )]
    pub cluster: Option<usize>,
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
    /// Messages each sender sends (the login-storm mode works it out from `--phase-secs`).
    #[arg(short = 'm', long, default_value_t = 2000)]
    pub messages: u64,
    /// Plaintext bytes per message. Each is sealed into an envelope of about B + 110 +
    /// key-bits/8 bytes, sent as `--wire` says (the figures give the mean frame per delivery).
    #[arg(short = 'b', long, default_value_t = 100)]
    pub bytes: usize,
    /// How envelopes travel: `binary` frames (asked for in every `hello`; a server that does
    /// not agree is an error) or base64 in `json` lines (the protocol without binary frames).
    #[arg(long, value_enum, default_value_t = WireMode::Binary)]
    pub wire: WireMode,
    /// RSA modulus of the bench's device keys: 2048 (default: proto's fixed test keys, no key
    /// generation, the same fingerprints every run), 3072 (chatd clients' default) or 4096
    /// (generated at startup). The envelope signature is key-bits/8 bytes; sealing costs one
    /// RSA signature per message, done for all messages before the timed phase.
    #[arg(long, value_name = "BITS", default_value_t = 2048)]
    pub key_bits: usize,
    /// Total send rate over all senders in messages per second (default: as fast as possible;
    /// 100 in the login-storm mode).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// Most messages a sender may be ahead of the slowest receiver (0: no limit). Without a
    /// window, senders outrun the fan-out and chatd disconnects receivers whose outbound queue
    /// (1024 frames by default) fills; keep senders x window well below it.
    #[arg(long, value_name = "MSGS", default_value_t = 100)]
    pub window: u64,
    /// Give up waiting for deliveries after this many seconds (in the login-storm mode, this
    /// many seconds after both phases).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,

    /// Idle mode: log N clients in, wait, and report chatd's RSS per connection.
    #[arg(long, value_name = "N", conflicts_with_all = ["rate"])]
    pub idle: Option<usize>,
    /// Idle mode: the users the N clients log in as, in turn (default: one per client), each
    /// with one device key. chatd's `login_ok` lists every registered device (user, key), so
    /// with a user per client the k-th login costs O(k) and 19,000 clients O(N²); a started
    /// chatd allows N/U sessions per user.
    #[arg(long, value_name = "U", requires = "idle")]
    pub users: Option<usize>,
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

    /// Login-storm mode: chat latency while logins run. A paced fan-out (`--rate`, default 100
    /// msg/s) in two phases of `--phase-secs` each: quiet, then a storm of at most L logins,
    /// each a full connection (TCP, TLS handshake without resumption, hello, login with an
    /// argon2id check on the server, quit), `--storm-concurrency` at a time. The storm stops
    /// when the last message has been sent (or after L logins).
    #[arg(
        long,
        value_name = "L",
        conflicts_with_all = ["idle", "startup", "connect_rate", "messages"]
    )]
    pub login_storm: Option<usize>,
    /// Storm logins in flight at once; each of these storm workers logs in as its own user
    /// (created up front, after the N clients' users).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub storm_concurrency: usize,
    /// Seconds of each login-storm phase. Sets the messages per sender: rate x phase / S per
    /// phase, sealed before the run like the fan-out's.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10.0,
        requires = "login_storm"
    )]
    pub phase_secs: f64,

    /// Users created at once on the control socket (each costs an argon2 hash).
    #[arg(long, default_value_t = 8)]
    pub create_concurrency: usize,
    /// Logins in flight at once (each costs an argon2 verification).
    #[arg(long, default_value_t = 16)]
    pub login_concurrency: usize,
    /// Threads that read the receivers' streams, each an epoll loop over its share (senders
    /// keep a tokio task). 0: every receiver is a tokio task. Default: one per CPU.
    #[arg(long, value_name = "N")]
    pub receiver_threads: Option<usize>,
    /// Seconds spent, before the timed phase of a fan-out or login storm, measuring how late
    /// 1 ms sleeps wake on the idle machine (a shared host's stalls show there). 0: skip.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub host_check: f64,
    /// Runs of the chosen mode, one after another, each against a chatd of its own (or the
    /// same `--target`); after the last, the median of every figure. The issue's targets are
    /// medians of at least three runs.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        conflicts_with = "startup"
    )]
    pub runs: usize,
    /// Print one JSON object instead of text (with `--runs` above 1: the runs' objects and
    /// their medians in one).
    #[arg(long)]
    pub json: bool,
}

/// How envelopes travel between the bench clients and chatd (docs/PROTOCOL.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum WireMode {
    /// Binary `send` and `envelope` frames, negotiated in `hello`.
    #[default]
    Binary,
    /// `send` and `envelope` JSON lines with the envelope in base64.
    Json,
}

impl WireMode {
    /// The name `--wire` takes and the figures print.
    pub fn as_str(self) -> &'static str {
        match self {
            WireMode::Binary => "binary",
            WireMode::Json => "json",
        }
    }

    /// True when every `hello` asks for binary frames.
    pub fn binary(self) -> bool {
        self == WireMode::Binary
    }
}

impl Args {
    /// The workload's clients: `--idle N` or `--clients`.
    pub fn client_count(&self) -> usize {
        self.idle.unwrap_or(self.clients)
    }

    /// Users the clients log in as: `--users`, or one per client.
    pub fn user_count(&self) -> usize {
        let n = self.client_count();
        self.users.unwrap_or(n).clamp(1, n.max(1))
    }

    /// Sessions one user has at once when every client is logged in.
    pub fn sessions_per_user(&self) -> usize {
        self.client_count().div_ceil(self.user_count())
    }

    /// Connections chatd must accept at once: the clients, plus the storm's (a started chatd's
    /// `max_connections` and `max_connections_per_ip` are sized from this).
    pub fn connection_count(&self) -> usize {
        let storm = self.login_storm.map_or(0, |_| self.storm_concurrency);
        self.client_count().saturating_add(storm)
    }

    /// The total send rate: `--rate`, [`STORM_DEFAULT_RATE`] in the login-storm mode without
    /// it, None for as fast as possible.
    pub fn rate(&self) -> Option<f64> {
        self.rate
            .or_else(|| self.login_storm.map(|_| STORM_DEFAULT_RATE))
    }

    /// Messages each sender sends in one login-storm phase: rate x phase / S, at least one.
    /// None outside that mode.
    pub fn phase_messages(&self) -> Option<u64> {
        self.login_storm?;
        let per_sender = self.rate()? * self.phase_secs / self.senders.max(1) as f64;
        // Out-of-range floats saturate; validate() refuses the result.
        Some((per_sender.ceil() as u64).max(1))
    }

    /// Messages each sender sends: `--messages`, or both login-storm phases' worth.
    pub fn messages_per_sender(&self) -> u64 {
        self.phase_messages()
            .map_or(self.messages, |m| m.saturating_mul(2))
    }

    /// The send window, None for unlimited.
    pub fn window(&self) -> Option<u64> {
        (self.window > 0).then_some(self.window)
    }

    /// `--receiver-threads`, or one per CPU.
    pub fn receiver_threads(&self) -> usize {
        self.receiver_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// `--host-check` as a duration; None to skip it.
    pub fn host_check(&self) -> Option<Duration> {
        (self.host_check > 0.0).then(|| Duration::from_secs_f64(self.host_check))
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
            let messages = self.messages_per_sender();
            anyhow::ensure!(messages > 0, "need at least one message per sender");
            anyhow::ensure!(
                u32::try_from(messages).is_ok(),
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
        if let Some(logins) = self.login_storm {
            anyhow::ensure!(logins > 0, "--login-storm needs at least one login");
            anyhow::ensure!(
                self.storm_concurrency > 0,
                "--storm-concurrency must be positive"
            );
            anyhow::ensure!(
                self.phase_secs > 0.0 && self.phase_secs.is_finite(),
                "--phase-secs must be positive"
            );
        }
        if let Some(nodes) = self.cluster {
            anyhow::ensure!(
                (2..=MAX_CLUSTER_NODES).contains(&nodes),
                "--cluster must be 2 to {MAX_CLUSTER_NODES} nodes, got {nodes}"
            );
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
        anyhow::ensure!(
            (1..=MAX_RUNS).contains(&self.runs),
            "--runs must be 1 to {MAX_RUNS}"
        );
        // A negative, infinite or NaN length cannot be a Duration.
        anyhow::ensure!(
            (0.0..=MAX_HOST_CHECK_SECS).contains(&self.host_check),
            "--host-check must be 0 to {MAX_HOST_CHECK_SECS} seconds"
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
        assert_eq!(a.wire, WireMode::Binary);
        assert!(a.validate().is_ok());
    }

    #[test]
    fn wire_takes_binary_or_json() {
        let a = Args::parse_from(["chat-bench", "--wire", "json"]);
        assert_eq!((a.wire, a.wire.as_str()), (WireMode::Json, "json"));
        assert!(!a.wire.binary());
        let a = Args::parse_from(["chat-bench", "--wire", "binary"]);
        assert_eq!((a.wire, a.wire.as_str()), (WireMode::Binary, "binary"));
        assert!(Args::try_parse_from(["chat-bench", "--wire", "cbor"]).is_err());
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
    fn login_storm_defaults_a_rate_and_sizes_the_phases() {
        let a = Args::parse_from(["chat-bench", "--login-storm", "100"]);
        assert!(a.validate().is_ok());
        assert_eq!(a.rate(), Some(STORM_DEFAULT_RATE));
        // 100 msg/s over 5 senders for 10 s: 200 each per phase.
        assert_eq!(a.phase_messages(), Some(200));
        assert_eq!(a.messages_per_sender(), 400);
        assert_eq!(a.connection_count(), 500 + 32);
        let a = Args::parse_from([
            "chat-bench",
            "--login-storm",
            "5",
            "--rate",
            "7",
            "-s",
            "2",
            "--phase-secs",
            "1",
        ]);
        assert_eq!(a.phase_messages(), Some(4), "3.5 rounds up");
        let a = Args::parse_from(["chat-bench"]);
        assert_eq!((a.rate(), a.phase_messages()), (None, None));
        assert_eq!(a.messages_per_sender(), 2000);
        assert_eq!(a.connection_count(), 500);
    }

    #[test]
    fn login_storm_refuses_messages_and_other_modes() {
        for other in [
            &["-m", "10"][..],
            &["--idle", "3"],
            &["--connect-rate", "3"],
        ] {
            let mut argv = vec!["chat-bench", "--login-storm", "10"];
            argv.extend_from_slice(other);
            assert!(Args::try_parse_from(&argv).is_err(), "{argv:?}");
        }
        assert!(Args::try_parse_from(["chat-bench", "--phase-secs", "3"]).is_err());
        let a = Args::parse_from(["chat-bench", "--login-storm", "0"]);
        assert!(a.validate().is_err());
        let a = Args::parse_from(["chat-bench", "--login-storm", "5", "--phase-secs", "0"]);
        assert!(a.validate().is_err());
    }

    #[test]
    fn runs_are_one_to_a_hundred_and_not_for_startup() {
        assert_eq!(Args::parse_from(["chat-bench"]).runs, 1);
        for (runs, valid) in [("3", true), ("100", true), ("0", false), ("101", false)] {
            let a = Args::parse_from(["chat-bench", "--runs", runs]);
            assert_eq!(a.validate().is_ok(), valid, "--runs {runs}");
        }
        assert!(Args::try_parse_from(["chat-bench", "--runs", "3", "--startup", "2"]).is_err());
        assert!(Args::try_parse_from(["chat-bench", "--compare", "x", "--startup", "2"]).is_err());
    }

    #[test]
    fn host_check_is_seconds_or_off() {
        let a = Args::parse_from(["chat-bench"]);
        assert_eq!(a.host_check(), Some(Duration::from_secs(2)));
        let a = Args::parse_from(["chat-bench", "--host-check", "0"]);
        assert_eq!(a.host_check(), None);
        assert!(a.validate().is_ok());
        let a = Args::parse_from(["chat-bench", "--host-check", "60"]);
        assert!(a.validate().is_ok());
        for bad in ["-1", "60.5", "inf", "NaN"] {
            let a = Args::parse_from(["chat-bench".to_string(), format!("--host-check={bad}")]);
            assert!(a.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cluster_is_two_to_eight_nodes_of_the_fan_out() {
        for (nodes, valid) in [
            ("2", true),
            ("3", true),
            ("8", true),
            ("1", false),
            ("9", false),
        ] {
            let a = Args::parse_from(["chat-bench", "--cluster", nodes]);
            assert_eq!(a.validate().is_ok(), valid, "--cluster {nodes}");
        }
        let a = Args::parse_from([
            "chat-bench",
            "--cluster",
            "3",
            "--rate",
            "100",
            "--runs",
            "3",
        ]);
        assert!(a.validate().is_ok());
        for other in [
            &["--compare", "x"][..],
            &["--idle", "3"],
            &["--startup", "2"],
            &["--connect-rate", "3"],
            &["--login-storm", "3"],
        ] {
            let mut argv = vec!["chat-bench", "--cluster", "3"];
            argv.extend_from_slice(other);
            assert!(Args::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn more_senders_than_clients_is_refused() {
        let a = Args::parse_from(["chat-bench", "-n", "2", "-s", "3"]);
        assert!(a.validate().is_err());
    }
}
