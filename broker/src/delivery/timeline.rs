//! [`Timeline`]: an exact index of `(time, offset)` pairs in time order,
//! the deadline index of the lease table.
//!
//! Pairs are stored as **runs**: consecutive offsets that share a time are
//! one entry `(time, first offset) → last offset`. A receive leases a
//! batch of consecutive offsets with one deadline, and an extend of a
//! batch moves them together: each costs one entry, not one per message.
//! Removing an offset from the middle of a run splits it in two. (Delays
//! do not use it: their due times are jittered one by one, so runs would
//! be of one, and an entry of a run costs more than a plain key.)
//!
//! ## Invariants
//!
//! - Runs are disjoint, and two runs of the same time are never adjacent
//!   (`last + 1 < next first`): they would have been merged.
//! - `pairs` is the number of `(time, offset)` pairs held (sum of the run
//!   lengths).
//! - Ends are inclusive (`last`), so no arithmetic overflows at
//!   `u64::MAX`.
//!
//! ## Cost
//!
//! Insert, remove, the first pair and popping a pair or a run are
//! O(log runs). Nothing scans the index.

use std::collections::BTreeMap;

/// `(time, offset)` pairs in time order (then offset order), stored as
/// runs of consecutive offsets sharing a time.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// `(time, first offset)` → last offset (inclusive).
    runs: BTreeMap<(i64, u64), u64>,
    /// Pairs held.
    pairs: usize,
}

impl Timeline {
    /// Pairs held.
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// No pair is held.
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// Runs held (what the index costs in memory).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Forgets every pair.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.pairs = 0;
    }

    /// The run of `time` holding `offset`: its first offset and last.
    fn run_of(&self, time: i64, offset: u64) -> Option<(u64, u64)> {
        self.runs
            .range(..=(time, offset))
            .next_back()
            .filter(|((t, _), last)| *t == time && offset <= **last)
            .map(|((_, first), last)| (*first, *last))
    }

    /// Whether `(time, offset)` is held.
    pub fn contains(&self, time: i64, offset: u64) -> bool {
        self.run_of(time, offset).is_some()
    }

    /// Adds `(time, offset)`; `false` if it was already held.
    pub fn insert(&mut self, time: i64, offset: u64) -> bool {
        if self.contains(time, offset) {
            return false;
        }
        // The run of `time` ending just before `offset`, if any.
        let before = self
            .runs
            .range(..(time, offset))
            .next_back()
            .filter(|((t, _), last)| *t == time && last.checked_add(1) == Some(offset))
            .map(|((_, first), _)| *first);
        // The run of `time` starting just after it, if any.
        let after = offset
            .checked_add(1)
            .and_then(|next| self.runs.remove(&(time, next)));
        let first = before.unwrap_or(offset);
        self.runs.insert((time, first), after.unwrap_or(offset));
        self.pairs += 1;
        true
    }

    /// Removes `(time, offset)`; `false` if it was not held.
    pub fn remove(&mut self, time: i64, offset: u64) -> bool {
        let Some((first, last)) = self.run_of(time, offset) else {
            return false;
        };
        self.runs.remove(&(time, first));
        if first < offset {
            self.runs.insert((time, first), offset - 1);
        }
        if offset < last {
            self.runs.insert((time, offset + 1), last);
        }
        self.pairs -= 1;
        true
    }

    /// The earliest pair: its time and offset.
    pub fn first(&self) -> Option<(i64, u64)> {
        self.runs.keys().next().copied()
    }

    /// The earliest time after `time`, if any.
    pub fn first_after(&self, time: i64) -> Option<i64> {
        let after = time.checked_add(1)?;
        self.runs.range((after, 0)..).next().map(|((t, _), _)| *t)
    }

    /// Removes and returns the earliest pair if its time is at or before
    /// `time`.
    pub fn pop_through(&mut self, time: i64) -> Option<(i64, u64)> {
        let (&(t, first), &last) = self.runs.first_key_value()?;
        if t > time {
            return None;
        }
        self.runs.remove(&(t, first));
        if first < last {
            self.runs.insert((t, first + 1), last);
        }
        self.pairs -= 1;
        Some((t, first))
    }

    /// Removes and returns the earliest run (its time, first and last
    /// offset) if its time is at or before `time`.
    pub fn pop_run_through(&mut self, time: i64) -> Option<(i64, u64, u64)> {
        let (&(t, first), &last) = self.runs.first_key_value()?;
        if t > time {
            return None;
        }
        self.runs.remove(&(t, first));
        self.pairs -= run_len(first, last);
        Some((t, first, last))
    }

    /// The pairs in time order (then offset order).
    pub fn iter(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.runs
            .iter()
            .flat_map(|(&(t, first), &last)| (first..=last).map(move |o| (t, o)))
    }
}

/// Offsets in `first..=last` (at least 1; a run never spans every u64).
fn run_len(first: u64, last: u64) -> usize {
    usize::try_from(last - first).map_or(usize::MAX, |n| n.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(t: &Timeline) -> Vec<(i64, u64, u64)> {
        t.runs.iter().map(|(&(t, f), &l)| (t, f, l)).collect()
    }

    #[test]
    fn consecutive_offsets_of_one_time_share_a_run_and_split_when_one_leaves() {
        let mut t = Timeline::default();
        for o in 10..20 {
            assert!(t.insert(500, o));
        }
        assert!(!t.insert(500, 12), "already held");
        assert_eq!(runs(&t), vec![(500, 10, 19)]);
        assert!(t.remove(500, 14));
        assert!(!t.remove(500, 14));
        assert!(!t.remove(400, 15), "another time");
        assert_eq!(runs(&t), vec![(500, 10, 13), (500, 15, 19)]);
        assert!(t.insert(500, 14), "fills the gap");
        assert_eq!(runs(&t), vec![(500, 10, 19)], "merged again");
        assert_eq!(t.len(), 10);
        assert!(t.remove(500, 10) && t.remove(500, 19));
        assert_eq!(runs(&t), vec![(500, 11, 18)]);
    }

    #[test]
    fn pairs_come_out_in_time_then_offset_order() {
        let mut t = Timeline::default();
        for (time, o) in [(30, 1), (10, 5), (10, 3), (20, 2), (10, 4), (30, 0)] {
            t.insert(time, o);
        }
        let order: Vec<_> = t.iter().collect();
        assert_eq!(
            order,
            vec![(10, 3), (10, 4), (10, 5), (20, 2), (30, 0), (30, 1)]
        );
        assert_eq!(t.first(), Some((10, 3)));
        assert_eq!(t.first_after(10), Some(20));
        assert_eq!(t.first_after(30), None);
        assert_eq!(t.pop_through(9), None);
        assert_eq!(t.pop_through(10), Some((10, 3)));
        assert_eq!(t.pop_run_through(15), Some((10, 4, 5)));
        assert_eq!(t.pop_run_through(15), None);
        assert_eq!((t.len(), t.runs()), (3, 2));
    }

    #[test]
    fn the_largest_offsets_and_times_do_not_overflow() {
        let mut t = Timeline::default();
        assert!(t.insert(i64::MAX, u64::MAX));
        assert!(t.insert(i64::MAX, u64::MAX - 1));
        assert_eq!(runs(&t), vec![(i64::MAX, u64::MAX - 1, u64::MAX)]);
        assert_eq!(t.first_after(i64::MAX), None);
        assert!(t.remove(i64::MAX, u64::MAX));
        assert_eq!(
            t.pop_run_through(i64::MAX),
            Some((i64::MAX, u64::MAX - 1, u64::MAX - 1))
        );
        assert!(t.is_empty());
    }
}
