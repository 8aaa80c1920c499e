//! The budgets of a logged-in session: messages and commands, and wrapped chains, each
//! limited per session and per account (all its sessions together, [`crate::budget`]), and
//! chains per recipient device. A frame over a budget is dropped and the client told
//! (`rate_limited`); a flood that goes on ends the session.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chatd_proto::{ErrorCode, Fingerprint};

use super::connection::{Connection, Ending};
use crate::budget::{AccountBudget, Over};
use crate::config::Limits;
use crate::ratelimit::TokenBucket;

/// Which session budget turned a frame down.
enum Refusal {
    /// The session's own message bucket.
    Messages,
    /// The session's own chain bucket.
    Chains,
    /// One of its account's budgets.
    Account(Over),
}

/// A session's buckets, its account's budget, and how many frames it dropped in a row.
pub(super) struct Rate {
    messages: TokenBucket,
    chains: TokenBucket,
    account: Arc<Mutex<AccountBudget>>,
    /// Frames dropped by a budget since the last one let through.
    violations: u32,
}

impl Rate {
    /// Full session buckets for `limits`, drawing on `account` too; the chain burst is at
    /// least `devices` (one chain for every registered device key).
    pub(super) fn new(limits: &Limits, account: Arc<Mutex<AccountBudget>>, devices: u32) -> Self {
        let now = Instant::now();
        Rate {
            messages: TokenBucket::new(
                limits.messages_per_sec.get(),
                limits.message_burst.get(),
                now,
            ),
            chains: TokenBucket::new(
                limits.chains_per_sec.get(),
                limits.chain_burst.get().max(devices),
                now,
            ),
            account,
            violations: 0,
        }
    }

    fn account(&self) -> std::sync::MutexGuard<'_, AccountBudget> {
        // A budget is counters only; a panic elsewhere leaves nothing half-done worth refusing.
        self.account.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a message token (the session's, then its account's); says nothing when refused.
    pub(super) fn take(&mut self) -> bool {
        self.take_message().is_ok()
    }

    fn take_message(&mut self) -> Result<(), Refusal> {
        let now = Instant::now();
        if !self.messages.peek(now) {
            return Err(Refusal::Messages);
        }
        self.account().message(now).map_err(Refusal::Account)?;
        self.messages.take(now);
        self.violations = 0;
        Ok(())
    }

    fn take_chain(&mut self, device: &Fingerprint) -> Result<(), Refusal> {
        let now = Instant::now();
        if !self.chains.peek(now) {
            return Err(Refusal::Chains);
        }
        self.account()
            .chain(device, now)
            .map_err(Refusal::Account)?;
        self.chains.take(now);
        self.violations = 0;
        Ok(())
    }

    /// Applies the budgets to a message or command: Continue(true) to handle it,
    /// Continue(false) when it is dropped (the client is told), Break when the flooding
    /// goes on.
    pub(super) fn admit(
        &mut self,
        conn: &Connection,
        limits: &Limits,
    ) -> ControlFlow<Ending, bool> {
        match self.take_message() {
            Ok(()) => ControlFlow::Continue(true),
            Err(why) => self.refuse(conn, limits, why),
        }
    }

    /// Applies the chain budgets to a chain for `device` (as [`Rate::admit`]).
    pub(super) fn admit_chain(
        &mut self,
        conn: &Connection,
        limits: &Limits,
        device: &Fingerprint,
    ) -> ControlFlow<Ending, bool> {
        match self.take_chain(device) {
            Ok(()) => ControlFlow::Continue(true),
            Err(why) => self.refuse(conn, limits, why),
        }
    }

    /// Counts a dropped frame and tells the client why; Break once the flood goes on.
    fn refuse(
        &mut self,
        conn: &Connection,
        limits: &Limits,
        why: Refusal,
    ) -> ControlFlow<Ending, bool> {
        self.violations += 1;
        crate::metrics::get().rate_limited();
        let peer: SocketAddr = conn.peer();
        if self.violations == 1 {
            // Once per episode: the log must not become the flood.
            tracing::info!(%peer, "rate limit reached; dropping frames");
        }
        if self.violations >= limits.max_rate_violations.get() {
            tracing::warn!(%peer, dropped = self.violations, "closing a flooding session");
            return ControlFlow::Break(Ending::both(
                "too many messages: rate limit exceeded repeatedly",
            ));
        }
        conn.error(ErrorCode::RateLimited, refusal_text(limits, why));
        ControlFlow::Continue(false)
    }
}

/// What the client is told when `why` dropped its frame.
fn refusal_text(limits: &Limits, why: Refusal) -> String {
    match why {
        Refusal::Messages => format!(
            "slow down: not sent; the limit is {} messages per second (bursts of {})",
            limits.messages_per_sec, limits.message_burst
        ),
        Refusal::Account(Over::Messages) => format!(
            "slow down: not sent; your sessions together may send {} messages per second \
             (bursts of {})",
            limits.account_messages_per_sec, limits.account_message_burst
        ),
        Refusal::Chains => format!(
            "slow down: chain not sent; the limit is {} chains per second (bursts of {}, or \
             one per registered device)",
            limits.chains_per_sec, limits.chain_burst
        ),
        Refusal::Account(Over::Chains) => format!(
            "slow down: chain not sent; your sessions together may send {} chains per second \
             (bursts of {}, or two per registered device)",
            limits.account_chains_per_sec, limits.account_chain_burst
        ),
        Refusal::Account(Over::Device) => format!(
            "slow down: chain not sent; the limit is {} chains per second to one device \
             (bursts of {})",
            limits.device_chains_per_sec, limits.device_chain_burst
        ),
    }
}
