//! [`Leases`]: the open leases of one partition in one group, by offset.
//!
//! Besides the leases themselves it keeps what the group engine asks for
//! on every command, so that no question scans every lease:
//!
//! - how many leases each consumer holds (flow control by
//!   `max_in_flight`), kept exact on every insert and removal;
//! - a lower bound of the earliest deadline (the engine's next timer).
//!   Inserting or extending a lease lowers it; removing a lease leaves it
//!   (still a lower bound). Only when the clock reaches it does
//!   [`Leases::take_expired`] scan the leases, and it then sets the bound
//!   to the exact earliest deadline of those left. Leases are mostly acked
//!   long before their deadline, so the scan runs about once per ack
//!   timeout, not once per command.
//!
//! ## Invariants
//!
//! - `held[c]` = number of leases of consumer `c` (no zero entries).
//! - Every lease's deadline ≥ `earliest_deadline`.
//!
//! ## Memory
//!
//! One B-tree entry per lease: the offset (8 bytes) and a
//! [`LeaseEntry`] (24 bytes), about 55 bytes with the tree's slack
//! (measured by `cargo bench --bench delivery_timers`).

use std::collections::{BTreeMap, HashMap};

use super::partition::{ConsumerId, DeliveryTimes, Lease};

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
#[derive(Debug, Clone)]
pub struct Leases {
    by_offset: BTreeMap<u64, LeaseEntry>,
    held: HashMap<ConsumerId, usize>,
    /// No lease ends before this (ms since the epoch).
    earliest_deadline: i64,
}

impl Default for Leases {
    fn default() -> Leases {
        Leases {
            by_offset: BTreeMap::new(),
            held: HashMap::new(),
            earliest_deadline: i64::MAX,
        }
    }
}

/// Two lease tables are equal when they hold the same leases (the counts
/// follow from them; the deadline bound is only a hint).
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

    /// Leases `offset` (replacing any lease it had).
    pub fn insert(&mut self, offset: u64, entry: LeaseEntry) {
        if let Some(old) = self.by_offset.insert(offset, entry) {
            self.release(old.lease.consumer);
        }
        *self.held.entry(entry.lease.consumer).or_insert(0) += 1;
        self.earliest_deadline = self.earliest_deadline.min(entry.lease.deadline_ms);
    }

    /// Ends the lease on `offset`.
    pub fn remove(&mut self, offset: u64) -> Option<LeaseEntry> {
        let entry = self.by_offset.remove(&offset)?;
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
        entry.lease.deadline_ms = deadline_ms;
        self.earliest_deadline = self.earliest_deadline.min(deadline_ms);
        Some(deadline_ms)
    }

    /// A time no lease ends before; `None` when there are no leases.
    pub fn next_deadline(&self) -> Option<i64> {
        (!self.by_offset.is_empty()).then_some(self.earliest_deadline)
    }

    /// Removes and returns, by offset, every lease whose deadline is at or
    /// before `now_ms`. Scans only once the deadline bound has passed.
    pub fn take_expired(&mut self, now_ms: i64) -> Vec<(u64, LeaseEntry)> {
        if now_ms < self.earliest_deadline {
            return Vec::new();
        }
        let taken = self.take_where(|e| e.lease.deadline_ms <= now_ms);
        self.earliest_deadline = self
            .by_offset
            .values()
            .map(|e| e.lease.deadline_ms)
            .min()
            .unwrap_or(i64::MAX);
        taken
    }

    /// Removes and returns, by offset, the leases `pick` chooses.
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
        for entry in tail.values() {
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
    fn the_deadline_bound_is_a_lower_bound_made_exact_by_a_scan() {
        let mut leases = Leases::default();
        assert_eq!(leases.next_deadline(), None);
        leases.insert(1, entry(1, 500));
        leases.insert(2, entry(1, 300));
        leases.insert(3, entry(1, 900));
        assert_eq!(leases.next_deadline(), Some(300));
        leases.remove(2);
        // Still a lower bound, not exact: nothing expires at 300.
        assert_eq!(leases.next_deadline(), Some(300));
        assert!(leases.take_expired(299).is_empty());
        assert!(leases.take_expired(300).is_empty());
        assert_eq!(leases.next_deadline(), Some(500), "exact after the scan");
        assert_eq!(leases.set_deadline(1, 3, 200), Some(200));
        assert_eq!(leases.set_deadline(2, 3, 200), None, "not its lease");
        assert_eq!(leases.next_deadline(), Some(200));
        let expired = leases.take_expired(600);
        assert_eq!(
            expired.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(leases.next_deadline(), None);
        assert_eq!(leases.held_by(1), 0);
    }
}
