//! SeekGroup (API key 43): move a consumer group to an offset, a point in
//! time, the earliest or the latest offset, in one partition or in all.
//!
//! Request v0: `topic` string (topic name), `group` string (group name),
//! `partition` option u32 (absent = every partition), `target` u8 tag
//! (0 Offset followed by `offset` u64, 1 Timestamp followed by
//! `timestamp_ms` i64, 2 Earliest, 3 Latest; any other tag is invalid).
//!
//! Response v0: `partitions` array of (`partition` u32, `offset` u64): where
//! each partition sought now starts.
//!
//! Everything from the new position on is delivered again.

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::wire::{Reader, Writer};

/// Where to move a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTarget {
    /// This offset (wire tag 0, followed by the u64).
    Offset(u64),
    /// The first offset whose record was appended at or after this many ms
    /// since the Unix epoch; the log end offset if there is none (wire tag
    /// 1, followed by the i64).
    Timestamp(i64),
    /// The partition's log start offset (wire tag 2).
    Earliest,
    /// The partition's log end offset: only new records are delivered (wire
    /// tag 3).
    Latest,
}

impl SeekTarget {
    /// The wire tag.
    pub fn tag(self) -> u8 {
        match self {
            SeekTarget::Offset(_) => TARGET_OFFSET,
            SeekTarget::Timestamp(_) => TARGET_TIMESTAMP,
            SeekTarget::Earliest => TARGET_EARLIEST,
            SeekTarget::Latest => TARGET_LATEST,
        }
    }
}

const TARGET_OFFSET: u8 = 0;
const TARGET_TIMESTAMP: u8 = 1;
const TARGET_EARLIEST: u8 = 2;
const TARGET_LATEST: u8 = 3;

/// Move a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeekGroupRequest {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// One partition, or `None` for every partition of the topic.
    pub partition: Option<u32>,
    /// Where to go.
    pub target: SeekTarget,
}

/// Where the sought partitions now start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeekGroupResponse {
    /// One entry per partition sought.
    pub partitions: Vec<SeekGroupPartition>,
}

/// The new position of a consumer group in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeekGroupPartition {
    /// Partition id.
    pub partition: u32,
    /// The first offset the group will deliver from now on.
    pub offset: u64,
}

impl Message for SeekGroupRequest {
    const API_KEY: ApiKey = ApiKey::SeekGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)?;
        w.option_u32(self.partition);
        w.u8(self.target.tag());
        match self.target {
            SeekTarget::Offset(offset) => w.u64(offset),
            SeekTarget::Timestamp(ts) => w.i64(ts),
            SeekTarget::Earliest | SeekTarget::Latest => {}
        }
        Ok(())
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        let topic = r.topic_name("topic")?;
        let group = r.group_name("group")?;
        let partition = r.option_u32("partition")?;
        let start = r.offset();
        let target = match r.u8("target")? {
            TARGET_OFFSET => SeekTarget::Offset(r.u64("offset")?),
            TARGET_TIMESTAMP => SeekTarget::Timestamp(r.i64("timestamp_ms")?),
            TARGET_EARLIEST => SeekTarget::Earliest,
            TARGET_LATEST => SeekTarget::Latest,
            other => {
                return Err(CodecError::new(
                    start,
                    CodecErrorKind::InvalidValue {
                        field: "target",
                        value: u64::from(other),
                    },
                ));
            }
        };
        Ok(SeekGroupRequest {
            topic,
            group,
            partition,
            target,
        })
    }
}

impl Message for SeekGroupResponse {
    const API_KEY: ApiKey = ApiKey::SeekGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.vec("partitions", &self.partitions, false, |w, p| {
            w.u32(p.partition);
            w.u64(p.offset);
            Ok(())
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(SeekGroupResponse {
            partitions: r.vec("partitions", 12, false, |r| {
                Ok(SeekGroupPartition {
                    partition: r.u32("partition")?,
                    offset: r.u64("offset")?,
                })
            })?,
        })
    }
}
