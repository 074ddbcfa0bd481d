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
            settled: self.settled.iter().copied().collect(),
            leases,
            delayed: self
                .delayed
                .iter()
                .map(|((due, o), w)| (*due, *o, w.attempts, w.times))
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
        PartitionDelivery {
            floor: parts.floor,
            next: parts.next,
            settled: parts.settled.into_iter().collect(),
            in_flight,
            delayed: parts
                .delayed
                .into_iter()
                .map(|(due, o, attempts, times)| ((due, o), Waiting { attempts, times }))
                .collect(),
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
            base.apply(event);
        }
        base.events.clear();
        base
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Leased {
                offset,
                attempt,
                times,
            } => {
                // A first attempt was never delayed (a seek clears delays).
                if attempt > 1 {
                    self.delayed.retain(|(_, o), _| *o != offset);
                }
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
                    (due_ms, offset),
                    Waiting {
                        attempts: attempt,
                        times,
                    },
                );
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
