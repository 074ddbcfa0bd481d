//! Why a record batch was refused. Every variant names the byte position
//! (within the batch) where the problem was found.

use thiserror::Error;

/// A record batch that is malformed, damaged or outside the limits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than the format needs.
    #[error("record batch truncated: {needed} bytes needed at byte {at}")]
    Truncated {
        /// Where the missing bytes were expected.
        at: usize,
        /// How many bytes were needed in total at that point.
        needed: usize,
    },
    /// `batch_length` disagrees with the bytes given or the limits.
    #[error("record batch length field says {declared} bytes follow it, but {reason}")]
    BadLength {
        /// The `batch_length` field.
        declared: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// The format version is not one this build reads.
    #[error(
        "record batch format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedMagic {
        /// The version byte found.
        found: u8,
        /// The version this build supports.
        supported: u8,
    },
    /// Attribute bits this version does not define (e.g. a compression codec).
    #[error(
        "record batch attributes {attributes:#06x} use bits this version does not support (compression is not supported yet)"
    )]
    UnsupportedAttributes {
        /// The attribute field.
        attributes: u16,
    },
    /// The stored CRC does not match the bytes: damaged in transit or on disk.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A record inside the batch is malformed.
    #[error("record {index} at byte {at} is malformed: {what}")]
    BadRecord {
        /// Zero-based record index in the batch.
        index: u32,
        /// Byte position within the batch.
        at: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// The batch's offsets (or timestamps) would pass the largest value.
    #[error(
        "record batch with base offset {base_offset} has offsets or timestamps beyond the largest value"
    )]
    OffsetOverflow {
        /// The `base_offset` field.
        base_offset: u64,
    },
    /// `record_count` disagrees with the records present.
    #[error("record batch says it holds {declared} records but {found} were found")]
    CountMismatch {
        /// The `record_count` field.
        declared: u32,
        /// Records actually decoded.
        found: u32,
    },
}
