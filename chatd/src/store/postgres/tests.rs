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
    // The login throttle's counts are refused the same way: the login fails closed.
    let Store::Postgres(pg_store) = &store else {
        unreachable!()
    };
    let limits = crate::throttle::Limits {
        free: 1,
        address_max: std::time::Duration::from_secs(1),
        account_max: std::time::Duration::from_secs(1),
    };
    let forget = crate::throttle::FORGET_AFTER;
    let err = pg_store
        .login_wait("192.0.2.1", None, forget)
        .await
        .unwrap_err();
    assert_eq!(err.unavailable(), Some(Unavailable::Down), "{err}");
    let err = pg_store
        .login_failed("192.0.2.1", Some("alice"), &limits, forget)
        .await
        .unwrap_err();
    assert_eq!(err.unavailable(), Some(Unavailable::Down), "{err}");
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

/// The login throttle's counts (crate::throttle), kept only by PostgreSQL.
mod login_throttle {
    use std::time::Duration;

    use super::{PgStore, testing};
    use crate::throttle::{FORGET_AFTER, Limits, Throttled};

    const LIMITS: Limits = Limits {
        free: 2,
        address_max: Duration::from_secs(8),
        account_max: Duration::from_secs(3),
    };

    async fn store() -> Option<PgStore> {
        let url = testing::database()?;
        Some(PgStore::connect(&url, None, 4).await.unwrap())
    }

    /// (failures, seconds of wait set by the last one) of a row, read from the table: exact,
    /// whatever time the test took.
    async fn row(s: &PgStore, kind: &str, key: &str) -> Option<(i32, f64)> {
        s.client()
            .await
            .unwrap()
            .query_opt(
                "SELECT failures, EXTRACT(EPOCH FROM (until_at - last_at))::FLOAT8
                 FROM login_throttle WHERE kind = $1 AND key = $2",
                &[&kind, &key],
            )
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    async fn fail(s: &PgStore, address: &str, account: Option<&str>) {
        s.login_failed(address, account, &LIMITS, FORGET_AFTER)
            .await
            .unwrap();
    }

    async fn wait(s: &PgStore, address: &str, account: Option<&str>) -> Option<Throttled> {
        s.login_wait(address, account, FORGET_AFTER).await.unwrap()
    }

    #[tokio::test]
    async fn waits_double_after_the_free_failures_up_to_the_caps_and_success_clears() {
        let Some(s) = store().await else {
            return;
        };
        for _ in 0..2 {
            fail(&s, "192.0.2.1", Some("alice")).await;
            assert_eq!(wait(&s, "192.0.2.1", Some("alice")).await, None);
        }
        assert_eq!(row(&s, "address", "192.0.2.1").await.map(|r| r.0), Some(2));
        // Past the free ones: 1 s, 2 s, 4 s, then the caps (8 s for the address, 3 s for
        // the account).
        let mut seen = Vec::new();
        for _ in 0..5 {
            fail(&s, "192.0.2.1", Some("alice")).await;
            let address = row(&s, "address", "192.0.2.1").await.unwrap();
            let account = row(&s, "account", "alice").await.unwrap();
            seen.push((address.0, address.1, account.1));
        }
        assert_eq!(
            seen,
            [
                (3, 1.0, 1.0),
                (4, 2.0, 2.0),
                (5, 4.0, 3.0),
                (6, 8.0, 3.0),
                (7, 8.0, 3.0)
            ]
        );
        let Some(Throttled::Address(left)) = wait(&s, "192.0.2.1", Some("alice")).await else {
            panic!("the address is not throttled");
        };
        assert!(
            left <= Duration::from_secs(8) && left > Duration::ZERO,
            "{left:?}"
        );
        // From another address the account's own wait applies; another account is free.
        let Some(Throttled::Account(left)) = wait(&s, "192.0.2.2", Some("alice")).await else {
            panic!("the account is not throttled");
        };
        assert!(left <= Duration::from_secs(3), "{left:?}");
        assert_eq!(wait(&s, "192.0.2.2", Some("bob")).await, None);
        assert_eq!(wait(&s, "192.0.2.2", None).await, None);

        // A proven login clears only the address; a password login both.
        s.login_succeeded("192.0.2.1", None).await.unwrap();
        assert!(matches!(
            wait(&s, "192.0.2.1", Some("alice")).await,
            Some(Throttled::Account(_))
        ));
        s.login_succeeded("192.0.2.1", Some("alice")).await.unwrap();
        assert_eq!(wait(&s, "192.0.2.1", Some("alice")).await, None);
        assert_eq!(row(&s, "account", "alice").await, None);
        // Counting starts again from zero, with its free failures.
        fail(&s, "192.0.2.1", Some("alice")).await;
        assert_eq!(row(&s, "address", "192.0.2.1").await.map(|r| r.0), Some(1));
    }

    #[tokio::test]
    async fn failures_at_the_same_moment_on_two_nodes_are_all_counted() {
        let Some(url) = testing::database() else {
            return;
        };
        // Two nodes, each with its pool, failing logins for one address and account at once.
        let nodes = [
            PgStore::connect(&url, None, 4).await.unwrap(),
            PgStore::connect(&url, None, 4).await.unwrap(),
        ];
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let s = nodes[i % 2].clone();
                tokio::spawn(async move {
                    s.login_failed("2001:db8:0:7::", Some("alice"), &LIMITS, FORGET_AFTER)
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            row(&nodes[0], "address", "2001:db8:0:7::").await,
            Some((40, 8.0))
        );
        assert_eq!(row(&nodes[1], "account", "alice").await, Some((40, 3.0)));
        // Either node sees the wait.
        for s in &nodes {
            assert!(matches!(
                wait(s, "2001:db8:0:7::", Some("alice")).await,
                Some(Throttled::Address(_))
            ));
        }
    }

    #[tokio::test]
    async fn quiet_rows_are_forgotten_and_swept() {
        let Some(s) = store().await else {
            return;
        };
        for _ in 0..6 {
            fail(&s, "192.0.2.1", Some("alice")).await;
        }
        fail(&s, "192.0.2.9", None).await;
        // Sixteen quiet minutes for the first address and alice (the database's clock is
        // not ours to move: the rows are moved back instead).
        s.client()
            .await
            .unwrap()
            .execute(
                "UPDATE login_throttle SET last_at = last_at - INTERVAL '16 minutes',
                     until_at = until_at - INTERVAL '16 minutes'
                 WHERE key IN ('192.0.2.1', 'alice')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(wait(&s, "192.0.2.1", Some("alice")).await, None);
        // A failure after the quiet spell starts again from one.
        fail(&s, "192.0.2.1", None).await;
        assert_eq!(row(&s, "address", "192.0.2.1").await.map(|r| r.0), Some(1));
        // The sweep deletes what is stale (alice's row), and nothing else.
        assert_eq!(s.login_sweep(FORGET_AFTER).await.unwrap(), 1);
        assert_eq!(row(&s, "account", "alice").await, None);
        assert!(row(&s, "address", "192.0.2.9").await.is_some());
        assert_eq!(s.login_sweep(FORGET_AFTER).await.unwrap(), 0);
    }
}
