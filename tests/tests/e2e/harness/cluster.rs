//! A cluster for the tests: a real PostgreSQL database (testkit's shared server, a database
//! of the test's own), a real nats-server on a loopback port, and chatd nodes started with
//! `[cluster]` naming both, each with its own state directory, port and control socket.

use chatd_testkit::nats::TempNats;
use chatd_testkit::postgres::TempPostgres;
use tempfile::TempDir;

use super::{Mode, Server, write_config};

/// Heartbeats and the timeout the tests run with: short, so a node is declared gone in
/// well under a second of silence, and long enough for a busy 2-core host.
pub const HEARTBEAT_MS: u64 = 100;
pub const NODE_TIMEOUT_MS: u64 = 1500;

/// A database, a bus and the nodes on them.
pub struct TestCluster {
    pub nats: TempNats,
    pub url: String,
    /// The database's name (for pg_dump).
    pub db: String,
    /// A PostgreSQL server of this cluster's own, when made by [`TestCluster::start_own_pg`]
    /// (a test may stop and restart it); None on testkit's shared server.
    pub pg: Option<TempPostgres>,
    pub nodes: Vec<Option<Server>>,
    dirs: Vec<TempDir>,
    extra: String,
}

impl TestCluster {
    /// `n` nodes named n1, n2, ... with `extra` lines in each chatd.toml (after `[cluster]`
    /// settings: more `[cluster]` keys, then other tables); None when PostgreSQL or
    /// nats-server is not installed and CI is not set.
    pub fn start(n: usize, extra: &str) -> Option<TestCluster> {
        if !chatd_testkit::nats::available() {
            return None;
        }
        let pg = TempPostgres::shared()?;
        let db = pg.create_database().expect("create database");
        Some(TestCluster::on(pg.url(&db), db, None, n, extra))
    }

    /// [`TestCluster::start`] on a PostgreSQL server of its own, in `self.pg`.
    pub fn start_own_pg(n: usize, extra: &str) -> Option<TestCluster> {
        if !chatd_testkit::nats::available() || !chatd_testkit::postgres::available() {
            return None;
        }
        let pg = TempPostgres::start().expect("start PostgreSQL");
        let db = pg.create_database().expect("create database");
        Some(TestCluster::on(pg.url(&db), db, Some(pg), n, extra))
    }

    fn on(url: String, db: String, pg: Option<TempPostgres>, n: usize, extra: &str) -> Self {
        let nats = TempNats::start().expect("start nats-server");
        let mut cluster = TestCluster {
            nats,
            url,
            db,
            pg,
            nodes: Vec::new(),
            dirs: Vec::new(),
            extra: extra.to_string(),
        };
        for i in 1..=n {
            let dir = tempfile::tempdir().expect("tempdir");
            cluster.dirs.push(dir);
            cluster.nodes.push(None);
            cluster.restart(i);
        }
        cluster
    }

    /// The configuration of node `i` (1-based).
    fn config(&self, i: usize) -> String {
        format!(
            "[cluster]\nnode = \"n{i}\"\ndatabase = {:?}\nnats = {:?}\nheartbeat_ms = {HEARTBEAT_MS}\nnode_timeout_ms = {NODE_TIMEOUT_MS}\n{}\n",
            self.url,
            self.nats.url(),
            self.extra
        )
    }

    /// (Re)starts node `i` (1-based) with its state directory as it is.
    pub fn restart(&mut self, i: usize) {
        let dir = self.dirs[i - 1].path().to_path_buf();
        let (file, control) = write_config(&dir, &self.config(i));
        let server = Server::try_start(Mode::Config {
            file: &file,
            control: &control,
        })
        .unwrap_or_else(|f| panic!("node n{i} failed to start ({}):\n{}", f.status, f.stderr));
        self.nodes[i - 1] = Some(server);
    }

    /// Node `i` (1-based).
    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i - 1].as_ref().expect("node is running")
    }

    /// Node `i`, mutable.
    pub fn node_mut(&mut self, i: usize) -> &mut Server {
        self.nodes[i - 1].as_mut().expect("node is running")
    }

    /// Waits until node `i`'s log says it heard `others` more nodes join.
    pub fn wait_joined(&mut self, i: usize, others: usize) {
        let node = self.node_mut(i);
        for _ in 0..others {
            node.log.expect_contains("cluster node joined");
        }
    }

    /// Waits until every node heard every other one join.
    pub fn wait_all_joined(&mut self) {
        let n = self.nodes.len();
        for i in 1..=n {
            self.wait_joined(i, n - 1);
        }
    }
}
