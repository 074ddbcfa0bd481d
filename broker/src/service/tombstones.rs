//! Deleted records: a durable set of (topic, partition, offset) that reads
//! by entry (the Redis listener's `XDEL`) skip. The log is append-only, so
//! a deleted record stays on disk until retention or a trim removes its
//! segment; Pigeon's own fetch and groups still see it.
//!
//! ## Storage
//!
//! Every deletion is one record appended to the broker's internal topic
//! `__deleted` (one partition, kept forever), made durable like any
//! record before the deletion is answered:
//!
//! | field | content |
//! | --- | --- |
//! | key | `<topic>/<partition>/<topic created_ms>` (ASCII): the topic's incarnation, so a topic deleted and created again starts with no deletions |
//! | value | the deleted offsets, each a u64 little-endian, 8 bytes |
//!
//! The set lives in memory, loaded from `__deleted` at the first use after
//! a start (one scan). Offsets below a partition's log start are dropped
//! as they are loaded.
//!
//! ## Crash story
//!
//! A deletion is in memory only after its record is durable (committed
//! under the broker's fsync policy); a crash before that loses the
//! deletion unanswered (the client saw no reply and retries), never
//! answers one that is not stored. After a crash the set is rebuilt from
//! the committed records of `__deleted`, which recovery has already cut
//! to a valid prefix.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use pigeon_protocol::batch::{BatchBuilder, ProducerStamp};
use tokio::sync::Mutex;

use super::{Broker, PartitionBatches};
use crate::error::{BrokerError, ErrorKind};
use crate::topics::NewTopic;

/// The internal topic holding deletions.
pub const DELETED_TOPIC: &str = "__deleted";

/// One partition of one incarnation of a topic.
type PartitionKey = (String, u32, i64);

/// The deleted records, by partition; `None` until loaded.
#[derive(Debug, Default)]
pub struct Tombstones {
    sets: Mutex<Option<HashMap<PartitionKey, BTreeSet<u64>>>>,
}

impl Broker {
    /// Deletes the records at `offsets` of `topic`/`partition` (for reads
    /// by entry); returns how many were not deleted already. Offsets
    /// outside the log count as not found.
    pub(super) async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offsets: &[u64],
    ) -> Result<u64, BrokerError> {
        let key = self.incarnation(topic, partition)?;
        let (start, end) = self.partition_bounds(topic, partition)?;
        let mut sets = self.tombstones.sets.lock().await;
        let sets = self.loaded(&mut sets).await?;
        let known = sets.get(&key);
        let mut fresh: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|o| (start..end).contains(o) && !known.is_some_and(|s| s.contains(o)))
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        if fresh.is_empty() {
            return Ok(0);
        }
        self.append_deletion(&key, &fresh).await?;
        sets.entry(key).or_default().extend(&fresh);
        Ok(fresh.len() as u64)
    }

    /// The deleted offsets of `topic`/`partition` in `from..to`.
    pub(super) async fn deleted_in(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        to: u64,
    ) -> Result<BTreeSet<u64>, BrokerError> {
        let key = self.incarnation(topic, partition)?;
        let mut sets = self.tombstones.sets.lock().await;
        let sets = self.loaded(&mut sets).await?;
        let found = sets
            .get(&key)
            .map(|s| s.range(from..to.max(from)).copied().collect());
        Ok(found.unwrap_or_default())
    }

    /// The key of the current incarnation of `topic`/`partition`.
    fn incarnation(&self, topic: &str, partition: u32) -> Result<PartitionKey, BrokerError> {
        let found = self.topic(topic)?;
        super::topics::partition_of(&found, partition)?;
        Ok((topic.to_owned(), partition, found.metadata.created_ms))
    }

    /// The deletion sets, loaded from `__deleted` on first use.
    async fn loaded<'a>(
        &self,
        sets: &'a mut Option<HashMap<PartitionKey, BTreeSet<u64>>>,
    ) -> Result<&'a mut HashMap<PartitionKey, BTreeSet<u64>>, BrokerError> {
        if sets.is_none() {
            *sets = Some(self.load_deletions()?);
        }
        Ok(sets.get_or_insert_with(HashMap::new))
    }

    /// Reads every deletion from `__deleted`.
    fn load_deletions(&self) -> Result<HashMap<PartitionKey, BTreeSet<u64>>, BrokerError> {
        let mut sets: HashMap<PartitionKey, BTreeSet<u64>> = HashMap::new();
        if self.topics.get(DELETED_TOPIC).is_none() {
            return Ok(sets);
        }
        let mut offset = 0;
        loop {
            let read = self.read_records(DELETED_TOPIC, 0, offset, 1 << 20)?;
            let Some(last) = read.records.last() else {
                break;
            };
            offset = last.offset + 1;
            for record in &read.records {
                if let Some((key, offsets)) = self.decode_deletion(record) {
                    sets.entry(key).or_default().extend(offsets);
                }
            }
        }
        Ok(sets)
    }

    /// A deletion record's partition and offsets, if that partition's
    /// incarnation still exists; offsets below its log start are dropped.
    fn decode_deletion(
        &self,
        record: &pigeon_protocol::batch::Record,
    ) -> Option<(PartitionKey, Vec<u64>)> {
        let key = std::str::from_utf8(record.key.as_deref()?).ok()?;
        let mut parts = key.rsplitn(3, '/');
        let created: i64 = parts.next()?.parse().ok()?;
        let partition: u32 = parts.next()?.parse().ok()?;
        let topic = parts.next()?;
        let current = self.incarnation(topic, partition).ok()?;
        if current.2 != created {
            return None;
        }
        let (start, _) = self.partition_bounds(topic, partition).ok()?;
        let offsets = record
            .value
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
            .filter(|o| *o >= start)
            .collect();
        Some((current, offsets))
    }

    /// Appends one deletion record and waits until it is durable.
    async fn append_deletion(
        &self,
        key: &PartitionKey,
        offsets: &[u64],
    ) -> Result<(), BrokerError> {
        if self.topics.get(DELETED_TOPIC).is_none() {
            let topic = NewTopic {
                name: DELETED_TOPIC.into(),
                partitions: 1,
                retention_ms: Some(0),
                retention_bytes: None,
            };
            match self.create_topic(topic).await {
                Err(e) if e.kind != ErrorKind::TopicExists => return Err(e),
                _ => {}
            }
        }
        let name = format!("{}/{}/{}", key.0, key.1, key.2);
        let value: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        let mut builder = BatchBuilder::new();
        builder.push(Some(name.as_bytes()), &value, &[]);
        let batch: Bytes = builder.build(ProducerStamp::NONE, 0);
        let part = PartitionBatches {
            partition: 0,
            batches: vec![batch],
        };
        let submitted = self
            .submit_produce(DELETED_TOPIC, vec![part], Duration::ZERO)
            .await?;
        let outcome = submitted.finish().await;
        for (_, result) in outcome.partitions {
            result?;
        }
        Ok(())
    }
}
