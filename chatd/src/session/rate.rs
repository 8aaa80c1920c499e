//! The rate limit on a logged-in session's messages and commands: a frame over the limit is
//! dropped and the client told; a flood that goes on ends the session.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Instant;

use chatd_proto::ErrorCode;

use super::connection::{Connection, Ending};
use crate::config::Limits;
use crate::ratelimit::TokenBucket;

/// A session's token bucket and how many frames it dropped in a row.
pub(super) struct Rate {
    bucket: TokenBucket,
    /// Frames dropped by the rate limit since the last one let through.
    violations: u32,
}

impl Rate {
    /// A full bucket for `limits`' rate and burst.
    pub(super) fn new(limits: &Limits) -> Self {
        Rate {
            bucket: TokenBucket::new(
                limits.messages_per_sec.get(),
                limits.message_burst.get(),
                Instant::now(),
            ),
            violations: 0,
        }
    }

    /// Takes a token if there is one; says nothing otherwise.
    pub(super) fn take(&mut self) -> bool {
        if self.bucket.take(Instant::now()) {
            self.violations = 0;
            return true;
        }
        false
    }

    /// Applies the limit to a message or command: Continue(true) to handle it, Continue(false)
    /// when it is dropped (the client is told), Break when the flooding goes on.
    pub(super) fn admit(
        &mut self,
        conn: &Connection,
        limits: &Limits,
    ) -> ControlFlow<Ending, bool> {
        if self.take() {
            return ControlFlow::Continue(true);
        }
        self.violations += 1;
        crate::metrics::get().rate_limited();
        let peer: SocketAddr = conn.peer();
        if self.violations == 1 {
            // Once per episode: the log must not become the flood.
            tracing::info!(%peer, "rate limit reached; dropping frames");
        }
        let (rate, burst) = (limits.messages_per_sec.get(), limits.message_burst.get());
        if self.violations >= limits.max_rate_violations.get() {
            tracing::warn!(%peer, dropped = self.violations, "closing a flooding session");
            return ControlFlow::Break(Ending::both(
                "too many messages: rate limit exceeded repeatedly",
            ));
        }
        conn.error(
            ErrorCode::RateLimited,
            format!(
                "slow down: not sent; the limit is {rate} messages per second (bursts of {burst})"
            ),
        );
        ControlFlow::Continue(false)
    }
}
