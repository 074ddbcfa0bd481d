//! Produce (API key 20): append record batches to partitions of one topic.
//!
//! Request v0: `timeout_ms` u32, `topic` string, `partitions` non-empty
//! array of (`partition` u32, `batches` non-empty array of record batches,
//! each a `u32` length (≤ max batch size) followed by the batch bytes).
//!
//! Response v0: `topic` string, `partitions` array of (`partition` u32,
//! `error_code` u16, `error_message` string, `base_offset` u64, `last_offset` u64, `append_time_ms`
//! i64, `log_start_offset` u64).
//!
//! Version 1 has the same request; its response appends `throttle_ms` u32
//! after the partitions: how long the broker holds back this connection's
//! next requests because it went over its produce byte-rate quota (0: not
//! throttled). A v0 response has no such field (decoded as 0); a v0 client
//! is throttled all the same, it is just not told.
//!
//! Record batches are opaque here: the codec hands them over as zero-copy
//! slices of the frame, and the broker validates them with the record batch
//! format (see `docs/storage.md`). Producer id, epoch and sequence number
//! travel inside each batch's header, not in this body.

use bytes::Bytes;

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::error_code::ErrorCode;
use crate::frame::truncate_at_char_boundary;
use crate::limits::MAX_ERROR_MESSAGE_LEN;
use crate::wire::{Reader, Writer};

/// Append record batches to one or more partitions of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// How long the broker may take to append (and make durable) before it
    /// answers `RequestTimedOut`.
    pub timeout_ms: u32,
    /// The topic.
    pub topic: String,
    /// At least one partition, each with at least one batch.
    pub partitions: Vec<ProducePartition>,
}

/// The batches for one partition, appended in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    /// Partition id.
    pub partition: u32,
    /// At least one encoded record batch, opaque to the protocol.
    pub batches: Vec<Bytes>,
}

/// The outcome of a produce request, per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    /// The topic.
    pub topic: String,
    /// One result per requested partition.
    pub partitions: Vec<ProducePartitionResponse>,
    /// Version 1 and later: how long, in ms, the broker delays reading this
    /// connection's next requests because the connection went over its
    /// produce quota; the client should send nothing more to this broker
    /// for that long. 0: not throttled (always 0 in version 0).
    pub throttle_ms: u32,
}

/// The outcome of appending to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    /// Partition id.
    pub partition: u32,
    /// `None` if every batch was appended (or was a duplicate of an
    /// appended one); otherwise why none was.
    pub error_code: ErrorCode,
    /// Why, in words, when `error_code` is not `None` (empty otherwise; at
    /// most 1024 bytes, longer is truncated).
    pub error_message: String,
    /// Offset of the first record appended (0 on error).
    pub base_offset: u64,
    /// Offset of the last record appended (0 on error).
    pub last_offset: u64,
    /// The broker's append time, ms since the Unix epoch (−1 on error).
    pub append_time_ms: i64,
    /// The partition's log start offset after the append.
    pub log_start_offset: u64,
}

impl Message for ProduceRequest {
    const API_KEY: ApiKey = ApiKey::Produce;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.u32(self.timeout_ms);
        w.topic_name("topic", &self.topic)?;
        w.vec("partitions", &self.partitions, true, |w, p| {
            w.u32(p.partition);
            w.vec("batches", &p.batches, true, |w, batch| {
                w.record_batch(batch)
            })
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(ProduceRequest {
            timeout_ms: r.u32("timeout_ms")?,
            topic: r.topic_name("topic")?,
            partitions: r.vec("partitions", 8, true, |r| {
                Ok(ProducePartition {
                    partition: r.u32("partition")?,
                    batches: r.vec("batches", 4, true, |r| r.record_batch("record_batch"))?,
                })
            })?,
        })
    }
}

impl Message for ProduceResponse {
    const API_KEY: ApiKey = ApiKey::Produce;

    fn encode(&self, version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.vec("partitions", &self.partitions, false, |w, p| {
            w.u32(p.partition);
            w.u16(p.error_code.as_u16());
            w.string(
                "error_message",
                truncate_at_char_boundary(&p.error_message, MAX_ERROR_MESSAGE_LEN),
                MAX_ERROR_MESSAGE_LEN,
            )?;
            w.u64(p.base_offset);
            w.u64(p.last_offset);
            w.i64(p.append_time_ms);
            w.u64(p.log_start_offset);
            Ok(())
        })?;
        if version >= 1 {
            w.u32(self.throttle_ms);
        }
        Ok(())
    }

    fn decode(version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(ProduceResponse {
            topic: r.topic_name("topic")?,
            partitions: r.vec("partitions", 40, false, |r| {
                Ok(ProducePartitionResponse {
                    partition: r.u32("partition")?,
                    error_code: ErrorCode::from_u16(r.u16("error_code")?),
                    error_message: r.string("error_message", MAX_ERROR_MESSAGE_LEN)?,
                    base_offset: r.u64("base_offset")?,
                    last_offset: r.u64("last_offset")?,
                    append_time_ms: r.i64("append_time_ms")?,
                    log_start_offset: r.u64("log_start_offset")?,
                })
            })?,
            throttle_ms: if version >= 1 {
                r.u32("throttle_ms")?
            } else {
                0
            },
        })
    }
}
