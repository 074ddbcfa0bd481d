//! [`SeenSet`]: which sequence numbers consumers have already counted, so
//! that a redelivered message is not counted twice.
//!
//! Messages are numbered 0, 1, … by the harness and arrive roughly in
//! order, so the set is a *floor* (every number below it was seen) and a
//! bitmap of the numbers above it. The floor advances over every fully
//! seen 64-bit word, so memory is one bit per message between the oldest
//! unseen number and the newest seen one — the reordering span, not the
//! length of the run. A span beyond [`MAX_SPAN`] is refused (a lost
//! message, or values the harness did not write), so memory stays bounded
//! even then.

use std::collections::VecDeque;

/// Most sequence numbers the set tracks above its floor: 2^27 (16 MiB of
/// bitmap at most).
pub const MAX_SPAN: u64 = 1 << 27;

/// Sequence numbers seen so far.
#[derive(Debug, Default)]
pub struct SeenSet {
    /// Every number below this was seen; a multiple of 64.
    floor: u64,
    /// Bit `n % 64` of word `(n - floor) / 64` is set when `n` was seen.
    words: VecDeque<u64>,
}

impl SeenSet {
    /// An empty set.
    pub fn new() -> SeenSet {
        SeenSet::default()
    }

    /// Adds `sequence`; `Ok(true)` if it is new, `Ok(false)` if it was
    /// seen before, an error if it lies more than [`MAX_SPAN`] above the
    /// floor.
    ///
    /// ```
    /// use pigeon_cli::bench::seen::SeenSet;
    /// let mut seen = SeenSet::new();
    /// assert!(seen.insert(3).expect("in span"));
    /// assert!(!seen.insert(3).expect("in span"));
    /// ```
    pub fn insert(&mut self, sequence: u64) -> anyhow::Result<bool> {
        let Some(above) = sequence.checked_sub(self.floor) else {
            return Ok(false);
        };
        if above >= MAX_SPAN {
            anyhow::bail!(
                "message {sequence} arrived while message {} has not: more than {MAX_SPAN} messages out of order (or a value the harness did not write)",
                self.first_missing()
            );
        }
        // Below MAX_SPAN / 64, so the cast is lossless.
        let word = (above / 64) as usize;
        let bit = 1u64 << (sequence % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & bit != 0 {
            return Ok(false);
        }
        self.words[word] |= bit;
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.floor += 64;
        }
        Ok(true)
    }

    /// The smallest number not seen yet.
    pub fn first_missing(&self) -> u64 {
        let front = self.words.front().copied().unwrap_or(0);
        self.floor + u64::from(front.trailing_ones())
    }

    /// Bytes of bitmap held now.
    pub fn bitmap_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_is_new_once() {
        let mut seen = SeenSet::new();
        for n in (0..1000).rev() {
            assert!(seen.insert(n).expect("in span"));
        }
        for n in 0..1000 {
            assert!(!seen.insert(n).expect("in span"), "{n}");
        }
        assert_eq!(seen.first_missing(), 1000);
    }

    #[test]
    fn in_order_numbers_keep_the_bitmap_small() {
        let mut seen = SeenSet::new();
        for n in 0..1_000_000 {
            assert!(seen.insert(n).expect("in span"));
        }
        assert!(seen.bitmap_bytes() <= 8, "{}", seen.bitmap_bytes());
        assert_eq!(seen.first_missing(), 1_000_000);
    }

    #[test]
    fn a_gap_holds_the_floor_until_it_is_filled() {
        let mut seen = SeenSet::new();
        for n in (0..500).filter(|&n| n != 7) {
            assert!(seen.insert(n).expect("in span"));
        }
        assert_eq!(seen.first_missing(), 7);
        assert!(seen.insert(7).expect("in span"));
        assert_eq!(seen.first_missing(), 500);
        assert!(!seen.insert(7).expect("in span"));
    }

    #[test]
    fn a_number_far_above_the_floor_is_refused() {
        let mut seen = SeenSet::new();
        let err = seen.insert(MAX_SPAN).expect_err("out of span");
        assert!(err.to_string().contains("message 0 has not"), "{err}");
        assert!(seen.insert(64_000).expect("in span"));
        assert_eq!(seen.bitmap_bytes(), 1001 * 8);
    }
}
