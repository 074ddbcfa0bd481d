//! [`Waiters`]: the engine's long-poll receives waiting for a message, in
//! arrival order, with their deadlines indexed.
//!
//! The engine answers a waiting receive when a message may have become
//! available (an append, a redelivery coming due, a message returned) or
//! when its `max_wait` has passed. The first walks the receives oldest
//! first and stops at the first one that gets nothing while it has room
//! (then nothing is available for anyone); the second takes them from the
//! deadline index. So an event costs what it serves, not a pass over every
//! waiting receive.
//!
//! ## Invariants
//!
//! - `(until, seq)` is in `deadlines` exactly when `seq` is in `by_seq`.
//! - `per_consumer[c]` = number of receives of consumer `c` waiting (no
//!   zero entries).
//! - `seq`s grow with arrival: `by_seq` is in arrival order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::handle::{GroupDelivery, GroupError};
use super::partition::ConsumerId;

/// A receive waiting for messages.
pub(super) struct Waiting {
    /// Who asked.
    pub consumer: ConsumerId,
    /// Most messages.
    pub max: usize,
    /// Most bytes.
    pub max_bytes: usize,
    /// When it is answered, empty if need be.
    pub until: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Vec<GroupDelivery>, GroupError>>,
}

/// The waiting receives of a group.
#[derive(Default)]
pub(super) struct Waiters {
    by_seq: BTreeMap<u64, Waiting>,
    deadlines: BTreeSet<(Instant, u64)>,
    per_consumer: HashMap<ConsumerId, usize>,
    next_seq: u64,
}

impl Waiters {
    /// No receive is waiting.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Adds a receive, after every one waiting.
    pub fn push(&mut self, waiting: Waiting) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.deadlines.insert((waiting.until, seq));
        *self.per_consumer.entry(waiting.consumer).or_insert(0) += 1;
        self.by_seq.insert(seq, waiting);
    }

    /// Whether `consumer` has a receive waiting.
    pub fn has_consumer(&self, consumer: ConsumerId) -> bool {
        self.per_consumer.contains_key(&consumer)
    }

    fn forget(&mut self, consumer: ConsumerId) {
        if let Some(n) = self.per_consumer.get_mut(&consumer) {
            *n -= 1;
            if *n == 0 {
                self.per_consumer.remove(&consumer);
            }
        }
    }

    /// The earliest deadline of a waiting receive.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(until, _)| *until)
    }

    /// Removes and returns the receives whose deadline is at or before
    /// `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Waiting> {
        let mut due = Vec::new();
        while let Some(&(until, seq)) = self.deadlines.first() {
            if until > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(waiting) = self.by_seq.remove(&seq) {
                self.forget(waiting.consumer);
                due.push(waiting);
            }
        }
        due
    }

    /// The first receive that arrived at or after `from`: its seq.
    pub fn next_from(&self, from: u64) -> Option<u64> {
        self.by_seq.range(from..).next().map(|(seq, _)| *seq)
    }

    /// The receive `seq`.
    pub fn get(&self, seq: u64) -> Option<&Waiting> {
        self.by_seq.get(&seq)
    }

    /// Removes the receive `seq`.
    pub fn remove(&mut self, seq: u64) -> Option<Waiting> {
        let waiting = self.by_seq.remove(&seq)?;
        self.deadlines.remove(&(waiting.until, seq));
        self.forget(waiting.consumer);
        Some(waiting)
    }

    /// Drops every receive of `consumer` (unanswered: it has left).
    pub fn drop_consumer(&mut self, consumer: ConsumerId) {
        if !self.has_consumer(consumer) {
            return;
        }
        let seqs: Vec<u64> = self
            .by_seq
            .iter()
            .filter(|(_, w)| w.consumer == consumer)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in seqs {
            self.remove(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiting(consumer: ConsumerId, until: Instant) -> Waiting {
        Waiting {
            consumer,
            max: 1,
            max_bytes: usize::MAX,
            until,
            reply: oneshot::channel().0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn receives_come_out_by_arrival_and_by_deadline() {
        let now = Instant::now();
        let mut waiters = Waiters::default();
        waiters.push(waiting(1, now + Duration::from_secs(5)));
        waiters.push(waiting(2, now + Duration::from_secs(1)));
        waiters.push(waiting(1, now + Duration::from_secs(3)));
        assert_eq!(waiters.next_deadline(), Some(now + Duration::from_secs(1)));
        assert_eq!(waiters.next_from(0), Some(0), "arrival order");
        let due = waiters.take_due(now + Duration::from_secs(3));
        assert_eq!(
            due.iter().map(|w| w.consumer).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(waiters.next_from(1), None);
        assert!(waiters.has_consumer(1) && !waiters.has_consumer(2));
        waiters.drop_consumer(1);
        assert!(!waiters.has_consumer(1));
        assert!(waiters.is_empty() && waiters.next_deadline().is_none());
    }
}
