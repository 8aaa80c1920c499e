//! `--cluster N`: N chatd nodes on this host, started for a run, on a throwaway PostgreSQL
//! (chatd-testkit's, in a temporary directory, on a unix socket) and a throwaway nats-server
//! (on a loopback port), all nodes with one TLS certificate and key made here, so one pin
//! fits every node as it does in a real cluster.
//!
//! Each node gets the bench's usual configuration (server.rs) in a directory of its own, plus
//! `[tls]` and `[cluster]`. The first node starts alone, as it creates the schema; the others
//! follow one by one.

use std::path::Path;

use anyhow::{Context, bail};
use chatd_testkit::nats::TempNats;
use chatd_testkit::postgres::{self, TempPostgres};

use crate::server::{self, ClusterPids, Sizes, Target};

/// What the nodes run on, kept until they have stopped: dropping it stops both servers and
/// removes the directory with the certificate and the nodes' state.
struct Services {
    // Fields drop in order: the bus and the database after the nodes (in Target), the
    // directory last.
    _nats: TempNats,
    _postgres: TempPostgres,
    _dir: tempfile::TempDir,
}

/// Starts PostgreSQL, nats-server and `nodes` chatd nodes (binary `chatd`), each sized for
/// `sizes` (every node gets room for all clients: a node's share is smaller).
pub fn start(chatd: &Path, nodes: usize, sizes: &Sizes) -> anyhow::Result<Target> {
    if postgres::bin_dir().is_none() {
        bail!("--cluster needs PostgreSQL's programs (Debian: apt-get install postgresql)");
    }
    let pg = TempPostgres::start()
        .map_err(|e| anyhow::anyhow!("cannot start a PostgreSQL server: {e}"))?;
    let db = pg
        .create_database()
        .map_err(|e| anyhow::anyhow!("cannot create the cluster's database: {e}"))?;
    let nats = TempNats::start().map_err(|e| {
        anyhow::anyhow!("cannot start nats-server (Debian: apt-get install nats-server): {e}")
    })?;
    let dir = tempfile::Builder::new()
        .prefix("chat-bench-cluster.")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    write_certificate(&cert, &key)?;
    let cluster = ClusterConfig {
        cert: &cert,
        key: &key,
        database: pg.url(&db),
        nats: nats.url(),
    };
    let mut started = Vec::with_capacity(nodes);
    let mut first = None;
    for k in 1..=nodes {
        let node = dir.path().join(format!("node{k}"));
        std::fs::create_dir(&node).with_context(|| format!("cannot create {}", node.display()))?;
        let control = node.join("control.sock");
        let config = node.join("chatd.toml");
        let text = cluster.config(k, &node.join("state"), &control, sizes);
        std::fs::write(&config, text)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let (mut owned, rx) = server::spawn(chatd, &config)?;
        match server::wait_ready(&rx).with_context(|| format!("cluster node{k}")) {
            Ok((addr, fingerprint)) => {
                first.get_or_insert((control, fingerprint));
                started.push((owned, addr));
            }
            Err(e) => {
                owned.stop();
                for (mut o, _) in started {
                    o.stop();
                }
                return Err(e);
            }
        }
    }
    let Some((control, fingerprint)) = first else {
        bail!("a cluster needs nodes");
    };
    let pids = ClusterPids {
        nodes: started.iter().map(|(o, _)| o.pid()).collect(),
        nats: nats.pid(),
        postgres: pg.pid(),
    };
    let services = Services {
        _nats: nats,
        _postgres: pg,
        _dir: dir,
    };
    Target::cluster(started, control, fingerprint, pids, Box::new(services))
}

/// A self-signed certificate for loopback, and its key, as every node's `[tls]`.
fn write_certificate(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let names = vec!["localhost".to_string(), "127.0.0.1".into()];
    let certified =
        rcgen::generate_simple_self_signed(names).context("cannot make a certificate")?;
    std::fs::write(key, certified.signing_key.serialize_pem())
        .with_context(|| format!("cannot write {}", key.display()))?;
    std::fs::write(cert, certified.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    Ok(())
}

/// What every node's configuration shares.
struct ClusterConfig<'a> {
    cert: &'a Path,
    key: &'a Path,
    /// `[cluster] database`.
    database: String,
    /// `[cluster] nats`.
    nats: String,
}

impl ClusterConfig<'_> {
    /// chatd.toml of node `k` (named `nodeK`): the bench's configuration, then `[tls]` and
    /// `[cluster]`.
    fn config(&self, k: usize, state: &Path, control: &Path, sizes: &Sizes) -> String {
        format!(
            "{}\n[tls]\ncert = {:?}\nkey = {:?}\n\n\
             [cluster]\nnode = \"node{k}\"\ndatabase = {:?}\nnats = {:?}\n",
            server::config_text(state, control, sizes),
            self.cert.display().to_string(),
            self.key.display().to_string(),
            self.database,
            self.nats,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_config_names_the_node_the_shared_tls_and_services() {
        let c = ClusterConfig {
            cert: Path::new("/tmp/c/cert.pem"),
            key: Path::new("/tmp/c/key.pem"),
            database: "postgresql://postgres@/db?host=/tmp/pg&port=5432".into(),
            nats: "nats://127.0.0.1:4222".into(),
        };
        let sizes = Sizes {
            clients: 10,
            sessions_per_user: 1,
            outbound_queue: 1024,
        };
        let text = c.config(2, Path::new("/tmp/c/node2/state"), Path::new("/s"), &sizes);
        assert!(text.contains("max_connections = 74"), "{text}");
        assert!(
            text.ends_with(
                "[tls]\ncert = \"/tmp/c/cert.pem\"\nkey = \"/tmp/c/key.pem\"\n\n\
                 [cluster]\nnode = \"node2\"\n\
                 database = \"postgresql://postgres@/db?host=/tmp/pg&port=5432\"\n\
                 nats = \"nats://127.0.0.1:4222\"\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_certificate_and_key_are_pem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        write_certificate(&cert, &key).unwrap();
        let cert = std::fs::read_to_string(cert).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        let key = std::fs::read_to_string(key).unwrap();
        assert!(key.contains("PRIVATE KEY-----"), "{key}");
    }
}
