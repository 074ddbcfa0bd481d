//! [`DlqSink`]: writes dead-letter copies to `<topic>.<group>.dlq`, the
//! partition with the source's number, as ordinary records: the source
//! record's key, value and headers, plus these headers:
//!
//! | header | value |
//! | --- | --- |
//! | `pigeon.dlq.source-topic` | source topic |
//! | `pigeon.dlq.source-topic-created-ms` | the source topic's creation time, ms (decimal): which topic of that name |
//! | `pigeon.dlq.source-partition` | source partition (decimal) |
//! | `pigeon.dlq.source-offset` | source offset (decimal) |
//! | `pigeon.dlq.source-timestamp` | source append time, ms (decimal) |
//! | `pigeon.dlq.group` | the group |
//! | `pigeon.dlq.group-created-ms` | the group's creation time (`created_ms` of its `group.json`), ms (decimal): which group of that name |
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
//! ## Identity of a copy
//!
//! A copy belongs to one message of one group *incarnation*: the source
//! topic and its creation time, the partition and offset, the group and its
//! creation time ([`DlqIdentity`] plus the coordinates). A topic deleted and
//! created again, or a group deleted and created again, is another
//! incarnation whose offsets start over, and a DLQ topic can hold copies of
//! several groups (`a.b` + `c` and `a` + `b.c` both name `a.b.c.dlq`; anyone
//! may produce into it), so "already parked?" matches on all of it.
//!
//! ## Already parked?
//!
//! [`DeadLetterSink::parked`] looks for copies from each dead letter's
//! `dlq_from` on — the DLQ partition's end offset recorded in the journal
//! when the dead-lettering started (a copy is appended after that moment,
//! and a DLQ partition only grows) — to the partition's end, a page of
//! about 1 MiB at a time, one scan for a whole batch of dead letters. A
//! dead letter journaled before `dlq_from` was kept (an upgrade) has no
//! offset: its copy is looked for in the partition's last 512 records, as
//! before, and a copy without the incarnation headers (written by that
//! older version) counts.
//!
//! [`find_parked`] finds the copy of a source message again (for `pigeon
//! message show`), from the source record's append time on (a copy is
//! always appended after its source), reading at most [`FIND_LIMIT`]
//! records and about [`FIND_MAX_BYTES`] bytes, so that one request costs
//! bounded I/O; a search stopped by a bound says where it stopped
//! ([`Parked::NotSearched`]). Copies written before the incarnation
//! headers existed match on the rest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pigeon_protocol::batch::{BatchBuilder, ProducerStamp, Record, RecordBatch};

use super::source::{blocking, scan, scan_at_most};
use crate::delivery::engine::DeadLetterSink;
use crate::delivery::{DeadLetter, DeadLetterReason};
use crate::topics::Topic;

/// How many of the DLQ partition's last records are searched for the copy
/// of a dead letter that has no recorded `dlq_from` (state of an older
/// version).
const LEGACY_LOOK_BACK: u64 = 512;

/// How many DLQ records [`find_parked`] reads at most.
pub const FIND_LIMIT: u64 = 100_000;

/// How many bytes of the DLQ partition [`find_parked`] reads at most (one
/// batch may pass it): one `message show` costs at most this much I/O.
pub const FIND_MAX_BYTES: usize = 4 << 20;

/// Bytes read per step of a search.
const SEARCH_PAGE_BYTES: usize = 1 << 20;

/// Whose dead letters a copy holds: the group and its source topic, each
/// with its creation time (a group or topic deleted and created again
/// under the same name is another incarnation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqIdentity {
    /// The source topic's name.
    pub source_topic: String,
    /// The source topic's creation time, ms (its `topic.json`).
    pub topic_created_ms: i64,
    /// The group's name.
    pub group: String,
    /// The group's creation time, ms (its `group.json`).
    pub group_created_ms: i64,
}

/// Writes one group's dead letters.
pub struct DlqSink {
    /// The dead-letter topic.
    dlq: Arc<Topic>,
    /// Whose copies it writes.
    identity: DlqIdentity,
}

/// The DLQ topic's name for a group.
pub fn dlq_topic(topic: &str, group: &str) -> String {
    format!("{topic}.{group}.dlq")
}

/// How strictly a copy's incarnation headers must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// Both incarnation headers present and equal.
    Exact,
    /// Equal, or absent (a copy written before they existed).
    AllowLegacy,
}

impl DlqIdentity {
    /// Whether DLQ record `record` is a copy of source `partition`@`offset`
    /// for this identity. Every header is compared as the sink writes it.
    fn is_copy(&self, record: &Record, partition: usize, offset: u64, strict: Match) -> bool {
        self.copy_of(record, partition, strict) == Some(offset)
    }

    /// The source offset `record` is a copy of, when it is a copy for this
    /// identity of source partition `partition`.
    fn copy_of(&self, record: &Record, partition: usize, strict: Match) -> Option<u64> {
        let text = |name: &str| header_text(record, name);
        let same = |name: &str, value: &str| text(name) == Some(value);
        if !same("pigeon.dlq.source-topic", &self.source_topic)
            || !same("pigeon.dlq.group", &self.group)
            || !same("pigeon.dlq.source-partition", &partition.to_string())
        {
            return None;
        }
        let incarnation = |name: &str, value: i64| match text(name) {
            Some(found) => found == value.to_string(),
            None => strict == Match::AllowLegacy,
        };
        if !incarnation("pigeon.dlq.source-topic-created-ms", self.topic_created_ms)
            || !incarnation("pigeon.dlq.group-created-ms", self.group_created_ms)
        {
            return None;
        }
        text("pigeon.dlq.source-offset")?.parse().ok()
    }
}

impl DlqSink {
    /// A sink writing `identity`'s copies into `dlq`.
    pub fn new(dlq: Arc<Topic>, identity: DlqIdentity) -> DlqSink {
        DlqSink { dlq, identity }
    }

    /// The copies of `dead` found in DLQ partition `partition` (see the
    /// module's "Already parked?").
    fn search(&self, partition: usize, dead: &[DeadLetter]) -> Result<HashSet<u64>, String> {
        let Some(log) = self.dlq.partitions.get(partition) else {
            return Ok(HashSet::new());
        };
        let reader = log.reader();
        let end = reader.end_offset();
        let legacy_from = end.saturating_sub(LEGACY_LOOK_BACK);
        let from_of = |d: &DeadLetter| d.dlq_from.unwrap_or(legacy_from);
        let Some(from) = dead.iter().map(from_of).min() else {
            return Ok(HashSet::new());
        };
        let wanted: HashSet<u64> = dead.iter().map(|d| d.offset).collect();
        // Source offset → (DLQ offset, exact match) of each copy found.
        let mut found: HashMap<u64, Vec<(u64, bool)>> = HashMap::new();
        scan(reader, from, end, SEARCH_PAGE_BYTES, |record| {
            let id = &self.identity;
            if let Some(offset) = id.copy_of(&record, partition, Match::AllowLegacy)
                && wanted.contains(&offset)
            {
                let exact = id.is_copy(&record, partition, offset, Match::Exact);
                found
                    .entry(offset)
                    .or_default()
                    .push((record.offset, exact));
            }
            true
        })
        .map_err(|e| {
            format!(
                "searching partition {partition} of the dead-letter topic {} for copies: {e}",
                self.dlq.metadata.name
            )
        })?;
        let parked = dead.iter().filter(|d| {
            let copies = found.get(&d.offset).map_or(&[][..], Vec::as_slice);
            copies
                .iter()
                .any(|(at, exact)| *at >= from_of(d) && (*exact || d.dlq_from.is_none()))
        });
        Ok(parked.map(|d| d.offset).collect())
    }

    /// The headers a copy of `record` (dead letter `dead` of source
    /// partition `partition`) adds to the record's own.
    fn added_headers(
        &self,
        partition: usize,
        dead: &DeadLetter,
        record: &Record,
    ) -> Vec<(&'static str, String)> {
        let (reason, text) = match &dead.reason {
            DeadLetterReason::MaxDeliveries => ("max-deliveries", ""),
            DeadLetterReason::Rejected(text) => ("rejected", text.as_str()),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let id = &self.identity;
        let mut added = vec![
            ("pigeon.dlq.source-topic", id.source_topic.clone()),
            (
                "pigeon.dlq.source-topic-created-ms",
                id.topic_created_ms.to_string(),
            ),
            ("pigeon.dlq.source-partition", partition.to_string()),
            ("pigeon.dlq.source-offset", dead.offset.to_string()),
            ("pigeon.dlq.source-timestamp", record.timestamp.to_string()),
            ("pigeon.dlq.group", id.group.clone()),
            (
                "pigeon.dlq.group-created-ms",
                id.group_created_ms.to_string(),
            ),
            ("pigeon.dlq.attempts", dead.attempts.to_string()),
            ("pigeon.dlq.reason", reason.to_owned()),
            ("pigeon.dlq.reason-text", text.to_owned()),
        ];
        let first = dead.times.first_ms().map(|ms| ms.to_string());
        let last = dead.times.last_ms().map(|ms| ms.to_string());
        added.extend(first.map(|v| ("pigeon.dlq.first-delivery-ms", v)));
        added.extend(last.map(|v| ("pigeon.dlq.last-delivery-ms", v)));
        added.push(("pigeon.dlq.dead-lettered-ms", now.to_string()));
        added
    }
}

/// What [`find_parked`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Parked {
    /// The copy.
    Found(Record),
    /// No copy in the whole range where it could be (never parked, or
    /// removed by the DLQ topic's retention).
    Absent,
    /// No copy in what the search's bounds let it read: it may be further.
    NotSearched {
        /// The DLQ offset the search began at.
        from: u64,
        /// The first DLQ offset it did not read.
        next: u64,
        /// Bytes it read.
        bytes: usize,
    },
}

/// The dead-letter copy of source `offset` in partition `partition`, for
/// `identity`, in the DLQ topic `dlq`, searching from the first DLQ record
/// appended at or after `source_timestamp` (the source record's append
/// time), reading at most [`FIND_LIMIT`] records and about
/// [`FIND_MAX_BYTES`] bytes: a search that hits a bound without finding
/// the copy says where it stopped.
pub fn find_parked(
    dlq: &Topic,
    identity: &DlqIdentity,
    partition: usize,
    offset: u64,
    source_timestamp: i64,
) -> Parked {
    let Some(log) = dlq.partitions.get(partition) else {
        return Parked::Absent;
    };
    let reader = log.reader();
    let Ok(Some(from)) = reader.offset_for_timestamp(source_timestamp) else {
        return Parked::Absent;
    };
    let log_end = reader.end_offset();
    let end = log_end.min(from.saturating_add(FIND_LIMIT));
    let mut found = None;
    let scanned = scan_at_most(
        reader,
        from,
        end,
        SEARCH_PAGE_BYTES,
        FIND_MAX_BYTES,
        |record| {
            if identity.is_copy(&record, partition, offset, Match::AllowLegacy) {
                found = Some(record);
                return false;
            }
            true
        },
    );
    match (found, scanned) {
        (Some(record), _) => Parked::Found(record),
        (None, Ok(scanned)) => match scanned.stopped_at {
            Some(next) => Parked::NotSearched {
                from,
                next,
                bytes: scanned.bytes,
            },
            None if end < log_end => Parked::NotSearched {
                from,
                next: end,
                bytes: scanned.bytes,
            },
            None => Parked::Absent,
        },
        (None, Err(e)) => {
            tracing::warn!(dlq = %dlq.metadata.name, partition, error = %e, "cannot search the dead-letter topic");
            Parked::Absent
        }
    }
}

/// The value of header `name` of `record` (the last of that name), as text.
pub fn header_text<'r>(record: &'r Record, name: &str) -> Option<&'r str> {
    record
        .header(name)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl DeadLetterSink for DlqSink {
    fn end_offset(&self, partition: usize) -> u64 {
        self.dlq
            .partitions
            .get(partition)
            .map_or(0, |log| log.reader().end_offset())
    }

    fn parked(&self, partition: usize, dead: &[DeadLetter]) -> Result<HashSet<u64>, String> {
        blocking(|| self.search(partition, dead))
    }

    async fn write(
        &self,
        partition: usize,
        dead: &DeadLetter,
        record: &Record,
    ) -> Result<(), String> {
        let log = self.dlq.partitions.get(partition).ok_or_else(|| {
            format!(
                "the dead-letter topic {} has no partition {partition}",
                self.dlq.metadata.name
            )
        })?;
        let added = self.added_headers(partition, dead, record);
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

pub mod adopt;
#[cfg(test)]
mod tests;
