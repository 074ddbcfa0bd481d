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
//! | `pigeon.dlq.dead-lettered-ms` | when it was parked, ms (decimal) |
//!
//! Writing twice parks once: before writing, the tail of the DLQ partition
//! is searched for a copy of the same source offset (after a crash, the
//! copies whose settlement was not journaled yet are the last ones written).

use std::sync::Arc;

use pigeon_client::batch::{BatchBuilder, ProducerStamp, Record, RecordBatch};

use super::source::read_records;
use crate::delivery::engine::DeadLetterSink;
use crate::delivery::{DeadLetter, DeadLetterReason};
use crate::topics::Topic;

/// How many of the DLQ partition's last records are searched for a copy.
const LOOK_BACK: u64 = 512;

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
        let wanted = offset.to_string();
        read_records(reader, &offsets).iter().any(|r| {
            r.headers.iter().any(|h| {
                h.name == "pigeon.dlq.source-offset" && h.value.as_ref() == wanted.as_bytes()
            })
        })
    }
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
        let added = [
            ("pigeon.dlq.source-topic", self.source_topic.clone()),
            ("pigeon.dlq.source-partition", partition.to_string()),
            ("pigeon.dlq.source-offset", dead.offset.to_string()),
            ("pigeon.dlq.source-timestamp", record.timestamp.to_string()),
            ("pigeon.dlq.group", self.group.clone()),
            ("pigeon.dlq.attempts", dead.attempts.to_string()),
            ("pigeon.dlq.reason", reason.to_owned()),
            ("pigeon.dlq.reason-text", text.to_owned()),
            ("pigeon.dlq.dead-lettered-ms", now.to_string()),
        ];
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
