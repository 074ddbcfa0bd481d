//! Failed authentications, rate-limited per peer IP address.
//!
//! Each address has a bucket of [`BURST`] tokens, refilled at one per
//! [`REFILL`]; a failed authentication spends one. While an address has no
//! token left, its attempts are refused before any password is checked
//! (so they cost the broker nothing), with how long to wait. Success does
//! not refill a bucket: one valid account does not buy guesses at others.
//!
//! The table is bounded ([`MAX_ADDRESSES`]): when it is full, addresses
//! whose bucket is full again are forgotten first, then the oldest entry.
//! Time is passed in, so tests use any clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures an address may have in a row before it must wait.
pub const BURST: u32 = 5;
/// How long one failure takes to be forgiven.
pub const REFILL: Duration = Duration::from_secs(12);
/// Addresses tracked at once.
const MAX_ADDRESSES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures not yet forgiven as of `at`.
    debt: u32,
    at: Instant,
}

impl Bucket {
    /// The debt left at `now`, with `at` moved to the last forgiveness.
    fn settle(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        let forgiven = (elapsed.as_nanos() / REFILL.as_nanos()).min(u128::from(self.debt)) as u32;
        self.debt -= forgiven;
        self.at = if self.debt == 0 {
            now
        } else {
            self.at + REFILL * forgiven
        };
    }
}

/// Failed authentications per address.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailureLimiter {
    /// `Err(wait)` while `peer` has spent its failures: it may try again
    /// after `wait`.
    pub fn check(&self, peer: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock();
        let Some(bucket) = buckets.get_mut(&peer) else {
            return Ok(());
        };
        bucket.settle(now);
        if bucket.debt < BURST {
            return Ok(());
        }
        Err((bucket.at + REFILL).saturating_duration_since(now))
    }

    /// Counts a failed authentication of `peer`.
    pub fn record_failure(&self, peer: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&peer) && buckets.len() >= MAX_ADDRESSES {
            make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(peer).or_insert(Bucket { debt: 0, at: now });
        bucket.settle(now);
        bucket.debt = bucket.debt.saturating_add(1).min(BURST);
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Forgets addresses whose failures are all forgiven; if none is, the one
/// with the oldest failure.
fn make_room(buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
    buckets.retain(|_, b| {
        b.settle(now);
        b.debt > 0
    });
    if buckets.len() >= MAX_ADDRESSES
        && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(ip, _)| *ip)
    {
        buckets.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_waits_after_a_burst_of_failures_and_is_forgiven_over_time() {
        let limiter = FailureLimiter::default();
        let peer: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        let start = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limiter.check(peer, start), Ok(()));
            limiter.record_failure(peer, start);
        }
        assert_eq!(limiter.check(peer, start), Err(REFILL));
        assert_eq!(limiter.check(other, start), Ok(()), "per address");
        let later = start + REFILL / 2;
        assert_eq!(limiter.check(peer, later), Err(REFILL / 2));
        // One failure is forgiven per REFILL: one more try, then wait again.
        let later = start + REFILL;
        assert_eq!(limiter.check(peer, later), Ok(()));
        limiter.record_failure(peer, later);
        assert_eq!(limiter.check(peer, later), Err(REFILL));
        assert_eq!(limiter.check(peer, later + REFILL * BURST), Ok(()));
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = FailureLimiter::default();
        let now = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            limiter.record_failure(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(limiter.len() <= MAX_ADDRESSES);
    }
}
