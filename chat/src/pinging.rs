//! `/ping`: a protocol `ping` with a nonce of its own, timed until its `pong`, so the user
//! sees the round trip (`-- pong from server in 3.2 ms`) in both interfaces.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// High bits of `/ping` nonces (`ping` in ASCII); joins use `join`, keepalives 0.
const PING_NONCE: u64 = 0x7069_6e67 << 32;

/// Unanswered pings remembered; older ones are forgotten (their `pong` then shows nothing).
const MAX_OUTSTANDING: usize = 16;

/// Pings sent and not answered yet.
#[derive(Debug, Default)]
pub struct Pings {
    sent: VecDeque<(u64, Instant)>,
    count: u32,
}

impl Pings {
    /// A ping is about to be sent: its nonce.
    pub fn start(&mut self) -> u64 {
        self.count = self.count.wrapping_add(1);
        let nonce = PING_NONCE | u64::from(self.count);
        if self.sent.len() >= MAX_OUTSTANDING {
            self.sent.pop_front();
        }
        self.sent.push_back((nonce, Instant::now()));
        nonce
    }

    /// A `pong`: the round trip, if it answers one of ours.
    pub fn pong(&mut self, nonce: u64) -> Option<Duration> {
        let i = self.sent.iter().position(|(n, _)| *n == nonce)?;
        let (_, at) = self.sent.remove(i)?;
        Some(at.elapsed())
    }

    /// The connection is gone: those pongs will not come.
    pub fn clear(&mut self) {
        self.sent.clear();
    }
}

/// `3.2 ms`, `41 ms`, `1.25 s`.
pub fn show(rtt: Duration) -> String {
    let ms = rtt.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_its_own_nonces_once() {
        let mut p = Pings::default();
        let a = p.start();
        let b = p.start();
        assert_ne!(a, b);
        assert_eq!(a >> 32, 0x7069_6e67);
        assert!(p.pong(0).is_none(), "a keepalive's pong");
        assert!(p.pong(0x6a6f_696e << 32 | 1).is_none(), "a join's pong");
        assert!(p.pong(b).is_some());
        assert!(p.pong(b).is_none(), "answered once");
        assert!(p.pong(a).is_some());
        // Bounded: the oldest are forgotten.
        let first = p.start();
        for _ in 0..MAX_OUTSTANDING {
            p.start();
        }
        assert!(p.pong(first).is_none());
        p.clear();
        assert!(p.sent.is_empty());
    }

    #[test]
    fn round_trips_read_well() {
        assert_eq!(show(Duration::from_micros(3_200)), "3.2 ms");
        assert_eq!(show(Duration::from_micros(41_400)), "41 ms");
        assert_eq!(show(Duration::from_millis(1_250)), "1.25 s");
    }
}
