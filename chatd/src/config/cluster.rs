//! `[cluster]`: this node's name and the PostgreSQL database that holds the state instead of
//! the SQLite file; the database password comes from a file or a systemd credential, never
//! from the URL.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Most connections `database_pool` may keep: far past what one node's offline writer,
/// logins and commands use at once, and below PostgreSQL's usual `max_connections` fences.
pub const MAX_DATABASE_POOL: usize = 1000;

/// The systemd credential read for the database password when `database_password_file` is
/// unset (`LoadCredential=database-password:/etc/chatd/database-password`).
pub const PASSWORD_CREDENTIAL: &str = "database-password";

/// The systemd credential read for the NATS token when `nats_token_file` is unset.
pub const NATS_TOKEN_CREDENTIAL: &str = "nats-token";

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name in logs; None: the host name.
    pub node: Option<String>,
    /// `postgresql://USER@HOST:PORT/DB` or `postgresql:///DB?host=/run/postgresql`; None:
    /// the SQLite file in the state dir.
    pub database: Option<String>,
    /// A file holding the database password (`%d/NAME`: a systemd credential); None: the
    /// credential `database-password` if systemd passed one, else no password.
    pub database_password_file: Option<PathBuf>,
    /// Connections to the database at most.
    #[serde(deserialize_with = "pool_size")]
    pub database_pool: usize,
    /// `nats://HOST:PORT[,nats://HOST:PORT...]`: the bus between nodes; None: one node.
    pub nats: Option<String>,
    /// A file holding the token NATS asks for (`authorization { token: ... }`); None: the
    /// credential `nats-token` if systemd passed one, else no token.
    pub nats_token_file: Option<PathBuf>,
    /// Subjects on the bus start with this, so deployments can share one NATS.
    pub nats_prefix: String,
    /// How often this node tells the others it is alive, in milliseconds.
    pub heartbeat_ms: u64,
    /// A node not heard from for this long (milliseconds) is declared gone: its users are
    /// offline and lines for them are stored. A node that finds itself silent this long
    /// (paused, cut off) closes its sessions before it delivers anything again.
    pub node_timeout_ms: u64,
    /// Logins and logouts within this many milliseconds cross the bus as one message.
    pub presence_batch_ms: u64,
    /// Messages waiting to cross the bus at most; past it, lines for other nodes' users are
    /// stored for them instead.
    pub bus_queue_max: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: None,
            database: None,
            database_password_file: None,
            database_pool: 16,
            nats: None,
            nats_token_file: None,
            nats_prefix: "chatd".into(),
            heartbeat_ms: 500,
            node_timeout_ms: 3000,
            presence_batch_ms: 20,
            bus_queue_max: 65536,
        }
    }
}

fn pool_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = usize::deserialize(d)?;
    if !(1..=MAX_DATABASE_POOL).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "database_pool must be between 1 and {MAX_DATABASE_POOL}, got {v}"
        )));
    }
    Ok(v)
}

impl ClusterConfig {
    /// This node's name: `node`, or the host name.
    pub fn node_name(&self) -> String {
        match &self.node {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
        }
    }

    /// What is wrong with the section, naming the key; called by `Config::validate`.
    pub(super) fn check(&self) -> Result<(), String> {
        if let Some(node) = &self.node {
            let ok = (1..=64).contains(&node.len())
                && node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !ok {
                return Err(format!(
                    "cluster.node: {node:?} is not a node name (1-64 of A-Z, a-z, 0-9, '.', '-', '_')"
                ));
            }
        }
        if let Some(url) = &self.database {
            check_database_url(url).map_err(|e| format!("cluster.database: {e}"))?;
        }
        if let Some(nats) = &self.nats {
            check_nats_urls(nats).map_err(|e| format!("cluster.nats: {e}"))?;
            if self.database.is_none() {
                return Err(
                    "cluster.nats is set but cluster.database is not: nodes share \
                     their state in PostgreSQL"
                        .into(),
                );
            }
        }
        let prefix_ok = (1..=64).contains(&self.nats_prefix.len())
            && self.nats_prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            });
        if !prefix_ok {
            return Err(format!(
                "cluster.nats_prefix: {:?} is not a subject prefix (dot-separated words of A-Z, a-z, 0-9, '-', '_')",
                self.nats_prefix
            ));
        }
        if !(50..=10_000).contains(&self.heartbeat_ms) {
            return Err(format!(
                "cluster.heartbeat_ms must be between 50 and 10000, got {}",
                self.heartbeat_ms
            ));
        }
        if self.node_timeout_ms < 3 * self.heartbeat_ms || self.node_timeout_ms > 600_000 {
            return Err(format!(
                "cluster.node_timeout_ms must be at least 3 heartbeats ({}) and at most 600000, got {}",
                3 * self.heartbeat_ms,
                self.node_timeout_ms
            ));
        }
        if self.presence_batch_ms > 1000 {
            return Err(format!(
                "cluster.presence_batch_ms must be at most 1000, got {}",
                self.presence_batch_ms
            ));
        }
        if !(16..=10_000_000).contains(&self.bus_queue_max) {
            return Err(format!(
                "cluster.bus_queue_max must be between 16 and 10000000, got {}",
                self.bus_queue_max
            ));
        }
        if self.nats.is_none() && self.nats_token_file.is_some() {
            return Err("cluster.nats_token_file is set but cluster.nats is not".into());
        }
        if self.database.is_none() && self.database_password_file.is_some() {
            return Err("cluster.database_password_file is set but cluster.database is not".into());
        }
        Ok(())
    }

    /// The database password: the file `database_password_file` names (`%d/NAME`: the
    /// systemd credential NAME), else the credential `database-password` if systemd passed
    /// one, else None. One trailing newline is not part of it.
    pub fn password(&self) -> Result<Option<String>, String> {
        secret(
            self.database_password_file.as_deref(),
            PASSWORD_CREDENTIAL,
            "database password",
        )
    }

    /// The NATS token, found as [`ClusterConfig::password`] finds the password
    /// (`nats_token_file`, else the credential `nats-token`).
    pub fn nats_token(&self) -> Result<Option<String>, String> {
        secret(
            self.nats_token_file.as_deref(),
            NATS_TOKEN_CREDENTIAL,
            "NATS token",
        )
    }
}

/// A secret from `file` (`%d/NAME`: a systemd credential), else the systemd credential
/// `credential` if passed, else None; one trailing newline is not part of it.
fn secret(file: Option<&Path>, credential: &str, what: &str) -> Result<Option<String>, String> {
    let path = match file {
        Some(p) => crate::tls::credential(p).map_err(|e| e.to_string())?,
        None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) if Path::new(&dir).join(credential).exists() => {
                Path::new(&dir).join(credential)
            }
            _ => return Ok(None),
        },
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{what} file {}: {e}", path.display()))?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(format!("{what} file {} is empty", path.display()));
    }
    Ok(Some(value.to_string()))
}

/// Comma-separated `nats://HOST:PORT` URLs holding no credentials (they would show in `ps`,
/// logs and copies of the file).
fn check_nats_urls(urls: &str) -> Result<(), String> {
    for url in urls.split(',').map(str::trim) {
        let Some(rest) = url.strip_prefix("nats://") else {
            return Err(format!("{url:?} is not a nats://HOST:PORT URL"));
        };
        if rest.contains('@') {
            return Err(
                "a URL holds credentials, which would show in ps, logs and copies of \
                 this file"
                    .into(),
            );
        }
        let host_port = rest.trim_end_matches('/');
        let ok = match host_port.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
            None => !host_port.is_empty(),
        };
        if !ok || host_port.contains('/') {
            return Err(format!("{url:?} is not a nats://HOST:PORT URL"));
        }
    }
    Ok(())
}

/// A `postgresql://` (or `postgres://`) URL that PostgreSQL's client accepts and that holds
/// no password: one there would show in `ps`, logs and backups of the config file.
fn check_database_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
        return Err("must be a URL starting with postgresql:// \
             (postgresql://USER@HOST:PORT/DB or postgresql:///DB?host=/run/postgresql)"
            .into());
    }
    // The parser's message never quotes the URL, which might hold a password.
    let parsed: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("not a usable PostgreSQL URL: {e}"))?;
    if parsed.get_password().is_some() {
        return Err(
            "the URL holds a password, which would show in ps, logs and copies of \
             this file; put it in cluster.database_password_file or the systemd credential \
             database-password instead"
                .into(),
        );
    }
    if parsed.get_dbname().is_none() {
        return Err("the URL names no database (postgresql://USER@HOST/DB)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/chatd/chatd.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn unset_means_sqlite() {
        let c = parse("").unwrap();
        assert_eq!(c.cluster, ClusterConfig::default());
        assert!(c.cluster.database.is_none());
        assert!(!c.cluster.node_name().is_empty());
    }

    #[test]
    fn urls_tcp_and_socket_are_accepted() {
        for url in [
            "postgresql://chatd@db.example.org:5432/chatd",
            "postgresql:///chatd?host=/run/postgresql",
            "postgres://chatd@localhost/chatd",
        ] {
            let c = parse(&format!("[cluster]\ndatabase = \"{url}\"\n")).unwrap();
            assert_eq!(c.cluster.database.as_deref(), Some(url));
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_echoing_it() {
        for url in [
            "postgresql://chatd:s3cret@localhost/chatd",
            "postgresql://chatd@localhost/chatd?password=s3cret",
        ] {
            let e = parse(&format!("[cluster]\ndatabase = \"{url}\"\n")).unwrap_err();
            assert!(
                e.contains("cluster.database: the URL holds a password"),
                "{e}"
            );
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        let e = parse("[cluster]\ndatabase = \"mysql://x@y/z\"\n").unwrap_err();
        assert!(e.contains("starting with postgresql://"), "{e}");
        let e = parse("[cluster]\ndatabase = \"postgresql://x@y:notaport/z\"\n").unwrap_err();
        assert!(e.contains("not a usable PostgreSQL URL"), "{e}");
        let e = parse("[cluster]\ndatabase = \"postgresql://chatd@localhost\"\n").unwrap_err();
        assert!(e.contains("names no database"), "{e}");
    }

    #[test]
    fn pool_size_edges() {
        let e = parse("[cluster]\ndatabase_pool = 0\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("database_pool must be between 1 and 1000, got 0"),
            "{e}"
        );
        assert_eq!(
            parse("[cluster]\ndatabase_pool = 1\n")
                .unwrap()
                .cluster
                .database_pool,
            1
        );
        let c = parse("[cluster]\ndatabase_pool = 1000\n").unwrap();
        assert_eq!(c.cluster.database_pool, 1000);
        assert!(parse("[cluster]\ndatabase_pool = 1001\n").is_err());
    }

    #[test]
    fn node_names_and_unknown_keys() {
        let c = parse("[cluster]\nnode = \"chat-1.example\"\n").unwrap();
        assert_eq!(c.cluster.node_name(), "chat-1.example");
        let e = parse("[cluster]\nnode = \"a b\"\n").unwrap_err();
        assert!(e.contains("cluster.node"), "{e}");
        let e = parse("[cluster]\nnats = \"nats://x:4222\"\n").unwrap_err();
        assert!(e.contains("cluster.database is not"), "{e}");
        let e = parse("[cluster]\nnatz = \"nats://x\"\n").unwrap_err();
        assert!(e.contains("natz"), "{e}");
        let e = parse("[cluster]\ndatabase_password_file = \"/x\"\n").unwrap_err();
        assert!(e.contains("cluster.database is not"), "{e}");
        let e = parse("[cluster]\nnats_token_file = \"/x\"\n").unwrap_err();
        assert!(e.contains("cluster.nats is not"), "{e}");
    }

    #[test]
    fn bus_settings_and_their_edges() {
        let db = "[cluster]\ndatabase = \"postgresql://chatd@localhost/chatd\"\n";
        let c = parse(&format!(
            "{db}nats = \"nats://127.0.0.1:4222, nats://b:4222\"\n"
        ))
        .unwrap();
        assert_eq!(c.cluster.heartbeat_ms, 500);
        assert_eq!(c.cluster.node_timeout_ms, 3000);
        for bad in [
            "nats = \"http://x:4222\"",
            "nats = \"nats://u:p@x:4222\"",
            "nats = \"nats://x:0\"",
            "nats = \"nats://x:4222/y\"",
            "nats_prefix = \"a..b\"",
            "nats_prefix = \"a*\"",
            "heartbeat_ms = 49",
            "heartbeat_ms = 10001",
            "node_timeout_ms = 1499",
            "node_timeout_ms = 600001",
            "presence_batch_ms = 1001",
            "bus_queue_max = 15",
        ] {
            let e = parse(&format!("{db}{bad}\n")).unwrap_err();
            assert!(e.contains("cluster."), "{bad}: {e}");
            assert!(!e.contains(":p@"), "{e}");
        }
        for good in [
            "nats = \"nats://localhost\"",
            "nats_prefix = \"team-a.chat\"",
            "heartbeat_ms = 50\nnode_timeout_ms = 150",
            "heartbeat_ms = 10000\nnode_timeout_ms = 600000",
            "presence_batch_ms = 0",
            "bus_queue_max = 16",
        ] {
            parse(&format!("{db}{good}\n")).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn password_from_file_trims_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pass word\n").unwrap();
        let c = ClusterConfig {
            database: Some("postgresql://chatd@localhost/chatd".into()),
            database_password_file: Some(file.clone()),
            ..ClusterConfig::default()
        };
        assert_eq!(c.password().unwrap().as_deref(), Some("pass word"));
        std::fs::write(&file, "\n").unwrap();
        assert!(c.password().unwrap_err().contains("is empty"));
        std::fs::remove_file(&file).unwrap();
        assert!(c.password().unwrap_err().contains("database password file"));
        std::fs::write(&file, "tok\r\n").unwrap();
        let c = ClusterConfig {
            nats_token_file: Some(file.clone()),
            ..ClusterConfig::default()
        };
        assert_eq!(c.nats_token().unwrap().as_deref(), Some("tok"));
        std::fs::write(&file, "").unwrap();
        assert!(c.nats_token().unwrap_err().contains("NATS token file"));
    }
}
