//! [`DlqSink`]: writes dead-letter copies to `<topic>.<group>.dlq`, the
//! partition with the source's number, as ordinary records: the source
//! record's key, value and headers, plus these headers:
//!
//! | header | value |
//! | --- | --- |
//! | `pigeon.dlq.source-topic` | source topic |
//! | `pigeon.dlq.source-partition` | source partition (decimal) |
//! | `pigeon.dlq.source-offset` | source offset (decimal) |
//! | `pigeon.dlq.source-timestamp` | source append time, ms (decimal) |
//! | `pigeon.dlq.group` | the group |
//! | `pigeon.dlq.attempts` | deliveries it had (decimal) |
//! | `pigeon.dlq.reason` | `max-deliveries` or `rejected` |
//! | `pigeon.dlq.reason-text` | the consumer's reason (rejections) |
//! | `pigeon.dlq.first-delivery-ms` | its first delivery to the group, ms (decimal, to the second) |
//! | `pigeon.dlq.last-delivery-ms` | its last delivery to the group, ms (decimal, to the second) |
//! | `pigeon.dlq.dead-lettered-ms` | when it was parked, ms (decimal) |
//!
//! The delivery times are kept to the second by the state machine (see
//! `delivery::partition`); they are left out when unknown (a lease
//! recovered from state written by an older version).
//!
//! [`find_parked`] finds the copy of a source message again (for `pigeon
//! message show`), searching the DLQ partition from the source record's
//! append time on: a copy is always appended after its source.
//!
//! Writing twice parks once: before writing, the tail of the DLQ partition
//! is searched for a copy of the same source offset (after a crash, the
//! copies whose settlement was not journaled yet are the last ones written).

use std::sync::Arc;

use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, Record, RecordBatch};

use super::source::read_records;
use crate::delivery::engine::DeadLetterSink;
use crate::delivery::{DeadLetter, DeadLetterReason};
use crate::topics::Topic;

/// How many of the DLQ partition's last records are searched for a copy.
const LOOK_BACK: u64 = 512;

/// How many DLQ records [`find_parked`] reads at most.
pub const FIND_LIMIT: u64 = 100_000;

/// Writes one group's dead letters.
pub struct DlqSink {
    /// The dead-letter topic.
    pub dlq: Arc<Topic>,
    /// The source topic's name.
    pub source_topic: String,
    /// The group's name.
    pub group: String,
}

/// The DLQ topic's name for a group.
pub fn dlq_topic(topic: &str, group: &str) -> String {
    format!("{topic}.{group}.dlq")
}

impl DlqSink {
    fn already_parked(&self, partition: usize, offset: u64) -> bool {
        let Some(log) = self.dlq.partitions.get(partition) else {
            return false;
        };
        let reader = log.reader();
        let end = reader.end_offset();
        let from = end.saturating_sub(LOOK_BACK).max(reader.start_offset());
        let offsets: Vec<u64> = (from..end).collect();
        read_records(reader, &offsets)
            .iter()
            .any(|r| is_copy_of(r, offset))
    }
}

/// Whether DLQ record `record` is the copy of source offset `offset` (of
/// the partition with the DLQ partition's number).
fn is_copy_of(record: &Record, offset: u64) -> bool {
    let wanted = offset.to_string();
    record
        .headers
        .iter()
        .any(|h| h.name == "pigeon.dlq.source-offset" && h.value.as_ref() == wanted.as_bytes())
}

/// The dead-letter copy of source `offset` in partition `partition` of the
/// DLQ topic `dlq`, searching from the first DLQ record appended at or after
/// `source_timestamp` (the source record's append time), at most
/// [`FIND_LIMIT`] records. `None` if not found there (never parked, or
/// removed by the DLQ topic's retention).
pub fn find_parked(
    dlq: &Topic,
    partition: usize,
    offset: u64,
    source_timestamp: i64,
) -> Option<Record> {
    let reader = dlq.partitions.get(partition)?.reader();
    let mut from = reader.offset_for_timestamp(source_timestamp).ok()??;
    let end = reader.end_offset().min(from.saturating_add(FIND_LIMIT));
    while from < end {
        let to = end.min(from + 4096);
        let offsets: Vec<u64> = (from..to).collect();
        if let Some(found) = read_records(reader, &offsets)
            .into_iter()
            .find(|r| is_copy_of(r, offset))
        {
            return Some(found);
        }
        from = to;
    }
    None
}

/// The value of header `name` of `record` (the last of that name), as text.
pub fn header_text<'r>(record: &'r Record, name: &str) -> Option<&'r str> {
    record
        .header(name)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl DeadLetterSink for DlqSink {
    async fn write(
        &self,
        partition: usize,
        dead: &DeadLetter,
        record: &Record,
    ) -> Result<(), String> {
        if self.already_parked(partition, dead.offset) {
            return Ok(());
        }
        let log = self
            .dlq
            .partitions
            .get(partition)
            .ok_or_else(|| format!("DLQ topic has no partition {partition}"))?;
        let (reason, text) = match &dead.reason {
            DeadLetterReason::MaxDeliveries => ("max-deliveries", ""),
            DeadLetterReason::Rejected(text) => ("rejected", text.as_str()),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let first = dead.times.first_ms().map(|ms| ms.to_string());
        let last = dead.times.last_ms().map(|ms| ms.to_string());
        let mut added = vec![
            ("pigeon.dlq.source-topic", self.source_topic.clone()),
            ("pigeon.dlq.source-partition", partition.to_string()),
            ("pigeon.dlq.source-offset", dead.offset.to_string()),
            ("pigeon.dlq.source-timestamp", record.timestamp.to_string()),
            ("pigeon.dlq.group", self.group.clone()),
            ("pigeon.dlq.attempts", dead.attempts.to_string()),
            ("pigeon.dlq.reason", reason.to_owned()),
            ("pigeon.dlq.reason-text", text.to_owned()),
        ];
        added.extend(first.map(|v| ("pigeon.dlq.first-delivery-ms", v)));
        added.extend(last.map(|v| ("pigeon.dlq.last-delivery-ms", v)));
        added.push(("pigeon.dlq.dead-lettered-ms", now.to_string()));
        let mut headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_ref()))
            .collect();
        headers.extend(added.iter().map(|(n, v)| (*n, v.as_bytes())));
        let mut builder = BatchBuilder::new();
        builder.push(record.key.as_deref(), &record.value, &headers);
        let batch = RecordBatch::validate(builder.build(ProducerStamp::NONE, 0), usize::MAX)
            .map_err(|e| e.to_string())?;
        log.append(batch)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
