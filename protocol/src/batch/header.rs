//! The fixed 53-byte header at the front of every record batch, and the
//! positions of its fields. The table in [`super`] and `docs/storage.md` is the
//! contract; the constants here are its single source in code.

use super::BatchError;

/// Byte position of `base_offset` (u64): offset of the first record.
pub const BASE_OFFSET_AT: usize = 0;
/// Byte position of `batch_length` (u32): bytes that follow this field.
pub const LENGTH_AT: usize = 8;
/// Byte position of `crc` (u32): CRC-32 (IEEE) of every byte after this field.
pub const CRC_AT: usize = 12;
/// Byte position of `magic` (u8): the format version.
pub const MAGIC_AT: usize = 16;
/// Byte position of `attributes` (u16).
pub const ATTRIBUTES_AT: usize = 17;
/// Byte position of `record_count` (u32).
pub const RECORD_COUNT_AT: usize = 19;
/// Byte position of `first_timestamp` (i64, ms since the Unix epoch).
pub const FIRST_TIMESTAMP_AT: usize = 23;
/// Byte position of `max_timestamp` (i64).
pub const MAX_TIMESTAMP_AT: usize = 31;
/// Byte position of `producer_id` (i64, −1 when not idempotent).
pub const PRODUCER_ID_AT: usize = 39;
/// Byte position of `producer_epoch` (i16, −1 when not idempotent).
pub const PRODUCER_EPOCH_AT: usize = 47;
/// Byte position of `base_sequence` (i32, −1 when not idempotent).
pub const BASE_SEQUENCE_AT: usize = 49;
/// Size of the header; records start here.
pub const HEADER_LEN: usize = 53;
/// Bytes before `batch_length` counts: `base_offset` and `batch_length`
/// themselves. A batch occupies `LOG_OVERHEAD + batch_length` bytes.
pub const LOG_OVERHEAD: usize = 12;
/// The CRC covers `[CRC_COVERS_FROM, end)`.
pub const CRC_COVERS_FROM: usize = MAGIC_AT;
/// The only format version this build reads and writes.
pub const MAGIC: u8 = 1;
/// Smallest valid `batch_length`: a header and zero bytes of records.
pub const MIN_BATCH_LENGTH: u32 = (HEADER_LEN - LOG_OVERHEAD) as u32;

/// Attribute bits 0–2: compression codec. Only 0 (none) exists today.
pub const ATTR_COMPRESSION_MASK: u16 = 0b111;
/// Attribute bits that this version defines; any other set bit is refused.
pub const ATTR_KNOWN_MASK: u16 = ATTR_COMPRESSION_MASK;

/// Producer id, epoch and base sequence of a batch from an idempotent
/// producer; all −1 for a plain producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    /// Broker-assigned producer id, −1 when none.
    pub producer_id: i64,
    /// Epoch of that producer id; a newer epoch fences older ones.
    pub producer_epoch: i16,
    /// Sequence number of the first record of the batch in its partition.
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// The stamp of a batch sent without idempotence.
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };

    /// Whether the batch comes from an idempotent producer.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

/// The decoded header of a record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (assigned by the broker on append).
    pub base_offset: u64,
    /// Bytes after the length field.
    pub batch_length: u32,
    /// Stored CRC-32 of bytes `[16, end)`.
    pub crc: u32,
    /// Format version.
    pub magic: u8,
    /// Attribute bits.
    pub attributes: u16,
    /// Number of records; offsets run `base_offset ..= base_offset + count − 1`.
    pub record_count: u32,
    /// Timestamp of the first record (ms since the Unix epoch).
    pub first_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Who wrote it, for idempotence.
    pub producer: ProducerStamp,
}

impl BatchHeader {
    /// Total bytes the batch occupies, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record. A batch with zero records is invalid, so
    /// this is never below `base_offset` for a validated batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count.saturating_sub(1)))
    }

    /// The offset right after this batch. Saturates at `u64::MAX` for a
    /// damaged header whose offsets would overflow (never a panic: headers
    /// are read from disk before their CRC is checked), which no
    /// continuity check accepts.
    pub fn next_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }

    /// Decodes the header from the front of `bytes` (no CRC check).
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                at: bytes.len(),
                needed: HEADER_LEN,
            });
        }
        Ok(BatchHeader {
            base_offset: u64_at(bytes, BASE_OFFSET_AT),
            batch_length: u32_at(bytes, LENGTH_AT),
            crc: u32_at(bytes, CRC_AT),
            magic: bytes[MAGIC_AT],
            attributes: u16::from_le_bytes([bytes[ATTRIBUTES_AT], bytes[ATTRIBUTES_AT + 1]]),
            record_count: u32_at(bytes, RECORD_COUNT_AT),
            first_timestamp: u64_at(bytes, FIRST_TIMESTAMP_AT) as i64,
            max_timestamp: u64_at(bytes, MAX_TIMESTAMP_AT) as i64,
            producer: ProducerStamp {
                producer_id: u64_at(bytes, PRODUCER_ID_AT) as i64,
                producer_epoch: i16::from_le_bytes([
                    bytes[PRODUCER_EPOCH_AT],
                    bytes[PRODUCER_EPOCH_AT + 1],
                ]),
                base_sequence: u32_at(bytes, BASE_SEQUENCE_AT) as i32,
            },
        })
    }
}

/// Writes the producer id, epoch and base sequence into a batch header
/// (`buf` holds at least [`HEADER_LEN`] bytes). The CRC is the caller's.
pub(crate) fn write_producer(buf: &mut [u8], producer: ProducerStamp) {
    buf[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer.producer_id.to_le_bytes());
    buf[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
        .copy_from_slice(&producer.producer_epoch.to_le_bytes());
    buf[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
        .copy_from_slice(&producer.base_sequence.to_le_bytes());
}

/// Reads the `(base_offset, batch_length)` prefix of a batch; `None` when
/// fewer than [`LOG_OVERHEAD`] bytes are given.
pub fn read_prefix(bytes: &[u8]) -> Option<(u64, u32)> {
    if bytes.len() < LOG_OVERHEAD {
        return None;
    }
    Some((u64_at(bytes, BASE_OFFSET_AT), u32_at(bytes, LENGTH_AT)))
}

/// Little-endian `u32` at `at`. Callers have checked that `at + 4 <= len`.
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

/// Little-endian `u64` at `at`. Callers have checked that `at + 8 <= len`.
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}
