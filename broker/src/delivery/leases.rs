//! [`Leases`]: the open leases of one partition in one group, by offset.
//!
//! Besides the leases themselves it keeps what the group engine asks for
//! on every command, so that no question scans every lease:
//!
//! - how many leases each consumer holds (flow control by
//!   `max_in_flight`), kept exact on every insert and removal;
//! - a deadline index (a [`Timeline`] of `(deadline, offset)`), kept exact
//!   on every insert, removal and extend: the earliest deadline is the
//!   engine's next timer, and expiring takes exactly the leases whose
//!   deadline has passed, earliest first, in O(log n) each. A receive's
//!   batch shares one deadline, so the index holds one run per batch, not
//!   one entry per lease.
//!
//! ## Invariants
//!
//! - `held[c]` = number of leases of consumer `c` (no zero entries).
//! - `(entry.lease.deadline_ms, offset)` is in `deadlines` exactly when
//!   `offset → entry` is in `by_offset`.
//!
//! ## Memory
//!
//! One B-tree entry per lease: the offset (8 bytes) and a [`LeaseEntry`]
//! (24 bytes), 63.6 bytes with the tree's slack, plus a share of a deadline
//! run: next to nothing when a receive's batch shares one deadline, about
//! 49 bytes when every lease has its own (112.6 bytes in all; `cargo bench
//! --bench delivery_timers`, figures in `docs/benchmarks.md`).

use std::collections::{BTreeMap, HashMap};

use super::partition::{ConsumerId, DeliveryTimes, Lease};
use super::timeline::Timeline;

/// A lease and when its message was delivered (whole seconds since the
/// Unix epoch; 0 when unknown, e.g. a lease recovered from an old journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseEntry {
    /// The lease.
    pub lease: Lease,
    /// The message's first delivery to the group.
    pub first_s: u32,
    /// This delivery (the latest).
    pub leased_s: u32,
}

impl LeaseEntry {
    /// The message's first and latest delivery times.
    pub fn times(&self) -> DeliveryTimes {
        DeliveryTimes {
            first_s: self.first_s,
            last_s: self.leased_s,
        }
    }
}

/// The open leases of one partition.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    by_offset: BTreeMap<u64, LeaseEntry>,
    held: HashMap<ConsumerId, usize>,
    /// `(deadline_ms, offset)` of every lease.
    deadlines: Timeline,
}

/// Two lease tables are equal when they hold the same leases (the counts
/// and the deadline index follow from them).
impl PartialEq for Leases {
    fn eq(&self, other: &Leases) -> bool {
        self.by_offset == other.by_offset
    }
}

impl Leases {
    /// Leases held.
    pub fn len(&self) -> usize {
        self.by_offset.len()
    }

    /// No lease is open.
    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty()
    }

    /// Leases held by `consumer`.
    pub fn held_by(&self, consumer: ConsumerId) -> usize {
        self.held.get(&consumer).copied().unwrap_or(0)
    }

    /// The lease on `offset`.
    pub fn get(&self, offset: u64) -> Option<&LeaseEntry> {
        self.by_offset.get(&offset)
    }

    /// Whether `offset` is leased.
    pub fn contains(&self, offset: u64) -> bool {
        self.by_offset.contains_key(&offset)
    }

    /// The leases, by offset.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &LeaseEntry)> + '_ {
        self.by_offset.iter().map(|(o, e)| (*o, e))
    }

    /// The leases below `offset`, by offset.
    pub fn below(&self, offset: u64) -> impl Iterator<Item = (u64, &LeaseEntry)> + '_ {
        self.by_offset.range(..offset).map(|(o, e)| (*o, e))
    }

    /// Leases in `from..to`.
    pub fn count_in(&self, from: u64, to: u64) -> usize {
        if from >= to {
            return 0;
        }
        self.by_offset.range(from..to).count()
    }

    /// Deadline runs held (what the deadline index costs in memory).
    pub fn deadline_runs(&self) -> usize {
        self.deadlines.runs()
    }

    /// Leases `offset` (replacing any lease it had).
    pub fn insert(&mut self, offset: u64, entry: LeaseEntry) {
        if let Some(old) = self.by_offset.insert(offset, entry) {
            self.deadlines.remove(old.lease.deadline_ms, offset);
            self.release(old.lease.consumer);
        }
        *self.held.entry(entry.lease.consumer).or_insert(0) += 1;
        self.deadlines.insert(entry.lease.deadline_ms, offset);
    }

    /// Ends the lease on `offset`.
    pub fn remove(&mut self, offset: u64) -> Option<LeaseEntry> {
        let entry = self.by_offset.remove(&offset)?;
        self.deadlines.remove(entry.lease.deadline_ms, offset);
        self.release(entry.lease.consumer);
        Some(entry)
    }

    /// Moves the deadline of `consumer`'s lease on `offset`; `None` if it
    /// holds none.
    pub fn set_deadline(
        &mut self,
        consumer: ConsumerId,
        offset: u64,
        deadline_ms: i64,
    ) -> Option<i64> {
        let entry = self
            .by_offset
            .get_mut(&offset)
            .filter(|e| e.lease.consumer == consumer)?;
        let old = std::mem::replace(&mut entry.lease.deadline_ms, deadline_ms);
        self.deadlines.remove(old, offset);
        self.deadlines.insert(deadline_ms, offset);
        Some(deadline_ms)
    }

    /// The earliest deadline; `None` when there are no leases.
    pub fn next_deadline(&self) -> Option<i64> {
        self.deadlines.first().map(|(deadline, _)| deadline)
    }

    /// Removes and returns every lease whose deadline is at or before
    /// `now_ms`, earliest deadline first (then by offset). Takes them from
    /// the deadline index: nothing else is looked at.
    pub fn take_expired(&mut self, now_ms: i64) -> Vec<(u64, LeaseEntry)> {
        let mut taken = Vec::new();
        while let Some((_, first, last)) = self.deadlines.pop_run_through(now_ms) {
            for offset in first..=last {
                if let Some(entry) = self.by_offset.remove(&offset) {
                    self.release(entry.lease.consumer);
                    taken.push((offset, entry));
                }
            }
        }
        taken
    }

    /// Removes and returns, by offset, the leases `pick` chooses (a scan of
    /// every lease: for a consumer leaving, and recovery).
    pub fn take_where(
        &mut self,
        mut pick: impl FnMut(&LeaseEntry) -> bool,
    ) -> Vec<(u64, LeaseEntry)> {
        let offsets: Vec<u64> = self
            .by_offset
            .iter()
            .filter(|(_, e)| pick(e))
            .map(|(o, _)| *o)
            .collect();
        offsets
            .into_iter()
            .filter_map(|o| self.remove(o).map(|e| (o, e)))
            .collect()
    }

    /// Removes and returns, by offset, the leases at or after `offset`.
    pub fn split_off(&mut self, offset: u64) -> Vec<(u64, LeaseEntry)> {
        let tail = self.by_offset.split_off(&offset);
        for (o, entry) in &tail {
            self.deadlines.remove(entry.lease.deadline_ms, *o);
            self.release(entry.lease.consumer);
        }
        tail.into_iter().collect()
    }

    fn release(&mut self, consumer: ConsumerId) {
        if let Some(n) = self.held.get_mut(&consumer) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&consumer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(consumer: ConsumerId, deadline_ms: i64) -> LeaseEntry {
        LeaseEntry {
            lease: Lease {
                deadline_ms,
                consumer,
                attempt: 1,
            },
            first_s: 1,
            leased_s: 1,
        }
    }

    #[test]
    fn counts_follow_inserts_removals_and_replacements() {
        let mut leases = Leases::default();
        leases.insert(1, entry(7, 100));
        leases.insert(2, entry(7, 100));
        leases.insert(3, entry(8, 100));
        assert_eq!((leases.held_by(7), leases.held_by(8)), (2, 1));
        leases.insert(2, entry(8, 100));
        assert_eq!((leases.held_by(7), leases.held_by(8)), (1, 2));
        leases.remove(1);
        assert_eq!(leases.held_by(7), 0);
        assert!(!leases.held.contains_key(&7), "no zero entries");
        let tail = leases.split_off(3);
        assert_eq!(tail.len(), 1);
        assert_eq!((leases.len(), leases.held_by(8)), (1, 1));
    }

    #[test]
    fn the_deadline_index_follows_every_insert_removal_and_extend() {
        let mut leases = Leases::default();
        assert_eq!(leases.next_deadline(), None);
        leases.insert(1, entry(1, 500));
        leases.insert(2, entry(1, 300));
        leases.insert(3, entry(1, 900));
        assert_eq!(leases.next_deadline(), Some(300));
        leases.remove(2);
        assert_eq!(leases.next_deadline(), Some(500), "exact after a removal");
        assert!(leases.take_expired(499).is_empty());
        assert_eq!(leases.set_deadline(1, 3, 200), Some(200));
        assert_eq!(leases.set_deadline(2, 3, 200), None, "not its lease");
        assert_eq!(leases.next_deadline(), Some(200));
        let expired = leases.take_expired(600);
        assert_eq!(
            expired.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![3, 1],
            "earliest deadline first"
        );
        assert_eq!(leases.next_deadline(), None);
        assert_eq!(leases.held_by(1), 0);
    }

    #[test]
    fn a_batch_with_one_deadline_is_one_run_of_the_index() {
        let mut leases = Leases::default();
        for offset in 0..1000 {
            leases.insert(offset, entry(1, 30_000));
        }
        assert_eq!(leases.deadline_runs(), 1);
        for offset in (0..1000).step_by(2) {
            leases.remove(offset);
        }
        assert_eq!(leases.deadline_runs(), 500, "each removal splits a run");
        let expired = leases.take_expired(30_000);
        assert_eq!(expired.len(), 500);
        assert!(leases.is_empty() && leases.deadline_runs() == 0);
    }
}
