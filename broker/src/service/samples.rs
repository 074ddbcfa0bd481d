//! Metric samples: what the per-resource `/metrics` families show, gathered
//! at a scrape from the topics that exist and the engines of the groups
//! that exist (see [`crate::metrics::scrape`], which renders them).
//!
//! Gathering reads only: the logs' readers and counters, and each group's
//! `describe` (which every engine answers between its other commands). The
//! groups are asked all at once, each within [`GROUP_ANSWER`]; a group
//! that does not answer in time is left out of that scrape (its series
//! reappear at the next), so a scrape takes about a second at worst.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pigeon_protocol::batch::records_of_batches;

use super::Broker;
use crate::delivery::engine::PartitionFigures;
use crate::log::stats::Stage;
use crate::metrics::scrape::{GroupSample, PartitionSample, ResourceSamples};
use crate::topics::Topic;

/// How long a scrape waits for one group's engine.
const GROUP_ANSWER: Duration = Duration::from_secs(1);

impl Broker {
    /// What every topic, partition and group shows now.
    pub async fn metric_samples(&self) -> ResourceSamples {
        let mut partitions = Vec::new();
        for topic in self.topics.list() {
            for (id, log) in topic.partitions.iter().enumerate() {
                let reader = log.reader();
                let stats = reader.stats();
                partitions.push(PartitionSample {
                    topic: topic.metadata.name.clone(),
                    partition: id as u32,
                    size_bytes: reader.size_bytes(),
                    segments: reader.segment_count() as u64,
                    start_offset: reader.start_offset(),
                    end_offset: reader.end_offset(),
                    read_only: reader.read_only().is_some(),
                    appended_records: stats.appended_records(),
                    appended_bytes: stats.appended_bytes(),
                    fsync_ns: stats.fsync_ns.snapshot(),
                    commit_records: stats.commit_records.snapshot(),
                    stages: Stage::ALL.map(|stage| stats.stages.snapshot(stage)),
                });
            }
        }
        let asks = self
            .groups
            .list()
            .into_iter()
            .map(|(topic, group, entry)| async move {
                let asked = tokio::time::timeout(GROUP_ANSWER, entry.handle.describe()).await;
                let figures = match asked {
                    Ok(Ok((_, figures))) => figures,
                    _ => Vec::new(),
                };
                (topic, group, figures)
            });
        let answers = futures_util::future::join_all(asks).await;
        // The oldest unsettled messages' times are read from the logs.
        let groups = tokio::task::block_in_place(|| self.group_samples(answers));
        ResourceSamples { partitions, groups }
    }

    /// One sample per answered group and partition, with the age of its
    /// oldest unsettled message.
    fn group_samples(
        &self,
        answers: Vec<(String, String, Vec<PartitionFigures>)>,
    ) -> Vec<GroupSample> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut samples = Vec::new();
        for (topic, group, figures) in answers {
            let source = self.topics.get(&topic);
            for (p, f) in figures.into_iter().enumerate() {
                let appended = source
                    .as_deref()
                    .and_then(|t| first_unsettled_time(t, p, &f));
                let age_ms = appended.map_or(0, |ms| now_ms.saturating_sub(ms).max(0));
                samples.push(GroupSample {
                    topic: topic.clone(),
                    group: group.clone(),
                    partition: p as u32,
                    figures: f,
                    oldest_unacked_age: Duration::from_millis(age_ms as u64),
                });
            }
        }
        samples
    }
}

/// When the group's oldest unsettled message of partition `p` (the one at
/// its committed floor) was appended; `None` when every message up to the
/// log end is settled, or it cannot be read (it was just deleted by
/// retention).
fn first_unsettled_time(topic: &Topic, p: usize, figures: &PartitionFigures) -> Option<i64> {
    let offset = figures.committed_floor;
    if offset >= figures.log_end {
        return None;
    }
    let read = topic.partitions.get(p)?.reader().read(offset, 1).ok()?;
    records_of_batches(read.bytes)
        .map_while(Result::ok)
        .find(|r| r.offset == offset)
        .map(|r| r.timestamp)
}
