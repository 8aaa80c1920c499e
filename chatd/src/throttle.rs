//! Login throttling per source address and per account: exponential backoff after a few free
//! failures, capped, and forgotten after a quiet spell, so nobody is locked out for good.
//!
//! An address that keeps failing waits up to `address_max`; an account that keeps failing
//! (from anywhere) up to the much shorter `account_max`, so an attacker guessing from many
//! addresses is slowed while the real user is delayed at most that long. A login proven by a
//! device key the account registered skips the account's wait (session/login.rs), so the
//! account wait only slows unknown devices. Addresses count by [`address_key`] (an IPv6 /64
//! is one address).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::peerlimit::address_key;

/// Entries untouched this long are forgotten (their failure count starts again from zero).
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Map size at which stale entries are swept out on the next failure.
const SWEEP_AT: usize = 4096;

/// Who is being made to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// The source address, for this long.
    Address(Duration),
    /// The account, for this long.
    Account(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
    last: Instant,
}

/// Backoff settings and state.
#[derive(Debug)]
pub struct LoginThrottle {
    free: u32,
    address_max: Duration,
    account_max: Duration,
    state: Mutex<State>,
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
    free: u32,
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
    if b.failures > free {
        // 1 s, 2 s, 4 s, ... for each failure past the free ones, up to `max`.
        let exp = (b.failures - free - 1).min(30);
        let wait = Duration::from_secs(1u64 << exp).min(max);
        b.until = now + wait;
    }
}

impl LoginThrottle {
    /// `free` failures pass without waiting; then waits double up to the caps.
    pub fn new(free: u32, address_max: Duration, account_max: Duration) -> LoginThrottle {
        LoginThrottle {
            free,
            address_max,
            account_max,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the maps consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a login from `ip` as `user` must wait; checked before any password work.
    /// `user` is None for a name that cannot be an account (only the address counts then, so
    /// junk names cannot fill the map).
    pub fn check(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> Option<Throttled> {
        let mut s = self.state();
        if let Some(left) = remaining(&mut s.by_ip, &address_key(ip), now) {
            return Some(Throttled::Address(left));
        }
        let user = user?.to_string();
        remaining(&mut s.by_user, &user, now).map(Throttled::Account)
    }

    /// A failed login from `ip` as `user` (known account or not: the same either way).
    pub fn failed(&self, ip: IpAddr, user: Option<&str>, now: Instant) {
        let mut s = self.state();
        fail(
            &mut s.by_ip,
            address_key(ip),
            self.free,
            self.address_max,
            now,
        );
        if let Some(user) = user {
            let max = self.account_max;
            fail(&mut s.by_user, user.to_string(), self.free, max, now);
        }
    }

    /// A successful login clears the address's record, and the account's if `user` is given.
    /// A login proven by a device key passes None: it skipped the account's wait, which
    /// goes on slowing the guesses at the account from elsewhere.
    pub fn succeeded(&self, ip: IpAddr, user: Option<&str>) {
        let mut s = self.state();
        s.by_ip.remove(&address_key(ip));
        if let Some(user) = user {
            s.by_user.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(3, Duration::from_secs(300), Duration::from_secs(30))
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
}
