//! ListOffsets (API key 31): find offsets by position or time.
//!
//! Request v0: `partitions` non-empty array of (`topic` string, `partition`
//! u32, `spec` u8: 0 Earliest, 1 Latest, 2 ByTimestamp followed by
//! `timestamp_ms` i64).
//!
//! Response v0: `partitions` array of (`topic` string, `partition` u32,
//! `error_code` u16, `error_message` string, `offset` u64, `timestamp_ms` option i64).

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::error_code::ErrorCode;
use crate::frame::truncate_at_char_boundary;
use crate::limits::MAX_ERROR_MESSAGE_LEN;
use crate::wire::{Reader, Writer};

/// Which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset (wire tag 0).
    Earliest,
    /// The log end offset: the offset the next record will get (wire tag 1).
    Latest,
    /// The first offset whose batch has a timestamp at or after this many
    /// ms since the Unix epoch; the log end offset if there is none (wire
    /// tag 2, followed by the i64).
    ByTimestamp(i64),
}

/// Look up offsets in one or more partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsRequest {
    /// At least one partition.
    pub partitions: Vec<ListOffsetsPartition>,
}

/// One lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartition {
    /// The topic.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// What to look up.
    pub spec: OffsetSpec,
}

/// The offsets found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsResponse {
    /// One result per requested partition.
    pub partitions: Vec<ListOffsetsPartitionResponse>,
}

/// The result of one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOffsetsPartitionResponse {
    /// The topic.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// `None`, or why there is no answer.
    pub error_code: ErrorCode,
    /// Why, in words, when `error_code` is not `None` (empty otherwise; at
    /// most 1024 bytes, longer is truncated).
    pub error_message: String,
    /// The offset found.
    pub offset: u64,
    /// For `ByTimestamp`, the timestamp of the batch found; `None` for the
    /// other specs or when no batch is that recent.
    pub timestamp_ms: Option<i64>,
}

const SPEC_EARLIEST: u8 = 0;
const SPEC_LATEST: u8 = 1;
const SPEC_BY_TIMESTAMP: u8 = 2;

impl Message for ListOffsetsRequest {
    const API_KEY: ApiKey = ApiKey::ListOffsets;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.vec("partitions", &self.partitions, true, |w, p| {
            w.topic_name("topic", &p.topic)?;
            w.u32(p.partition);
            match p.spec {
                OffsetSpec::Earliest => w.u8(SPEC_EARLIEST),
                OffsetSpec::Latest => w.u8(SPEC_LATEST),
                OffsetSpec::ByTimestamp(ts) => {
                    w.u8(SPEC_BY_TIMESTAMP);
                    w.i64(ts);
                }
            }
            Ok(())
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(ListOffsetsRequest {
            partitions: r.vec("partitions", 7, true, |r| {
                let topic = r.topic_name("topic")?;
                let partition = r.u32("partition")?;
                let start = r.offset();
                let spec = match r.u8("spec")? {
                    SPEC_EARLIEST => OffsetSpec::Earliest,
                    SPEC_LATEST => OffsetSpec::Latest,
                    SPEC_BY_TIMESTAMP => OffsetSpec::ByTimestamp(r.i64("timestamp_ms")?),
                    other => {
                        return Err(CodecError::new(
                            start,
                            CodecErrorKind::InvalidValue {
                                field: "spec",
                                value: u64::from(other),
                            },
                        ));
                    }
                };
                Ok(ListOffsetsPartition {
                    topic,
                    partition,
                    spec,
                })
            })?,
        })
    }
}

impl Message for ListOffsetsResponse {
    const API_KEY: ApiKey = ApiKey::ListOffsets;

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
            w.u64(p.offset);
            w.option_i64(p.timestamp_ms);
            Ok(())
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(ListOffsetsResponse {
            partitions: r.vec("partitions", 19, false, |r| {
                Ok(ListOffsetsPartitionResponse {
                    topic: r.topic_name("topic")?,
                    partition: r.u32("partition")?,
                    error_code: ErrorCode::from_u16(r.u16("error_code")?),
                    error_message: r.string("error_message", MAX_ERROR_MESSAGE_LEN)?,
                    offset: r.u64("offset")?,
                    timestamp_ms: r.option_i64("timestamp_ms")?,
                })
            })?,
        })
    }
}
