//! PostgreSQL: the login throttle's counts (`login_throttle`), shared by every node on the
//! database, so failures through one node slow the next attempt through any other. What the
//! counts mean and how the waits grow is `crate::throttle`'s; this file keeps them, timed by
//! the database's clock (`now()`), never a node's.

use std::time::Duration;

use super::PgStore;
use crate::store::error::StoreError;
use crate::throttle::{Limits, Throttled};

/// The row kinds.
const ADDRESS: &str = "address";
const ACCOUNT: &str = "account";

/// Milliseconds of `d`, as PostgreSQL takes them.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgStore {
    /// The wait `address` (and `account`, if given) must sit out before a login, address
    /// first; rows quiet for `forget` count as gone.
    pub async fn login_wait(
        &self,
        address: &str,
        account: Option<&str>,
        forget: Duration,
    ) -> Result<Option<Throttled>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT kind,
                        CEIL(EXTRACT(EPOCH FROM (until_at - now())) * 1000)::BIGINT
                 FROM login_throttle
                 WHERE ((kind = $1 AND key = $2) OR (kind = $3 AND key = $4))
                   AND last_at >= now() - $5::BIGINT * INTERVAL '1 millisecond'
                   AND until_at > now()",
                &[&ADDRESS, &address, &ACCOUNT, &account, &ms(forget)],
            )
            .await?;
        let mut wait = None;
        for row in rows {
            let kind: String = row.try_get(0)?;
            let left = Duration::from_millis(row.try_get::<_, i64>(1)?.max(1) as u64);
            match kind.as_str() {
                ADDRESS => return Ok(Some(Throttled::Address(left))),
                _ => wait = Some(Throttled::Account(left)),
            }
        }
        Ok(wait)
    }

    /// Counts a failure for `address` and `account` (if given) in one transaction, each
    /// row's count going up by one even when nodes fail logins at the same moment (the
    /// upsert takes the row's lock), and sets its wait by `limits`. A row quiet for
    /// `forget` starts again from zero.
    pub async fn login_failed(
        &self,
        address: &str,
        account: Option<&str>,
        limits: &Limits,
        forget: Duration,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Always the address before the account, so two transactions take the rows' locks
        // in the same order and cannot deadlock.
        let mut rows = vec![(ADDRESS, address, limits.address_max)];
        if let Some(account) = account {
            rows.push((ACCOUNT, account, limits.account_max));
        }
        for (kind, key, max) in rows {
            let failures: i32 = tx
                .query_one(
                    "INSERT INTO login_throttle AS t (kind, key, failures, until_at, last_at)
                     VALUES ($1, $2, 1, now(), now())
                     ON CONFLICT (kind, key) DO UPDATE SET
                         failures = CASE
                             WHEN t.last_at < now() - $3::BIGINT * INTERVAL '1 millisecond'
                                 THEN 1
                             ELSE LEAST(t.failures, 2147483646) + 1 END,
                         until_at = CASE
                             WHEN t.last_at < now() - $3::BIGINT * INTERVAL '1 millisecond'
                                 THEN now()
                             ELSE t.until_at END,
                         last_at = now()
                     RETURNING failures",
                    &[&kind, &key, &ms(forget)],
                )
                .await?
                .try_get(0)?;
            // The wait is computed as in memory (Limits::wait); the row stays locked, and
            // now() is the transaction's start, until the commit.
            if let Some(wait) = limits.wait(failures.max(0) as u32, max) {
                tx.execute(
                    "UPDATE login_throttle
                     SET until_at = now() + $3::BIGINT * INTERVAL '1 millisecond'
                     WHERE kind = $1 AND key = $2",
                    &[&kind, &key, &ms(wait)],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets `address`'s failures, and `account`'s if given (a successful login).
    pub async fn login_succeeded(
        &self,
        address: &str,
        account: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM login_throttle
                 WHERE (kind = $1 AND key = $2) OR (kind = $3 AND key = $4)",
                &[&ADDRESS, &address, &ACCOUNT, &account],
            )
            .await?;
        Ok(())
    }

    /// Deletes rows quiet for `forget` (they count as gone already); returns how many. Rows
    /// a login holds locked are skipped, so the sweep never waits for one or deadlocks.
    pub async fn login_sweep(&self, forget: Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "DELETE FROM login_throttle WHERE (kind, key) IN (
                     SELECT kind, key FROM login_throttle
                     WHERE last_at < now() - $1::BIGINT * INTERVAL '1 millisecond'
                     FOR UPDATE SKIP LOCKED)",
                &[&ms(forget)],
            )
            .await?)
    }
}
