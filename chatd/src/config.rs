//! chatd's configuration: one TOML file, unknown keys rejected, every limit with a default.
//!
//! Value checks run inside deserialization (`NonZero*`, custom `deserialize_with`), so a
//! bad value is reported by the TOML parser with its file, line and key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod cluster;
pub use cluster::{ClusterConfig, MAX_DATABASE_POOL, PASSWORD_CREDENTIAL};

/// Default configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/chatd/chatd.toml";

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a bad value.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// The parser's message, naming line, column and key.
        message: String,
    },
    /// Values that are fine alone but wrong together.
    #[error("invalid config file {path}: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What is wrong, naming the keys.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener, paths and admin access.
    pub server: ServerConfig,
    /// Certificate and key.
    pub tls: TlsConfig,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Which commands exist and their aliases.
    pub commands: CommandsConfig,
    /// External plugin commands (`[[plugins]]`).
    pub plugins: Vec<PluginConfig>,
    /// Rooms.
    pub rooms: RoomsConfig,
    /// Logging.
    pub log: LogConfig,
    /// The OpenMetrics endpoint.
    pub metrics: MetricsConfig,
    /// This node and, when set, the PostgreSQL database used instead of SQLite.
    pub cluster: ClusterConfig,
}

/// `[metrics]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics` (OpenMetrics text); None: no listener.
    pub listen: Option<SocketAddr>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// TLS listen address.
    pub listen: SocketAddr,
    /// Where the database (and a generated certificate) live.
    pub state_dir: PathBuf,
    /// The admin control socket.
    pub control_socket: PathBuf,
    /// Members of this group may use the control socket (besides root and chatd's own user).
    pub admin_group: String,
    /// Message of the day: shown at login and by `/motd` (empty: none).
    pub motd: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            state_dir: PathBuf::from("/var/lib/chatd"),
            control_socket: PathBuf::from("/run/chatd/control.sock"),
            admin_group: "chatd-admin".into(),
            motd: String::new(),
        }
    }
}

/// `[rooms]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// The room every user is in (joined again at each login), without `#`.
    pub default: String,
    /// Users may create rooms with `/join`; when false only admins can.
    pub users_can_create: bool,
    /// Rooms on the server at most.
    pub max_rooms: NonZeroUsize,
    /// Rooms one user may be in at most (the default room included).
    pub max_rooms_per_user: NonZeroUsize,
    /// Longest topic, in characters.
    pub max_topic_chars: NonZeroUsize,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            default: "lobby".into(),
            users_can_create: true,
            max_rooms: nz_usize(1000),
            max_rooms_per_user: nz_usize(50),
            max_topic_chars: nz_usize(200),
        }
    }
}

/// `[[plugins]]`: a command run by an external program.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Command name, without the slash.
    pub name: String,
    /// Absolute path of the program; run directly, never through a shell.
    pub exec: PathBuf,
    /// Argument synopsis shown by `/help`.
    #[serde(default)]
    pub usage: String,
    /// One line of help.
    #[serde(default)]
    pub help: String,
    /// Milliseconds the program may run before it is killed.
    #[serde(default = "plugin_timeout_ms")]
    pub timeout_ms: NonZeroU64,
    /// Bytes the program may write to stdout; more is an error.
    #[serde(default = "plugin_max_output")]
    pub max_output_bytes: NonZeroUsize,
    /// Runs of this plugin at once; a call beyond it is refused as busy.
    #[serde(default = "plugin_max_concurrent")]
    pub max_concurrent: NonZeroUsize,
    /// Only administrators may run it.
    #[serde(default)]
    pub admin_only: bool,
    /// The program's reply may go to the caller's current room (`"to":"room"`), not only
    /// to the caller.
    #[serde(default)]
    pub allow_room_reply: bool,
}

fn plugin_timeout_ms() -> NonZeroU64 {
    nz_u64(2000)
}
fn plugin_max_output() -> NonZeroUsize {
    nz_usize(16 * 1024)
}
fn plugin_max_concurrent() -> NonZeroUsize {
    nz_usize(4)
}

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; when unset chatd makes a self-signed one in the state dir.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
}

/// Default `limits.outbound_queue_bytes`: 4 MiB, 64 lines of the longest default size, or
/// about 5,000 ordinary room messages.
const DEFAULT_OUTBOUND_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Longest `limits.presence_delay_ms`: a second is noticeable in a conversation.
const MAX_PRESENCE_DELAY_MS: u64 = 1000;

/// Most lines `offline_jobs_max` may let wait for the offline writer (each up to a line long).
const MAX_OFFLINE_JOBS: usize = 1_000_000;

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest protocol line, bytes.
    #[serde(deserialize_with = "line_bytes")]
    pub max_line_bytes: NonZeroUsize,
    /// Longest message text, bytes.
    pub max_text_bytes: NonZeroUsize,
    /// Protocol errors tolerated on one connection before it is closed.
    pub max_protocol_errors: NonZeroU32,
    /// Failed logins tolerated on one connection before it is closed.
    pub max_login_failures: NonZeroU32,
    /// Failed logins per address or account that cost no waiting.
    pub login_free_failures: NonZeroU32,
    /// Longest wait imposed on an address whose logins keep failing, seconds.
    pub login_backoff_max_secs: NonZeroU64,
    /// Longest wait imposed on an account whose logins keep failing (from any address), seconds.
    pub account_backoff_max_secs: NonZeroU64,
    /// Seconds without any line from a client before its connection is closed (clients ping
    /// at a third of this; `hello` tells them).
    pub idle_timeout_secs: NonZeroU64,
    /// Seconds allowed for the TLS handshake.
    pub handshake_timeout_secs: NonZeroU64,
    /// Seconds allowed from connect to a successful login.
    pub login_timeout_secs: NonZeroU64,
    /// Connections served at once. When all are taken, a new one closes the oldest that has
    /// not logged in yet, once that one is `evict_unfinished_after_ms` old; with only
    /// logged-in sessions, new ones wait in the kernel backlog.
    pub max_connections: NonZeroUsize,
    /// Milliseconds a connection that has not logged in is sure to keep its slot on a full
    /// server (0: none); past it, it may be closed to make room for a new one.
    pub evict_unfinished_after_ms: u64,
    /// Connections from one source address at once; more are closed before the TLS handshake.
    pub max_connections_per_ip: NonZeroUsize,
    /// Sessions one user may have at once.
    pub max_sessions_per_user: NonZeroUsize,
    /// Unrevoked device keys one user may register; more logins with new keys are refused.
    pub max_devices_per_user: NonZeroUsize,
    /// Messages and commands one session may send per second, on average.
    pub messages_per_sec: NonZeroU32,
    /// Messages and commands one session may send at once before the rate applies.
    pub message_burst: NonZeroU32,
    /// Messages and commands all sessions of one account may send per second, together.
    pub account_messages_per_sec: NonZeroU32,
    /// Messages and commands all sessions of one account may send at once, together.
    pub account_message_burst: NonZeroU32,
    /// Wrapped chains (`chain` frames) one session may send per second, on average.
    pub chains_per_sec: NonZeroU32,
    /// Chains one session may send at once: a client sends one per member device when it
    /// starts a conversation's chain, so this is sized for the largest room.
    pub chain_burst: NonZeroU32,
    /// Chains all sessions of one account may send per second, together.
    pub account_chains_per_sec: NonZeroU32,
    /// Chains all sessions of one account may send at once, together.
    pub account_chain_burst: NonZeroU32,
    /// Chains one account may send to one device key per second (a client sends a device
    /// one per conversation it starts, and one per chain it is asked for again).
    pub device_chains_per_sec: NonZeroU32,
    /// Chains one account may send to one device key at once.
    pub device_chain_burst: NonZeroU32,
    /// Frames dropped for the rate limit in a row before the session is closed.
    pub max_rate_violations: NonZeroU32,
    /// Frames queued for one slow reader before it is disconnected.
    pub outbound_queue: NonZeroUsize,
    /// Bytes queued for one slow reader (with what its writer is still writing) before it is
    /// disconnected; a value under twice `max_line_bytes` counts as that (see
    /// [`Limits::queue_bytes`]).
    pub outbound_queue_bytes: NonZeroUsize,
    /// Milliseconds a login's or logout's presence and device notices may wait to share a
    /// write with other lines (0: sent at once).
    pub presence_delay_ms: u64,
    /// Seconds a draining shutdown waits for sessions to finish.
    pub shutdown_grace_secs: NonZeroU64,
    /// Messages and keys stored for one offline device at most; past it, new ones are not
    /// stored for that device and the sender is told.
    pub offline_queue_max: NonZeroUsize,
    /// Messages and keys one sender may have stored for one offline device at most (a share
    /// of `offline_queue_max`, so one sender cannot fill another user's queue); past it,
    /// that sender's new ones are not stored for that device and it is told. Unset: half
    /// of `offline_queue_max` (see [`Limits::offline_share`]).
    pub offline_queue_per_sender: Option<NonZeroUsize>,
    /// Lines waiting for the offline writer at most (read at start); past it, lines for
    /// offline devices are refused and their senders told to retry.
    pub offline_jobs_max: NonZeroUsize,
    /// Seconds a message stored for an offline device is kept.
    pub offline_ttl_secs: NonZeroU64,
    /// Seconds a database write waits for a lock another process holds before it is refused
    /// (`storage_unavailable`).
    pub db_busy_timeout_secs: NonZeroU64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: nz_usize(chatd_proto::codec::DEFAULT_MAX_LINE),
            max_text_bytes: nz_usize(16 * 1024),
            max_protocol_errors: nz_u32(5),
            max_login_failures: nz_u32(3),
            login_free_failures: nz_u32(5),
            login_backoff_max_secs: nz_u64(300),
            account_backoff_max_secs: nz_u64(30),
            idle_timeout_secs: nz_u64(300),
            handshake_timeout_secs: nz_u64(10),
            login_timeout_secs: nz_u64(30),
            max_connections: nz_usize(1024),
            evict_unfinished_after_ms: 2000,
            max_connections_per_ip: nz_usize(64),
            max_sessions_per_user: nz_usize(16),
            max_devices_per_user: nz_usize(16),
            messages_per_sec: nz_u32(10),
            message_burst: nz_u32(30),
            account_messages_per_sec: nz_u32(30),
            account_message_burst: nz_u32(90),
            chains_per_sec: nz_u32(100),
            chain_burst: nz_u32(2000),
            account_chains_per_sec: nz_u32(200),
            account_chain_burst: nz_u32(4000),
            device_chains_per_sec: nz_u32(1),
            device_chain_burst: nz_u32(100),
            max_rate_violations: nz_u32(20),
            outbound_queue: nz_usize(1024),
            outbound_queue_bytes: nz_usize(DEFAULT_OUTBOUND_QUEUE_BYTES),
            presence_delay_ms: 25,
            shutdown_grace_secs: nz_u64(5),
            offline_queue_max: nz_usize(1000),
            offline_queue_per_sender: None,
            offline_jobs_max: nz_usize(1024),
            offline_ttl_secs: nz_u64(7 * 24 * 3600),
            db_busy_timeout_secs: nz_u64(5),
        }
    }
}

impl Limits {
    /// The byte limit of a session's outbound queue in force: `outbound_queue_bytes`, but at
    /// least twice `max_line_bytes`, so that a line of the longest size can queue while
    /// another is still being written (raising `max_line_bytes` alone keeps working).
    pub fn queue_bytes(&self) -> usize {
        self.outbound_queue_bytes
            .get()
            .max(self.max_line_bytes.get().saturating_mul(2))
    }
    /// TLS handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.get())
    }
    /// [`Limits::evict_unfinished_after_ms`] as a duration.
    pub fn evict_unfinished_after(&self) -> Duration {
        Duration::from_millis(self.evict_unfinished_after_ms)
    }
    /// Login deadline.
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout_secs.get())
    }
    /// Idle deadline.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.get())
    }
    /// How long presence and device notices may wait (zero: not at all).
    pub fn presence_delay(&self) -> Duration {
        Duration::from_millis(self.presence_delay_ms)
    }
    /// Shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs.get())
    }

    /// Lines one sender may have in one device's offline queue: `offline_queue_per_sender`,
    /// or half of `offline_queue_max` when unset; never more than `offline_queue_max`.
    pub fn offline_share(&self) -> usize {
        let max = self.offline_queue_max.get();
        self.offline_queue_per_sender
            .map_or(max / 2, NonZeroUsize::get)
            .clamp(1, max)
    }

    /// How long a write waits for another process's database lock.
    pub fn db_busy_timeout(&self) -> Duration {
        Duration::from_secs(self.db_busy_timeout_secs.get())
    }
}

/// Names of every built-in command: what `commands.disabled` and alias targets may name.
///
/// `commands::builtin()` is the list that counts; this copy is here so that checking a config
/// needs nothing above this module, and a test in `commands` fails when the two differ.
/// Whispers and `/me` are not here: their text is end-to-end encrypted, so the client seals
/// them and the server only routes the envelopes (see `crate::session`).
pub const BUILTIN_NAMES: &[&str] = &[
    "announce",
    "away",
    "disconnect",
    "help",
    "invite",
    "join",
    "kick",
    "list",
    "members",
    "motd",
    "part",
    "ping",
    "revoke",
    "rooms",
    "topic",
    "whois",
];

/// `[commands]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Built-in commands that are switched off.
    pub disabled: Vec<String>,
    /// Extra names: alias -> command.
    pub aliases: BTreeMap<String, String>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        let aliases = [("who", "list")]
            .into_iter()
            .map(|(a, c)| (a.to_string(), c.to_string()))
            .collect();
        CommandsConfig {
            disabled: Vec::new(),
            aliases,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `chatd=debug`, ...); `RUST_LOG` overrides it.
    pub level: String,
    /// Seconds over which repeated INFO/WARN lines of one kind are summarised (0: never).
    pub repeat_window_secs: u64,
    /// Lines of one kind written per window before the rest are only counted.
    pub repeat_burst: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            repeat_window_secs: 10,
            repeat_burst: 5,
        }
    }
}

// Constants are non-zero by inspection; `max(1)` avoids an unwrap.
fn nz_usize(v: usize) -> NonZeroUsize {
    NonZeroUsize::new(v).unwrap_or(NonZeroUsize::MIN)
}
fn nz_u32(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
}
fn nz_u64(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN)
}

/// Lines must at least hold a login frame with a long password; 16 MiB is far past any sane use.
fn line_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NonZeroUsize, D::Error> {
    let v = usize::deserialize(d)?;
    if !(1024..=16 * 1024 * 1024).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "max_line_bytes must be between 1024 and 16777216, got {v}"
        )));
    }
    Ok(nz_usize(v))
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The built-in defaults for `chatd --dev`: everything under `state_dir`, loopback only.
    pub fn dev(state_dir: &Path) -> Config {
        let mut config = Config::default();
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 8443));
        config.server.state_dir = state_dir.to_path_buf();
        config.server.control_socket = state_dir.join("control.sock");
        config
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => return Err(invalid("tls.cert is set but tls.key is not".into())),
            (None, Some(_)) => return Err(invalid("tls.key is set but tls.cert is not".into())),
            _ => {}
        }
        let (text, line) = (
            self.limits.max_text_bytes.get(),
            self.limits.max_line_bytes.get(),
        );
        let text_cap = chatd_proto::e2e::MAX_CIPHERTEXT_BYTES - 16;
        if text > text_cap {
            return Err(invalid(format!(
                "limits.max_text_bytes ({text}) is more than an envelope can carry ({text_cap})"
            )));
        }
        // Text travels sealed, in base64, with a header and a signature of up to 512 bytes.
        let needed = chatd_proto::frame::max_send_line_bytes(text);
        if line < needed {
            return Err(invalid(format!(
                "limits.max_line_bytes ({line}) is too small for an envelope carrying \
                 limits.max_text_bytes ({text}) of text; it must be at least {needed}"
            )));
        }
        let delay = self.limits.presence_delay_ms;
        if delay > MAX_PRESENCE_DELAY_MS {
            return Err(invalid(format!(
                "limits.presence_delay_ms ({delay}) is more than {MAX_PRESENCE_DELAY_MS}: \
                 presence would lag behind the conversation"
            )));
        }
        let jobs = self.limits.offline_jobs_max.get();
        if jobs > MAX_OFFLINE_JOBS {
            return Err(invalid(format!(
                "limits.offline_jobs_max ({jobs}) is more than {MAX_OFFLINE_JOBS}: the queue \
                 would hold that many lines in memory"
            )));
        }
        if chatd_proto::names::validate_room(&self.rooms.default).is_err() {
            return Err(invalid(format!(
                "rooms.default: {:?} is not a room name (1-32 of a-z, 0-9, _ and -, no #)",
                self.rooms.default
            )));
        }
        for (alias, target) in &self.commands.aliases {
            if alias.is_empty() || alias.contains(char::is_whitespace) || alias.starts_with('/') {
                return Err(invalid(format!(
                    "commands.aliases: {alias:?} is not a valid command name"
                )));
            }
            if !BUILTIN_NAMES.contains(&target.as_str()) {
                return Err(invalid(format!(
                    "commands.aliases.{alias}: no command named {target:?}"
                )));
            }
        }
        for name in &self.commands.disabled {
            if !BUILTIN_NAMES.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "commands.disabled: no command named {name:?}"
                )));
            }
        }
        if let Some(addr) = self.metrics.listen {
            // Port 0 picks a free port for each; otherwise one port cannot serve both.
            let server = self.server.listen;
            let same_ip = addr.ip() == server.ip()
                || addr.ip().is_unspecified()
                || server.ip().is_unspecified();
            if addr.port() != 0 && addr.port() == server.port() && same_ip {
                return Err(invalid(format!(
                    "metrics.listen ({addr}) would take server.listen's port ({})",
                    self.server.listen
                )));
            }
        }
        if self.server.state_dir.as_os_str().is_empty() {
            return Err(invalid("server.state_dir must not be empty".into()));
        }
        check_log_level(&self.log.level)
            .map_err(|e| invalid(format!("log.level {:?}: {e}", self.log.level)))?;
        self.cluster.check().map_err(invalid)?;
        Ok(())
    }
}

/// The levels a `log.level` directive may name.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A `log.level` is a tracing filter, but one that names no level at all is refused: a bare
/// word such as `verbose` would parse as "everything from the target `verbose`", i.e. no log
/// at all from chatd.
fn check_log_level(level: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let names_a_level = match directive.rsplit_once('=') {
            Some((_, lvl)) => LOG_LEVELS.contains(&lvl.trim().to_ascii_lowercase().as_str()),
            None => LOG_LEVELS.contains(&directive.to_ascii_lowercase().as_str()),
        };
        if !names_a_level {
            return Err(format!(
                "{directive:?} is not a level; use one of {} or TARGET=LEVEL (e.g. chatd=debug)",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/chatd/chatd.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.limits.max_line_bytes.get(), 65536);
        assert_eq!(c.server.listen.port(), 8443);
    }

    #[test]
    fn shipped_config_parses_and_matches_defaults() {
        let text = include_str!("../../config/chatd.toml");
        let c = parse(text).unwrap();
        let d = Config::default();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.server.state_dir, d.server.state_dir);
        assert_eq!(c.server.control_socket, d.server.control_socket);
        assert_eq!(c.server.admin_group, d.server.admin_group);
        assert_eq!(format!("{:?}", c.limits), format!("{:?}", d.limits));
        assert_eq!(c.commands.aliases, d.commands.aliases);
        assert_eq!(c.log.level, d.log.level);
        assert_eq!(c.cluster, d.cluster);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("/etc/chatd/chatd.toml"), "{err}");
    }

    #[test]
    fn bad_values_name_line() {
        let err = parse("[limits]\n\nmax_line_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("max_line_bytes"),
            "{err}"
        );
        let err = parse("[limits]\nmax_connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("max_connections"),
            "{err}"
        );
        let err = parse("[server]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("listen"), "{err}");
    }

    #[test]
    fn limits_edges() {
        // 100 bytes of text need a 1109-byte line: 4 * ceil((713 + 100) / 3) + 25.
        assert!(parse("[limits]\nmax_line_bytes = 1109\nmax_text_bytes = 100\n").is_ok());
        let err = parse("[limits]\nmax_line_bytes = 1108\nmax_text_bytes = 100\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1109"), "{err}");
        assert!(parse("[limits]\nmax_line_bytes = 1023\n").is_err());
        assert!(parse("[limits]\nmax_line_bytes = 16777216\nmax_text_bytes = 65520\n").is_ok());
        assert!(parse("[limits]\nmax_line_bytes = 16777216\nmax_text_bytes = 65521\n").is_err());
        assert!(parse("[limits]\nmax_line_bytes = 16777216\n").is_ok());
        assert!(parse("[limits]\nmax_line_bytes = 16777217\n").is_err());
        assert!(parse("[limits]\npresence_delay_ms = 0\n").is_ok());
        // The queue's byte limit never goes under two of the longest lines.
        let c = parse("[limits]\nmax_line_bytes = 16777216\n").unwrap();
        assert_eq!(c.limits.queue_bytes(), 32 * 1024 * 1024);
        let c = parse("[limits]\noutbound_queue_bytes = 131072\n").unwrap();
        assert_eq!(c.limits.queue_bytes(), 131072, "exactly two default lines");
        let c = parse("[limits]\noutbound_queue_bytes = 131071\n").unwrap();
        assert_eq!(c.limits.queue_bytes(), 131072, "raised to two lines");
        assert_eq!(Limits::default().queue_bytes(), 4 * 1024 * 1024);
        assert!(parse("[limits]\noutbound_queue_bytes = 0\n").is_err());
        assert!(parse("[limits]\npresence_delay_ms = 1000\n").is_ok());
        let err = parse("[limits]\npresence_delay_ms = 1001\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.presence_delay_ms (1001)"), "{err}");
        assert!(parse("[limits]\noffline_jobs_max = 1000000\n").is_ok());
        // The share of an offline queue: half of it unless set, never more than all of it.
        let share = |t: &str| parse(t).unwrap().limits.offline_share();
        assert_eq!(share(""), 500);
        assert_eq!(share("[limits]\noffline_queue_max = 1\n"), 1);
        assert_eq!(share("[limits]\noffline_queue_max = 3\n"), 1);
        assert_eq!(share("[limits]\noffline_queue_per_sender = 7\n"), 7);
        let big = "[limits]\noffline_queue_max = 5\noffline_queue_per_sender = 9\n";
        assert_eq!(share(big), 5);
        let err = parse("[limits]\noffline_jobs_max = 1000001\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.offline_jobs_max (1000001)"), "{err}");
    }

    #[test]
    fn cross_checks() {
        let err = parse("[tls]\ncert = \"/x.pem\"\n").unwrap_err().to_string();
        assert!(err.contains("tls.key"), "{err}");
        let err = parse("[commands.aliases]\nx = \"nosuch\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("commands.aliases.x"), "{err}");
        let err = parse("[commands]\ndisabled = [\"nosuch\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("commands.disabled"), "{err}");
        let err = parse("[log]\nlevel = \"=bad=\"\n").unwrap_err().to_string();
        assert!(err.contains("log.level"), "{err}");
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_checked() {
        assert_eq!(parse("").unwrap().metrics.listen, None);
        let on = parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            on.metrics.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        let e = parse("[metrics]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = parse("[metrics]\nlisten = \"127.0.0.1:8443\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.listen"), "{e}");
    }

    #[test]
    fn log_level_must_name_a_level() {
        for ok in ["info", "WARN", "off", "chatd=debug", "info,chatd=trace"] {
            assert!(check_log_level(ok).is_ok(), "{ok}");
        }
        for bad in ["verbose", "chatd", "info,verbose", "chatd=loud"] {
            assert!(check_log_level(bad).is_err(), "{bad}");
        }
        let err = parse("[log]\nlevel = \"verbose\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("log.level \"verbose\"") && err.contains("is not a level"),
            "{err}"
        );
    }
}
