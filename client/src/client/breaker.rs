//! [`CircuitBreaker`]: stop hammering a broker that is not there.
//!
//! Owns the decision whether a request may try to reach the broker. The
//! circuit is *closed* while connection attempts succeed; it *opens* once
//! attempts have failed [`CircuitConfig::failure_threshold`] times in a row
//! or have kept failing for [`CircuitConfig::open_after`]. While open, every
//! request fails at once with [`ClientError::CircuitOpen`], except one probe
//! every [`CircuitConfig::probe_interval`], which is let through to try to
//! connect. Any successful connection closes the circuit.
//!
//! Invariants: only failures to *reach* the broker count (refused, reset,
//! timed out), never the broker's answers; a failed attempt counts as a
//! probe, so probes are at least `probe_interval` apart.
//!
//! [`ClientError::CircuitOpen`]: super::ClientError::CircuitOpen

use std::time::{Duration, Instant};

/// When the circuit breaker opens and how often it probes.
///
/// ```
/// use std::time::Duration;
/// use pigeon_client::client::CircuitConfig;
///
/// let fast = CircuitConfig { failure_threshold: 2, probe_interval: Duration::from_millis(100), ..CircuitConfig::default() };
/// assert_eq!(fast.open_after, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitConfig {
    /// Consecutive failed connection attempts that open the circuit (5).
    pub failure_threshold: u32,
    /// How long attempts may keep failing before the circuit opens,
    /// whatever their number (10 s).
    pub open_after: Duration,
    /// How often one request is let through to probe an open circuit (3 s).
    pub probe_interval: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failure_threshold: 5,
            open_after: Duration::from_secs(10),
            probe_interval: Duration::from_secs(3),
        }
    }
}

/// What the breaker says to one connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The circuit is closed: go ahead (observing the reconnect backoff).
    Closed,
    /// The circuit is open but this attempt is the probe: go ahead now.
    Probe,
    /// The circuit is open: fail fast; the broker has been unreachable this long.
    Rejected(Duration),
}

/// The breaker's state; see the module documentation.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    config: CircuitConfig,
    failures: u32,
    first_failure: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl CircuitBreaker {
    pub(crate) fn new(config: CircuitConfig) -> Self {
        CircuitBreaker {
            config,
            failures: 0,
            first_failure: None,
            last_attempt: None,
        }
    }

    fn unreachable_for(&self, now: Instant) -> Duration {
        self.first_failure
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Whether the circuit is open (whether or not a probe is due).
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.failures > 0
            && (self.failures >= self.config.failure_threshold
                || self.unreachable_for(now) >= self.config.open_after)
    }

    fn probe_due(&self, now: Instant) -> bool {
        self.last_attempt
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.probe_interval)
    }

    /// Without claiming anything: `Err(unreachable_for)` if a request now
    /// would be rejected.
    pub(crate) fn check(&self, now: Instant) -> Result<(), Duration> {
        if self.is_open(now) && !self.probe_due(now) {
            Err(self.unreachable_for(now))
        } else {
            Ok(())
        }
    }

    /// Decides on one connection attempt; a granted probe is claimed.
    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
        if !self.is_open(now) {
            Admission::Closed
        } else if self.probe_due(now) {
            self.last_attempt = Some(now);
            Admission::Probe
        } else {
            Admission::Rejected(self.unreachable_for(now))
        }
    }

    /// A connection attempt failed to reach the broker.
    pub(crate) fn record_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.first_failure.get_or_insert(now);
        self.last_attempt = Some(now);
    }

    /// The broker answered: close the circuit.
    pub(crate) fn record_success(&mut self) {
        self.failures = 0;
        self.first_failure = None;
        self.last_attempt = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(CircuitConfig {
            failure_threshold: 3,
            open_after: Duration::from_secs(10),
            probe_interval: Duration::from_secs(2),
        })
    }

    #[test]
    fn opens_after_threshold_probes_and_closes() {
        let mut b = breaker();
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(b.admit(t0), Admission::Closed, "attempt {i}");
            b.record_failure(t0);
        }
        assert!(b.is_open(t0));
        assert_eq!(b.check(t0), Err(Duration::ZERO));
        assert!(matches!(
            b.admit(t0 + Duration::from_secs(1)),
            Admission::Rejected(_)
        ));
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(b.check(t2), Ok(()));
        assert_eq!(b.admit(t2), Admission::Probe);
        // The probe is claimed: the next request in the same instant is rejected.
        assert_eq!(b.admit(t2), Admission::Rejected(Duration::from_secs(2)));
        b.record_failure(t2);
        assert!(matches!(
            b.admit(t2 + Duration::from_secs(1)),
            Admission::Rejected(_)
        ));
        b.record_success();
        assert!(!b.is_open(t2));
        assert_eq!(b.admit(t2), Admission::Closed);
    }

    #[test]
    fn opens_after_time_whatever_the_count() {
        let mut b = breaker();
        let t0 = Instant::now();
        b.record_failure(t0);
        assert!(!b.is_open(t0 + Duration::from_secs(9)));
        assert!(b.is_open(t0 + Duration::from_secs(10)));
    }
}
