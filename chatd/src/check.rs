//! `chatd --check-config`: what start-up would refuse, or accept but run without, found
//! without starting anything (no state dir, socket or certificate is created).

use std::os::unix::fs::PermissionsExt;

use chatd_proto::Fingerprint;

use crate::config::Config;
use crate::tls::TlsError;

/// What start-up would refuse about the TLS identity: the configured certificate and key (or
/// the ones chatd made in the state dir) must be readable, parseable and belong together.
/// Returns the certificate's fingerprint, or None when chatd will make one on first start.
pub fn identity(config: &Config) -> Result<Option<Fingerprint>, TlsError> {
    crate::tls::check_identity(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        &config.server.state_dir,
    )
}

/// With `[cluster] database`, the PostgreSQL store start-up would use, as its `store:` line
/// says it: reads the password, connects and reads the schema version, changing nothing; an
/// unreachable server, a refused login or a schema newer than this chatd is an error. None
/// for SQLite, whose file is not opened (start-up creates it).
pub async fn store(config: &Config) -> Result<Option<String>, StoreCheckError> {
    let Some(url) = &config.cluster.database else {
        return Ok(None);
    };
    let password = config
        .cluster
        .password()
        .map_err(StoreCheckError::Password)?;
    let version = crate::store::PgStore::check(url, password.as_deref())
        .await
        .map_err(|source| StoreCheckError::Database {
            url: url.clone(),
            source,
        })?;
    let schema = match version {
        0 => "empty, start-up creates the schema".to_string(),
        v => format!("schema version {v}"),
    };
    Ok(Some(format!(
        "postgresql node={} database={url} pool={} ({schema})",
        config.cluster.node_name(),
        config.cluster.database_pool
    )))
}

/// The configured database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreCheckError {
    /// The password file or credential could not be read.
    #[error("{0}")]
    Password(String),
    /// Connecting or reading the schema version failed, or the schema is too new.
    #[error("database {url}: {source}")]
    Database {
        /// `cluster.database` (which holds no password).
        url: String,
        /// Cause.
        source: crate::store::StoreError,
    },
}

/// What start-up accepts but runs without, one sentence each: plugins whose program is
/// missing or not executable (their calls would fail), a missing admin group, a metrics
/// listener reachable from other hosts.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = plugin_problems(config);
    if let Some(addr) = config.metrics.listen.filter(|a| !a.ip().is_loopback()) {
        out.push(format!(
            "metrics.listen: {addr} is reachable from other hosts and has no authentication; \
             keep it behind a firewall or use 127.0.0.1"
        ));
    }
    match nix::unistd::Group::from_name(&config.server.admin_group) {
        Ok(Some(_)) => {}
        Ok(None) => out.push(format!(
            "server.admin_group: group {:?} does not exist; only root and chatd's own user \
             will be able to use chatctl",
            config.server.admin_group
        )),
        Err(e) => out.push(format!(
            "server.admin_group: cannot look up group {:?}: {e}",
            config.server.admin_group
        )),
    }
    out
}

/// `[[plugins]]` whose program is missing, not a file, or not executable (by the user
/// running this check).
pub fn plugin_problems(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for plugin in &config.plugins {
        let exec = &plugin.exec;
        let problem = match std::fs::metadata(exec) {
            Err(e) => Some(format!("{}: {e}", exec.display())),
            Ok(m) if !m.is_file() => Some(format!("{} is not a file", exec.display())),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                Some(format!("{} is not executable", exec.display()))
            }
            Ok(_) => nix::unistd::access(exec, nix::unistd::AccessFlags::X_OK)
                .err()
                .map(|e| format!("{}: cannot execute: {e}", exec.display())),
        };
        if let Some(problem) = problem {
            out.push(format!(
                "plugin {:?}: {problem}; /{} would fail",
                plugin.name, plugin.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_listener_beyond_loopback_is_a_warning() {
        let mut config = Config::default();
        config.server.admin_group = "root".into();
        assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
        config.metrics.listen = Some(([127, 0, 0, 1], 9464).into());
        assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
        config.metrics.listen = Some(([0, 0, 0, 0], 9464).into());
        let found = warnings(&config);
        assert!(
            found.len() == 1 && found[0].starts_with("metrics.listen: 0.0.0.0:9464"),
            "{found:?}"
        );
    }
}
