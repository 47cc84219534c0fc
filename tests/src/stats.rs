//! Summary statistics for simulation reports: percentiles of latency samples, and a bounded sample
//! log.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (nearest-rank); all zero when empty.
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let idx = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[idx]
        };
        Self {
            count: ms.len(),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// A log that keeps at most `cap` items and counts what it had to drop (simulations run for a
/// bounded time, so the cap is only a guard against a runaway configuration).
#[derive(Clone, Debug)]
pub struct BoundedLog<T> {
    items: Vec<T>,
    cap: usize,
    dropped: u64,
}

impl<T> BoundedLog<T> {
    /// An empty log for at most `cap` items.
    pub fn new(cap: usize) -> Self {
        Self {
            items: Vec::new(),
            cap,
            dropped: 0,
        }
    }

    /// Appends `item`, or counts it as dropped when full.
    pub fn push(&mut self, item: T) {
        if self.items.len() < self.cap {
            self.items.push(item);
        } else {
            self.dropped += 1;
        }
    }

    /// The kept items, oldest first.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// How many items did not fit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Buckets of [`Histogram`]: values from 1 µs up to about 5 days at 1% resolution (longer ones
/// land in the last bucket).
const HISTOGRAM_BUCKETS: usize = 2700;
/// Relative width of a [`Histogram`] bucket.
const HISTOGRAM_GROWTH: f64 = 1.01;

/// A fixed-size log-scale histogram of durations (1% resolution): constant memory however many
/// samples arrive, so a long load run does not grow its own bookkeeping.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; HISTOGRAM_BUCKETS],
            total: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let idx = ((us as f64).ln() / HISTOGRAM_GROWTH.ln()) as usize;
        self.counts[idx.min(HISTOGRAM_BUCKETS - 1)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Number of recorded durations.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Nearest-rank percentiles (each the upper edge of its bucket, so at most 1% high).
    pub fn percentiles(&self) -> Percentiles {
        if self.total == 0 {
            return Percentiles::default();
        }
        let max_ms = self.max_us as f64 / 1e3;
        let rank = |p: f64| {
            let want = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
            let mut seen = 0;
            for (i, c) in self.counts.iter().enumerate() {
                seen += c;
                if seen >= want {
                    let upper_us = HISTOGRAM_GROWTH.powi(i as i32 + 1);
                    return (upper_us / 1e3).min(max_ms);
                }
            }
            max_ms
        };
        Percentiles {
            count: usize::try_from(self.total).unwrap_or(usize::MAX),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_within_one_percent() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        for (got, want) in [(p.p50_ms, 500.0), (p.p90_ms, 900.0), (p.p99_ms, 990.0)] {
            assert!(
                got >= want && got <= want * 1.0101,
                "{got} not within 1% above {want}"
            );
        }
        assert_eq!(p.max_ms, 1000.0);
        let mut other = Histogram::default();
        other.record(Duration::from_secs(5));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.percentiles().max_ms, 5000.0);
        assert_eq!(Histogram::default().percentiles(), Percentiles::default());
        // Extremes land in the first and last buckets instead of panicking.
        h.record(Duration::ZERO);
        h.record(Duration::MAX);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&s);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p90_ms, 90.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        let one = Percentiles::of(&[Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn bounded_log_drops_beyond_its_cap() {
        let mut log = BoundedLog::new(2);
        for i in 0..5 {
            log.push(i);
        }
        assert_eq!(log.items(), &[0, 1]);
        assert_eq!(log.dropped(), 3);
    }
}
