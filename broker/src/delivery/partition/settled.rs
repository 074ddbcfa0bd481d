//! [`OffsetRanges`]: the settled offsets above a partition's floor, as a
//! set of disjoint ranges.
//!
//! The floor only passes offsets that are settled without a gap, so one
//! lease held for a long time (extended for hours, say) stops it while
//! every later ack settles an offset above it. Kept one by one, those acks
//! would cost a set entry each for as long as the lease lives; as ranges,
//! a run of acks behind a stuck lease is one entry, and memory follows the
//! number of gaps (offsets not settled yet between settled ones), not the
//! number of acks.
//!
//! ## Invariants
//!
//! - Ranges are disjoint and never adjacent: `last + 1 < next first`
//!   (adjacent ranges are merged on insert).
//! - `len` is the number of offsets held.
//! - Ends are inclusive, so nothing overflows at `u64::MAX`.

use std::collections::BTreeMap;

/// A set of offsets held as disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetRanges {
    /// First offset → last offset (inclusive).
    ranges: BTreeMap<u64, u64>,
    /// Offsets held.
    len: u64,
}

impl OffsetRanges {
    /// Offsets held.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// No offset is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ranges held (what the set costs in memory).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The ranges, `(first, last)` inclusive, in offset order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(f, l)| (*f, *l))
    }

    /// Whether `offset` is held.
    pub fn contains(&self, offset: u64) -> bool {
        self.ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, last)| offset <= *last)
    }

    /// Adds `offset`; `false` if it was held already.
    pub fn insert(&mut self, offset: u64) -> bool {
        if self.contains(offset) {
            return false;
        }
        self.insert_range(offset, offset);
        true
    }

    /// Adds every offset of `first..=last` (merging with what it overlaps
    /// or touches).
    pub fn insert_range(&mut self, first: u64, last: u64) {
        if first > last {
            return;
        }
        let (mut first, mut last) = (first, last);
        // A range starting before `first` that reaches it (or touches it).
        if let Some((&f, &l)) = self.ranges.range(..first).next_back()
            && l >= first - 1
        {
            first = f;
            last = last.max(l);
            self.ranges.remove(&f);
            self.len -= span(f, l);
        }
        // Ranges starting inside `first..=last + 1` are absorbed.
        loop {
            let bound = last.saturating_add(1);
            let Some((&f, &l)) = self.ranges.range(first..=bound).next() else {
                break;
            };
            self.ranges.remove(&f);
            self.len -= span(f, l);
            last = last.max(l);
        }
        self.ranges.insert(first, last);
        self.len += span(first, last);
    }

    /// Removes the range starting at `first`, if any: its last offset.
    pub fn take_range_at(&mut self, first: u64) -> Option<u64> {
        let last = self.ranges.remove(&first)?;
        self.len -= span(first, last);
        Some(last)
    }

    /// Offsets held in `from..to`.
    pub fn count_in(&self, from: u64, to: u64) -> u64 {
        if from >= to {
            return 0;
        }
        let before = self.ranges.range(..from).next_back();
        let inside = self.ranges.range(from..to);
        before
            .into_iter()
            .chain(inside)
            .map(|(&f, &l)| {
                let (lo, hi) = (f.max(from), l.min(to - 1));
                if lo <= hi { span(lo, hi) } else { 0 }
            })
            .sum()
    }

    /// Forgets every offset below `bound`.
    pub fn remove_below(&mut self, bound: u64) {
        let kept = self.ranges.split_off(&bound);
        let below = std::mem::replace(&mut self.ranges, kept);
        for (f, l) in below {
            self.len -= span(f, l);
            if l >= bound {
                self.ranges.insert(bound, l);
                self.len += span(bound, l);
            }
        }
    }

    /// Forgets every offset.
    pub fn clear(&mut self) {
        self.ranges.clear();
        self.len = 0;
    }
}

/// Offsets in `first..=last`, saturating (all of u64 does not fit).
fn span(first: u64, last: u64) -> u64 {
    (last - first).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(set: &OffsetRanges) -> Vec<(u64, u64)> {
        set.ranges().collect()
    }

    #[test]
    fn offsets_merge_into_ranges_whatever_the_order() {
        let mut set = OffsetRanges::default();
        for o in [5, 7, 6, 1, 3, 2, 9] {
            assert!(set.insert(o));
        }
        assert!(!set.insert(6));
        assert_eq!(ranges(&set), vec![(1, 3), (5, 7), (9, 9)]);
        assert_eq!(set.len(), 7);
        set.insert(4);
        set.insert(8);
        assert_eq!(ranges(&set), vec![(1, 9)]);
        assert!(set.contains(1) && set.contains(9) && !set.contains(0) && !set.contains(10));
    }

    #[test]
    fn a_range_absorbs_what_it_overlaps_or_touches() {
        let mut set = OffsetRanges::default();
        set.insert_range(10, 12);
        set.insert_range(20, 25);
        set.insert_range(30, 30);
        set.insert_range(13, 21);
        assert_eq!(ranges(&set), vec![(10, 25), (30, 30)]);
        set.insert_range(0, 40);
        assert_eq!(ranges(&set), vec![(0, 40)]);
        assert_eq!(set.len(), 41);
        set.insert_range(u64::MAX - 1, u64::MAX);
        set.insert_range(u64::MAX, u64::MAX);
        assert_eq!(set.len(), 43);
    }

    #[test]
    fn counts_and_cuts_below_a_bound() {
        let mut set = OffsetRanges::default();
        set.insert_range(2, 4);
        set.insert_range(8, 12);
        assert_eq!(set.count_in(0, 100), 8);
        assert_eq!(set.count_in(3, 10), 4);
        assert_eq!(set.count_in(5, 8), 0);
        assert_eq!(set.count_in(12, 12), 0);
        set.remove_below(10);
        assert_eq!(ranges(&set), vec![(10, 12)]);
        assert_eq!(set.len(), 3);
        assert_eq!(set.take_range_at(10), Some(12));
        assert!(set.is_empty());
    }
}
