//! The byte layer shared by the small binary state files (the delivery
//! snapshot of a group partition, the producer-state snapshot of a log):
//! a CRC-32 trailer over everything before it, and a bounds-checked
//! little-endian cursor for reading the body. The cursor is the broker's
//! only one: the delivery journal reads its events with it too.
//!
//! Every read returns `None` instead of panicking on short input, and
//! [`LeCursor::count`] refuses an element count the remaining bytes cannot
//! hold, so a damaged file never causes a large allocation.

use bytes::Buf;

/// Appends the CRC-32 of everything in `out` (little-endian).
pub fn seal(out: &mut Vec<u8>) {
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The body of sealed `bytes` if its CRC-32 trailer matches; `None` when
/// it is too short or damaged.
pub fn unseal(bytes: &[u8]) -> Option<&[u8]> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    (crc32fast::hash(body) == u32::from_le_bytes(crc.try_into().ok()?)).then_some(body)
}

/// Reads little-endian values off the front of a byte slice, through the
/// checked reads of [`bytes::Buf`] (`try_get_u16_le` and the like), which
/// leave the cursor where it was when too few bytes are left.
pub struct LeCursor<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
    /// The length of the whole slice, for [`LeCursor::position`].
    len: usize,
}

impl<'a> LeCursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> LeCursor<'a> {
        LeCursor {
            rest: bytes,
            len: bytes.len(),
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.rest.try_get_u8().ok()
    }

    /// The next `u16`.
    pub fn u16(&mut self) -> Option<u16> {
        self.rest.try_get_u16_le().ok()
    }

    /// The next `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.rest.try_get_u32_le().ok()
    }

    /// The next `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        self.rest.try_get_u64_le().ok()
    }

    /// An element count (`u32`), refused when the bytes left cannot hold
    /// that many elements of at least `min_size` bytes (no allocation from
    /// a lie).
    pub fn count(&mut self, min_size: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(min_size)? <= self.rest.remaining()).then_some(n)
    }

    /// How many bytes have been read.
    pub fn position(&self) -> usize {
        self.len - self.rest.len()
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_unseal_and_any_flip_is_refused() {
        let mut bytes = b"PGDS body".to_vec();
        seal(&mut bytes);
        assert_eq!(unseal(&bytes), Some(&b"PGDS body"[..]));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert_eq!(unseal(&damaged), None, "flip at {at}");
        }
        assert_eq!(unseal(&bytes[..3]), None);
    }

    #[test]
    fn the_cursor_reads_little_endian_and_refuses_short_input_and_lying_counts() {
        let mut r = LeCursor::new(&[1, 2, 0, 3, 0, 0, 0, 2, 0, 0, 0, 9]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(2));
        assert_eq!(r.u32(), Some(3));
        assert_eq!(r.count(4), None, "2 elements of 4 bytes do not fit in 1");
        let mut r = LeCursor::new(&[2, 0, 0, 0, 7, 8]);
        assert_eq!(r.count(1), Some(2));
        assert_eq!(r.u64(), None);
        assert_eq!(r.position(), 4, "a short read leaves the cursor in place");
        assert_eq!(r.take(2), Some(&[7, 8][..]));
        assert!(r.is_empty());
    }
}
