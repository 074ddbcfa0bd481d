//! DescribeGroup (API key 41): a consumer group's settings and progress.
//!
//! Request v0: `topic` string (topic name), `group` string (group name).
//!
//! Response v0: `settings` ([`GroupSettings`], 30 bytes), `paused` u8 bool,
//! `partitions` array of (`partition` u32, `committed_floor` u64,
//! `log_start` u64, `log_end` u64, `lag` u64, `in_flight` u64, `delayed`
//! u64, `dead_lettered` u64, `removed_by_retention` u64).

use super::Message;
use super::group_settings::GroupSettings;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Bytes of one encoded [`GroupPartitionDescription`].
const PARTITION_LEN: usize = 4 + 8 * 8;

/// Describe one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupRequest {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
}

/// A consumer group's settings, pause state and per-partition progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeGroupResponse {
    /// The group's settings in effect.
    pub settings: GroupSettings,
    /// Whether the group is paused (no new deliveries).
    pub paused: bool,
    /// One entry per partition of the topic.
    pub partitions: Vec<GroupPartitionDescription>,
}

/// A consumer group's progress in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPartitionDescription {
    /// Partition id.
    pub partition: u32,
    /// Every offset below this one is settled (acked, dead-lettered or
    /// removed by retention) for the group.
    pub committed_floor: u64,
    /// The partition's oldest stored offset.
    pub log_start: u64,
    /// The partition's log end offset: the offset the next record will get.
    pub log_end: u64,
    /// Messages at or above `committed_floor` not yet settled.
    pub lag: u64,
    /// Messages delivered and under a lease.
    pub in_flight: u64,
    /// Messages waiting for their redelivery backoff.
    pub delayed: u64,
    /// Messages parked in the dead-letter topic, in total.
    pub dead_lettered: u64,
    /// Messages retention removed before the group settled them, in total.
    pub removed_by_retention: u64,
}

impl Message for DescribeGroupRequest {
    const API_KEY: ApiKey = ApiKey::DescribeGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(DescribeGroupRequest {
            topic: r.topic_name("topic")?,
            group: r.group_name("group")?,
        })
    }
}

impl Message for DescribeGroupResponse {
    const API_KEY: ApiKey = ApiKey::DescribeGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        self.settings.encode(w)?;
        w.bool(self.paused);
        w.vec("partitions", &self.partitions, false, |w, p| {
            w.u32(p.partition);
            w.u64(p.committed_floor);
            w.u64(p.log_start);
            w.u64(p.log_end);
            w.u64(p.lag);
            w.u64(p.in_flight);
            w.u64(p.delayed);
            w.u64(p.dead_lettered);
            w.u64(p.removed_by_retention);
            Ok(())
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(DescribeGroupResponse {
            settings: GroupSettings::decode(r)?,
            paused: r.bool("paused")?,
            partitions: r.vec("partitions", PARTITION_LEN, false, |r| {
                Ok(GroupPartitionDescription {
                    partition: r.u32("partition")?,
                    committed_floor: r.u64("committed_floor")?,
                    log_start: r.u64("log_start")?,
                    log_end: r.u64("log_end")?,
                    lag: r.u64("lag")?,
                    in_flight: r.u64("in_flight")?,
                    delayed: r.u64("delayed")?,
                    dead_lettered: r.u64("dead_lettered")?,
                    removed_by_retention: r.u64("removed_by_retention")?,
                })
            })?,
        })
    }
}
