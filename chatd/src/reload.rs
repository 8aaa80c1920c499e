//! Live reload (SIGHUP, `chatctl reload`): re-read the configuration file and the TLS
//! certificate and key without dropping a connection.
//!
//! Everything is checked before anything is swapped, so an invalid file, certificate or key
//! leaves the running configuration untouched. Values that are bound to the running process
//! (listen address, paths, admin group, sizes of shared tables) keep their old value and are
//! logged as needing a restart.

use std::sync::{Mutex, PoisonError};

use crate::commands::Registry;
use crate::config::Config;
use crate::live::Live;
use crate::tls::Identity;

/// Re-reads the configuration: the file given at start, with the same command-line overrides.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Puts a new `log.level` in force (the tracing filter lives in main.rs).
pub type LogLevelHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Where reloads come from, and one reload at a time.
pub struct Reloader {
    source: Option<ConfigSource>,
    log_level: Option<LogLevelHook>,
    busy: Mutex<()>,
}

impl Reloader {
    /// Reloads read from `source`; None re-uses the configuration in force (certificate only).
    /// Without `log_level`, a changed `log.level` waits for a restart.
    pub fn new(source: Option<ConfigSource>, log_level: Option<LogLevelHook>) -> Reloader {
        Reloader {
            source,
            log_level,
            busy: Mutex::new(()),
        }
    }
}

/// A reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration file is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// The `[commands]` section is inconsistent.
    #[error("commands: {0}")]
    Commands(#[from] crate::commands::RegistryError),
    /// The certificate or key could not be loaded.
    #[error("TLS certificate: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// What a successful reload did.
#[derive(Debug, Default)]
pub struct ReloadOutcome {
    /// Settings (dotted keys) now in force with new values.
    pub changed: Vec<&'static str>,
    /// Settings whose new value waits for a restart.
    pub needs_restart: Vec<&'static str>,
    /// The new certificate's fingerprint, if it changed.
    pub new_fingerprint: Option<chatd_proto::Fingerprint>,
}

impl ReloadOutcome {
    /// One line for logs and for `chatctl reload`.
    pub fn summary(&self) -> String {
        let mut out = String::from("configuration reloaded");
        if self.changed.is_empty() && self.new_fingerprint.is_none() {
            out.push_str("; nothing changed");
        }
        if !self.changed.is_empty() {
            out.push_str(&format!("; changed: {}", self.changed.join(", ")));
        }
        if let Some(fp) = &self.new_fingerprint {
            out.push_str(&format!("; new certificate {fp}"));
        }
        if !self.needs_restart.is_empty() {
            out.push_str(&format!(
                "; needs a restart to change: {}",
                self.needs_restart.join(", ")
            ));
        }
        out
    }
}

/// What a reload replaces: the values in force, and where the new ones come from.
pub struct Reloadable<'a> {
    /// The configuration in force.
    pub config: &'a Live<Config>,
    /// The TLS identity in force.
    pub identity: &'a Live<Identity>,
    /// The slash commands in force.
    pub registry: &'a Live<Registry>,
    /// Where the configuration is read from.
    pub reloader: &'a Reloader,
}

/// [`reload`] as SIGHUP and `chatctl reload` run it: logs the outcome. Returns the one-line
/// outcome, or why nothing changed.
pub fn reload_logged(parts: Reloadable<'_>, trigger: &str) -> Result<String, String> {
    match reload(parts) {
        Ok(outcome) => {
            let summary = outcome.summary();
            tracing::info!(trigger, "{summary}");
            if !outcome.needs_restart.is_empty() {
                tracing::warn!(
                    trigger,
                    settings = %outcome.needs_restart.join(", "),
                    "changed settings keep their old value until chatd is restarted"
                );
            }
            Ok(summary)
        }
        Err(e) => {
            tracing::error!(trigger, error = %e, "reload refused; the previous configuration stays in force");
            Err(format!(
                "reload refused, the previous configuration stays in force: {e}"
            ))
        }
    }
}

/// Reads the configuration, certificate and key again and puts them in force, or changes
/// nothing and says why.
pub fn reload(parts: Reloadable<'_>) -> Result<ReloadOutcome, ReloadError> {
    let _one_at_a_time = parts
        .reloader
        .busy
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let old: &Config = parts.config.get();
    let mut new = match &parts.reloader.source {
        Some(source) => source().map_err(ReloadError::Config)?,
        None => old.clone(),
    };
    let registry = Registry::new(&new.commands, &new.plugins)?;
    // The state dir cannot move, so a generated certificate is looked for where it was.
    let identity = crate::tls::load_identity(
        new.tls.cert.as_deref(),
        new.tls.key.as_deref(),
        &old.server.state_dir,
    )?;
    let mut outcome = ReloadOutcome::default();
    let log_level = parts.reloader.log_level.as_ref();
    keep_fixed(
        old,
        &mut new,
        log_level.is_none(),
        &mut outcome.needs_restart,
    );
    outcome.changed = live_changes(old, &new);
    if old.log.level != new.log.level {
        // Checked by Config::parse already, so this fails only when RUST_LOG overrides it.
        if let Some(Err(e)) = log_level.map(|set| set(&new.log.level)) {
            tracing::warn!(error = %e, "log.level not changed");
            new.log.level = old.log.level.clone();
        } else {
            outcome.changed.push("log.level");
        }
    }
    if identity.fingerprint != parts.identity.fingerprint {
        outcome.new_fingerprint = Some(identity.fingerprint);
    }
    parts.registry.replace(registry);
    parts.identity.replace(identity);
    crate::repeats::REPEATS.configure(new.log.repeat_window_secs, new.log.repeat_burst);
    parts.config.replace(new);
    Ok(outcome)
}

/// Settings bound to the running process: the old value stays in force (and is put back into
/// `new`, so `shared.config` always tells what is really in force).
fn keep_fixed(
    old: &Config,
    new: &mut Config,
    fixed_log_level: bool,
    needs_restart: &mut Vec<&'static str>,
) {
    macro_rules! fixed {
        ($($field:ident).+) => {
            if old.$($field).+ != new.$($field).+ {
                needs_restart.push(concat!($(stringify!($field), "."),+).trim_end_matches('.'));
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    fixed!(server.listen);
    fixed!(server.state_dir);
    fixed!(server.control_socket);
    fixed!(server.admin_group);
    if fixed_log_level {
        fixed!(log.level);
    }
    // Sized once at start: the accept loop's permits, the per-address table, the hub and
    // the login throttle.
    fixed!(limits.max_connections);
    fixed!(limits.evict_unfinished_after_ms);
    fixed!(limits.max_connections_per_ip);
    fixed!(limits.max_sessions_per_user);
    fixed!(limits.login_free_failures);
    fixed!(limits.login_backoff_max_secs);
    fixed!(limits.account_backoff_max_secs);
    // Set on the database connection when it is opened.
    fixed!(limits.db_busy_timeout_secs);
    // The hub's flusher of quiet notices is started with it (or not at all, for 0).
    fixed!(limits.presence_delay_ms);
    // The offline writer's job channel is made with it.
    fixed!(limits.offline_jobs_max);
    // Every account is in it and the database says so.
    fixed!(rooms.default);
    // Its listener is bound once, at start-up, like server.listen.
    fixed!(metrics.listen);
    // The store is opened once, at start-up.
    fixed!(cluster);
}

/// Settings that take effect now and differ.
fn live_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! live {
        ($($field:ident).+) => {
            if old.$($field).+ != new.$($field).+ {
                changed.push(concat!($(stringify!($field), "."),+).trim_end_matches('.'));
            }
        };
    }
    live!(tls.cert);
    live!(tls.key);
    live!(limits.max_line_bytes);
    live!(limits.max_text_bytes);
    live!(limits.max_protocol_errors);
    live!(limits.max_login_failures);
    live!(limits.idle_timeout_secs);
    live!(limits.handshake_timeout_secs);
    live!(limits.login_timeout_secs);
    live!(limits.max_devices_per_user);
    live!(limits.messages_per_sec);
    live!(limits.message_burst);
    // Budgets made after the reload (a new session; an account with none) use them.
    live!(limits.account_messages_per_sec);
    live!(limits.account_message_burst);
    live!(limits.chains_per_sec);
    live!(limits.chain_burst);
    live!(limits.account_chains_per_sec);
    live!(limits.account_chain_burst);
    live!(limits.device_chains_per_sec);
    live!(limits.device_chain_burst);
    live!(limits.max_rate_violations);
    live!(limits.outbound_queue);
    live!(limits.outbound_queue_bytes);
    live!(limits.shutdown_grace_secs);
    live!(limits.offline_queue_max);
    live!(limits.offline_queue_per_sender);
    live!(limits.offline_ttl_secs);
    live!(server.motd);
    live!(rooms.users_can_create);
    live!(rooms.max_rooms);
    live!(rooms.max_rooms_per_user);
    live!(rooms.max_topic_chars);
    live!(commands.disabled);
    live!(commands.aliases);
    // New calls run the new programs and limits; a call in progress finishes with the old.
    live!(plugins);
    live!(log.repeat_window_secs);
    live!(log.repeat_burst);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn fixed_settings_keep_their_old_value() {
        let old = parse("[server]\nlisten = \"127.0.0.1:1\"\n[limits]\nmax_connections = 5\n");
        let mut new = parse(
            "[server]\nlisten = \"127.0.0.1:2\"\n[limits]\nmax_connections = 6\nmax_text_bytes = 100\n\
             presence_delay_ms = 0\n[metrics]\nlisten = \"127.0.0.1:9464\"\n",
        );
        let mut restart = Vec::new();
        keep_fixed(&old, &mut new, true, &mut restart);
        assert_eq!(
            restart,
            [
                "server.listen",
                "limits.max_connections",
                "limits.presence_delay_ms",
                "metrics.listen"
            ]
        );
        assert_eq!(new.metrics.listen, None);
        assert_eq!(new.server.listen, old.server.listen);
        assert_eq!(new.limits.max_connections, old.limits.max_connections);
        assert_eq!(new.limits.presence_delay_ms, 25);
        assert_eq!(live_changes(&old, &new), ["limits.max_text_bytes"]);
    }

    #[test]
    fn the_store_is_kept_until_a_restart() {
        let old = parse("");
        let mut new = parse(
            "[cluster]\ndatabase = \"postgresql:///chatd?host=/run/postgresql\"\n\
             database_pool = 4\n",
        );
        let mut restart = Vec::new();
        keep_fixed(&old, &mut new, true, &mut restart);
        assert_eq!(restart, ["cluster"]);
        assert_eq!(new.cluster, old.cluster);
    }
}
