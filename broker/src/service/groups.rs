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
use crate::groups::redrive::{RedriveOptions, RedriveReport};

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

    /// Moves parked messages of a group's dead-letter topic back to the
    /// source topic as `options` say (a dry run only counts them), a page
    /// at a time under the group's own redrive turn; stops between pages
    /// when the broker shuts down (see `groups::redrive`).
    pub(super) async fn redrive(
        &self,
        topic: &str,
        group: &str,
        options: RedriveOptions,
    ) -> Result<RedriveReport, BrokerError> {
        let groups = &self.groups;
        groups
            .redrive(&self.topics, topic, group, options, &self.shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, RecordBatch};

    use super::*;
    use crate::config::{BrokerConfig, FileConfig};
    use crate::groups::redrive::{PAGE_MESSAGES, RedriveOutcome};
    use crate::io::StdFs;
    use crate::log::{FsyncPolicy, SystemClock};
    use crate::topics::NewTopic;

    async fn open(dir: &std::path::Path) -> Broker {
        let mut config = BrokerConfig::from_file_config(FileConfig::default()).expect("config");
        config.data_dir = dir.to_path_buf();
        config.log.fsync = FsyncPolicy::Never;
        Broker::open(config, Arc::new(StdFs), Arc::new(SystemClock))
            .await
            .expect("open")
    }

    /// Parks `count` copies of group `g` of topic `t` in its DLQ.
    async fn park(broker: &Broker, count: u64) {
        let dlq = broker.topics.get("t.g.dlq").expect("dlq");
        for i in 0..count {
            let mut b = BatchBuilder::new();
            let value = format!("parked {i}");
            b.push(
                None,
                value.as_bytes(),
                &[
                    ("pigeon.dlq.source-topic", b"t"),
                    ("pigeon.dlq.group", b"g"),
                ],
            );
            let batch =
                RecordBatch::validate(b.build(ProducerStamp::NONE, 0), usize::MAX).expect("batch");
            dlq.partitions[0].append(batch).await.expect("park");
        }
    }

    fn source_end(broker: &Broker) -> u64 {
        let source = broker.topics.get("t").expect("t");
        source.partitions[0].reader().end_offset()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_redrive_blocks_no_group_admin_and_stops_at_shutdown() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let broker = open(tmp.path()).await;
        let topic = NewTopic {
            name: "t".into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
        };
        broker.create_topic(topic).await.expect("topic");
        let settings = GroupSettings::default();
        broker
            .create_group("t", "g", settings)
            .await
            .expect("group");
        park(&broker, 300).await;
        // 10 a second: after its first page the redrive paces for 25 s.
        let slow = RedriveOptions {
            rate_per_sec: 10,
            ..RedriveOptions::default()
        };
        let meanwhile = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while source_end(&broker) < PAGE_MESSAGES {
                assert!(tokio::time::Instant::now() < deadline, "no page landed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let create = broker.create_group("t", "other", settings);
            tokio::time::timeout(Duration::from_secs(10), create)
                .await
                .expect("a group is created while a redrive runs")
                .expect("create");
            let describe = broker.describe_group("t", "g");
            tokio::time::timeout(Duration::from_secs(10), describe)
                .await
                .expect("the redriven group answers meanwhile")
                .expect("describe");
            broker.begin_shutdown();
            tokio::time::Instant::now()
        };
        let (report, shutdown_at) = tokio::join!(broker.redrive("t", "g", slow), meanwhile);
        assert!(
            shutdown_at.elapsed() < Duration::from_secs(10),
            "the shutdown ends the redrive at its next page"
        );
        let report = report.expect("redrive");
        assert_eq!(
            (report.moved(), report.outcome),
            (PAGE_MESSAGES, RedriveOutcome::Interrupted)
        );
        broker.close().await;
        drop(broker);

        let broker = open(tmp.path()).await;
        let rest = broker
            .redrive("t", "g", RedriveOptions::default())
            .await
            .expect("the rest");
        assert_eq!(
            (rest.moved(), rest.outcome),
            (300 - PAGE_MESSAGES, RedriveOutcome::Done)
        );
        assert_eq!(source_end(&broker), 300, "each parked message moved once");
        broker.close().await;
    }
}
