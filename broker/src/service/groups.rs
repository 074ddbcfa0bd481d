//! Group administration: create, delete, alter, describe, seek, pause and
//! resume a consumer group, and redrive its dead-letter topic.
//!
//! Each operation finds the running group ([`crate::groups::Groups`]) and
//! asks its engine; an engine that stopped meanwhile (the group is being
//! deleted, the broker stops) answers `ShuttingDown`.

use super::Broker;
use super::topics::{group_partition, group_source};
use crate::delivery::GroupSettings;
use crate::delivery::engine::PartitionFigures;
use crate::delivery::engine::SeekTo;
use crate::error::{BrokerError, ErrorKind};
use crate::groups::redrive::Redriven;

/// Where a seek moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTarget {
    /// An offset (clamped to each log's bounds).
    Offset(u64),
    /// Each partition's first record appended at or after this time (ms).
    Timestamp(i64),
    /// The log start.
    Earliest,
    /// The log end: only new messages.
    Latest,
}

/// A group's settings, pause state and per-partition figures.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDescription {
    /// Settings in effect.
    pub settings: GroupSettings,
    /// Whether deliveries are paused.
    pub paused: bool,
    /// One entry per source partition, in partition order.
    pub partitions: Vec<PartitionFigures>,
}

impl Broker {
    /// Creates a group of `topic` (and its dead-letter topic) and starts it.
    pub(super) async fn create_group(
        &self,
        topic: &str,
        group: &str,
        settings: GroupSettings,
    ) -> Result<(), BrokerError> {
        self.groups
            .create(&self.topics, topic, group, settings)
            .await
    }

    /// Stops and deletes a group (its dead-letter topic stays).
    pub(super) async fn delete_group(&self, topic: &str, group: &str) -> Result<(), BrokerError> {
        self.groups.delete(topic, group).await
    }

    /// Changes a group's settings.
    pub(super) async fn alter_group(
        &self,
        topic: &str,
        group: &str,
        settings: GroupSettings,
    ) -> Result<(), BrokerError> {
        let entry = self.groups.get(topic, group)?;
        let altered = entry.handle.alter(settings).await;
        altered
            .map_err(|_| BrokerError::group_stopped())?
            .map_err(|e| BrokerError::new(ErrorKind::InvalidConfig, e))?;
        self.groups.set_settings(topic, group, settings);
        Ok(())
    }

    /// A group's settings, pause state and per-partition figures.
    pub(super) async fn describe_group(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<GroupDescription, BrokerError> {
        let entry = self.groups.get(topic, group)?;
        let described = entry.handle.describe().await;
        let (paused, partitions) = described.map_err(|_| BrokerError::group_stopped())?;
        Ok(GroupDescription {
            settings: entry.settings,
            paused,
            partitions,
        })
    }

    /// Pauses (no new deliveries; settles still count) or resumes a group.
    /// The pause is durable.
    pub(super) async fn pause_group(
        &self,
        topic: &str,
        group: &str,
        paused: bool,
    ) -> Result<(), BrokerError> {
        let entry = self.groups.get(topic, group)?;
        let result = entry.handle.pause(paused).await;
        result
            .map_err(|_| BrokerError::group_stopped())?
            .map_err(|e| BrokerError::new(ErrorKind::Storage, e))
    }

    /// Moves a group (one partition, or all) to `target`: everything from
    /// there on is delivered again. Returns each moved partition's new
    /// position.
    pub(super) async fn seek_group(
        &self,
        topic: &str,
        group: &str,
        partition: Option<u32>,
        target: SeekTarget,
    ) -> Result<Vec<(u32, u64)>, BrokerError> {
        let entry = self.groups.get(topic, group)?;
        let source = group_source(self, topic)?;
        if let Some(p) = partition {
            group_partition(&source, p)?;
        }
        let stopped = |_| BrokerError::group_stopped();
        let to = match target {
            SeekTarget::Offset(o) => SeekTo::Offset(o),
            SeekTarget::Earliest => SeekTo::Earliest,
            SeekTarget::Latest => SeekTo::Latest,
            SeekTarget::Timestamp(ts) => {
                // Each partition to its first record at or after the time.
                let mut moved = Vec::new();
                for (p, log) in source.partitions.iter().enumerate() {
                    if partition.is_some_and(|only| only as usize != p) {
                        continue;
                    }
                    let reader = log.reader();
                    let offset = tokio::task::block_in_place(|| reader.offset_for_timestamp(ts))
                        .map_err(|e| BrokerError::new(ErrorKind::Storage, e.to_string()))?
                        .unwrap_or_else(|| reader.end_offset());
                    let seek = entry.handle.seek(Some(p as u32), SeekTo::Offset(offset));
                    moved.extend(seek.await.map_err(stopped)?);
                }
                return Ok(moved);
            }
        };
        entry.handle.seek(partition, to).await.map_err(stopped)
    }

    /// Moves up to `max` parked messages of a group's dead-letter topic
    /// back to the source topic (none with `dry_run`: only says which),
    /// at most `rate_per_sec` a second (0: unlimited).
    pub(super) async fn redrive(
        &self,
        topic: &str,
        group: &str,
        max: u64,
        dry_run: bool,
        rate_per_sec: u32,
    ) -> Result<Vec<Redriven>, BrokerError> {
        let groups = &self.groups;
        groups
            .redrive(&self.topics, topic, group, max, dry_run, rate_per_sec)
            .await
    }
}
