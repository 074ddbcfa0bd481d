//! What the group commands share: how a key names a group's stream
//! ([`GroupStream`]), the settings and members of Redis groups, and entry
//! IDs ↔ offsets within one partition.
//!
//! A Pigeon group covers a whole topic, and its partitions are shared by
//! its consumers. A Redis key names either the whole topic (`orders`) or
//! one partition (`orders#2`); entry IDs are per partition. So:
//!
//! | command | `orders` (topic of one partition) | `orders` (several partitions) | `orders#2` |
//! | --- | --- | --- | --- |
//! | `XGROUP CREATE`, `DESTROY`, `CREATECONSUMER`, `DELCONSUMER` | the group | the group | refused: a group covers the whole topic |
//! | `XGROUP SETID` | the group | every partition (the ID applied in each) | partition 2 only |
//! | `XREADGROUP … >` | the group | the group: entries of every partition, each answered under its partition's key `orders#<p>` | refused (partitions are shared, new entries cannot be asked of one), unless the topic has one partition |
//! | `XREADGROUP … <id>` (history) | the consumer's pending entries | per partition `orders#<p>`, the ID applied in each | partition 2's |
//! | `XACK`, `XPENDING`, `XCLAIM`, `XAUTOCLAIM` | partition 0 | refused, naming the keys `orders#0` … | partition 2 |
//! | `XINFO GROUPS`, `XINFO CONSUMERS` | the group | summed over the partitions | partition 2's figures |
//!
//! Invariant: an entry answered under key `k` is acked, claimed and listed
//! as pending under the same `k`, so a client that acks with the key its
//! read answered (every client's usual loop) acks the right partition.

use std::time::Duration;

use bytes::Bytes;

use super::super::keyspace::{StreamKey, bad_key};
use super::super::reply::Reply;
use super::super::stream::entry::id_of;
use super::super::stream::ids::StreamId;
use super::super::stream::read::StreamPart;
use super::streams::entry_reply;
use crate::delivery::GroupSettings;
use crate::error::BrokerError;
use crate::service::{Checked, MemberOwner};

/// Settings of a group made with `XGROUP CREATE`: no automatic lease
/// expiry in practice (the longest ack timeout Pigeon's protocol can
/// state, 2^32 − 1 ms ≈ 49.7 days), no dead-lettering (a message is never
/// parked for its delivery count), no cap on entries pending per consumer.
pub fn redis_settings() -> GroupSettings {
    GroupSettings {
        ack_timeout: Duration::from_millis(u64::from(u32::MAX)),
        max_deliveries: u32::MAX,
        max_in_flight: u32::MAX,
        ..GroupSettings::default()
    }
}

/// The member owner of Redis consumer `name`.
pub fn owner_of(name: &[u8]) -> MemberOwner {
    MemberOwner::Named(String::from_utf8_lossy(name).into_owned())
}

/// An existing topic named by a group command's key.
#[derive(Debug, Clone)]
pub struct GroupStream {
    /// The topic (its groups are the key's groups).
    pub topic: String,
    /// How many partitions it has.
    pub partitions: u32,
    /// The partition the key names (`orders#2`), if it names one.
    pub named: Option<u32>,
    /// The key as the client gave it.
    key: Bytes,
}

impl GroupStream {
    /// Reads `key`: `Ok(None)` when its topic does not exist; an error
    /// reply when it cannot name a stream or names a partition the topic
    /// does not have.
    pub fn resolve(broker: &Checked<'_>, key: &Bytes) -> Result<Option<GroupStream>, Reply> {
        let parsed = StreamKey::parse(key).ok_or_else(|| Reply::error(bad_key(key)))?;
        let Some(partitions) = broker.partitions_of(&parsed.topic) else {
            return Ok(None);
        };
        if let Some(p) = parsed.partition.filter(|p| *p >= partitions) {
            let e = BrokerError::unknown_partition(&parsed.topic, partitions, p);
            return Err(super::super::errors::broker_error(&e));
        }
        Ok(Some(GroupStream {
            topic: parsed.topic,
            partitions,
            named: parsed.partition,
            key: key.clone(),
        }))
    }

    /// Refuses a key naming one partition, for commands on a whole group.
    pub fn whole_topic(&self) -> Result<(), Reply> {
        match self.named {
            None => Ok(()),
            Some(p) => Err(Reply::error(format!(
                "ERR consumer groups cover a whole topic: name it as {0} instead of {0}#{p}",
                self.topic
            ))),
        }
    }

    /// The one partition an entry-level command (`XACK`, `XPENDING`,
    /// `XCLAIM`, `XAUTOCLAIM`) acts on: the one named, or the topic's
    /// only one; for the bare name of a topic of several partitions, an
    /// error naming the keys to use.
    pub fn one(&self) -> Result<u32, Reply> {
        match self.named {
            Some(p) => Ok(p),
            None if self.partitions == 1 => Ok(0),
            None => Err(Reply::error(format!(
                "ERR stream {0} has {1} partitions and entry IDs are per partition; name one as {0}#0 to {0}#{2} (XREADGROUP … STREAMS {0} > answers each entry under its partition's key)",
                self.topic,
                self.partitions,
                self.partitions - 1
            ))),
        }
    }

    /// The partitions a read or a figure covers: the one named, else all.
    pub fn covered(&self) -> std::ops::Range<u32> {
        match self.named {
            Some(p) => p..p + 1,
            None => 0..self.partitions,
        }
    }

    /// The key entries of partition `p` are answered under: the key given
    /// when it names one partition (or the topic has only one), else
    /// `<topic>#<p>`.
    pub fn key_of(&self, p: u32) -> Bytes {
        if self.named.is_some() || self.partitions == 1 {
            self.key.clone()
        } else {
            Bytes::from(format!("{}#{p}", self.topic))
        }
    }
}

/// Partition `partition` of `topic`, read for group `group` (its
/// consumers may see what it delivers).
fn part<'a>(
    broker: &'a Checked<'a>,
    (topic, group): (&'a str, &'a str),
    partition: u32,
) -> StreamPart<'a> {
    StreamPart {
        broker,
        topic,
        partition,
        group: Some(group),
    }
}

/// The offset of the entry with ID `id` in `partition` of `topic`, if one
/// has that ID.
pub fn offset_of(
    broker: &Checked<'_>,
    (topic, group): (&str, &str),
    partition: u32,
    id: StreamId,
) -> Result<Option<u64>, BrokerError> {
    let part = part(broker, (topic, group), partition);
    let offset = part.seek(id)?;
    let found = part.record_at(offset)?;
    Ok(found.filter(|r| id_of(r) == id).map(|r| r.offset))
}

/// Widest span of offsets [`offsets_of`] reads at once.
const SPAN_MAX: u64 = 16 * 1024;

/// Bytes [`offsets_of`] reads at most at once.
const SPAN_BYTES: usize = 4 << 20;

/// The offsets of the entries with IDs `ids` in `partition` of `topic`
/// (`None` where no entry has that ID), in order. IDs that name their
/// offset (`<append time>-<offset>`, every ID `XADD *` answers) are
/// checked with one read of the span of offsets they cover, which reads
/// each batch once, instead of one read (of a whole batch) per ID; the
/// others are looked up one by one.
pub fn offsets_of(
    broker: &Checked<'_>,
    (topic, group): (&str, &str),
    partition: u32,
    ids: &[StreamId],
) -> Result<Vec<Option<u64>>, BrokerError> {
    let mut found = std::collections::HashMap::new();
    let lo = ids.iter().map(|id| id.seq).min();
    let hi = ids.iter().map(|id| id.seq).max();
    if let (Some(lo), Some(hi)) = (lo, hi)
        && hi - lo < SPAN_MAX
    {
        let bytes = (((hi - lo + 1) as usize) * 256).min(SPAN_BYTES);
        let read = broker.read_records((topic, Some(group)), partition, lo, bytes)?;
        for record in read.records {
            if record.offset > hi {
                break;
            }
            found.insert(record.offset, id_of(&record));
        }
    }
    ids.iter()
        .map(|id| match found.get(&id.seq) {
            Some(at) if at == id => Ok(Some(id.seq)),
            _ => offset_of(broker, (topic, group), partition, *id),
        })
        .collect()
}

/// The ID of the record at `offset` of `partition` of `topic` (`None`:
/// gone by retention).
pub fn id_at(
    broker: &Checked<'_>,
    (topic, group): (&str, &str),
    partition: u32,
    offset: u64,
) -> Result<Option<StreamId>, BrokerError> {
    Ok(part(broker, (topic, group), partition)
        .record_at(offset)?
        .as_ref()
        .map(id_of))
}

/// The entry reply of the record at `offset` of `partition` (`[id, nil]`
/// when deleted or gone, as Redis answers for a pending entry it no
/// longer has).
pub async fn entry_at(
    broker: &Checked<'_>,
    (topic, group): (&str, &str),
    partition: u32,
    offset: u64,
    id: StreamId,
) -> Result<Reply, BrokerError> {
    let deleted = broker
        .deleted_in((topic, Some(group)), partition, (offset, offset + 1))
        .await?;
    let found = part(broker, (topic, group), partition)
        .forward(offset, id, 1)
        .await?;
    Ok(
        match found
            .into_iter()
            .next()
            .filter(|e| e.id == id && !deleted.contains(&offset))
        {
            Some(entry) => entry_reply(entry),
            None => Reply::Array(vec![Reply::bulk(id.to_string()), Reply::NullArray]),
        },
    )
}
