//! What only the PostgreSQL backend has: migrations under an advisory lock, and a server that
//! goes away and comes back.

use super::{MIGRATIONS, PgStore, testing};
use crate::store::{Store, StoreError, Unavailable};
use chatd_testkit::postgres::TempPostgres;

#[tokio::test]
async fn nodes_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
    let Some(url) = testing::database() else {
        return;
    };
    // Four nodes start together on an empty database: one migrates, the others wait for its
    // lock and find the schema current (a second CREATE TABLE would fail).
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url, None, 2).await })
        })
        .collect();
    for start in starts {
        let store = start.await.unwrap().unwrap();
        assert_eq!(
            store.schema_version().await.unwrap(),
            MIGRATIONS.len() as i64
        );
    }
    let store = PgStore::connect(&url, None, 1).await.unwrap();
    store
        .client()
        .await
        .unwrap()
        .execute("UPDATE chatd_schema SET version = 99", &[])
        .await
        .unwrap();
    assert!(matches!(
        PgStore::connect(&url, None, 1).await,
        Err(StoreError::TooNew { found: 99, .. })
    ));
}

#[tokio::test]
async fn a_bad_address_is_a_clear_error() {
    let err = PgStore::connect("mysql://nowhere", None, 1)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Address(_)), "{err}");
}

#[tokio::test]
async fn a_server_that_is_down_is_unavailable_and_its_return_is_noticed() {
    if !chatd_testkit::postgres::available() {
        return;
    }
    let mut pg = TempPostgres::start().unwrap();
    let url = pg.url(&pg.create_database().unwrap());
    let store = Store::connect_postgres(&url, None, 2).await.unwrap();
    store.add_user("alice", "h", false).await.unwrap();
    pg.stop();
    // A pooled connection the server closed, then no server at all: both are `Down`, the
    // answer a full disk gets (storage_unavailable), never a crash.
    for _ in 0..3 {
        let err = store.add_user("bob", "h", false).await.unwrap_err();
        assert_eq!(err.unavailable(), Some(Unavailable::Down), "{err}");
    }
    pg.restart().unwrap();
    // Back: the pool opens new connections, nothing was lost.
    let mut back = store.add_user("bob", "h", false).await;
    for _ in 0..5 {
        if back.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        back = store.add_user("bob", "h", false).await;
    }
    back.unwrap();
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
}
