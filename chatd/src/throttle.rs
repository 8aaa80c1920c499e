//! Login throttling per source address and per account: exponential backoff after a few free
//! failures, capped, and forgotten after a quiet spell, so nobody is locked out for good.
//!
//! An address that keeps failing waits up to `address_max`; an account that keeps failing
//! (from anywhere) up to the much shorter `account_max`, so an attacker guessing from many
//! addresses is slowed while the real user is delayed at most that long. A login proven by a
//! device key the account registered skips the account's wait (session/login.rs), so the
//! account wait only slows unknown devices. Addresses count by [`address_key`] (an IPv6 /64
//! is one address).
//!
//! Where the counts live follows the store: on SQLite (one chatd) in this process's memory; on
//! PostgreSQL (`[cluster] database`, several nodes may share it) in the database's
//! `login_throttle` table, so a guesser slowed on one node is slowed on every node, with the
//! database's clock for every time. There a check the database cannot answer is an error, and
//! the login is refused (fail closed), as it would be anyway when the account cannot be read.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::peerlimit::address_key;
use crate::store::{PgStore, Store, StoreError};

/// Entries untouched this long are forgotten (their failure count starts again from zero).
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Map size at which stale entries are swept out on the next failure.
const SWEEP_AT: usize = 4096;
/// In the database: every this many failures recorded by this node, stale rows are deleted.
const SWEEP_EVERY: u32 = 64;

/// Who is being made to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// The source address, for this long.
    Address(Duration),
    /// The account, for this long.
    Account(Duration),
}

/// The backoff settings (`[limits] login_free_failures`, `login_backoff_max_secs`,
/// `account_backoff_max_secs`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures that pass without a wait.
    pub free: u32,
    /// The longest wait of an address.
    pub address_max: Duration,
    /// The longest wait of an account.
    pub account_max: Duration,
}

impl Limits {
    /// The wait after the `failures`-th failure in a row, capped at `max`: none for the free
    /// ones, then 1 s, 2 s, 4 s, ... Both backends compute it here.
    pub fn wait(&self, failures: u32, max: Duration) -> Option<Duration> {
        (failures > self.free).then(|| {
            let exp = (failures - self.free - 1).min(30);
            Duration::from_secs(1u64 << exp).min(max)
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
    last: Instant,
}

/// Backoff settings, and the counts where the store says (see the module's comment).
#[derive(Debug)]
pub struct LoginThrottle {
    limits: Limits,
    counts: Counts,
}

enum Counts {
    /// In this process (SQLite: one chatd).
    Memory(Mutex<State>),
    /// In the PostgreSQL database every node shares; `failures` counts this node's recorded
    /// failures, to sweep stale rows now and then.
    Database { store: PgStore, failures: AtomicU32 },
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Counts::Memory(_) => "Memory",
            Counts::Database { .. } => "Database",
        })
    }
}

#[derive(Debug, Default)]
struct State {
    by_ip: HashMap<IpAddr, Backoff>,
    by_user: HashMap<String, Backoff>,
}

fn remaining<K: Hash + Eq>(
    map: &mut HashMap<K, Backoff>,
    key: &K,
    now: Instant,
) -> Option<Duration> {
    let b = map.get(key)?;
    if now.saturating_duration_since(b.last) > FORGET_AFTER {
        map.remove(key);
        return None;
    }
    let left = b.until.saturating_duration_since(now);
    (!left.is_zero()).then_some(left)
}

fn fail<K: Hash + Eq>(
    map: &mut HashMap<K, Backoff>,
    key: K,
    limits: &Limits,
    max: Duration,
    now: Instant,
) {
    if map.len() >= SWEEP_AT {
        map.retain(|_, b| now.saturating_duration_since(b.last) <= FORGET_AFTER);
    }
    let b = map.entry(key).or_insert(Backoff {
        failures: 0,
        until: now,
        last: now,
    });
    b.failures = b.failures.saturating_add(1);
    b.last = now;
    if let Some(wait) = limits.wait(b.failures, max) {
        b.until = now + wait;
    }
}

impl State {
    fn check(&mut self, ip: IpAddr, user: Option<&str>, now: Instant) -> Option<Throttled> {
        if let Some(left) = remaining(&mut self.by_ip, &address_key(ip), now) {
            return Some(Throttled::Address(left));
        }
        let user = user?.to_string();
        remaining(&mut self.by_user, &user, now).map(Throttled::Account)
    }

    fn failed(&mut self, limits: &Limits, ip: IpAddr, user: Option<&str>, now: Instant) {
        fail(
            &mut self.by_ip,
            address_key(ip),
            limits,
            limits.address_max,
            now,
        );
        if let Some(user) = user {
            let max = limits.account_max;
            fail(&mut self.by_user, user.to_string(), limits, max, now);
        }
    }

    fn succeeded(&mut self, ip: IpAddr, user: Option<&str>) {
        self.by_ip.remove(&address_key(ip));
        if let Some(user) = user {
            self.by_user.remove(user);
        }
    }
}

impl LoginThrottle {
    /// `free` failures pass without waiting; then waits double up to the caps. The counts
    /// live in memory on SQLite, in the database on PostgreSQL.
    pub fn new(limits: Limits, store: &Store) -> LoginThrottle {
        let counts = match store {
            Store::Sqlite(_) => Counts::Memory(Mutex::default()),
            Store::Postgres(pg) => Counts::Database {
                store: pg.clone(),
                failures: AtomicU32::new(0),
            },
        };
        LoginThrottle { limits, counts }
    }

    fn state(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the maps consistent, so a poisoned lock is still usable.
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a login from `ip` as `user` must wait; checked before any password work.
    /// `user` is None for a name that cannot be an account (only the address counts then, so
    /// junk names cannot fill the map). An error (database unreachable) must refuse the login.
    pub async fn check(
        &self,
        ip: IpAddr,
        user: Option<&str>,
    ) -> Result<Option<Throttled>, StoreError> {
        match &self.counts {
            Counts::Memory(m) => Ok(Self::state(m).check(ip, user, Instant::now())),
            Counts::Database { store, .. } => {
                let address = address_key(ip).to_string();
                crate::store::observe(store.login_wait(&address, user, FORGET_AFTER).await)
            }
        }
    }

    /// A failed login from `ip` as `user` (known account or not: the same either way).
    pub async fn failed(&self, ip: IpAddr, user: Option<&str>) -> Result<(), StoreError> {
        match &self.counts {
            Counts::Memory(m) => {
                Self::state(m).failed(&self.limits, ip, user, Instant::now());
                Ok(())
            }
            Counts::Database { store, failures } => {
                let address = address_key(ip).to_string();
                let recorded = store
                    .login_failed(&address, user, &self.limits, FORGET_AFTER)
                    .await;
                crate::store::observe(recorded)?;
                if failures.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
                    // Housekeeping only: a sweep that fails is tried again later.
                    match store.login_sweep(FORGET_AFTER).await {
                        Ok(n) => tracing::debug!(rows = n, "swept stale login throttle rows"),
                        Err(e) => tracing::warn!(error = %e, "cannot sweep the login throttle"),
                    }
                }
                Ok(())
            }
        }
    }

    /// A successful login clears the address's record, and the account's if `user` is given.
    /// A login proven by a device key passes None: it skipped the account's wait, which
    /// goes on slowing the guesses at the account from elsewhere.
    pub async fn succeeded(&self, ip: IpAddr, user: Option<&str>) -> Result<(), StoreError> {
        match &self.counts {
            Counts::Memory(m) => {
                Self::state(m).succeeded(ip, user);
                Ok(())
            }
            Counts::Database { store, .. } => {
                let address = address_key(ip).to_string();
                crate::store::observe(store.login_succeeded(&address, user).await)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    /// The in-memory counts with a clock the test moves (the database's are tested in
    /// store/postgres/tests.rs and e2e `cluster_throttle`).
    struct Mem {
        limits: Limits,
        state: Mutex<State>,
    }

    impl Mem {
        fn check(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Option<Throttled> {
            LoginThrottle::state(&self.state).check(ip, user, now)
        }
        fn failed(&self, ip: IpAddr, user: Option<&str>, now: Instant) {
            LoginThrottle::state(&self.state).failed(&self.limits, ip, user, now)
        }
        fn succeeded(&self, ip: IpAddr, user: Option<&str>) {
            LoginThrottle::state(&self.state).succeeded(ip, user)
        }
    }

    fn throttle() -> Mem {
        Mem {
            limits: Limits {
                free: 3,
                address_max: Duration::from_secs(300),
                account_max: Duration::from_secs(30),
            },
            state: Mutex::default(),
        }
    }

    #[test]
    fn free_failures_then_doubling_waits_capped() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.check(A, Some("alice"), now), None);
            t.failed(A, Some("alice"), now);
        }
        // Exactly the free failures: still no wait.
        assert_eq!(t.check(A, Some("alice"), now), None);
        t.failed(A, Some("alice"), now);
        assert_eq!(
            t.check(A, Some("alice"), now),
            Some(Throttled::Address(Duration::from_secs(1)))
        );
        t.failed(A, Some("alice"), now);
        assert_eq!(
            t.check(A, Some("alice"), now),
            Some(Throttled::Address(Duration::from_secs(2)))
        );
        for _ in 0..20 {
            t.failed(A, Some("alice"), now);
        }
        assert_eq!(
            t.check(A, Some("alice"), now),
            Some(Throttled::Address(Duration::from_secs(300)))
        );
        // From another address the account's own, shorter cap applies.
        assert_eq!(
            t.check(B, Some("alice"), now),
            Some(Throttled::Account(Duration::from_secs(30)))
        );
        assert_eq!(t.check(B, Some("bob"), now), None);
        // The wait ends; nobody is locked out for good.
        let later = now + Duration::from_secs(301);
        assert_eq!(t.check(A, Some("alice"), later), None);
    }

    #[test]
    fn success_clears_and_quiet_spells_are_forgiven() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..5 {
            t.failed(A, Some("alice"), now);
        }
        t.succeeded(A, None);
        assert_eq!(
            t.check(A, Some("alice"), now),
            Some(Throttled::Account(Duration::from_secs(2))),
            "a proven login keeps the account's wait"
        );
        t.succeeded(A, Some("alice"));
        assert_eq!(t.check(A, Some("alice"), now), None);
        for _ in 0..5 {
            t.failed(B, Some("bob"), now);
        }
        let much_later = now + FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(t.check(B, Some("bob"), much_later), None);
        // Forgotten: the count starts again, with its free failures.
        t.failed(B, Some("bob"), much_later);
        assert_eq!(t.check(B, Some("bob"), much_later), None);
    }

    #[test]
    fn one_ipv6_64_is_one_address() {
        let t = throttle();
        let now = Instant::now();
        // Guesses from three addresses of one /64 (a host may use any of 2^64) ...
        for i in 1..=3u16 {
            let ip = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, i, 1));
            t.failed(ip, None, now);
        }
        let same = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 9, 9, 9, 9));
        t.failed(same, None, now);
        // ... are counted together; the next /64 is another address.
        assert_eq!(
            t.check(same, None, now),
            Some(Throttled::Address(Duration::from_secs(1)))
        );
        let next = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 8, 0, 0, 0, 1));
        assert_eq!(t.check(next, None, now), None);
        // An IPv4-mapped address is its IPv4 address.
        for _ in 0..6 {
            t.failed(A, None, now);
        }
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(t.check(mapped, None, now).is_some());
    }

    #[tokio::test]
    async fn on_sqlite_the_counts_are_in_memory_through_the_async_interface() {
        let store = Store::open_in_memory().unwrap();
        let t = LoginThrottle::new(throttle().limits, &store);
        assert!(matches!(t.counts, Counts::Memory(_)));
        for _ in 0..4 {
            assert_eq!(t.check(A, Some("alice")).await.unwrap(), None);
            t.failed(A, Some("alice")).await.unwrap();
        }
        assert!(matches!(
            t.check(A, Some("alice")).await.unwrap(),
            Some(Throttled::Address(_))
        ));
        t.succeeded(A, Some("alice")).await.unwrap();
        assert_eq!(t.check(A, Some("alice")).await.unwrap(), None);
    }
}
