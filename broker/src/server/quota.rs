//! The produce byte-rate quota of one connection: a token bucket.
//!
//! The bucket holds up to one second of quota (`rate` bytes) and refills at
//! `rate` bytes per second. Every produce request takes its record-batch
//! bytes from it, whatever its size: a request is never refused for the
//! quota. When the bucket goes into debt, the connection owes
//! `debt / rate` seconds: the broker answers the request as usual, tells
//! the client to wait that long (`throttle_ms` in the Produce response,
//! version 1 and later) and reads nothing more from the connection until
//! then (a client that does not listen is slowed all the same: its
//! requests wait in the socket).
//!
//! Over any span of `t` seconds a connection gets at most `rate × t` bytes
//! plus one second of burst plus the request that went into debt. One wait
//! is at most [`MAX_THROTTLE`]; a single request larger than that much
//! quota is let through after it (the debt stays and is paid by the next
//! requests).

use std::time::{Duration, Instant};

/// Longest the broker holds back one connection after one request.
pub const MAX_THROTTLE: Duration = Duration::from_secs(30);

/// A token bucket measured in bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: f64,
    /// Most bytes that can be saved up (one second of rate).
    capacity: f64,
    /// Bytes available now; negative while in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` bytes per second (at least 1).
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        let rate = rate.max(1) as f64;
        TokenBucket {
            rate,
            capacity: rate,
            tokens: rate,
            updated: now,
        }
    }

    /// Takes `bytes` from the bucket (going into debt if it holds fewer);
    /// returns how long the caller must wait before sending more: zero
    /// while the bucket is not in debt, at most [`MAX_THROTTLE`].
    pub fn charge(&mut self, bytes: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        let owed = -self.tokens / self.rate;
        Duration::try_from_secs_f64(owed)
            .unwrap_or(MAX_THROTTLE)
            .min(MAX_THROTTLE)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_one_second_of_quota_through() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        assert_eq!(bucket.charge(600, start), Duration::ZERO);
        assert_eq!(bucket.charge(400, start), Duration::ZERO);
        // 500 bytes of debt at 1000 B/s: half a second.
        assert_eq!(bucket.charge(500, start), Duration::from_millis(500));
    }

    #[test]
    fn debt_is_paid_back_over_time() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        bucket.charge(1500, start);
        // 250 ms later, 250 bytes came back: 250 still owed.
        let wait = bucket.charge(0, start + Duration::from_millis(250));
        assert_eq!(wait, Duration::from_millis(250));
        assert_eq!(
            bucket.charge(0, start + Duration::from_millis(500)),
            Duration::ZERO
        );
    }

    #[test]
    fn savings_are_capped_at_one_second() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        let later = start + Duration::from_secs(3600);
        assert_eq!(bucket.charge(1000, later), Duration::ZERO);
        assert_eq!(bucket.charge(1000, later), Duration::from_secs(1));
    }

    #[test]
    fn the_long_run_rate_is_the_quota() {
        // A sender that sends 300-byte requests and waits exactly as told.
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10_000, start);
        let mut now = start;
        let mut sent = 0u64;
        while now < start + Duration::from_secs(10) {
            now += bucket.charge(300, now);
            sent += 300;
        }
        // 10 s of quota plus the first second's burst, plus one request.
        assert!(sent <= 110_000 + 300, "{sent}");
        assert!(sent >= 100_000, "{sent}");
    }

    #[test]
    fn one_wait_is_bounded() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1024, start);
        assert_eq!(bucket.charge(u64::MAX, start), MAX_THROTTLE);
        assert_eq!(bucket.charge(u64::MAX, start), MAX_THROTTLE);
    }
}
