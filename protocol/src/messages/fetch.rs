//! Fetch (API key 30): read record batches from partitions.
//!
//! Request v0: `max_wait_ms` u32, `min_bytes` u32, `max_bytes` u32,
//! `partitions` non-empty array of (`topic` string, `partition` u32,
//! `offset` u64, `max_bytes` u32).
//!
//! Response v0: `partitions` array of (`topic` string, `partition` u32,
//! `error_code` u16, `error_message` string, `high_watermark` u64, `log_start_offset` u64,
//! `records` bytes).
//!
//! `records` is zero or more whole record batches back to back, exactly as
//! stored (see `docs/storage.md`); the codec treats them as opaque bytes and
//! decodes them zero-copy.

use bytes::Bytes;

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::error_code::ErrorCode;
use crate::frame::truncate_at_char_boundary;
use crate::limits::MAX_ERROR_MESSAGE_LEN;
use crate::wire::{Reader, Writer};

/// Read from one or more partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Longest the broker may wait for `min_bytes` to be available.
    pub max_wait_ms: u32,
    /// Answer as soon as this many bytes are available (0: at once).
    pub min_bytes: u32,
    /// Most record bytes in the whole response (a first batch larger than
    /// this is still returned whole so a consumer can make progress).
    pub max_bytes: u32,
    /// At least one partition to read from.
    pub partitions: Vec<FetchPartition>,
}

/// Where to read in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    /// The topic.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Most record bytes from this partition.
    pub max_bytes: u32,
}

/// The data read, per partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchResponse {
    /// One result per requested partition.
    pub partitions: Vec<FetchPartitionResponse>,
}

/// What was read from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    /// The topic.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// `None`, or why nothing was read (`OffsetOutOfRange`, …).
    pub error_code: ErrorCode,
    /// Why, in words, when `error_code` is not `None` (empty otherwise; at
    /// most 1024 bytes, longer is truncated).
    pub error_message: String,
    /// The partition's log end offset: every offset below it is readable.
    pub high_watermark: u64,
    /// The partition's oldest stored offset.
    pub log_start_offset: u64,
    /// Whole record batches, concatenated; opaque to the protocol.
    pub records: Bytes,
}

impl Message for FetchRequest {
    const API_KEY: ApiKey = ApiKey::Fetch;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.u32(self.max_wait_ms);
        w.u32(self.min_bytes);
        w.u32(self.max_bytes);
        w.vec("partitions", &self.partitions, true, |w, p| {
            w.topic_name("topic", &p.topic)?;
            w.u32(p.partition);
            w.u64(p.offset);
            w.u32(p.max_bytes);
            Ok(())
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(FetchRequest {
            max_wait_ms: r.u32("max_wait_ms")?,
            min_bytes: r.u32("min_bytes")?,
            max_bytes: r.u32("max_bytes")?,
            partitions: r.vec("partitions", 18, true, |r| {
                Ok(FetchPartition {
                    topic: r.topic_name("topic")?,
                    partition: r.u32("partition")?,
                    offset: r.u64("offset")?,
                    max_bytes: r.u32("max_bytes")?,
                })
            })?,
        })
    }
}

impl Message for FetchResponse {
    const API_KEY: ApiKey = ApiKey::Fetch;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.vec("partitions", &self.partitions, false, |w, p| {
            w.topic_name("topic", &p.topic)?;
            w.u32(p.partition);
            w.u16(p.error_code.as_u16());
            w.string(
                "error_message",
                truncate_at_char_boundary(&p.error_message, MAX_ERROR_MESSAGE_LEN),
                MAX_ERROR_MESSAGE_LEN,
            )?;
            w.u64(p.high_watermark);
            w.u64(p.log_start_offset);
            w.bytes("records", &p.records)
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        let max_records = u64::from(r.limits().max_frame_size);
        Ok(FetchResponse {
            partitions: r.vec("partitions", 30, false, |r| {
                Ok(FetchPartitionResponse {
                    topic: r.topic_name("topic")?,
                    partition: r.u32("partition")?,
                    error_code: ErrorCode::from_u16(r.u16("error_code")?),
                    error_message: r.string("error_message", MAX_ERROR_MESSAGE_LEN)?,
                    high_watermark: r.u64("high_watermark")?,
                    log_start_offset: r.u64("log_start_offset")?,
                    records: r.bytes("records", max_records)?,
                })
            })?,
        })
    }
}
