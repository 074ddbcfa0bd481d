//! Group settings and the redelivery backoff formula.
//!
//! Attempt n+1 of a message whose lease expired or was nacked is due at
//! `now + min(max, initial × multiplier^(n−1))`, scaled by a random factor
//! in `[1 − jitter, 1 + jitter]` so that a burst of failures does not come
//! back as a burst.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::time::Duration;

/// How a group delivers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSettings {
    /// A lease ends this long after delivery unless acked or extended.
    pub ack_timeout: Duration,
    /// Deliveries of one message before it is dead-lettered (≥ 1).
    pub max_deliveries: u32,
    /// Delay before the second attempt.
    pub backoff_initial: Duration,
    /// Growth of the delay per attempt (≥ 1.0).
    pub backoff_multiplier: f64,
    /// Largest delay.
    pub backoff_max: Duration,
    /// Random spread of each delay, as a fraction (0.2 = ±20 %).
    pub backoff_jitter: f64,
    /// Leases one consumer may hold at once (flow control).
    pub max_in_flight: u32,
}

impl Default for GroupSettings {
    /// docs/design.md's defaults.
    fn default() -> Self {
        GroupSettings {
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            backoff_initial: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            backoff_max: Duration::from_secs(300),
            backoff_jitter: 0.2,
            max_in_flight: 1000,
        }
    }
}

impl GroupSettings {
    /// Checks every value; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.ack_timeout.is_zero() {
            return Err("ack_timeout must be above 0".into());
        }
        if self.max_deliveries == 0 {
            return Err("max_deliveries must be at least 1".into());
        }
        if !self.backoff_multiplier.is_finite() || self.backoff_multiplier < 1.0 {
            return Err(format!(
                "backoff multiplier {} must be a number ≥ 1.0",
                self.backoff_multiplier
            ));
        }
        if !(0.0..=1.0).contains(&self.backoff_jitter) {
            return Err(format!(
                "backoff jitter {} must be between 0 and 1",
                self.backoff_jitter
            ));
        }
        if self.backoff_max < self.backoff_initial {
            return Err("backoff max must be at least backoff initial".into());
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        Ok(())
    }

    /// The delay before attempt `attempt + 1`, after `attempt` deliveries,
    /// without jitter: `min(max, initial × multiplier^(attempt−1))`.
    pub fn base_backoff_ms(&self, attempt: u32) -> f64 {
        let initial = self.backoff_initial.as_millis() as f64;
        let max = self.backoff_max.as_millis() as f64;
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        (initial * self.backoff_multiplier.powi(exponent)).min(max)
    }

    /// The delay before the next attempt, with jitter from `unit` (a
    /// uniform random number in `[0, 1)`).
    pub fn backoff_ms(&self, attempt: u32, unit: f64) -> i64 {
        let spread = 1.0 + self.backoff_jitter * (2.0 * unit - 1.0);
        (self.base_backoff_ms(attempt) * spread).round().max(0.0) as i64
    }
}

/// The engine's seeded random source for jitter (rand's `SmallRng`: fast,
/// not cryptographic, reproducible from its seed in tests).
#[derive(Debug, Clone)]
pub struct Jitter(SmallRng);

impl Jitter {
    /// A source from `seed`.
    pub fn new(seed: u64) -> Jitter {
        Jitter(SmallRng::seed_from_u64(seed))
    }

    /// A uniform number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.random::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_formula() {
        let s = GroupSettings::default();
        assert_eq!(s.base_backoff_ms(1), 1000.0);
        assert_eq!(s.base_backoff_ms(2), 2000.0);
        assert_eq!(s.base_backoff_ms(4), 8000.0);
        assert_eq!(s.base_backoff_ms(30), 300_000.0, "capped at max");
        assert_eq!(s.backoff_ms(1, 0.5), 1000);
        assert_eq!(s.backoff_ms(1, 0.0), 800, "−20 %");
        assert_eq!(s.backoff_ms(1, 0.999_999_9), 1200, "+20 %");
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(GroupSettings::default().validate(), Ok(()));
        let bad = GroupSettings {
            backoff_multiplier: f64::NAN,
            ..GroupSettings::default()
        };
        assert!(bad.validate().expect_err("nan").contains("multiplier"));
        let bad = GroupSettings {
            max_deliveries: 0,
            ..GroupSettings::default()
        };
        assert!(bad.validate().expect_err("zero").contains("max_deliveries"));
    }

    #[test]
    fn jitter_is_uniform_enough() {
        let mut j = Jitter::new(7);
        let samples: Vec<f64> = (0..10_000).map(|_| j.unit()).collect();
        assert!(samples.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
    }
}
