//! Byte-rate quotas: the produce quota (request frames read) and the fetch
//! quota (Fetch and Receive responses written), each a token bucket.
//!
//! **Whose bucket.** With users (`--users`), every connection of one user
//! charges the same two buckets: [`UserQuotas`], owned by the broker
//! service, maps a user name to its buckets while at least one of its
//! connections is open; the entry is dropped with the user's last
//! connection (a [`ConnectionQuota`] holds a lease on it), so the map holds
//! at most one entry per open connection. A user's rates are the broker's
//! (`produce_quota_bytes_per_sec`, `fetch_quota_bytes_per_sec`) unless its
//! entry in the users file sets its own; a connection of a user whose rate
//! changed (a reload) brings the shared bucket to the new rate. Without
//! users, and before a connection has authenticated, each connection has
//! buckets of its own.
//!
//! **The bucket.** A [`TokenBucket`] holds up to one second of quota
//! (`rate` bytes) and refills at `rate` bytes per second. A produce
//! request takes its whole frame (header and body, not only its record
//! batches), so a flood of tiny requests pays for its overhead; a Fetch
//! or Receive response takes its whole encoded frame. Nothing is refused
//! for the quota. When a bucket goes into debt, the connection that put it
//! there owes `debt / rate` seconds: for a produce the broker answers as
//! usual, tells the client to wait that long (`throttle_ms` in the Produce
//! response, version 1 and later) and reads nothing more from the
//! connection until then; for a fetch (whose responses have no throttle
//! field) the connection's next request is not read or started until then.
//! A client that does not listen is slowed all the same: its requests wait
//! in the socket. The other connections of the same user pay the same debt
//! as soon as they charge the shared bucket.
//!
//! Over any span of `t` seconds one bucket lets through at most `rate × t`
//! bytes plus one second of burst plus the requests that went into debt
//! (one per connection sharing it). One wait is at most [`MAX_THROTTLE`]; a
//! single request larger than that much quota is let through after it
//! (the debt stays and is paid by the next requests).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::metrics;

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

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Changes the rate (at least 1), keeping the debt or savings (capped
    /// at one second of the new rate).
    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        self.refill(now);
        self.rate = rate.max(1) as f64;
        self.capacity = self.rate;
        self.tokens = self.tokens.min(self.capacity);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
    }
}

/// A bucket shared by every connection charging it.
pub type SharedBucket = Arc<Mutex<TokenBucket>>;

/// Which of the two quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Request frames of Produce.
    Produce,
    /// Response frames of Fetch and Receive.
    Fetch,
}

/// The buckets one connection charges: its own, or its user's.
#[derive(Debug, Default)]
pub struct ConnectionQuota {
    produce: Option<SharedBucket>,
    fetch: Option<SharedBucket>,
    /// Keeps the user's entry in [`UserQuotas`] while the connection lives.
    _lease: Option<UserLease>,
}

impl ConnectionQuota {
    /// Buckets of the connection's own, at these rates (`None`: unlimited).
    pub fn own(produce: Option<u64>, fetch: Option<u64>, now: Instant) -> ConnectionQuota {
        let bucket =
            |rate: Option<u64>| rate.map(|r| Arc::new(Mutex::new(TokenBucket::new(r, now))));
        ConnectionQuota {
            produce: bucket(produce),
            fetch: bucket(fetch),
            _lease: None,
        }
    }

    fn bucket(&self, direction: Direction) -> Option<&SharedBucket> {
        match direction {
            Direction::Produce => self.produce.as_ref(),
            Direction::Fetch => self.fetch.as_ref(),
        }
    }
}

/// One user's entry: its buckets and how many connections use them.
#[derive(Debug)]
struct UserEntry {
    connections: usize,
    produce: Option<SharedBucket>,
    fetch: Option<SharedBucket>,
}

/// The buckets of every user with an open connection, by user name
/// (bounded by the open connections: a user's entry goes with its last).
#[derive(Debug, Clone, Default)]
pub struct UserQuotas {
    users: Arc<Mutex<HashMap<String, UserEntry>>>,
}

impl UserQuotas {
    /// The buckets of `user` for one more of its connections, at these
    /// rates (`None`: unlimited); the entry lives while the returned quota
    /// does.
    pub fn attach(
        &self,
        user: &str,
        produce: Option<u64>,
        fetch: Option<u64>,
        now: Instant,
    ) -> ConnectionQuota {
        let mut users = self.users.lock();
        let entry = users.entry(user.to_owned()).or_insert_with(|| UserEntry {
            connections: 0,
            produce: None,
            fetch: None,
        });
        entry.connections += 1;
        let produce = shared_at(&mut entry.produce, produce, now);
        let fetch = shared_at(&mut entry.fetch, fetch, now);
        ConnectionQuota {
            produce,
            fetch,
            _lease: Some(UserLease {
                users: self.users.clone(),
                user: user.to_owned(),
            }),
        }
    }

    /// How many users have an entry (an open connection).
    pub fn len(&self) -> usize {
        self.users.lock().len()
    }

    /// Whether no user has an entry.
    pub fn is_empty(&self) -> bool {
        self.users.lock().is_empty()
    }
}

/// The user's bucket at `rate`: the one there (brought to `rate` if it
/// changed), a new one, or none for unlimited.
fn shared_at(
    slot: &mut Option<SharedBucket>,
    rate: Option<u64>,
    now: Instant,
) -> Option<SharedBucket> {
    let Some(rate) = rate else {
        *slot = None;
        return None;
    };
    let bucket = slot.get_or_insert_with(|| Arc::new(Mutex::new(TokenBucket::new(rate, now))));
    {
        let mut b = bucket.lock();
        if b.rate() != rate {
            b.set_rate(rate, now);
        }
    }
    Some(bucket.clone())
}

/// One connection's hold on its user's entry: dropping the last one drops
/// the entry.
#[derive(Debug)]
struct UserLease {
    users: Arc<Mutex<HashMap<String, UserEntry>>>,
    user: String,
}

impl Drop for UserLease {
    fn drop(&mut self) {
        let mut users = self.users.lock();
        if let Some(entry) = users.get_mut(&self.user) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                users.remove(&self.user);
            }
        }
    }
}

/// A connection's quotas and its mute, shared by its reader (which charges
/// produces and waits out the mute) and its writer (which charges fetch
/// responses).
#[derive(Debug, Default)]
pub struct Throttle {
    quota: Mutex<ConnectionQuota>,
    muted_until: Mutex<Option<Instant>>,
}

impl Throttle {
    /// A throttle charging `quota`.
    pub fn new(quota: ConnectionQuota) -> Throttle {
        Throttle {
            quota: Mutex::new(quota),
            muted_until: Mutex::new(None),
        }
    }

    /// Charges from now on `quota` (the connection authenticated).
    pub fn set(&self, quota: ConnectionQuota) {
        *self.quota.lock() = quota;
    }

    /// Charges `bytes` to the `direction` bucket; returns how long the
    /// connection is muted for it (zero when not in debt or unlimited).
    pub fn charge(&self, direction: Direction, bytes: u64) -> Duration {
        let Some(bucket) = self.quota.lock().bucket(direction).cloned() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let wait = bucket.lock().charge(bytes, now);
        if !wait.is_zero() {
            match direction {
                Direction::Produce => metrics::produce_throttled(wait),
                Direction::Fetch => metrics::fetch_throttled(wait),
            }
            let mut muted = self.muted_until.lock();
            *muted = Some(muted.map_or(now + wait, |until| until.max(now + wait)));
        }
        wait
    }

    /// Until when the connection is muted, if it is (clears the mute).
    pub fn take_mute(&self) -> Option<Instant> {
        self.muted_until.lock().take()
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

    #[test]
    fn a_rate_change_keeps_the_debt() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        bucket.charge(2000, start);
        bucket.set_rate(2000, start);
        assert_eq!(bucket.rate(), 2000);
        // 1000 bytes owed at 2000 B/s.
        assert_eq!(bucket.charge(0, start), Duration::from_millis(500));
    }

    #[test]
    fn connections_of_one_user_share_its_bucket() {
        let start = Instant::now();
        let quotas = UserQuotas::default();
        let a = quotas.attach("alice", Some(1000), None, start);
        let b = quotas.attach("alice", Some(1000), None, start);
        let other = quotas.attach("bob", Some(1000), None, start);
        assert_eq!(quotas.len(), 2);
        let (a, b) = (Throttle::new(a), Throttle::new(b));
        let other = Throttle::new(other);
        // alice's first connection spends the second of burst…
        assert_eq!(a.charge(Direction::Produce, 1000), Duration::ZERO);
        // …so her second connection goes into debt at once…
        assert!(b.charge(Direction::Produce, 500) > Duration::ZERO);
        assert!(b.take_mute().is_some());
        assert!(
            a.take_mute().is_none(),
            "only the one that went into debt is muted"
        );
        // …while bob's bucket is his own, and nobody has a fetch quota.
        assert_eq!(other.charge(Direction::Produce, 1000), Duration::ZERO);
        assert_eq!(a.charge(Direction::Fetch, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn the_long_run_rate_of_a_user_is_its_quota_however_many_connections() {
        // Four connections of one user, each sending 300-byte requests and
        // waiting exactly as told, take turns.
        let start = Instant::now();
        let quotas = UserQuotas::default();
        let throttles: Vec<Throttle> = (0..4)
            .map(|_| Throttle::new(quotas.attach("u", Some(10_000), None, start)))
            .collect();
        let bucket = throttles[0].quota.lock().produce.clone().expect("bucket");
        let mut ready = [start; 4];
        let mut sent = 0u64;
        loop {
            let (i, now) = ready
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|(_, t)| *t)
                .expect("four");
            if now >= start + Duration::from_secs(10) {
                break;
            }
            ready[i] = now + bucket.lock().charge(300, now);
            sent += 300;
        }
        // 10 s of quota plus one second of burst, plus one request per connection.
        assert!(sent <= 110_000 + 4 * 300, "{sent}");
        assert!(sent >= 100_000, "{sent}");
    }

    #[test]
    fn a_users_entry_goes_with_its_last_connection() {
        let start = Instant::now();
        let quotas = UserQuotas::default();
        let a = quotas.attach("alice", Some(2048), Some(4096), start);
        let b = quotas.attach("alice", Some(2048), Some(4096), start);
        assert_eq!(quotas.len(), 1);
        drop(a);
        assert_eq!(quotas.len(), 1, "one connection left");
        drop(b);
        assert!(quotas.is_empty(), "no connection left: no entry");
        // Many users connecting and leaving leave nothing behind.
        for i in 0..1000 {
            drop(quotas.attach(&format!("user{i}"), Some(2048), None, start));
        }
        assert!(quotas.is_empty());
    }

    #[test]
    fn a_new_rate_for_a_user_applies_to_its_shared_bucket() {
        let start = Instant::now();
        let quotas = UserQuotas::default();
        let a = Throttle::new(quotas.attach("alice", Some(1000), None, start));
        // A reload gave alice 4000 B/s; her next connection brings the
        // shared bucket to it.
        let b = Throttle::new(quotas.attach("alice", Some(4000), None, start));
        assert_eq!(a.charge(Direction::Produce, 1000), Duration::ZERO);
        // 1000 bytes of debt at 4000 B/s (less what came back since
        // `start`: `charge` reads the clock).
        let wait = b.charge(Direction::Produce, 1000);
        assert!(
            wait <= Duration::from_millis(250) && wait > Duration::from_millis(150),
            "{wait:?}"
        );
    }
}
