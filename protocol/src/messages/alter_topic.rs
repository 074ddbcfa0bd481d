//! AlterTopic (API key 14): change a topic's retention; the change takes
//! effect at once (segments past the new limits are deleted before the
//! answer) and is kept across restarts.
//!
//! Request v0: `topic` string, then for `retention_ms` and then
//! `retention_bytes` one [`RetentionChange`] each: `change` u8 (0 keep, 1
//! back to the broker default, 2 set) and `value` u64 (the new limit when
//! `change` is 2, 0 meaning no limit; 0 otherwise).
//!
//! Response v0: `retention_ms` option u64, `retention_bytes` option u64
//! (the limits now in effect, defaults applied; absent: no limit),
//! `segments_deleted` u32 (segments retention deleted right away, all
//! partitions together).

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::wire::{Reader, Writer};

/// How an AlterTopic changes one retention setting of the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetentionChange {
    /// Leave the setting as it is.
    #[default]
    Keep,
    /// Drop the topic's own setting: the broker's default applies.
    Default,
    /// Set the topic's own limit; 0 means no limit.
    Set(u64),
}

impl RetentionChange {
    fn encode(self, w: &mut Writer<'_>) {
        let (tag, value) = match self {
            RetentionChange::Keep => (0, 0),
            RetentionChange::Default => (1, 0),
            RetentionChange::Set(value) => (2, value),
        };
        w.u8(tag);
        w.u64(value);
    }

    fn decode(field: &'static str, r: &mut Reader) -> Result<Self, CodecError> {
        let at = r.offset();
        let tag = r.u8(field)?;
        let value = r.u64(field)?;
        match (tag, value) {
            (0, 0) => Ok(RetentionChange::Keep),
            (1, 0) => Ok(RetentionChange::Default),
            (2, value) => Ok(RetentionChange::Set(value)),
            (0 | 1, value) => Err(CodecError::new(
                at + 1,
                CodecErrorKind::InvalidValue { field, value },
            )),
            (tag, _) => Err(CodecError::new(
                at,
                CodecErrorKind::InvalidValue {
                    field,
                    value: u64::from(tag),
                },
            )),
        }
    }
}

/// Change a topic's retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterTopicRequest {
    /// The topic.
    pub topic: String,
    /// Retention by age (ms).
    pub retention_ms: RetentionChange,
    /// Retention by size per partition (bytes).
    pub retention_bytes: RetentionChange,
}

/// The topic's retention after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlterTopicResponse {
    /// Retention by age in effect now (the broker default if the topic
    /// sets none); `None`: kept forever.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition in effect now; `None`: unlimited.
    pub retention_bytes: Option<u64>,
    /// Segments deleted right away by the new limits.
    pub segments_deleted: u32,
}

impl Message for AlterTopicRequest {
    const API_KEY: ApiKey = ApiKey::AlterTopic;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        self.retention_ms.encode(w);
        self.retention_bytes.encode(w);
        Ok(())
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(AlterTopicRequest {
            topic: r.topic_name("topic")?,
            retention_ms: RetentionChange::decode("retention_ms", r)?,
            retention_bytes: RetentionChange::decode("retention_bytes", r)?,
        })
    }
}

impl Message for AlterTopicResponse {
    const API_KEY: ApiKey = ApiKey::AlterTopic;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.option_u64(self.retention_ms);
        w.option_u64(self.retention_bytes);
        w.u32(self.segments_deleted);
        Ok(())
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(AlterTopicResponse {
            retention_ms: r.option_u64("retention_ms")?,
            retention_bytes: r.option_u64("retention_bytes")?,
            segments_deleted: r.u32("segments_deleted")?,
        })
    }
}
