//! The record batch format: the unit of append, storage and transfer.
//!
//! A producer encodes records into a batch ([`BatchBuilder`]); the broker
//! validates it ([`RecordBatch::validate`]), assigns the base offset and the
//! append time by rewriting three header fields and the CRC ([`stamp`]), and
//! appends it to the log. Readers get the stored bytes back unchanged: the
//! bytes on disk are the bytes on the wire.
//!
//! ## Byte layout (all integers little-endian)
//!
//! | at | size | field | meaning |
//! | --- | --- | --- | --- |
//! | 0 | 8 | `base_offset` u64 | offset of the first record (broker-assigned) |
//! | 8 | 4 | `batch_length` u32 | bytes after this field (total size − 12) |
//! | 12 | 4 | `crc` u32 | CRC-32 (IEEE, crc32fast) of bytes 16..end |
//! | 16 | 1 | `magic` u8 | format version, 1 |
//! | 17 | 2 | `attributes` u16 | bits 0–2 compression (0 = none, the only one today); other bits 0 |
//! | 19 | 4 | `record_count` u32 | records in the batch, ≥ 1 |
//! | 23 | 8 | `first_timestamp` i64 | ms since the Unix epoch (broker append time) |
//! | 31 | 8 | `max_timestamp` i64 | largest record timestamp |
//! | 39 | 8 | `producer_id` i64 | −1 unless idempotent |
//! | 47 | 2 | `producer_epoch` i16 | −1 unless idempotent |
//! | 49 | 4 | `base_sequence` i32 | −1 unless idempotent |
//! | 53 | … | records | `record_count` records, back to back |
//!
//! Each record (varints are unsigned LEB128; `zigzag` ones are signed):
//!
//! | field | encoding | meaning |
//! | --- | --- | --- |
//! | `length` | varint | bytes of the record after this field |
//! | `attributes` | u8 | 0 |
//! | `timestamp_delta` | varint | ms after `first_timestamp` (0: the broker stamps batches) |
//! | `offset_delta` | varint | index of the record in the batch: 0, 1, 2, … |
//! | `key_length` | zigzag varint | −1 for no key |
//! | `key` | bytes | |
//! | `value_length` | varint | |
//! | `value` | bytes | |
//! | `header_count` | varint | |
//! | per header: `name_length`, `name`, `value_length`, `value` | varint, UTF-8, varint, bytes | |
//!
//! ## Invariants of a valid batch
//!
//! - `12 + batch_length` equals the bytes given, and is at most the caller's
//!   limit; the CRC matches; magic is 1; no unknown attribute bit is set.
//! - `record_count ≥ 1` and exactly that many records fill the batch to its
//!   last byte; offset deltas run 0, 1, 2, …; every length fits in its record.

mod builder;
mod error;
mod header;
mod record;
pub mod varint;

use bytes::Bytes;

pub use builder::BatchBuilder;
pub use error::BatchError;
pub use header::*;
pub use record::{Header, Record};

use record::{decode_headers, parse_record};

/// A record batch whose structure and CRC have been checked.
#[derive(Debug, Clone)]
pub struct RecordBatch {
    bytes: Bytes,
    header: BatchHeader,
    /// CRC state over the records section alone, so the broker can restamp
    /// the header without hashing the records again.
    records_crc: crc32fast::Hasher,
    max_timestamp_delta: u32,
}

impl RecordBatch {
    /// Checks everything a broker must check before appending `bytes`:
    /// length, limit, version, attributes, CRC and every record's structure.
    pub fn validate(bytes: Bytes, max_batch_bytes: usize) -> Result<RecordBatch, BatchError> {
        let header = check_envelope(&bytes, max_batch_bytes)?;
        let mut header_crc = crc32fast::Hasher::new();
        header_crc.update(&bytes[CRC_COVERS_FROM..HEADER_LEN]);
        let mut records_crc = crc32fast::Hasher::new();
        records_crc.update(&bytes[HEADER_LEN..]);
        let mut computed = header_crc.clone();
        computed.combine(&records_crc);
        let computed = computed.finalize();
        if computed != header.crc {
            return Err(BatchError::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
        let max_timestamp_delta = check_records(&bytes, &header)?;
        Ok(RecordBatch {
            bytes,
            header,
            records_crc,
            max_timestamp_delta,
        })
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Largest `timestamp_delta` of any record.
    pub fn max_timestamp_delta(&self) -> u32 {
        self.max_timestamp_delta
    }

    /// CRC state over the records section (bytes 53..end).
    pub fn records_crc(&self) -> &crc32fast::Hasher {
        &self.records_crc
    }

    /// Decodes the records (zero-copy slices of the batch bytes).
    pub fn records(&self) -> Records {
        Records {
            bytes: self.bytes.clone(),
            header: self.header,
            at: HEADER_LEN,
            index: 0,
        }
    }
}

/// Checks a stored batch cheaply: envelope and CRC, not record structure
/// (the broker validated the structure before it was first stored, and the
/// CRC proves the bytes are still those). Used by reads and recovery.
pub fn verify_stored(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = check_envelope(bytes, max_batch_bytes)?;
    let computed = crc32fast::hash(&bytes[CRC_COVERS_FROM..]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Decodes the records of a stored batch (one that passed [`verify_stored`]).
pub fn records_of(bytes: Bytes) -> Result<Records, BatchError> {
    let header = BatchHeader::parse(&bytes)?;
    Ok(Records {
        bytes,
        header,
        at: HEADER_LEN,
        index: 0,
    })
}

/// The records of whole batches laid back to back, as a log read or a
/// fetch returns them, as zero-copy slices of `bytes`. A truncated or
/// undecodable batch yields one error and ends the walk.
pub fn records_of_batches(bytes: Bytes) -> impl Iterator<Item = Result<Record, BatchError>> {
    let mut at = 0usize;
    let mut current: Option<Records> = None;
    let mut done = false;
    std::iter::from_fn(move || {
        loop {
            if let Some(record) = current.as_mut().and_then(Iterator::next) {
                return Some(record);
            }
            current = None;
            if done || at >= bytes.len() {
                return None;
            }
            let end =
                read_prefix(&bytes[at..]).map(|(_, length)| at + LOG_OVERHEAD + length as usize);
            let batch = match end {
                Some(end) if end <= bytes.len() => {
                    records_of(bytes.slice(at..end)).map(|records| (records, end))
                }
                Some(end) => Err(BatchError::Truncated {
                    at: bytes.len(),
                    needed: end,
                }),
                None => Err(BatchError::Truncated {
                    at: bytes.len(),
                    needed: at + LOG_OVERHEAD,
                }),
            };
            match batch {
                Ok((records, end)) => {
                    current = Some(records);
                    at = end;
                }
                Err(e) => {
                    done = true;
                    return Some(Err(e));
                }
            }
        }
    })
}

/// Rewrites what the broker decides on append (base offset, first and max
/// timestamp) in a copy of a validated batch, and the CRC to match.
/// `buf` must hold exactly the batch that `records_crc` was computed for.
pub fn stamp(
    buf: &mut [u8],
    base_offset: u64,
    first_timestamp: i64,
    max_timestamp: i64,
    records_crc: &crc32fast::Hasher,
) {
    buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_le_bytes());
    buf[FIRST_TIMESTAMP_AT..FIRST_TIMESTAMP_AT + 8].copy_from_slice(&first_timestamp.to_le_bytes());
    buf[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_le_bytes());
    let crc = if buf.len() - HEADER_LEN < REHASH_BELOW {
        // Combining CRCs costs more than hashing a few KiB again.
        crc32fast::hash(&buf[CRC_COVERS_FROM..])
    } else {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&buf[CRC_COVERS_FROM..HEADER_LEN]);
        crc.combine(records_crc);
        crc.finalize()
    };
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Below this many bytes of records, [`stamp`] hashes the batch again
/// instead of combining CRCs (a profile of 1-record batches showed the
/// combine at 12 % of the append path).
const REHASH_BELOW: usize = 4096;

/// A copy of a built batch with other producer fields (id, epoch, base
/// sequence) and the CRC to match: used by a producer that must resend a
/// batch under a new session.
pub fn with_producer(batch: &[u8], producer: ProducerStamp) -> Bytes {
    let mut buf = batch.to_vec();
    if buf.len() < HEADER_LEN {
        return Bytes::from(buf);
    }
    header::write_producer(&mut buf, producer);
    let crc = crc32fast::hash(&buf[CRC_COVERS_FROM..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    Bytes::from(buf)
}

/// Checks length, limit, version and attributes; returns the header.
fn check_envelope(bytes: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header
        .base_offset
        .checked_add(u64::from(header.record_count))
        .is_none()
    {
        return Err(BatchError::OffsetOverflow {
            base_offset: header.base_offset,
        });
    }
    let declared = header.batch_length;
    let bad_length = |reason: String| BatchError::BadLength { declared, reason };
    if declared < MIN_BATCH_LENGTH {
        return Err(bad_length(format!("the minimum is {MIN_BATCH_LENGTH}")));
    }
    if header.total_len() > max_batch_bytes {
        return Err(bad_length(format!(
            "the batch size limit is {max_batch_bytes} bytes"
        )));
    }
    if header.total_len() != bytes.len() {
        return Err(bad_length(format!(
            "{} bytes follow it",
            bytes.len() - LOG_OVERHEAD
        )));
    }
    if header.magic != MAGIC {
        return Err(BatchError::UnsupportedMagic {
            found: header.magic,
            supported: MAGIC,
        });
    }
    if header.attributes & !ATTR_KNOWN_MASK != 0 || header.attributes & ATTR_COMPRESSION_MASK != 0 {
        return Err(BatchError::UnsupportedAttributes {
            attributes: header.attributes,
        });
    }
    Ok(header)
}

/// Longest header name a record may carry at produce, in bytes: a
/// delivery (Receive) carries names of at most this many, so a longer one
/// would make every delivery of its record fail.
pub const MAX_HEADER_NAME_BYTES: usize = 255;

/// Walks every record (header names at most [`MAX_HEADER_NAME_BYTES`]);
/// returns the largest timestamp delta.
fn check_records(bytes: &[u8], header: &BatchHeader) -> Result<u32, BatchError> {
    let mut at = HEADER_LEN;
    let mut found = 0u32;
    let mut max_delta = 0u32;
    while at < bytes.len() {
        if found == header.record_count {
            return Err(BatchError::CountMismatch {
                declared: header.record_count,
                found: found.saturating_add(1),
            });
        }
        let spans = parse_record(bytes, at, found)?;
        if spans.offset_delta != found {
            return Err(BatchError::BadRecord {
                index: found,
                at,
                what: "offset delta is not the record's index in the batch",
            });
        }
        if spans.longest_header_name as usize > MAX_HEADER_NAME_BYTES {
            return Err(BatchError::BadRecord {
                index: found,
                at,
                what: "a header name is longer than 255 bytes (the most a delivery carries); shorten it",
            });
        }
        max_delta = max_delta.max(spans.timestamp_delta);
        at = spans.end;
        found += 1;
    }
    if found != header.record_count || found == 0 {
        return Err(BatchError::CountMismatch {
            declared: header.record_count,
            found,
        });
    }
    Ok(max_delta)
}

/// Iterator over the records of a batch.
#[derive(Debug, Clone)]
pub struct Records {
    bytes: Bytes,
    header: BatchHeader,
    at: usize,
    index: u32,
}

impl Iterator for Records {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.header.record_count || self.at >= self.bytes.len() {
            return None;
        }
        let spans = match parse_record(&self.bytes, self.at, self.index) {
            Ok(spans) => spans,
            Err(e) => {
                self.at = self.bytes.len();
                return Some(Err(e));
            }
        };
        self.at = spans.end;
        self.index += 1;
        let offset = self
            .header
            .base_offset
            .checked_add(u64::from(spans.offset_delta));
        let timestamp = self
            .header
            .first_timestamp
            .checked_add(i64::from(spans.timestamp_delta));
        let (Some(offset), Some(timestamp)) = (offset, timestamp) else {
            self.at = self.bytes.len();
            return Some(Err(BatchError::OffsetOverflow {
                base_offset: self.header.base_offset,
            }));
        };
        Some(Ok(Record {
            offset,
            timestamp,
            key: spans.key.clone().map(|r| self.bytes.slice(r)),
            value: self.bytes.slice(spans.value.clone()),
            headers: decode_headers(&self.bytes, &spans),
        }))
    }
}

#[cfg(test)]
mod tests;
