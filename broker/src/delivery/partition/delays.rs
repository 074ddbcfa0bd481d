//! [`Delays`]: the messages of a partition waiting for their next attempt,
//! by offset, with a due index.
//!
//! Two questions are asked of them: "which are due now, earliest first?"
//! (delivery, the engine's timer) and "is this offset waiting, and until
//! when?" (journal replay of a lease, `message show`, retention). The map
//! by offset answers the second, the [`Timeline`] of due times the first;
//! neither scans.
//!
//! ## Invariants
//!
//! - `(delay.due_ms, offset)` is in `due` exactly when `offset → delay` is
//!   in `by_offset`.

use std::collections::BTreeMap;

use super::Waiting;
use crate::delivery::timeline::Timeline;

/// One message waiting for its next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Delay {
    /// When it is due (ms since the epoch).
    pub due_ms: i64,
    /// Its deliveries so far and their times.
    pub waiting: Waiting,
}

/// The delayed messages of one partition.
#[derive(Debug, Clone, Default)]
pub(super) struct Delays {
    by_offset: BTreeMap<u64, Delay>,
    due: Timeline,
}

/// Equal when they hold the same delays (the index follows from them).
impl PartialEq for Delays {
    fn eq(&self, other: &Delays) -> bool {
        self.by_offset == other.by_offset
    }
}

impl Delays {
    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.by_offset.len()
    }

    /// The delay of `offset`.
    pub fn get(&self, offset: u64) -> Option<&Delay> {
        self.by_offset.get(&offset)
    }

    /// `offset` waits until `due_ms` (replacing any delay it had).
    pub fn insert(&mut self, offset: u64, due_ms: i64, waiting: Waiting) {
        if let Some(old) = self.by_offset.insert(offset, Delay { due_ms, waiting }) {
            self.due.remove(old.due_ms, offset);
        }
        self.due.insert(due_ms, offset);
    }

    /// Ends the delay of `offset`.
    pub fn remove(&mut self, offset: u64) -> Option<Delay> {
        let delay = self.by_offset.remove(&offset)?;
        self.due.remove(delay.due_ms, offset);
        Some(delay)
    }

    /// Removes and returns the earliest delay due at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<(u64, Delay)> {
        let (_, offset) = self.due.pop_through(now_ms)?;
        let delay = self.by_offset.remove(&offset)?;
        Some((offset, delay))
    }

    /// The offsets due at or before `now_ms`, earliest first.
    pub fn due_offsets(&self, now_ms: i64) -> impl Iterator<Item = u64> + '_ {
        self.due
            .iter()
            .take_while(move |(due, _)| *due <= now_ms)
            .map(|(_, offset)| offset)
    }

    /// The earliest due time after `now_ms`, if any.
    pub fn first_due_after(&self, now_ms: i64) -> Option<i64> {
        self.due.first_after(now_ms)
    }

    /// The delays by offset.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Delay)> + '_ {
        self.by_offset.iter().map(|(o, d)| (*o, d))
    }

    /// Drops every delay below `bound`.
    pub fn remove_below(&mut self, bound: u64) {
        let kept = self.by_offset.split_off(&bound);
        for (offset, delay) in std::mem::replace(&mut self.by_offset, kept) {
            self.due.remove(delay.due_ms, offset);
        }
    }

    /// Drops every delay.
    pub fn clear(&mut self) {
        self.by_offset.clear();
        self.due.clear();
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
        assert_eq!(delays.first_due_after(i64::MIN), Some(100));
        assert_eq!(delays.remove(5).map(|d| d.waiting.attempts), Some(1));
        assert_eq!((delays.len(), delays.first_due_after(i64::MIN)), (0, None));
    }
}
