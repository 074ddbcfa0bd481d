//! [`Latency`]: one latency distribution in microseconds, recorded by
//! one task and merged with the others' at the end of a run.
//!
//! Invariants: every histogram has the same range (0 µs to 1 hour,
//! values above are clamped to the top) and 3 significant digits, so
//! merging never fails and never loses precision; memory is fixed (a few
//! hundred KiB), whatever the number of values recorded.

use hdrhistogram::Histogram;

/// Largest latency kept apart: one hour, in µs; longer ones count as this.
const MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits kept.
const DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
}

/// The usual percentiles of a [`Latency`], in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        // The bounds are constants that hdrhistogram accepts (low 1 ≤ high
        // / 2, digits ≤ 5); a failure here is a programming error.
        let histogram =
            Histogram::new_with_bounds(1, MAX_US, DIGITS).expect("valid histogram bounds");
        Latency { histogram }
    }

    /// Records the time from `from_ns` to `to_ns` (ns on the run's epoch;
    /// 0 if `to_ns` is earlier), rounded down to whole µs.
    pub fn record_ns(&mut self, from_ns: u64, to_ns: u64) {
        self.record_us(to_ns.saturating_sub(from_ns) / 1_000);
    }

    /// Records `us` microseconds (clamped to one hour).
    pub fn record_us(&mut self, us: u64) {
        self.histogram.saturating_record(us.min(MAX_US));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides (see `new`): addition cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// p50, p99, p99.9 and max (all 0 when empty).
    pub fn percentiles(&self) -> Percentiles {
        if self.is_empty() {
            return Percentiles::default();
        }
        let at = |q: f64| self.histogram.value_at_quantile(q);
        Percentiles {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: self.histogram.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut latency = Latency::new();
        for us in 1..=10_000 {
            latency.record_us(us);
        }
        let p = latency.percentiles();
        // Three significant digits: within 0.1 %.
        assert!((4_995..=5_005).contains(&p.p50), "{p:?}");
        assert!((9_890..=9_910).contains(&p.p99), "{p:?}");
        assert!((9_980..=10_000).contains(&p.p999), "{p:?}");
        assert!((9_995..=10_010).contains(&p.max), "{p:?}");
    }

    #[test]
    fn merged_histograms_hold_every_value() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record_ns(0, 2_000);
        b.record_ns(1_000, 9_000_000);
        a.merge(&b);
        assert_eq!(a.len(), 2);
        assert_eq!(a.percentiles().p50, 2);
        assert!((8_995..=9_005).contains(&a.percentiles().max));
    }

    #[test]
    fn backwards_and_huge_values_are_clamped_not_refused() {
        let mut latency = Latency::new();
        latency.record_ns(10, 5);
        latency.record_us(u64::MAX);
        assert_eq!(latency.len(), 2);
        assert_eq!(latency.percentiles().p50, 0);
        assert!(latency.percentiles().max >= MAX_US);
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        assert_eq!(Latency::new().percentiles(), Percentiles::default());
    }
}
