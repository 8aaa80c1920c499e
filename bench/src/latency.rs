//! Latency histograms (microseconds) and their summary in milliseconds.

use anyhow::Context;
use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds up to this (5 minutes); larger ones saturate.
pub const MAX_LATENCY_US: u64 = 300_000_000;

/// An empty latency histogram (microseconds, 2 significant digits).
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).context("cannot create a latency histogram")
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Summarises a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_in_ms() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 2).unwrap();
        for us in 1..=100u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::of(&h);
        assert!((l.p50_ms - 50.0).abs() < 1.0);
        assert!((l.max_ms - 100.0).abs() < 1.0);
    }
}
