//! The per-resource metric families — one series per topic, partition or
//! group — rendered at each scrape from what exists at that moment
//! ([`ResourceSamples`], gathered by the service layer).
//!
//! They are not kept in the global recorder: a series exists exactly as
//! long as its topic, partition or group does, so deleting a topic or a
//! group removes its series from the next scrape, and a topic created
//! again under the same name starts from zero.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `pigeon_produce_records_total`, `pigeon_produce_bytes_total` | counter | `topic` |
//! | `pigeon_log_size_bytes`, `pigeon_log_segments`, `pigeon_log_start_offset`, `pigeon_log_end_offset` | gauge | `topic`, `partition` |
//! | `pigeon_partition_read_only` | gauge (1: the partition refuses appends) | `topic`, `partition` |
//! | `pigeon_log_fsync_seconds` | histogram | `topic`, `partition` |
//! | `pigeon_log_commit_batch_records` | histogram | `topic`, `partition` |
//! | `pigeon_append_stage_seconds` | histogram, summed over every partition (per partition it would be 4 × 33 lines each) | `stage` (`queued`, `write`, `fsync`, `wake`: see [`Stage`]) |
//! | `pigeon_group_lag_messages`, `pigeon_group_in_flight_messages`, `pigeon_group_delayed_messages` | gauge | `topic`, `partition`, `group` |
//! | `pigeon_group_oldest_unacked_age_seconds` | gauge | `topic`, `partition`, `group` |
//! | `pigeon_group_dead_lettered_total`, `pigeon_group_removed_by_retention_total`, `pigeon_group_acks_total` | counter | `topic`, `partition`, `group` |
//! | `pigeon_group_redeliveries_total` | counter | `topic`, `partition`, `group`, `cause` (`nack`, `lease_expired`, `consumer_gone`) |
//!
//! A family with no series (no topic yet) is left out of the output.

use std::collections::BTreeMap;
use std::time::Duration;

use super::text::{self, Kind};
use crate::delivery::engine::PartitionFigures;
use crate::delivery::stats::RedeliveryCause;
use crate::log::stats::{HistogramSnapshot, Stage};

/// What one partition of a topic shows at a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSample {
    /// The topic.
    pub topic: String,
    /// The partition id.
    pub partition: u32,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// First offset stored.
    pub start_offset: u64,
    /// The offset the next record gets.
    pub end_offset: u64,
    /// Whether the partition refuses appends (a failed fsync or seal).
    pub read_only: bool,
    /// Records appended since the broker started.
    pub appended_records: u64,
    /// Bytes of record batches appended since the broker started.
    pub appended_bytes: u64,
    /// Duration of each fsync, in nanoseconds.
    pub fsync_ns: HistogramSnapshot,
    /// Records per commit group.
    pub commit_records: HistogramSnapshot,
    /// Each append's time per [`Stage`], in nanoseconds, in
    /// [`Stage::ALL`]'s order.
    pub stages: [HistogramSnapshot; 4],
}

/// What one group shows in one partition of its topic at a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSample {
    /// The group's topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// The partition id.
    pub partition: u32,
    /// The engine's figures for the partition.
    pub figures: PartitionFigures,
    /// Age of the oldest message not settled (zero when none).
    pub oldest_unacked_age: Duration,
}

/// Everything the per-resource families show at one scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSamples {
    /// Every partition of every topic, by topic then partition.
    pub partitions: Vec<PartitionSample>,
    /// Every partition of every group that answered, by topic, group, then
    /// partition.
    pub groups: Vec<GroupSample>,
}

type PartitionValue = fn(&PartitionSample) -> f64;
/// A topic's `(records, bytes)` appended → one of them.
type TopicValue = fn(&(u64, u64)) -> u64;
type GroupValue = fn(&GroupSample) -> f64;

/// The plain per-partition families: name, type, help, value.
const PARTITION_FAMILIES: &[(&str, Kind, &str, PartitionValue)] = &[
    (
        "pigeon_log_size_bytes",
        Kind::Gauge,
        "Bytes stored in a partition's log.",
        |p| p.size_bytes as f64,
    ),
    (
        "pigeon_log_segments",
        Kind::Gauge,
        "Segment files of a partition's log.",
        |p| p.segments as f64,
    ),
    (
        "pigeon_log_start_offset",
        Kind::Gauge,
        "First offset still stored in a partition.",
        |p| p.start_offset as f64,
    ),
    (
        "pigeon_log_end_offset",
        Kind::Gauge,
        "The offset the next record of a partition gets.",
        |p| p.end_offset as f64,
    ),
    (
        "pigeon_partition_read_only",
        Kind::Gauge,
        "1 when the partition refuses appends (a failed fsync or seal; until restart), else 0.",
        |p| if p.read_only { 1.0 } else { 0.0 },
    ),
];

/// The plain per-group-partition families: name, type, help, value.
const GROUP_FAMILIES: &[(&str, Kind, &str, GroupValue)] = &[
    (
        "pigeon_group_lag_messages",
        Kind::Gauge,
        "Messages of a partition the group has not settled.",
        |g| g.figures.lag as f64,
    ),
    (
        "pigeon_group_in_flight_messages",
        Kind::Gauge,
        "Messages of a partition leased to the group's consumers now.",
        |g| g.figures.in_flight as f64,
    ),
    (
        "pigeon_group_delayed_messages",
        Kind::Gauge,
        "Messages of a partition waiting for their redelivery in the group.",
        |g| g.figures.delayed as f64,
    ),
    (
        "pigeon_group_oldest_unacked_age_seconds",
        Kind::Gauge,
        "Age (since it was appended) of the oldest message of a partition the group has not settled; 0 when none.",
        |g| g.oldest_unacked_age.as_secs_f64(),
    ),
    (
        "pigeon_group_acks_total",
        Kind::Counter,
        "Messages of a partition the group's consumers acked, since the group's engine started.",
        |g| g.figures.stats.acks as f64,
    ),
    (
        "pigeon_group_dead_lettered_total",
        Kind::Counter,
        "Messages of a partition the group parked in its dead-letter topic.",
        |g| g.figures.dead_lettered as f64,
    ),
    (
        "pigeon_group_removed_by_retention_total",
        Kind::Counter,
        "Messages of a partition removed by retention before the group settled them.",
        |g| g.figures.removed_by_retention as f64,
    ),
];

/// Appends every per-resource family with at least one series to `out`.
pub fn render(samples: &ResourceSamples, out: &mut String) {
    render_topics(&samples.partitions, out);
    render_partitions(&samples.partitions, out);
    render_stages(&samples.partitions, out);
    render_groups(&samples.groups, out);
}

/// `pigeon_append_stage_seconds`: each stage's histogram summed over the
/// partitions.
fn render_stages(partitions: &[PartitionSample], out: &mut String) {
    let Some(first) = partitions.first() else {
        return;
    };
    let name = "pigeon_append_stage_seconds";
    text::family(
        out,
        name,
        Kind::Histogram,
        "Where each append to a partition's log spent its time, in seconds, by stage: queued (waiting for the writer), write (the group's staging and write), fsync (the group's commit: its fdatasync under fsync=always), wake (from the commit until the waiting request ran again). One observation per append, over every partition.",
    );
    for (i, stage) in Stage::ALL.into_iter().enumerate() {
        let mut sum = first.stages[i].clone();
        for p in &partitions[1..] {
            sum.merge(&p.stages[i]);
        }
        text::histogram(out, name, &[("stage", stage.label())], &sum, 1e9);
    }
}

/// The per-topic counters: sums over the topic's partitions.
fn render_topics(partitions: &[PartitionSample], out: &mut String) {
    if partitions.is_empty() {
        return;
    }
    let mut topics: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for p in partitions {
        let sums = topics.entry(&p.topic).or_default();
        sums.0 += p.appended_records;
        sums.1 += p.appended_bytes;
    }
    let counters: [(&str, &str, TopicValue); 2] = [
        (
            "pigeon_produce_records_total",
            "Records appended to a topic since the broker started (produced, dead-lettered or redriven; a retried batch already stored is not counted again).",
            |s| s.0,
        ),
        (
            "pigeon_produce_bytes_total",
            "Record batch bytes appended to a topic since the broker started.",
            |s| s.1,
        ),
    ];
    for (name, help, value) in counters {
        text::family(out, name, Kind::Counter, help);
        for (topic, sums) in &topics {
            text::sample(out, name, &[("topic", topic)], value(sums) as f64);
        }
    }
}

fn render_partitions(partitions: &[PartitionSample], out: &mut String) {
    if partitions.is_empty() {
        return;
    }
    let ids: Vec<String> = partitions.iter().map(|p| p.partition.to_string()).collect();
    let labels = |i: usize| {
        [
            ("topic", partitions[i].topic.as_str()),
            ("partition", ids[i].as_str()),
        ]
    };
    for (name, kind, help, value) in PARTITION_FAMILIES {
        text::family(out, name, *kind, help);
        for (i, p) in partitions.iter().enumerate() {
            text::sample(out, name, &labels(i), value(p));
        }
    }
    let fsync = "pigeon_log_fsync_seconds";
    text::family(
        out,
        fsync,
        Kind::Histogram,
        "Duration of each fdatasync of a partition's active segment, in seconds.",
    );
    for (i, p) in partitions.iter().enumerate() {
        text::histogram(out, fsync, &labels(i), &p.fsync_ns, 1e9);
    }
    let batch = "pigeon_log_commit_batch_records";
    text::family(
        out,
        batch,
        Kind::Histogram,
        "Records made durable by each group commit of a partition (written, under fsync=interval or never).",
    );
    for (i, p) in partitions.iter().enumerate() {
        text::histogram(out, batch, &labels(i), &p.commit_records, 1.0);
    }
}

fn render_groups(groups: &[GroupSample], out: &mut String) {
    if groups.is_empty() {
        return;
    }
    let ids: Vec<String> = groups.iter().map(|g| g.partition.to_string()).collect();
    let labels = |i: usize| {
        [
            ("topic", groups[i].topic.as_str()),
            ("partition", ids[i].as_str()),
            ("group", groups[i].group.as_str()),
        ]
    };
    for (name, kind, help, value) in GROUP_FAMILIES {
        text::family(out, name, *kind, help);
        for (i, g) in groups.iter().enumerate() {
            text::sample(out, name, &labels(i), value(g));
        }
    }
    let name = "pigeon_group_redeliveries_total";
    text::family(
        out,
        name,
        Kind::Counter,
        "Messages of a partition sent back for another delivery, by cause (nack, lease_expired, consumer_gone), since the group's engine started.",
    );
    for (i, g) in groups.iter().enumerate() {
        let [topic, partition, group] = labels(i);
        for cause in RedeliveryCause::ALL {
            let labels = [topic, partition, group, ("cause", cause.label())];
            let value = g.figures.stats.redeliveries(cause);
            text::sample(out, name, &labels, value as f64);
        }
    }
}
