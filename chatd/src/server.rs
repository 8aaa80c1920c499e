//! Startup, the accept loop and shutdown.
//!
//! [`Server::bind`] claims everything that can conflict (state-dir lock, TLS port, control
//! socket) and fails with a clear error before touching any data; [`Server::run`] serves until
//! the shutdown token fires, then tells every client, waits up to the grace period, lets the
//! offline writer finish and checkpoints the database.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chatd_proto::Fingerprint;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::budget::Accounts;
use crate::cluster::{Cluster, ClusterError};
use crate::commands::{Registry, RegistryError};
use crate::config::Config;
use crate::control::{ControlError, ControlListener};
use crate::hub::{Hub, OfflineJob, Room};
use crate::live::Live;
use crate::peerlimit::PerIp;
use crate::reload::{ConfigSource, LogLevelHook, Reloader};
use crate::shared::Shared;
use crate::slots::Slots;
use crate::store::{Store, StoreError};
use crate::systemd::Activated;
use crate::throttle::LoginThrottle;
use crate::tls::TlsError;

/// Startup failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The state directory could not be created or locked.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Another chatd holds the state directory.
    #[error("another chatd is already running with state directory {0}")]
    AlreadyRunning(PathBuf),
    /// The database could not be opened.
    #[error("database {what}: {source}")]
    Store {
        /// The SQLite file, or the PostgreSQL URL (which holds no password).
        what: String,
        /// Cause.
        source: StoreError,
    },
    /// The database password could not be read.
    #[error("{0}")]
    DatabasePassword(String),
    /// The certificate could not be loaded or made.
    #[error("TLS certificate: {0}")]
    Tls(#[from] TlsError),
    /// The TLS port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The control socket could not be bound.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The metrics port could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics {
        /// Address (`metrics.listen`).
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The cluster bus could not be joined.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The `[commands]` section is inconsistent.
    #[error("commands: {0}")]
    Registry(#[from] RegistryError),
}

/// A server with everything bound, ready to [`Server::run`].
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    control: ControlListener,
    /// The OpenMetrics listener, when `metrics.listen` is set.
    metrics: Option<TcpListener>,
    offline: (mpsc::Receiver<OfflineJob>, watch::Sender<u64>),
    /// Which store this is, for the log (no secrets).
    store_info: String,
    /// Stops the cluster's tasks once the sessions are gone, and waits for them.
    cluster: (CancellationToken, TaskTracker),
    _lock: Flock<File>,
}

fn lock_state_dir(dir: &Path) -> Result<Flock<File>, ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |source| ServerError::StateDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("chatd.lock"))
        .map_err(io)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            ServerError::AlreadyRunning(dir.to_path_buf())
        } else {
            io(std::io::Error::from(errno))
        }
    })
}

/// How [`Server::bind_with`] gets its sockets and reloads its configuration.
#[derive(Default)]
pub struct BindOptions {
    /// Sockets from systemd's socket activation, used instead of binding.
    pub activated: Activated,
    /// Re-reads the configuration on reload; None reloads only the certificate and key.
    pub source: Option<ConfigSource>,
    /// Changes the log filter on reload; None: `log.level` needs a restart.
    pub log_level: Option<LogLevelHook>,
}

impl Server {
    /// Locks the state dir, opens the database, loads TLS, binds both sockets.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        Server::bind_with(config, BindOptions::default()).await
    }

    /// [`Server::bind`], taking sockets systemd passed and a source for reloads.
    pub async fn bind_with(config: Config, options: BindOptions) -> Result<Server, ServerError> {
        let BindOptions {
            activated,
            source,
            log_level,
        } = options;
        let state_dir = config.server.state_dir.clone();
        let lock = lock_state_dir(&state_dir)?;
        let db_name = match &config.cluster.database {
            Some(url) => url.clone(),
            None => state_dir.join("chatd.db").display().to_string(),
        };
        let db_error = |source| ServerError::Store {
            what: db_name.clone(),
            source,
        };
        let password = config
            .cluster
            .password()
            .map_err(ServerError::DatabasePassword)?;
        let (store, store_info) = Store::open(&config, password.as_deref())
            .await
            .map_err(db_error)?;
        let identity = crate::tls::load_identity(
            config.tls.cert.as_deref(),
            config.tls.key.as_deref(),
            &state_dir,
        )?;
        let registry = Registry::new(&config.commands, &config.plugins)?;
        let listen_error = |source| ServerError::Listen {
            addr: config.server.listen,
            source,
        };
        let listener = match activated.tls {
            // systemd bound it (chatd.socket); server.listen is not used.
            Some(std_listener) => {
                std_listener.set_nonblocking(true).map_err(listen_error)?;
                TcpListener::from_std(std_listener).map_err(listen_error)?
            }
            None => TcpListener::bind(config.server.listen)
                .await
                .map_err(listen_error)?,
        };
        let listen_addr = listener.local_addr().map_err(listen_error)?;
        let group = nix::unistd::Group::from_name(&config.server.admin_group);
        let admin_gid = group.as_ref().ok().and_then(|g| g.as_ref().map(|g| g.gid));
        let control = match activated.control {
            Some(l) => ControlListener::activated(l, &config.server.control_socket, admin_gid)?,
            None => ControlListener::bind(&config.server.control_socket, admin_gid)?,
        };
        let metrics = match config.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Metrics { addr, source })?,
            ),
            None => None,
        };
        // Told only once chatd is really starting, so a refused start prints just its error.
        match &group {
            Ok(Some(_)) => {}
            Ok(None) => tracing::info!(
                group = %config.server.admin_group,
                "admin group does not exist; only root and chatd's own user can use the control socket"
            ),
            Err(e) => tracing::warn!(
                group = %config.server.admin_group,
                error = %e,
                "cannot look up the admin group; only root and chatd's own user can use the control socket"
            ),
        }
        if identity.generated {
            tracing::info!(path = %identity.cert_path.display(), "generated a self-signed certificate");
        }
        let throttle = LoginThrottle::new(
            crate::throttle::Limits {
                free: config.limits.login_free_failures.get(),
                address_max: std::time::Duration::from_secs(
                    config.limits.login_backoff_max_secs.get(),
                ),
                account_max: std::time::Duration::from_secs(
                    config.limits.account_backoff_max_secs.get(),
                ),
            },
            &store,
        );
        let hub = Hub::new(
            config.limits.max_sessions_per_user.get(),
            config.limits.outbound_queue.get(),
        );
        let known = store.active_keys().await.map_err(db_error)?;
        hub.set_known(
            known
                .into_iter()
                .map(|(user, fp, spki)| (user, Fingerprint::from_bytes(fp), BASE64.encode(spki))),
        );
        let vouches = store.vouches().await.map_err(db_error)?;
        hub.set_vouches(vouches.into_iter().map(|(user, vouched, voucher, data)| {
            (
                user,
                Fingerprint::from_bytes(vouched),
                Fingerprint::from_bytes(voucher),
                BASE64.encode(data),
            )
        }));
        // The default room exists and every account is in it; empty rooms are gone.
        let default_room = config.rooms.default.clone();
        let rooms = store.prepare_rooms(&default_room).await.map_err(db_error)?;
        hub.set_rooms(
            rooms.into_iter().map(|r| {
                let room = Room {
                    topic: r.topic,
                    invite_only: r.invite_only,
                    owner: r.owner,
                    members: r.members.into_iter().collect(),
                };
                (r.name, room)
            }),
            &default_room,
        );
        crate::metrics::init();
        let (job_tx, job_rx, committed_tx, committed_rx) =
            crate::offline::channels(config.limits.offline_jobs_max.get());
        hub.attach_offline(job_tx);
        let hub = Arc::new(hub);
        let stored_lines: Arc<crate::stored_lines::StoredLines> = Default::default();
        let cluster_stop = CancellationToken::new();
        let cluster_tasks = TaskTracker::new();
        let cluster = match config.cluster.nats {
            Some(_) => {
                let parts = crate::cluster::Parts {
                    hub: Arc::clone(&hub),
                    store: store.clone(),
                    committed: committed_rx.clone(),
                    stored_lines: Arc::clone(&stored_lines),
                    offline_ttl_ms: config.limits.offline_ttl_secs.get() as i64 * 1000,
                };
                let cluster =
                    Cluster::start(&config.cluster, parts, cluster_stop.clone(), &cluster_tasks)
                        .await?;
                tracing::info!(node = %cluster.me().name, nats = config.cluster.nats.as_deref().unwrap_or(""), "cluster: joining over NATS");
                Some(cluster)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            throttle,
            budgets: Accounts::default(),
            hub,
            cluster,
            offline_committed: committed_rx,
            stored_lines,
            config: Arc::new(Live::new(config)),
            identity: Live::new(identity),
            store,
            registry: Live::new(registry),
            reloader: Reloader::new(source, log_level),
            started: Instant::now(),
            listen_addr,
            store_info: store_info.clone(),
            admin_gid,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        Ok(Server {
            shared,
            listener,
            control,
            metrics,
            offline: (job_rx, committed_tx),
            store_info,
            cluster: (cluster_stop, cluster_tasks),
            _lock: lock,
        })
    }

    /// The bound TLS address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen_addr
    }

    /// The bound metrics address, when `metrics.listen` is set (port 0 resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Which store is in use: `postgresql node=... database=URL pool=N` or
    /// `sqlite path=FILE` (the URL holds no password: the config refuses one).
    pub fn store_info(&self) -> &str {
        &self.store_info
    }

    /// The control socket path.
    pub fn control_path(&self) -> &Path {
        self.control.path()
    }

    /// The certificate fingerprint.
    pub fn fingerprint(&self) -> chatd_proto::Fingerprint {
        self.shared.identity.fingerprint
    }

    /// State shared with every task (for reloads from outside, e.g. SIGHUP).
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// The token that stops the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Serves until the shutdown token fires, then drains.
    pub async fn run(self) {
        let Server {
            shared,
            listener,
            control,
            metrics,
            offline: (job_rx, committed_tx),
            store_info: _,
            cluster: (cluster_stop, cluster_tasks),
            _lock,
        } = self;
        let metrics_task = metrics.map(|listener| {
            tokio::spawn(crate::metrics::http::serve(
                listener,
                shared.shutdown.clone(),
            ))
        });
        let control_task = tokio::spawn(control.run(Arc::clone(&shared)));
        let writer = crate::offline::Writer {
            hub: Arc::clone(&shared.hub),
            store: shared.store.clone(),
            config: Arc::clone(&shared.config),
        };
        let offline_task = tokio::spawn(crate::offline::run(writer, job_rx, committed_tx));
        crate::systemd::ready(&shared.status_line());
        let status = Arc::clone(&shared);
        let keepalive = tokio::spawn(crate::systemd::keepalive(
            move || status.status_line(),
            shared.shutdown.clone(),
        ));
        let delay = shared.config.limits.presence_delay();
        let quiet = (!delay.is_zero()).then(|| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                shared.hub.flush_quiet(delay, shared.shutdown.clone()).await;
            })
        });
        let trim = tokio::spawn(crate::memory::trim_loop(shared.shutdown.clone()));
        accept_loop(&listener, &shared).await;
        drop(listener);
        crate::systemd::stopping();
        tracing::info!("shutting down");
        shared.tracker.close();
        let grace = shared.config.limits.shutdown_grace();
        if tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = shared.tracker.len(),
                "sessions still open after the grace period"
            );
        }
        // Sessions are gone: nothing more to route to other nodes.
        cluster_stop.cancel();
        cluster_tasks.close();
        cluster_tasks.wait().await;
        let _ = control_task.await; // drops the listener, which removes the socket file
        let _ = keepalive.await;
        let _ = trim.await;
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        if let Some(quiet) = quiet {
            let _ = quiet.await;
        }
        // Every session is gone: the writer stores what is queued, then stops.
        shared.hub.detach_offline();
        let _ = offline_task.await;
        if let Err(e) = shared.store.checkpoint() {
            tracing::warn!(error = %e, "final database checkpoint failed");
        }
        // Lines counted and not yet reported are, whatever their window, before the last.
        crate::repeats::REPEATS.flush(std::time::Instant::now(), true);
        tracing::info!("stopped");
    }
}

async fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    // At most max_connections at once; a full server closes its oldest unfinished connection
    // (once evict_unfinished_after_ms old) to make room (slots.rs), or with none, leaves new
    // ones in the kernel backlog.
    let limits = &shared.config.limits;
    let slots = Slots::new(
        limits.max_connections.get(),
        limits.evict_unfinished_after(),
    );
    let per_ip = PerIp::new(shared.config.limits.max_connections_per_ip.get());
    loop {
        let (stream, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => return,
        };
        // Refused before any TLS work: closing the socket is all it costs.
        let Some(slot) = per_ip.try_claim(peer.ip()) else {
            tracing::info!(%peer, "connection refused: too many connections from this address");
            drop(stream);
            continue;
        };
        let claim = tokio::select! {
            claim = slots.claim() => match claim {
                Some(claim) => claim,
                None => return,
            },
            _ = shared.shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let shared2 = Arc::clone(shared);
        shared.tracker.spawn(
            async move {
                crate::session::serve(stream, peer, shared2, &claim).await;
                drop(slot);
                drop(claim);
            }
            .in_current_span(),
        );
    }
}
