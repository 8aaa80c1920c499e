//! PostgreSQL for the store's tests: a fresh database on the test process's shared server.

use super::PgStore;
use crate::store::Store;

/// A store on a new, empty database, or None (with a note) if PostgreSQL is not installed and
/// `CI` is not set.
pub(crate) async fn store() -> Option<Store> {
    let url = database()?;
    Some(Store::Postgres(
        PgStore::connect(&url, None, 4).await.unwrap(),
    ))
}

/// The URL of a new, empty database on the shared server, or None as for [`store`].
pub(crate) fn database() -> Option<String> {
    let pg = chatd_testkit::postgres::TempPostgres::shared()?;
    let db = pg.create_database().unwrap();
    Some(pg.url(&db))
}
