//! Keeping a [`Consumer`](super::Consumer)'s leases alive while the
//! application works on its deliveries.
//!
//! The deliveries of one Receive share a [`ReceivedBatch`]: which of them
//! were handed to the application and which are settled, as flags (no lock,
//! no allocation per delivery). A delivery handed out and not settled is
//! *outstanding*. Every third of the group's ack timeout the keeper extends
//! the lease of every outstanding delivery by that timeout (one Settle
//! request with an Extend item per delivery), so slow work does not see its
//! message handed to someone else meanwhile.
//!
//! ## Invariants
//!
//! - The keeper holds batches weakly: a batch every delivery (and copy) of
//!   which was dropped is forgotten at the next tick, and its unsettled
//!   deliveries' leases run out (the messages come back). A delivery dropped
//!   unsettled while a sibling of its batch is still held keeps being
//!   extended until the last of them goes: the cost of not tracking each
//!   delivery on its own.
//! - A delivery whose extension is refused (`LeaseLost`: it expired, or the
//!   consumer joined again on a new connection) is marked settled: it is no
//!   longer extended.
//! - The keeper's task holds the consumer's state only while it extends: it
//!   ends once the consumer and all its deliveries are dropped, or the
//!   consumer is closed, so it never keeps a connection open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::protocol::{SettleAction, SettleItem};

/// Shortest spacing of extensions.
const MIN_EVERY: Duration = Duration::from_millis(100);

/// The deliveries of one Receive: which were handed out, which settled.
#[derive(Debug)]
pub(super) struct ReceivedBatch {
    consumer_id: u64,
    /// `(partition, offset, attempt)` of each delivery, by index.
    items: Vec<(u32, u64, u32)>,
    handed: Vec<AtomicBool>,
    settled: Vec<AtomicBool>,
}

impl ReceivedBatch {
    /// A batch of `items` received by consumer `consumer_id`.
    pub(super) fn new(consumer_id: u64, items: Vec<(u32, u64, u32)>) -> ReceivedBatch {
        let flags = || items.iter().map(|_| AtomicBool::new(false)).collect();
        ReceivedBatch {
            consumer_id,
            handed: flags(),
            settled: flags(),
            items,
        }
    }

    /// Delivery `index` was handed to the application.
    pub(super) fn handed(&self, index: usize) {
        if let Some(flag) = self.handed.get(index) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Delivery `index` is settled (or its lease lost): no more extending.
    pub(super) fn settled(&self, index: usize) {
        if let Some(flag) = self.settled.get(index) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Indexes of the deliveries handed out and not settled.
    fn outstanding(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.items.len()).filter(|i| {
            self.handed[*i].load(Ordering::Acquire) && !self.settled[*i].load(Ordering::Acquire)
        })
    }

    /// Whether nothing of the batch can become outstanding any more.
    fn done(&self) -> bool {
        self.settled.iter().all(|s| s.load(Ordering::Acquire))
    }
}

/// The batches of one consumer whose deliveries may need their leases kept.
#[derive(Debug, Default)]
pub(super) struct LeaseKeeper {
    batches: Mutex<Vec<Weak<ReceivedBatch>>>,
}

/// Extend items due for one consumer id, with where each came from.
pub(super) struct Due {
    /// The Settle items (Extend).
    pub items: Vec<SettleItem>,
    /// For each item, its batch and index (to mark a lost lease settled).
    pub from: Vec<(Arc<ReceivedBatch>, usize)>,
}

impl LeaseKeeper {
    /// The batch list (a panic elsewhere while it was held leaves it usable).
    fn lock(&self) -> MutexGuard<'_, Vec<Weak<ReceivedBatch>>> {
        self.batches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches a new batch.
    pub(super) fn watch(&self, batch: &Arc<ReceivedBatch>) {
        self.lock().push(Arc::downgrade(batch));
    }

    /// The Extend items due (every outstanding delivery, extended `by`), by
    /// consumer id; forgets batches dropped or done.
    pub(super) fn due(&self, by: Duration) -> HashMap<u64, Due> {
        let by_ms = u32::try_from(by.as_millis()).unwrap_or(u32::MAX).max(1);
        let live: Vec<Arc<ReceivedBatch>> = {
            let mut batches = self.lock();
            batches.retain(|b| b.upgrade().is_some_and(|b| !b.done()));
            batches.iter().filter_map(Weak::upgrade).collect()
        };
        let mut due: HashMap<u64, Due> = HashMap::new();
        for batch in live {
            for i in batch.outstanding() {
                let (partition, offset, attempt) = batch.items[i];
                let entry = due.entry(batch.consumer_id).or_insert_with(|| Due {
                    items: Vec::new(),
                    from: Vec::new(),
                });
                entry.items.push(SettleItem {
                    partition,
                    offset,
                    attempt,
                    action: SettleAction::Extend,
                    delay_ms: by_ms,
                    reason: String::new(),
                });
                entry.from.push((Arc::clone(&batch), i));
            }
        }
        due
    }

    /// How many batches are watched.
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
    fn only_handed_out_unsettled_deliveries_of_live_batches_are_extended() {
        let keeper = LeaseKeeper::default();
        let kept = Arc::new(ReceivedBatch::new(7, vec![(0, 1, 1), (0, 2, 1), (0, 3, 2)]));
        let dropped = Arc::new(ReceivedBatch::new(7, vec![(1, 9, 1)]));
        keeper.watch(&kept);
        keeper.watch(&dropped);
        kept.handed(0);
        kept.handed(2);
        kept.settled(2);
        dropped.handed(0);
        drop(dropped);
        let due = keeper.due(Duration::from_secs(30));
        assert_eq!(due.len(), 1);
        let items = &due[&7].items;
        assert_eq!(
            items.len(),
            1,
            "not handed out, settled and dropped ones are not"
        );
        assert_eq!(
            (items[0].partition, items[0].offset, items[0].attempt),
            (0, 1, 1)
        );
        assert_eq!(items[0].action, SettleAction::Extend);
        assert_eq!(items[0].delay_ms, 30_000);
        assert_eq!(keeper.len(), 1, "the dropped batch is forgotten");
        kept.settled(0);
        kept.settled(1);
        assert!(keeper.due(Duration::from_secs(30)).is_empty());
        assert_eq!(keeper.len(), 0, "a batch all settled is forgotten");
    }

    #[test]
    fn extensions_come_every_third_of_the_ack_timeout() {
        assert_eq!(every(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(every(Duration::from_millis(90)), MIN_EVERY);
    }
}
