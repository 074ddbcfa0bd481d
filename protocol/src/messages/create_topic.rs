//! CreateTopic (API key 10).
//!
//! Request v0: `topic` string (topic name), `partitions` u32 (≥ 1),
//! `retention_ms` option u64, `retention_bytes` option u64.
//! Response v0: empty body; the outcome is the header's error code
//! (`TopicAlreadyExists`, `InvalidTopicName`, `InvalidConfig`, …).

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Create a topic with a number of partitions and optional retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicRequest {
    /// The new topic's name (see [`validate_topic_name`](crate::validate_topic_name)).
    pub topic: String,
    /// Number of partitions; zero is answered with `InvalidConfig`.
    pub partitions: u32,
    /// Delete segments older than this many milliseconds; `None` keeps the
    /// broker default.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while a partition holds more than this
    /// many bytes; `None` keeps the broker default.
    pub retention_bytes: Option<u64>,
}

/// CreateTopic succeeded (errors travel in the response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateTopicResponse;

impl Message for CreateTopicRequest {
    const API_KEY: ApiKey = ApiKey::CreateTopic;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.u32(self.partitions);
        w.option_u64(self.retention_ms);
        w.option_u64(self.retention_bytes);
        Ok(())
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(CreateTopicRequest {
            topic: r.topic_name("topic")?,
            partitions: r.u32("partitions")?,
            retention_ms: r.option_u64("retention_ms")?,
            retention_bytes: r.option_u64("retention_bytes")?,
        })
    }
}

impl Message for CreateTopicResponse {
    const API_KEY: ApiKey = ApiKey::CreateTopic;

    fn encode(&self, _version: u16, _w: &mut Writer<'_>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(_version: u16, _r: &mut Reader) -> Result<Self, CodecError> {
        Ok(CreateTopicResponse)
    }
}
