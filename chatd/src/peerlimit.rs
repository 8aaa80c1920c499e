//! Connections per source address: a slot is taken on accept and given back on drop, so a
//! single address cannot use up `max_connections` on its own. [`address_key`] is what "one
//! address" means here and for the login throttle: an IPv6 /64 counts as one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per source address, capped at `max` each.
#[derive(Debug, Clone)]
pub struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's claim on its address; released when dropped.
#[derive(Debug)]
pub struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// The key per-address limits count under: an IPv4 address as itself, an IPv6 address by its
/// /64 prefix (the rest zeroed: one host is usually handed a whole /64, so counting single
/// IPv6 addresses would give it 2^64 of them), an IPv4-mapped IPv6 address as its IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

impl PerIp {
    /// At most `max` connections from one address.
    pub fn new(max: usize) -> PerIp {
        PerIp {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or None when it already has `max`.
    pub fn try_claim(&self, ip: IpAddr) -> Option<Slot> {
        let ip = address_key(ip);
        // A poisoned map is still a valid count: every update is a single insert or remove.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            open: Arc::clone(&self.open),
        })
    }

    /// Open connections from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&address_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Addresses come and go; the map must not grow with every one ever seen.
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_per_address_and_slots_come_back() {
        let limit = PerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let s1 = limit.try_claim(a).unwrap();
        let _s2 = limit.try_claim(mapped).unwrap();
        assert!(
            limit.try_claim(a).is_none(),
            "a third from the same address"
        );
        assert!(
            limit.try_claim(b).is_some(),
            "another address is not affected"
        );
        drop(s1);
        assert_eq!(limit.count(a), 1);
        let _s3 = limit.try_claim(a).unwrap();
        assert!(limit.try_claim(mapped).is_none());
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), key("2001:db8:1:2::"));
        assert_eq!(
            key("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            key("2001:db8:1:2::1")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("::1"), key("::"));

        let limit = PerIp::new(2);
        let _a = limit.try_claim(key("2001:db8::1")).unwrap();
        let _b = limit.try_claim("2001:db8::2".parse().unwrap()).unwrap();
        assert!(
            limit
                .try_claim("2001:db8::ffff:1".parse().unwrap())
                .is_none(),
            "a third address of the same /64"
        );
        assert!(
            limit
                .try_claim("2001:db8:0:1::1".parse().unwrap())
                .is_some()
        );
        assert_eq!(limit.count("2001:db8::9".parse().unwrap()), 2);
    }

    #[test]
    fn the_map_forgets_idle_addresses() {
        let limit = PerIp::new(1);
        for i in 0..100u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            drop(limit.try_claim(ip));
        }
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
