//! The harness's clock ([`Epoch`]) and the layout of every value it
//! publishes ([`ValueFactory`], [`stamp_of`], [`sequence_of`]).
//!
//! ## Value layout
//!
//! | bytes | what |
//! | --- | --- |
//! | 0..8 | the stamp: nanoseconds since the run's [`Epoch`], little-endian u64 — the publish time, or with a fixed rate the *scheduled* publish time |
//! | 8..16 | the sequence number of the message in the run (0, 1, …), little-endian u64; only when the value has at least 16 bytes |
//! | 16.. | filler (`x`) up to the value size |
//!
//! ## Invariants
//!
//! - Stamps are read on the same clock they were written with: producers
//!   and consumers run in one process and share one `Epoch` (a monotonic
//!   [`Instant`]), so publish→deliver latency needs no clock
//!   synchronisation and never goes backwards.
//! - Sequence numbers are unique within a run, so consumers can tell a
//!   redelivery from a new message without trusting the target.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the stamp at the start of every value.
pub const STAMP_LEN: usize = 8;
/// Bytes of stamp and sequence number; shorter values carry no sequence.
pub const HEADER_LEN: usize = 16;
/// Bytes allocated at once for many values (they share the allocation).
const CHUNK: usize = 256 * 1024;

/// The run's clock: nanoseconds since the run started, on a monotonic
/// clock shared by every task of the harness.
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    start: Instant,
}

impl Epoch {
    /// An epoch starting now.
    pub fn now() -> Epoch {
        Epoch {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch (saturating after 584 years).
    pub fn ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Builds values of one size; values share large allocations, so making
/// one costs a copy, not an allocation.
#[derive(Debug)]
pub struct ValueFactory {
    size: usize,
    buffer: BytesMut,
}

impl ValueFactory {
    /// Values of `size` bytes (at least [`STAMP_LEN`]).
    pub fn new(size: usize) -> ValueFactory {
        ValueFactory {
            size: size.max(STAMP_LEN),
            buffer: BytesMut::new(),
        }
    }

    /// One value carrying `stamp` and, if it is long enough, `sequence`.
    ///
    /// ```
    /// use pigeon_cli::bench::payload::{ValueFactory, sequence_of, stamp_of};
    /// let value = ValueFactory::new(100).make(42, 7);
    /// assert_eq!((value.len(), stamp_of(&value), sequence_of(&value)), (100, Some(42), Some(7)));
    /// ```
    pub fn make(&mut self, stamp: u64, sequence: u64) -> Bytes {
        if self.buffer.capacity() < self.size {
            self.buffer.reserve(CHUNK.max(self.size));
        }
        self.buffer.put_u64_le(stamp);
        if self.size >= HEADER_LEN {
            self.buffer.put_u64_le(sequence);
        }
        let header = if self.size >= HEADER_LEN {
            HEADER_LEN
        } else {
            STAMP_LEN
        };
        self.buffer.put_bytes(b'x', self.size - header);
        self.buffer.split().freeze()
    }
}

/// The stamp a value carries; `None` for a value shorter than 8 bytes
/// (not one the harness published).
pub fn stamp_of(value: &[u8]) -> Option<u64> {
    let bytes = value.get(..STAMP_LEN)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The sequence number a value carries; `None` when it is shorter than
/// 16 bytes.
pub fn sequence_of(value: &[u8]) -> Option<u64> {
    let bytes = value.get(STAMP_LEN..HEADER_LEN)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_asked_size_and_carry_stamp_and_sequence() {
        let mut factory = ValueFactory::new(1024);
        for i in 0..1000u64 {
            let value = factory.make(i * 3, i);
            assert_eq!(value.len(), 1024);
            assert_eq!(stamp_of(&value), Some(i * 3));
            assert_eq!(sequence_of(&value), Some(i));
            assert!(value[HEADER_LEN..].iter().all(|&b| b == b'x'));
        }
    }

    #[test]
    fn short_values_carry_only_the_stamp() {
        for size in [8, 9, 15] {
            let value = ValueFactory::new(size).make(5, 9);
            assert_eq!(value.len(), size);
            assert_eq!(stamp_of(&value), Some(5));
            assert_eq!(sequence_of(&value), None);
        }
        assert_eq!(stamp_of(b"short"), None);
    }

    #[test]
    fn the_layout_is_little_endian_stamp_then_sequence() {
        let value = ValueFactory::new(16).make(0x0102, 0x0304);
        assert_eq!(
            &value[..],
            &[2, 1, 0, 0, 0, 0, 0, 0, 4, 3, 0, 0, 0, 0, 0, 0][..]
        );
    }

    #[test]
    fn the_epoch_clock_moves_forward() {
        let epoch = Epoch::now();
        let a = epoch.ns();
        let b = epoch.ns();
        assert!(b >= a);
    }
}
