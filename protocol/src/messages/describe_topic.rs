//! DescribeTopic (API key 13).
//!
//! Request v0: `topic` string.
//! Response v0: `topic` string, `retention_ms` option u64,
//! `retention_bytes` option u64, `partitions` array of (`partition` u32,
//! `log_start_offset` u64, `log_end_offset` u64, `size_bytes` u64,
//! `segment_count` u32).

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Describe one topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTopicRequest {
    /// The topic to describe.
    pub topic: String,
}

/// The state of one partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition id, 0-based.
    pub partition: u32,
    /// Offset of the oldest record still stored.
    pub log_start_offset: u64,
    /// Offset the next appended record will get (the high watermark: every
    /// offset below it is readable).
    pub log_end_offset: u64,
    /// Bytes stored across all segments.
    pub size_bytes: u64,
    /// Number of segment files.
    pub segment_count: u32,
}

/// A topic's configuration and the state of each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTopicResponse {
    /// The topic's name.
    pub topic: String,
    /// Time-based retention in effect, if any.
    pub retention_ms: Option<u64>,
    /// Size-based retention in effect (per partition), if any.
    pub retention_bytes: Option<u64>,
    /// Every partition, by id.
    pub partitions: Vec<PartitionDescription>,
}

impl Message for DescribeTopicRequest {
    const API_KEY: ApiKey = ApiKey::DescribeTopic;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(DescribeTopicRequest {
            topic: r.topic_name("topic")?,
        })
    }
}

impl Message for DescribeTopicResponse {
    const API_KEY: ApiKey = ApiKey::DescribeTopic;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.option_u64(self.retention_ms);
        w.option_u64(self.retention_bytes);
        w.vec("partitions", &self.partitions, false, |w, p| {
            w.u32(p.partition);
            w.u64(p.log_start_offset);
            w.u64(p.log_end_offset);
            w.u64(p.size_bytes);
            w.u32(p.segment_count);
            Ok(())
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(DescribeTopicResponse {
            topic: r.topic_name("topic")?,
            retention_ms: r.option_u64("retention_ms")?,
            retention_bytes: r.option_u64("retention_bytes")?,
            partitions: r.vec("partitions", 32, false, |r| {
                Ok(PartitionDescription {
                    partition: r.u32("partition")?,
                    log_start_offset: r.u64("log_start_offset")?,
                    log_end_offset: r.u64("log_end_offset")?,
                    size_bytes: r.u64("size_bytes")?,
                    segment_count: r.u32("segment_count")?,
                })
            })?,
        })
    }
}
