//! Persistence of a partition's delivery state: what a snapshot stores
//! ([`SnapshotParts`], [`PartitionDelivery::parts`],
//! [`PartitionDelivery::from_parts`]) and the replay of journal events
//! over a base state ([`PartitionDelivery::replay`]).
//!
//! Invariant: replaying the events a state recorded, over the snapshot it
//! started from, rebuilds that state (open leases are then held by
//! [`RECOVERED`]; see [`PartitionDelivery::recover_leases`]). The model
//! test checks it over random histories.

use super::*;

impl PartitionDelivery {
    /// What a snapshot stores.
    pub fn parts(&self) -> SnapshotParts {
        let leases = self
            .in_flight
            .iter()
            .map(|(o, e)| {
                let times = e.times();
                (o, e.lease.attempt, times)
            })
            .collect();
        SnapshotParts {
            floor: self.floor,
            next: self.next,
            dead_lettered: self.dead_lettered,
            removed_by_retention: self.removed_by_retention,
            settled: self.settled.ranges().collect(),
            leases,
            delayed: self
                .delayed
                .iter()
                .map(|(o, d)| (d.due_ms, o, d.waiting.attempts, d.waiting.times))
                .collect(),
            dead_lettering: self.dead_lettering.values().cloned().collect(),
        }
    }

    /// A state from a snapshot; open leases are held by [`RECOVERED`].
    pub fn from_parts(parts: SnapshotParts) -> PartitionDelivery {
        let mut in_flight = Leases::default();
        for (offset, attempt, times) in parts.leases {
            in_flight.insert(offset, recovered_lease(attempt, times));
        }
        let mut settled = OffsetRanges::default();
        for (first, last) in parts.settled {
            settled.insert_range(first, last);
        }
        let mut delayed = Delays::default();
        for (due, offset, attempts, times) in parts.delayed {
            delayed.insert(offset, due, Waiting { attempts, times });
        }
        PartitionDelivery {
            floor: parts.floor,
            next: parts.next,
            settled,
            in_flight,
            delayed,
            dead_lettering: parts
                .dead_lettering
                .into_iter()
                .map(|d| (d.offset, d))
                .collect(),
            events: Vec::new(),
            dead_lettered: parts.dead_lettered,
            removed_by_retention: parts.removed_by_retention,
            dlq_end: DlqEndHint::default(),
        }
    }

    /// Rebuilds a partition's state from its journal, starting from `base`
    /// (a snapshot, or a new partition). Leases found open are still open:
    /// call [`recover_leases`](Self::recover_leases) next.
    pub fn replay(
        mut base: PartitionDelivery,
        events: impl IntoIterator<Item = Event>,
    ) -> PartitionDelivery {
        for event in events {
            base.apply_replayed(event);
        }
        base
    }

    /// Applies one journal event during a replay (see
    /// [`replay`](Self::replay)): for a replay that streams the journal
    /// instead of collecting it.
    pub fn apply_replayed(&mut self, event: Event) {
        self.apply(event);
        self.events.clear();
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Leased {
                offset,
                attempt,
                times,
            } => {
                // Redelivered (or delivered again after a release): it
                // waits no more.
                self.delayed.remove(offset);
                self.next = self.next.max(offset + 1);
                self.in_flight
                    .insert(offset, recovered_lease(attempt, times));
            }
            Event::Acked { offset } => {
                self.in_flight.remove(offset);
                self.settle(offset);
            }
            Event::Delayed {
                offset,
                attempt,
                due_ms,
            } => {
                let times = self
                    .in_flight
                    .remove(offset)
                    .map_or(DeliveryTimes::default(), |e| e.times());
                self.delayed.insert(
                    offset,
                    due_ms,
                    Waiting {
                        attempts: attempt,
                        times,
                    },
                );
            }
            Event::Released {
                offset,
                attempt,
                at_ms,
            } => {
                let times = self
                    .in_flight
                    .remove(offset)
                    .map_or(DeliveryTimes::default(), |e| e.times());
                self.put_back(offset, attempt, times, at_ms);
            }
            Event::DeadLetterStarted {
                offset,
                attempts,
                reason,
                dlq_from,
            } => {
                let times = self
                    .in_flight
                    .remove(offset)
                    .map_or(DeliveryTimes::default(), |e| e.times());
                self.dead_lettering.insert(
                    offset,
                    DeadLetter {
                        offset,
                        attempts,
                        reason,
                        times,
                        dlq_from,
                    },
                );
            }
            Event::DeadLettered { offset } => self.dead_lettered(offset),
            Event::Seek { target } => self.seek(target),
            Event::Retention { log_start } => self.apply_retention(log_start),
        }
    }
}
