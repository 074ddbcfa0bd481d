//! The engine's pending-entry requests (for the Redis listener): list
//! every open lease with its holder's name, and move leases to another
//! consumer ([`PartitionDelivery::claim`](super::super::partition::PartitionDelivery::claim)).
//! Both are answered from the engine's own state, like every request; a
//! moved lease is journaled as a new lease of its offset.

use super::{DeadLetterSink, Engine, PendingLease, SourceReader};
use crate::delivery::partition::ConsumerId;
use crate::log::Clock;

impl<S: SourceReader, D: DeadLetterSink> Engine<S, D> {
    /// Every open lease, by partition and offset.
    pub(super) fn pending(&self) -> Vec<PendingLease> {
        let mut out = Vec::new();
        for (p, state) in self.states.iter().enumerate() {
            for (offset, lease, times) in state.leases() {
                out.push(PendingLease {
                    partition: p as u32,
                    offset,
                    consumer: lease.consumer,
                    holder: self.consumers.get(&lease.consumer).cloned(),
                    attempt: lease.attempt,
                    delivered_ms: times.last_ms().unwrap_or(0),
                });
            }
        }
        out
    }

    /// Moves the leases on `items` that were idle long enough to
    /// `consumer` (a member); per item, the lease it now holds.
    pub(super) fn claim(
        &mut self,
        consumer: ConsumerId,
        items: &[(u32, u64)],
        min_idle_ms: i64,
        count_attempt: bool,
    ) -> Vec<Option<PendingLease>> {
        let now = self.clock.now_ms();
        let holder = self.consumers.get(&consumer).cloned();
        let member = holder.is_some();
        items
            .iter()
            .map(|&(partition, offset)| {
                let state = self.states.get_mut(partition as usize).filter(|_| member)?;
                let settings = &self.settings;
                let moved =
                    state.claim(offset, consumer, now, min_idle_ms, count_attempt, settings)?;
                let times = state.state_and_times(offset).1;
                Some(PendingLease {
                    partition,
                    offset,
                    consumer,
                    holder: holder.clone(),
                    attempt: moved.attempt,
                    delivered_ms: times.and_then(|t| t.last_ms()).unwrap_or(0),
                })
            })
            .collect()
    }
}
