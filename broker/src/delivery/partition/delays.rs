//! [`Delays`]: the messages of a partition waiting for their next attempt,
//! by due time, with an offset index.
//!
//! Two questions are asked of them: "which are due now, earliest first?"
//! (delivery, the engine's timer) and "is this offset waiting, and until
//! when?" (journal replay of a lease, `message show`, retention). The map
//! by `(due, offset)` answers the first, the index `offset → due` the
//! second; neither scans.
//!
//! ## Invariants
//!
//! - `due_of[offset] = due` exactly when `(due, offset)` is in `by_due`.
//!
//! ## Memory
//!
//! Two B-tree entries per delay: `(due, offset) → (attempts, times)`
//! (28 bytes) and `offset → due` (16 bytes), about 79 bytes with the
//! trees' slack (measured by `cargo bench --bench delivery_timers`). The
//! offset index is what a lookup by offset costs; without it `message show`
//! and replay searched every delay.

use std::collections::BTreeMap;

use super::Waiting;

/// One message waiting for its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Delay {
    /// When it is due (ms since the epoch).
    pub due_ms: i64,
    /// Its deliveries so far and their times.
    pub waiting: Waiting,
}

/// The delayed messages of one partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Delays {
    /// `(due_ms, offset)` → deliveries so far.
    by_due: BTreeMap<(i64, u64), Waiting>,
    /// `offset` → its due time.
    due_of: BTreeMap<u64, i64>,
}

impl Delays {
    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.due_of.len()
    }

    /// The delay of `offset`.
    pub fn get(&self, offset: u64) -> Option<Delay> {
        let due_ms = *self.due_of.get(&offset)?;
        let waiting = *self.by_due.get(&(due_ms, offset))?;
        Some(Delay { due_ms, waiting })
    }

    /// `offset` waits until `due_ms` (replacing any delay it had).
    pub fn insert(&mut self, offset: u64, due_ms: i64, waiting: Waiting) {
        if let Some(old) = self.due_of.insert(offset, due_ms) {
            self.by_due.remove(&(old, offset));
        }
        self.by_due.insert((due_ms, offset), waiting);
    }

    /// Ends the delay of `offset`.
    pub fn remove(&mut self, offset: u64) -> Option<Delay> {
        let due_ms = self.due_of.remove(&offset)?;
        let waiting = self.by_due.remove(&(due_ms, offset))?;
        Some(Delay { due_ms, waiting })
    }

    /// Removes and returns the earliest delay due at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<(u64, Delay)> {
        let (&(due_ms, offset), _) = self.by_due.first_key_value()?;
        if due_ms > now_ms {
            return None;
        }
        let waiting = self.by_due.remove(&(due_ms, offset))?;
        self.due_of.remove(&offset);
        Some((offset, Delay { due_ms, waiting }))
    }

    /// The offsets due at or before `now_ms`, earliest first.
    pub fn due_offsets(&self, now_ms: i64) -> impl Iterator<Item = u64> + '_ {
        self.by_due
            .keys()
            .take_while(move |(due, _)| *due <= now_ms)
            .map(|(_, offset)| *offset)
    }

    /// The earliest due time after `now_ms`, if any.
    pub fn first_due_after(&self, now_ms: i64) -> Option<i64> {
        let after = now_ms.checked_add(1)?;
        self.by_due
            .range((after, 0)..)
            .next()
            .map(|((due, _), _)| *due)
    }

    /// The delays, earliest due first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Delay)> + '_ {
        self.by_due
            .iter()
            .map(|(&(due_ms, offset), &waiting)| (offset, Delay { due_ms, waiting }))
    }

    /// Drops every delay below `bound`.
    pub fn remove_below(&mut self, bound: u64) {
        let kept = self.due_of.split_off(&bound);
        for (offset, due_ms) in std::mem::replace(&mut self.due_of, kept) {
            self.by_due.remove(&(due_ms, offset));
        }
    }

    /// Drops every delay.
    pub fn clear(&mut self) {
        self.by_due.clear();
        self.due_of.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::DeliveryTimes;

    fn waiting(attempts: u32) -> Waiting {
        Waiting {
            attempts,
            times: DeliveryTimes::default(),
        }
    }

    #[test]
    fn delays_are_found_by_offset_and_come_due_in_time_order() {
        let mut delays = Delays::default();
        delays.insert(7, 300, waiting(1));
        delays.insert(3, 100, waiting(2));
        delays.insert(5, 100, waiting(1));
        delays.insert(7, 50, waiting(3));
        assert_eq!(delays.get(7).map(|d| d.due_ms), Some(50), "replaced");
        assert_eq!(delays.due_offsets(100).collect::<Vec<_>>(), vec![7, 3, 5]);
        assert_eq!(delays.first_due_after(50), Some(100));
        assert_eq!(delays.first_due_after(100), None);
        assert_eq!(delays.pop_due(49), None);
        assert_eq!(delays.pop_due(60).map(|(o, _)| o), Some(7));
        delays.remove_below(4);
        assert_eq!(delays.iter().map(|(o, _)| o).collect::<Vec<_>>(), vec![5]);
        assert_eq!(delays.get(5).map(|d| d.due_ms), Some(100));
        assert_eq!(delays.first_due_after(i64::MIN), Some(100));
        assert_eq!(delays.remove(5).map(|d| d.waiting.attempts), Some(1));
        assert_eq!((delays.len(), delays.first_due_after(i64::MIN)), (0, None));
    }
}
