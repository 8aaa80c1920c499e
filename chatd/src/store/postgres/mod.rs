//! The PostgreSQL backend: the same tables as SQLite in PostgreSQL's types, reached through a
//! pool of connections (deadpool-postgres over tokio-postgres), so several chatd nodes can
//! share one database (the basis of clusters); and one SQLite lacks, the login throttle's
//! counts (throttle.rs), which the nodes share too.
//!
//! Its schema version is the one row of `chatd_schema`; [`MIGRATIONS`] (its own list, not
//! SQLite's) runs in one transaction under a transaction-level advisory lock, so nodes starting
//! at once migrate once. Each interface method is one transaction where it writes more than
//! one statement; writers to the same device queue or account take that row's lock first, so
//! caps and device limits hold between nodes too. A lost connection or a server that is down
//! is [`Unavailable::Down`], answered like a full disk (`storage_unavailable`).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::error::{StoreError, Unavailable};

mod ops;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod throttle;

/// Schema migrations; entry `i` moves a database from version `i` to `i + 1`. Column `user`
/// of the SQLite schema is `user_name` here (`user` is reserved in PostgreSQL).
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: everything SQLite's migrations 1 to 7 made.
    "CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        admin         BOOLEAN NOT NULL DEFAULT FALSE,
        locked        BOOLEAN NOT NULL DEFAULT FALSE,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        banned_until  BIGINT
    );
    CREATE TABLE device_keys (
        user_name   TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        fingerprint BYTEA NOT NULL,
        spki        BYTEA NOT NULL,
        bits        INTEGER NOT NULL,
        created_at  BIGINT NOT NULL,
        last_seen   BIGINT NOT NULL,
        revoked_at  BIGINT,
        PRIMARY KEY (user_name, fingerprint)
    );
    CREATE TABLE offline_messages (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        line       BYTEA NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE TABLE offline_queue (
        id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_name TEXT NOT NULL,
        device    BYTEA NOT NULL,
        message   BIGINT NOT NULL REFERENCES offline_messages(id) ON DELETE CASCADE,
        sender    TEXT,
        FOREIGN KEY (user_name, device) REFERENCES device_keys(user_name, fingerprint)
            ON DELETE CASCADE
    );
    CREATE INDEX offline_queue_by_device ON offline_queue(user_name, device, id);
    CREATE INDEX offline_queue_by_message ON offline_queue(message);
    CREATE INDEX offline_queue_by_sender ON offline_queue(user_name, device, sender);
    CREATE INDEX offline_messages_by_age ON offline_messages(created_ms);
    CREATE TABLE rooms (
        name        TEXT PRIMARY KEY,
        topic       TEXT NOT NULL DEFAULT '',
        invite_only BOOLEAN NOT NULL DEFAULT FALSE,
        owner       TEXT REFERENCES users(name) ON DELETE SET NULL,
        created_at  BIGINT NOT NULL
    );
    CREATE TABLE room_members (
        room      TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        joined_at BIGINT NOT NULL,
        PRIMARY KEY (room, user_name)
    );
    CREATE INDEX room_members_by_user ON room_members(user_name);
    CREATE TABLE room_invites (
        room      TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        PRIMARY KEY (room, user_name)
    );
    CREATE TABLE device_vouches (
        id         BIGINT GENERATED ALWAYS AS IDENTITY,
        user_name  TEXT NOT NULL,
        vouched    BYTEA NOT NULL,
        voucher    BYTEA NOT NULL,
        data       BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (user_name, vouched, voucher),
        FOREIGN KEY (user_name, vouched) REFERENCES device_keys(user_name, fingerprint)
            ON DELETE CASCADE,
        FOREIGN KEY (user_name, voucher) REFERENCES device_keys(user_name, fingerprint)
            ON DELETE CASCADE
    );",
    // 2: the login throttle's counts, shared by the nodes (crate::throttle; SQLite has no
    // such table: one chatd keeps them in memory). `kind` is 'address' (the text of
    // peerlimit::address_key) or 'account' (a user name, existing or not); the times are the
    // database's clock, so nodes with skewed clocks agree.
    "CREATE TABLE login_throttle (
        kind     TEXT NOT NULL,
        key      TEXT NOT NULL,
        failures INTEGER NOT NULL,
        until_at TIMESTAMPTZ NOT NULL,
        last_at  TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX login_throttle_by_age ON login_throttle(last_at);",
];

/// The advisory lock migrations run under (any constant shared by every chatd: "chatd").
const MIGRATION_LOCK: i64 = 0x63_6861_7464;

/// How long taking a connection from the pool, or opening one, may take before the
/// operation fails as [`Unavailable::Down`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections to the PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    /// Connects to `url` (`postgresql://user@host/db`, or with `?host=/socket/dir`), with
    /// `password` if given, keeping at most `pool_size` connections, and migrates the schema.
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        pool_size: usize,
    ) -> Result<PgStore, StoreError> {
        let config = client_config(url, password)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A connection the server closed is noticed by its next query (an error
                // there is `Down`), not by a test query before every use.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Address(e.to_string()))?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// What [`PgStore::connect`] would find, changing nothing: connects once and returns
    /// the schema version (0: an empty database, which start-up will fill);
    /// [`StoreError::TooNew`] if a newer chatd wrote it.
    pub async fn check(url: &str, password: Option<&str>) -> Result<i64, StoreError> {
        let config = client_config(url, password)?;
        let attempt = async {
            let (client, connection) = config.connect(NoTls).await?;
            // The connection ends when `client` is dropped at the end of this block.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let row = client
                .query_one("SELECT to_regclass('chatd_schema') IS NOT NULL", &[])
                .await?;
            if !row.try_get::<_, bool>(0)? {
                return Ok::<i64, StoreError>(0);
            }
            let found: i64 = client
                .query_one("SELECT version FROM chatd_schema", &[])
                .await?
                .try_get(0)?;
            Ok(found)
        };
        let found = tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt)
            .await
            .map_err(|_| {
                StoreError::Pool(format!(
                    "no answer from the server within {} s",
                    (CONNECT_TIMEOUT * 2).as_secs()
                ))
            })??;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        Ok(found)
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
            other => StoreError::Pool(other.to_string()),
        })
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT version FROM chatd_schema", &[])
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Held to the end of the transaction: a node starting meanwhile waits, then finds
        // the schema up to date.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        // Quiet: PostgreSQL's notice that the table exists would be logged at every start.
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS chatd_schema (version BIGINT NOT NULL);
             INSERT INTO chatd_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM chatd_schema);",
        )
        .await?;
        let found: i64 = tx
            .query_one("SELECT version FROM chatd_schema", &[])
            .await?
            .try_get(0)?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(StoreError::TooNew { found, known });
        }
        for sql in MIGRATIONS.iter().skip(found.max(0) as usize) {
            tx.batch_execute(sql).await?;
        }
        tx.execute("UPDATE chatd_schema SET version = $1", &[&known])
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The client's settings for `url`, with `password` if given.
fn client_config(url: &str, password: Option<&str>) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Address(format!("{e}")))?;
    if let Some(p) = password {
        config.password(p);
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("chatd");
    Ok(config)
}

/// The temporary condition behind a PostgreSQL error, if it is one.
pub(super) fn unavailable(e: &tokio_postgres::Error) -> Option<Unavailable> {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection failed or was lost (not a bad query or value).
        let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
        return (e.is_closed() || io).then_some(Unavailable::Down);
    };
    if *code == SqlState::DISK_FULL {
        return Some(Unavailable::DiskFull);
    }
    if *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::LOCK_NOT_AVAILABLE
    {
        return Some(Unavailable::Locked);
    }
    let class = code.code().get(..2);
    // 08: connection exceptions; 57P0x: the server is shutting down or starting; 53: out
    // of resources (connections, memory).
    let down = class == Some("08")
        || class == Some("53")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW;
    down.then_some(Unavailable::Down)
}
