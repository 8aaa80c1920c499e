//! What all sessions of one account may send together: the account's share of the message
//! rate and of the chain rate, and its chains to each device key. A session takes from its
//! own buckets first (session/rate.rs), then from its account's here, so sixteen sessions
//! of one account cost the server no more than the account's budget.
//!
//! An account's budget outlives its sessions until it has refilled, so logging in again
//! does not buy a flooder a fresh one; a full budget no session holds is forgotten, so the
//! registry holds at most the accounts in use recently (and never more than there are).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chatd_proto::Fingerprint;

use crate::config::Limits;
use crate::ratelimit::TokenBucket;

/// Device keys an account's chain budget tracks at most before forgetting idle ones.
const MAX_DEVICES: usize = 4096;

/// Which of an account's budgets turned a frame down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Messages and commands of all its sessions.
    Messages,
    /// Chains of all its sessions.
    Chains,
    /// Chains to one device key.
    Device,
}

/// One account's buckets.
pub struct AccountBudget {
    messages: TokenBucket,
    chains: TokenBucket,
    /// Chains to each device key (made when first needed, forgotten once full again).
    devices: HashMap<Fingerprint, TokenBucket>,
    /// The per-device rate and burst, as configured when this budget was made.
    device_rate: (u32, u32),
}

impl AccountBudget {
    /// Full buckets for `limits`. An account may always send what one of its sessions may:
    /// raising a session's limit (a bench, a bot) raises its account's with it. Its chain
    /// burst is at least twice `devices` (two sessions each starting a chain in a room
    /// everyone is in).
    pub fn new(limits: &Limits, devices: u32, now: Instant) -> AccountBudget {
        let at_least = |account: std::num::NonZeroU32, session: std::num::NonZeroU32| {
            account.get().max(session.get())
        };
        AccountBudget {
            messages: TokenBucket::new(
                at_least(limits.account_messages_per_sec, limits.messages_per_sec),
                at_least(limits.account_message_burst, limits.message_burst),
                now,
            ),
            chains: TokenBucket::new(
                at_least(limits.account_chains_per_sec, limits.chains_per_sec),
                at_least(limits.account_chain_burst, limits.chain_burst)
                    .max(devices.saturating_mul(2)),
                now,
            ),
            devices: HashMap::new(),
            device_rate: (
                limits.device_chains_per_sec.get(),
                limits.device_chain_burst.get(),
            ),
        }
    }

    /// Takes a message token; false when the account is over its budget.
    pub fn message(&mut self, now: Instant) -> Result<(), Over> {
        if self.messages.take(now) {
            Ok(())
        } else {
            Err(Over::Messages)
        }
    }

    /// Takes a chain token for a chain to `device`: from the device's bucket, then the
    /// account's (a refused chain takes nothing from the account's).
    pub fn chain(&mut self, device: &Fingerprint, now: Instant) -> Result<(), Over> {
        if self.devices.len() >= MAX_DEVICES && !self.devices.contains_key(device) {
            // A full bucket holds nothing worth keeping; keeps the map to what is in use.
            self.devices.retain(|_, b| !b.is_full(now));
            if self.devices.len() >= MAX_DEVICES {
                self.devices.clear();
            }
        }
        let (rate, burst) = self.device_rate;
        let bucket = self
            .devices
            .entry(*device)
            .or_insert_with(|| TokenBucket::new(rate, burst, now));
        if !bucket.peek(now) {
            return Err(Over::Device);
        }
        if !self.chains.take(now) {
            return Err(Over::Chains);
        }
        bucket.take(now);
        Ok(())
    }

    /// True when every bucket is full again: forgetting this budget gives nothing away.
    fn is_full(&mut self, now: Instant) -> bool {
        self.devices.retain(|_, b| !b.is_full(now));
        self.devices.is_empty() && self.messages.is_full(now) && self.chains.is_full(now)
    }
}

/// Budgets in use, by account.
#[derive(Default)]
struct Map {
    budgets: HashMap<String, Arc<Mutex<AccountBudget>>>,
    /// Size at which to look for budgets to forget next.
    prune_at: usize,
}

/// Every account's budget that is in use or refilling, by name.
#[derive(Default)]
pub struct Accounts {
    map: Mutex<Map>,
}

impl Accounts {
    /// `user`'s budget, shared with their other sessions; made from `limits` (and the
    /// number of registered `devices`) if they have none (a reload's new limits apply to
    /// budgets made after it).
    pub fn of(&self, user: &str, limits: &Limits, devices: u32) -> Arc<Mutex<AccountBudget>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(budget) = map.budgets.get(user) {
            return Arc::clone(budget);
        }
        let now = Instant::now();
        if map.budgets.len() >= map.prune_at {
            // Amortized: a scan only after the map doubled since the last one.
            map.budgets.retain(|_, b| {
                Arc::strong_count(b) > 1
                    || !b.lock().unwrap_or_else(|p| p.into_inner()).is_full(now)
            });
            map.prune_at = (map.budgets.len() * 2).max(64);
        }
        let budget = Arc::new(Mutex::new(AccountBudget::new(limits, devices, now)));
        map.budgets.insert(user.to_string(), Arc::clone(&budget));
        budget
    }

    /// Accounts with a budget kept now.
    pub fn len(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.budgets.len()
    }

    /// True when no account has a budget kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::{NonZeroU32, NonZeroUsize};

    fn limits() -> Limits {
        let nz = |n| NonZeroU32::new(n).unwrap();
        Limits {
            messages_per_sec: nz(1),
            message_burst: nz(1),
            account_messages_per_sec: nz(1),
            account_message_burst: nz(3),
            chains_per_sec: nz(1),
            chain_burst: nz(1),
            account_chains_per_sec: nz(1),
            account_chain_burst: nz(5),
            device_chains_per_sec: nz(1),
            device_chain_burst: nz(2),
            max_sessions_per_user: NonZeroUsize::new(4).unwrap(),
            ..Limits::default()
        }
    }

    #[test]
    fn sessions_of_one_account_share_its_budget() {
        let accounts = Accounts::default();
        let (a, b) = (
            accounts.of("alice", &limits(), 0),
            accounts.of("alice", &limits(), 0),
        );
        let other = accounts.of("bob", &limits(), 0);
        let now = Instant::now();
        // Exactly the burst, whichever session takes it.
        assert!(a.lock().unwrap().message(now).is_ok());
        assert!(b.lock().unwrap().message(now).is_ok());
        assert!(a.lock().unwrap().message(now).is_ok());
        assert_eq!(b.lock().unwrap().message(now), Err(Over::Messages));
        assert!(other.lock().unwrap().message(now).is_ok());
        assert_eq!(accounts.len(), 2);
        // Logging in again after the last session ended buys nothing: the budget is kept.
        drop((a, b));
        assert_eq!(
            accounts
                .of("alice", &limits(), 0)
                .lock()
                .unwrap()
                .message(now),
            Err(Over::Messages)
        );
    }

    #[test]
    fn full_budgets_nobody_holds_are_forgotten() {
        let accounts = Accounts::default();
        let now = Instant::now();
        let spent = accounts.of("spent", &limits(), 0);
        spent.lock().unwrap().message(now).unwrap();
        drop(spent);
        let held = accounts.of("held", &limits(), 0);
        for i in 0..200 {
            drop(accounts.of(&format!("idle{i}"), &limits(), 0));
        }
        // Idle ones went at each doubling; the spent one (refilling) and the held one stay.
        assert!(accounts.len() < 100, "{}", accounts.len());
        let map = accounts.map.lock().unwrap();
        assert!(map.budgets.contains_key("spent") && map.budgets.contains_key("held"));
        drop(held);
    }

    #[test]
    fn chains_per_device_then_per_account() {
        let mut budget = AccountBudget::new(&limits(), 0, Instant::now());
        let now = Instant::now();
        let (d1, d2, d3) = (
            Fingerprint::from_bytes([1; 32]),
            Fingerprint::from_bytes([2; 32]),
            Fingerprint::from_bytes([3; 32]),
        );
        // Two to one device (its burst), the third refused without costing the account.
        assert!(budget.chain(&d1, now).is_ok());
        assert!(budget.chain(&d1, now).is_ok());
        assert_eq!(budget.chain(&d1, now), Err(Over::Device));
        assert_eq!(budget.chain(&d1, now), Err(Over::Device));
        // The account's burst of five: three more to other devices, then refused.
        assert!(budget.chain(&d2, now).is_ok());
        assert!(budget.chain(&d2, now).is_ok());
        assert!(budget.chain(&d3, now).is_ok());
        assert_eq!(budget.chain(&d3, now), Err(Over::Chains));
        // A second later one more fits.
        let later = now + std::time::Duration::from_millis(1001);
        assert!(budget.chain(&d3, later).is_ok());
    }

    #[test]
    fn the_device_map_stays_bounded() {
        let mut l = limits();
        l.account_chain_burst = NonZeroU32::new(100_000).unwrap();
        let mut budget = AccountBudget::new(&l, 0, Instant::now());
        let now = Instant::now();
        for i in 0..(MAX_DEVICES as u32 + 10) {
            let mut fp = [0u8; 32];
            fp[..4].copy_from_slice(&i.to_le_bytes());
            assert!(budget.chain(&Fingerprint::from_bytes(fp), now).is_ok());
        }
        assert!(budget.devices.len() <= MAX_DEVICES);
    }

    #[test]
    fn the_chain_burst_covers_every_registered_device_twice() {
        let mut budget = AccountBudget::new(&limits(), 10, Instant::now());
        let now = Instant::now();
        for i in 0..20u8 {
            assert!(budget.chain(&Fingerprint::from_bytes([i; 32]), now).is_ok());
        }
        let last = Fingerprint::from_bytes([99; 32]);
        assert_eq!(budget.chain(&last, now), Err(Over::Chains));
    }

    #[test]
    fn an_account_may_send_at_least_what_one_session_may() {
        let mut l = limits();
        l.message_burst = NonZeroU32::new(10).unwrap();
        let mut budget = AccountBudget::new(&l, 0, Instant::now());
        let now = Instant::now();
        for _ in 0..10 {
            assert!(budget.message(now).is_ok());
        }
        assert_eq!(budget.message(now), Err(Over::Messages));
    }
}
