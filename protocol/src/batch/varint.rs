//! Variable-length integers used inside records: unsigned LEB128 (7 bits per
//! byte, low bits first, high bit set on every byte but the last) and zigzag
//! for signed values (0 → 0, −1 → 1, 1 → 2, …).
//!
//! Decoding is bounded: at most 5 bytes for a `u32`, and a value that does not
//! fit is an error, never a silent wrap.

/// Longest encoding of a `u32`.
pub const MAX_U32_LEN: usize = 5;

/// Appends `value` as unsigned LEB128.
pub fn put_u32(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        // Truncation is the point: keep the low 7 bits, flag more to come.
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `value` zigzag-encoded, then as unsigned LEB128.
pub fn put_i32(out: &mut Vec<u8>, value: i32) {
    put_u32(out, zigzag(value));
}

/// Number of bytes `put_u32(value)` writes.
pub fn len_u32(value: u32) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// Number of bytes `put_i32(value)` writes.
pub fn len_i32(value: i32) -> usize {
    len_u32(zigzag(value))
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More than 5 bytes, or a fifth byte with bits above bit 31.
    Overflow,
}

/// Reads an unsigned LEB128 `u32` from the front of `input`; returns the value
/// and the number of bytes it took.
pub fn get_u32(input: &[u8]) -> Result<(u32, usize), VarintError> {
    let mut value: u32 = 0;
    for (i, &byte) in input.iter().take(MAX_U32_LEN).enumerate() {
        let bits = u32::from(byte & 0x7f);
        if i == MAX_U32_LEN - 1 && byte > 0x0f {
            return Err(VarintError::Overflow);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if input.len() >= MAX_U32_LEN {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Reads a zigzag varint `i32` from the front of `input`.
pub fn get_i32(input: &[u8]) -> Result<(i32, usize), VarintError> {
    let (raw, used) = get_u32(input)?;
    Ok((unzigzag(raw), used))
}

fn zigzag(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

fn unzigzag(raw: u32) -> i32 {
    ((raw >> 1) as i32) ^ -((raw & 1) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: [(u32, &[u8]); 5] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            put_u32(&mut out, value);
            assert_eq!(out, bytes, "encoding of {value}");
            assert_eq!(get_u32(bytes), Ok((value, bytes.len())));
        }
        let mut out = Vec::new();
        put_i32(&mut out, -1);
        assert_eq!(out, [0x01]);
    }

    #[test]
    fn rejects_truncated_and_overlong_input() {
        assert_eq!(get_u32(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(get_u32(&[]), Err(VarintError::Truncated));
        assert_eq!(
            get_u32(&[0xff, 0xff, 0xff, 0xff, 0x1f]),
            Err(VarintError::Overflow)
        );
        assert_eq!(
            get_u32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(VarintError::Overflow)
        );
    }

    proptest! {
        #[test]
        fn u32_round_trips(value: u32) {
            let mut out = Vec::new();
            put_u32(&mut out, value);
            prop_assert_eq!(out.len(), len_u32(value));
            prop_assert_eq!(get_u32(&out), Ok((value, out.len())));
        }

        #[test]
        fn i32_round_trips(value: i32) {
            let mut out = Vec::new();
            put_i32(&mut out, value);
            prop_assert_eq!(out.len(), len_i32(value));
            prop_assert_eq!(get_i32(&out), Ok((value, out.len())));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let _ = get_u32(&bytes);
        }
    }
}
