//! [`Backoff`]: exponential delays with jitter between retries and
//! reconnects.
//!
//! Invariants: the delay for attempt `n` (0-based) is
//! `min(initial · 2ⁿ, max)` scaled by a random factor in
//! `[1 − jitter, 1 + jitter]`; it never overflows, whatever `n` is, and is
//! never above `max · (1 + jitter)`.

use std::time::Duration;

/// Exponential backoff with proportional jitter.
///
/// ```
/// use std::time::Duration;
/// use pigeon_client::client::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
/// let d = backoff.delay(3); // about 800 ms ± 20 %
/// assert!(d >= Duration::from_millis(640) && d <= Duration::from_millis(960));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Largest delay (before jitter).
    pub max: Duration,
    /// Relative jitter: 0.2 spreads each delay over ±20 %.
    pub jitter: f64,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`, with ±20 % jitter.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use pigeon_client::client::Backoff;
    /// let b = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));
    /// assert!(b.delay(10) <= Duration::from_micros(4800));
    /// ```
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            jitter: 0.2,
        }
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use pigeon_client::client::Backoff;
    /// let b = Backoff { jitter: 0.0, ..Backoff::new(Duration::from_millis(10), Duration::from_secs(1)) };
    /// assert_eq!(b.delay(2), Duration::from_millis(40));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let base = self.initial.saturating_mul(factor).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        let scale = 1.0 + rand::random_range(-jitter..=jitter);
        base.mul_f64(scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for attempt in 0..100 {
            let nominal = Duration::from_millis(100)
                .saturating_mul(2u32.saturating_pow(attempt.min(31)))
                .min(Duration::from_secs(10));
            let d = b.delay(attempt);
            assert!(
                d >= nominal.mul_f64(0.79) && d <= nominal.mul_f64(1.21),
                "{attempt}: {d:?}"
            );
        }
        assert!(b.delay(u32::MAX) <= Duration::from_secs(12));
    }
}
