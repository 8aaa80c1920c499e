//! A token bucket: what a session may send per second, with a burst allowance.
//!
//! Pure (time is passed in), so the edges are unit-tested without sleeping.

use std::time::Instant;

/// `burst` tokens at most, refilled at `rate` per second; one token per frame.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token if there is one; false means "over the limit, drop the frame".
    pub fn take(&mut self, now: Instant) -> bool {
        if self.peek(now) {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when a token is there to take (refilling up to `now`, taking nothing).
    pub fn peek(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens >= 1.0
    }

    /// True when the bucket is full again (nothing taken that has not been refilled).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.peek(now);
        self.tokens >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        // Exactly the burst passes at once, the next is refused.
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        // One token per 100 ms at 10/s.
        assert!(!b.take(t0 + Duration::from_millis(90)));
        assert!(b.take(t0 + Duration::from_millis(101)));
        assert!(!b.take(t0 + Duration::from_millis(150)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        assert!(b.take(later) && b.take(later) && b.take(later));
        assert!(!b.take(later));
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut b = TokenBucket::new(1, 1, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
    }
}
