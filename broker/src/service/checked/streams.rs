//! The record-level and pending-entry operations the Redis listener uses
//! (`resp/`), as a caller may do them:
//!
//! | operation | permission | on |
//! | --- | --- | --- |
//! | a stream's partition count, whether it exists | as describe a topic | the topic (one the caller may not describe looks absent) |
//! | read records, bounds, offset at a time, deleted entries, wait for records | `read` | the topic |
//! | the same, for what a group delivers (`XREADGROUP` history, `XCLAIM`) | `consume` or `admin` on the group, or `read` | the group |
//! | trim a partition (`XTRIM`, `XADD MAXLEN`), delete entries (`XDEL`) | `admin` | the topic (they remove data others may need) |
//! | list a group's pending entries and named consumers | as describe a group | the group |
//! | ack held entries, claim entries | `consume` | the group |
//! | remove a named consumer (`XGROUP DELCONSUMER`) | `admin` | the group |

use std::collections::BTreeSet;
use std::time::Duration;

use super::Checked;
use crate::delivery::ConsumerId;
use crate::delivery::engine::PendingLease;
use crate::error::BrokerError;
use crate::security::rules::{Op, Resource};
use crate::service::{MemberOwner, RecordsRead};

impl Checked<'_> {
    /// The partition count of `topic`, if it exists and the caller may
    /// describe it (a topic it may not describe looks absent).
    pub fn partitions_of(&self, topic: &str) -> Option<u32> {
        let found = self.broker.topics.get(topic)?;
        self.may_describe(topic)
            .then_some(found.metadata.partitions)
    }

    /// Whether group `group` of `topic` exists and the caller may describe
    /// it.
    pub fn group_exists(&self, topic: &str, group: &str) -> bool {
        self.broker.groups.get(topic, group).is_ok() && self.may_describe_group(topic, group)
    }

    /// The names of `topic`'s groups the caller may describe, sorted.
    pub fn group_names(&self, topic: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .broker
            .groups
            .list()
            .into_iter()
            .filter(|(t, g, _)| t == topic && self.may_describe_group(t, g))
            .map(|(_, g, _)| g)
            .collect();
        names.sort();
        names
    }

    /// Whether the broker is shutting down (blocking reads return).
    pub fn is_shutting_down(&self) -> bool {
        self.broker.shutdown.is_cancelled()
    }

    /// A partition's first and next offsets (see [`Checked::allow_records`]).
    pub fn partition_bounds(
        &self,
        (topic, group): (&str, Option<&str>),
        partition: u32,
    ) -> Result<(u64, u64), BrokerError> {
        self.allow_records(topic, group)?;
        self.broker.partition_bounds(topic, partition)
    }

    /// Records of a partition from `offset` (see [`Checked::allow_records`]).
    pub fn read_records(
        &self,
        (topic, group): (&str, Option<&str>),
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<RecordsRead, BrokerError> {
        self.allow_records(topic, group)?;
        self.broker
            .read_records(topic, partition, offset, max_bytes)
    }

    /// The first offset at or after time `ms` (see
    /// [`Checked::allow_records`]).
    pub fn offset_at_time(
        &self,
        (topic, group): (&str, Option<&str>),
        partition: u32,
        ms: i64,
    ) -> Result<u64, BrokerError> {
        self.allow_records(topic, group)?;
        self.broker.offset_at_time(topic, partition, ms)
    }

    /// Waits until one of `partitions` (topic, partition, offset) has
    /// records at its offset, or `timeout`; partitions the caller may not
    /// read are not watched.
    pub async fn wait_for_records(
        &self,
        partitions: &[(String, u32, u64)],
        timeout: Option<Duration>,
    ) -> bool {
        let readable: Vec<(String, u32, u64)> = partitions
            .iter()
            .filter(|(topic, _, _)| self.may(Op::Read, Resource::topic(topic)))
            .cloned()
            .collect();
        self.broker.wait_for_records(&readable, timeout).await
    }

    /// The deleted (`XDEL`) offsets in `from..to` of a partition (see
    /// [`Checked::allow_records`]).
    pub async fn deleted_in(
        &self,
        (topic, group): (&str, Option<&str>),
        partition: u32,
        (from, to): (u64, u64),
    ) -> Result<BTreeSet<u64>, BrokerError> {
        self.allow_records(topic, group)?;
        self.broker.deleted_in(topic, partition, from, to).await
    }

    /// Records are read for the topic (`read` on it) or for what group
    /// `group` delivers (`consume` or `admin` on the group, or `read` on
    /// the topic): a consumer sees the entries its group hands out, as
    /// `XREADGROUP` with a history ID and `XCLAIM` show them.
    fn allow_records(&self, topic: &str, group: Option<&str>) -> Result<(), BrokerError> {
        if let Some(group) = group {
            let on = Resource::group(topic, group);
            if self.may(Op::Consume, on) || self.may(Op::Admin, on) {
                return Ok(());
            }
        }
        self.allow("read", Op::Read, Resource::topic(topic))
    }

    /// Removes a partition's records before `before` (`admin`); how many.
    pub async fn trim_partition(
        &self,
        topic: &str,
        partition: u32,
        before: u64,
    ) -> Result<u64, BrokerError> {
        let trimmed = self.broker.trim_partition(topic, partition, before);
        self.admin("stream trim", Resource::topic(topic), trimmed)
            .await
    }

    /// Deletes single entries of a partition (`admin`); how many.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offsets: &[u64],
    ) -> Result<u64, BrokerError> {
        let deleted = self.broker.delete_records(topic, partition, offsets);
        self.admin("stream delete entries", Resource::topic(topic), deleted)
            .await
    }

    /// A group's open leases (as describe a group).
    pub async fn pending(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Vec<PendingLease>, BrokerError> {
        self.allow_describe_group(topic, group)?;
        self.broker.pending(topic, group).await
    }

    /// The named consumers of a group, with their ids and idle times (as
    /// describe a group).
    pub fn named_consumers(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Vec<(String, ConsumerId, Duration)>, BrokerError> {
        self.allow_describe_group(topic, group)?;
        Ok(self.broker.members.named_in(topic, group))
    }

    /// Acks leases whoever holds them (`consume`); how many were acked.
    pub async fn ack_held(
        &self,
        topic: &str,
        group: &str,
        items: &[(u32, u64)],
    ) -> Result<u64, BrokerError> {
        self.allow("ack", Op::Consume, Resource::group(topic, group))?;
        self.broker.ack_held(topic, group, items).await
    }

    /// Moves leases to `consumer` (`consume`).
    #[allow(clippy::too_many_arguments)]
    pub async fn claim(
        &self,
        topic: &str,
        group: &str,
        consumer: u32,
        owner: &MemberOwner,
        items: Vec<(u32, u64)>,
        min_idle_ms: i64,
        count_attempt: bool,
    ) -> Result<Vec<Option<PendingLease>>, BrokerError> {
        self.allow("claim", Op::Consume, Resource::group(topic, group))?;
        self.broker
            .claim(
                topic,
                group,
                consumer,
                owner,
                items,
                min_idle_ms,
                count_attempt,
            )
            .await
    }

    /// Removes `owner`'s consumers from a group (`admin`); whether it had
    /// any.
    pub async fn leave_group(
        &self,
        topic: &str,
        group: &str,
        owner: &MemberOwner,
    ) -> Result<bool, BrokerError> {
        let left = async { Ok(self.broker.leave_group(topic, group, owner).await) };
        self.admin("group delete consumer", Resource::group(topic, group), left)
            .await
    }
}
