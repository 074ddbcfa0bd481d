//! The replies of `XINFO STREAM`, `XINFO GROUPS` and `XINFO CONSUMERS`,
//! with Redis 7.0's fields filled from Pigeon's state. Fields Pigeon does
//! not track the way Redis does are approximated, as `docs/redis.md` says:
//! a group's last delivered entry is the one before the first offset it
//! has not settled or leased past, and the radix-tree figures are the
//! partition's segment count. A key covering several partitions (the
//! bare name of such a topic) sums a group's figures over them.

use super::super::reply::Reply;
use super::super::stream::ids::{MAX_ID, StreamId};
use super::super::stream::read::StreamPart;
use super::group_key::{GroupStream, id_at};
use super::streams::entry_reply;
use crate::error::BrokerError;
use crate::service::Checked;

fn field(name: &str, value: Reply) -> (Reply, Reply) {
    (Reply::bulk(name), value)
}

/// `XINFO STREAM key`, of one partition.
pub async fn stream(
    broker: &Checked<'_>,
    topic: &str,
    partition: u32,
) -> Result<Reply, BrokerError> {
    let part = StreamPart {
        broker,
        topic,
        partition,
        group: None,
    };
    let (_, end) = part.bounds()?;
    let length = part.entries().await?;
    let first = part.forward(0, MAX_ID, 1).await?.into_iter().next();
    let last = part.backward(StreamId::default(), MAX_ID, 1).await?;
    let last = last.into_iter().next();
    let segments = broker
        .describe_topic(topic)?
        .partitions
        .get(partition as usize)
        .map_or(0, |p| p.segment_count);
    let groups = broker.group_names(topic).len();
    let first_id = first.as_ref().map_or(StreamId::default(), |e| e.id);
    Ok(Reply::Map(vec![
        field("length", Reply::Integer(length as i64)),
        field("radix-tree-keys", Reply::Integer(i64::from(segments))),
        field("radix-tree-nodes", Reply::Integer(i64::from(segments))),
        field("last-generated-id", Reply::bulk(part.top_id()?.to_string())),
        field("max-deleted-entry-id", Reply::bulk("0-0")),
        field("entries-added", Reply::Integer(end as i64)),
        field("recorded-first-entry-id", Reply::bulk(first_id.to_string())),
        field("groups", Reply::Integer(groups as i64)),
        field("first-entry", first.map_or(Reply::Null, entry_reply)),
        field("last-entry", last.map_or(Reply::Null, entry_reply)),
    ]))
}

/// One group's figures over the partitions a key covers.
#[derive(Default)]
struct GroupFigures {
    pending: u64,
    entries_read: u64,
    lag: u64,
    last: StreamId,
}

async fn group_figures(
    broker: &Checked<'_>,
    stream: &GroupStream,
    group: &str,
) -> Result<GroupFigures, BrokerError> {
    let topic = &stream.topic;
    let pending = broker.pending(topic, group).await?;
    let figures = broker.describe_group(topic, group).await?;
    let mut sum = GroupFigures::default();
    for partition in stream.covered() {
        let Some(f) = figures.partitions.get(partition as usize) else {
            continue;
        };
        let mine = pending.iter().filter(|l| l.partition == partition);
        sum.pending += mine.clone().count() as u64;
        // Past every settled offset and every lease.
        let delivered = mine
            .map(|l| l.offset + 1)
            .max()
            .unwrap_or(0)
            .max(f.committed_floor);
        if let Some(offset) = delivered.checked_sub(1) {
            let id = id_at(broker, (topic, group), partition, offset)?.unwrap_or_default();
            sum.last = sum.last.max(id);
        }
        sum.entries_read += delivered;
        sum.lag += f.log_end.saturating_sub(delivered);
    }
    Ok(sum)
}

/// `XINFO GROUPS key`; for a key covering several partitions, `pending`,
/// `entries-read` and `lag` are sums and `last-delivered-id` the greatest.
pub async fn groups(broker: &Checked<'_>, stream: &GroupStream) -> Result<Reply, BrokerError> {
    let topic = &stream.topic;
    let mut out = Vec::new();
    for group in broker.group_names(topic) {
        let f = group_figures(broker, stream, &group).await?;
        let consumers = broker.named_consumers(topic, &group)?.len();
        out.push(Reply::Map(vec![
            field("name", Reply::bulk(&group)),
            field("consumers", Reply::Integer(consumers as i64)),
            field("pending", Reply::Integer(f.pending as i64)),
            field("last-delivered-id", Reply::bulk(f.last.to_string())),
            field("entries-read", Reply::Integer(f.entries_read as i64)),
            field("lag", Reply::Integer(f.lag as i64)),
        ]));
    }
    Ok(Reply::Array(out))
}

/// `XINFO CONSUMERS key group`: each consumer's pending entries in the
/// partitions the key covers.
pub async fn consumers(
    broker: &Checked<'_>,
    stream: &GroupStream,
    group: &str,
) -> Result<Reply, BrokerError> {
    let topic = &stream.topic;
    let covered = stream.covered();
    let pending = broker.pending(topic, group).await?;
    let mut out = Vec::new();
    for (name, consumer, idle) in broker.named_consumers(topic, group)? {
        let held = pending
            .iter()
            .filter(|l| l.consumer == consumer && covered.contains(&l.partition))
            .count();
        out.push(Reply::Map(vec![
            field("name", Reply::bulk(&name)),
            field("pending", Reply::Integer(held as i64)),
            field("idle", Reply::Integer(idle.as_millis() as i64)),
        ]));
    }
    Ok(Reply::Array(out))
}
