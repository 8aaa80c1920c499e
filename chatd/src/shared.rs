//! The state every task shares: configuration, identity and commands in force, the hub, the
//! database, and the server's lifetime (shutdown token, task tracker).
//!
//! Built by `Server::bind`; sessions and the control socket read it. Tasks that need
//! only part of it (the offline writer) take those parts, not this.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use nix::unistd::Gid;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::Accounts;
use crate::cluster::Cluster;
use crate::commands::Registry;
use crate::config::Config;
use crate::hub::Hub;
use crate::live::Live;
use crate::reload::{Reloadable, Reloader};
use crate::store::Store;
use crate::stored_lines::StoredLines;
use crate::throttle::LoginThrottle;
use crate::tls::Identity;

/// State every task shares.
pub struct Shared {
    /// The configuration in force (replaced by a reload).
    pub config: Arc<Live<Config>>,
    /// TLS identity (replaced by a reload).
    pub identity: Live<Identity>,
    /// Who is online.
    pub hub: Arc<Hub>,
    /// This node's part of a cluster (`[cluster] nats`), if any.
    pub cluster: Option<Arc<Cluster>>,
    /// Database.
    pub store: Store,
    /// Slash commands (replaced by a reload).
    pub registry: Live<Registry>,
    /// Where a reload reads the configuration from.
    pub reloader: Reloader,
    /// Start time, for uptime.
    pub started: Instant,
    /// Actual TLS listen address (port 0 resolved).
    pub listen_addr: SocketAddr,
    /// Which store holds the state, as logged at start (`sqlite path=…`, `postgresql node=…`).
    pub store_info: String,
    /// Group whose members may use the control socket.
    pub admin_gid: Option<Gid>,
    /// Fires once on shutdown.
    pub shutdown: CancellationToken,
    /// Every session and control task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Failed-login backoff per address and account.
    pub throttle: LoginThrottle,
    /// What all sessions of one account may send together.
    pub budgets: Accounts,
    /// The last offline job the offline writer committed (see [`crate::offline`]).
    pub offline_committed: watch::Receiver<u64>,
    /// Stored lines replaying sessions hold, shared between them.
    pub stored_lines: Arc<StoredLines>,
}

impl Shared {
    /// A TLS acceptor for the current identity.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.identity.config))
    }
}

impl Shared {
    /// One line for `systemctl status`: who is online, and for how long chatd has run.
    pub fn status_line(&self) -> String {
        let (sessions, users) = self.hub.counts();
        crate::systemd::status_line(sessions, users, self.started.elapsed())
    }

    /// Reloads the configuration and certificate as SIGHUP and `chatctl reload` do: tells
    /// systemd (`RELOADING=1`, then `READY=1`) and logs the outcome. Returns the one-line
    /// outcome, or why nothing changed.
    pub fn reload(&self, trigger: &str) -> Result<String, String> {
        crate::systemd::reloading();
        let result = crate::reload::reload_logged(
            Reloadable {
                config: &self.config,
                identity: &self.identity,
                registry: &self.registry,
                reloader: &self.reloader,
            },
            trigger,
        );
        let status = match &result {
            Ok(_) => "configuration reloaded",
            Err(_) => "last reload refused (see the journal)",
        };
        crate::systemd::reloaded(&self.status_line(), status);
        result
    }
}
