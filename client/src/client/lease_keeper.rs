//! Keeping a [`Consumer`](super::Consumer)'s leases alive while the
//! application works on its deliveries.
//!
//! A delivery handed to the application is *outstanding* until it is
//! acked, nacked or rejected, or until every copy of it is dropped. While
//! it is outstanding, the keeper extends its lease by the group's ack
//! timeout every third of that timeout (one Settle request with an Extend
//! item per outstanding delivery), so slow work does not see its message
//! handed to someone else meanwhile.
//!
//! ## Invariants
//!
//! - A delivery whose every copy was dropped unsettled is forgotten at the
//!   next tick and no longer extended: its lease runs out and the message
//!   comes back (a leak would otherwise hold it forever).
//! - A delivery whose extension is refused (`LeaseLost`: it expired, or the
//!   consumer joined again on a new connection) is forgotten.
//! - The keeper's task holds the consumer's state only while it extends: it
//!   ends once the consumer and all its deliveries are dropped, or the
//!   consumer is closed, so it never keeps a connection open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::protocol::{SettleAction, SettleItem};

/// Shortest spacing of extensions.
const MIN_EVERY: Duration = Duration::from_millis(100);

/// One outstanding delivery.
#[derive(Debug)]
struct Outstanding {
    attempt: u32,
    consumer_id: u64,
    /// Dead once every copy of the delivery is dropped.
    alive: Weak<()>,
}

/// The outstanding deliveries of one consumer, by `(partition, offset)`.
#[derive(Debug, Default)]
pub(super) struct LeaseKeeper {
    outstanding: Mutex<HashMap<(u32, u64), Outstanding>>,
}

impl LeaseKeeper {
    /// The table (a panic elsewhere while it was held leaves it usable).
    fn lock(&self) -> MutexGuard<'_, HashMap<(u32, u64), Outstanding>> {
        self.outstanding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts keeping the lease of a delivery handed to the application.
    pub(super) fn track(
        &self,
        partition: u32,
        offset: u64,
        attempt: u32,
        consumer_id: u64,
        alive: &Arc<()>,
    ) {
        let entry = Outstanding {
            attempt,
            consumer_id,
            alive: Arc::downgrade(alive),
        };
        self.lock().insert((partition, offset), entry);
    }

    /// Stops keeping a lease (the delivery was settled, or its lease lost).
    pub(super) fn forget(&self, partition: u32, offset: u64) {
        self.lock().remove(&(partition, offset));
    }

    /// The Extend items due, by consumer id (all outstanding deliveries
    /// still referenced); forgets the dropped ones.
    pub(super) fn due(&self, by: Duration) -> HashMap<u64, Vec<SettleItem>> {
        let by_ms = u32::try_from(by.as_millis()).unwrap_or(u32::MAX).max(1);
        let mut outstanding = self.lock();
        outstanding.retain(|_, o| o.alive.strong_count() > 0);
        let mut due: HashMap<u64, Vec<SettleItem>> = HashMap::new();
        for ((partition, offset), o) in outstanding.iter() {
            due.entry(o.consumer_id).or_default().push(SettleItem {
                partition: *partition,
                offset: *offset,
                attempt: o.attempt,
                action: SettleAction::Extend,
                delay_ms: by_ms,
                reason: String::new(),
            });
        }
        due
    }

    /// How many deliveries are outstanding.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// How often leases of `ack_timeout` are extended.
pub(super) fn every(ack_timeout: Duration) -> Duration {
    (ack_timeout / 3).max(MIN_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_deliveries_are_forgotten_and_settled_ones_not_extended() {
        let keeper = LeaseKeeper::default();
        let (kept, dropped, settled) = (Arc::new(()), Arc::new(()), Arc::new(()));
        keeper.track(0, 1, 1, 7, &kept);
        keeper.track(0, 2, 1, 7, &dropped);
        keeper.track(1, 3, 2, 8, &settled);
        drop(dropped);
        keeper.forget(1, 3);
        let due = keeper.due(Duration::from_secs(30));
        assert_eq!(due.len(), 1);
        let items = &due[&7];
        assert_eq!(items.len(), 1);
        assert_eq!(
            (items[0].partition, items[0].offset, items[0].attempt),
            (0, 1, 1)
        );
        assert_eq!(items[0].action, SettleAction::Extend);
        assert_eq!(items[0].delay_ms, 30_000);
        assert_eq!(keeper.len(), 1, "the dropped one is forgotten");
        drop(kept);
    }

    #[test]
    fn extensions_come_every_third_of_the_ack_timeout() {
        assert_eq!(every(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(every(Duration::from_millis(90)), MIN_EVERY);
    }
}
