//! What a storage failure is, and which ones are temporary.

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error (disk full, locked, corrupt, ...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL reported an error, or the connection to it failed.
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection to PostgreSQL could be had from the pool (server down, or every
    /// connection busy past the wait limit).
    #[error("database unavailable: {0}")]
    Pool(String),
    /// The `[cluster] database` setting is not a usable PostgreSQL address.
    #[error("database address: {0}")]
    Address(String),
    /// The database was written by a newer chatd.
    #[error("database schema version {found} is newer than this chatd understands ({known})")]
    TooNew {
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// The user already exists.
    #[error("user {0} already exists")]
    UserExists(String),
    /// The blocking task died.
    #[error("database task failed: {0}")]
    Task(String),
}

/// A temporary storage condition: nothing was written, and the same change may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The file system holding the state dir is full (SQLITE_FULL).
    DiskFull,
    /// Another process held the database locked past the busy timeout (SQLITE_BUSY/LOCKED),
    /// or PostgreSQL gave up on a lock (a deadlock or serialization failure).
    Locked,
    /// The database server cannot be reached (PostgreSQL down, restarting or refusing
    /// connections).
    Down,
}

impl StoreError {
    /// The temporary condition behind this error, if it is one (so callers can say so
    /// instead of "internal error"). Both backends roll back the failed transaction: the
    /// database stays as it was before the change.
    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            StoreError::Sqlite(_) => self.sqlite_unavailable(),
            StoreError::Postgres(e) => super::postgres::unavailable(e),
            StoreError::Pool(_) => Some(Unavailable::Down),
            _ => None,
        }
    }
}
