//! The replies of `XINFO STREAM`, `XINFO GROUPS` and `XINFO CONSUMERS`,
//! with Redis 7.0's fields filled from Pigeon's state. Fields Pigeon does
//! not track the way Redis does are approximated, as `docs/redis.md` says:
//! a group's last delivered entry is the one before the first offset it
//! has not settled or leased past, and the radix-tree figures are the
//! partition's segment count.

use super::super::reply::Reply;
use super::super::stream::ids::StreamId;
use super::super::stream::read::StreamPart;
use super::groups::id_at;
use super::streams::entry_reply;
use crate::error::BrokerError;
use crate::service::Broker;

fn field(name: &str, value: Reply) -> (Reply, Reply) {
    (Reply::bulk(name), value)
}

/// `XINFO STREAM key`.
pub async fn stream(broker: &Broker, topic: &str) -> Result<Reply, BrokerError> {
    let part = StreamPart {
        broker,
        topic,
        partition: 0,
    };
    let (_, end) = part.bounds()?;
    let length = part.entries().await?;
    let first = part
        .forward(0, super::super::stream::ids::MAX_ID, 1)
        .await?
        .into_iter()
        .next();
    let last = part
        .backward(StreamId::default(), super::super::stream::ids::MAX_ID, 1)
        .await?;
    let last = last.into_iter().next();
    let segments = broker
        .describe_topic(topic)?
        .partitions
        .first()
        .map_or(0, |p| p.segment_count);
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(t, _, _)| t == topic)
        .count();
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

/// `XINFO GROUPS key`.
pub async fn groups(broker: &Broker, topic: &str) -> Result<Reply, BrokerError> {
    let mut out = Vec::new();
    let mut names: Vec<String> = broker
        .groups
        .list()
        .into_iter()
        .filter(|(t, _, _)| t == topic)
        .map(|(_, g, _)| g)
        .collect();
    names.sort();
    for group in names {
        let pending = broker.pending(topic, &group).await?;
        let figures = broker.describe_group(topic, &group).await?;
        let Some(f) = figures.partitions.first() else {
            continue;
        };
        // Past every settled offset and every lease.
        let delivered = pending
            .iter()
            .map(|l| l.offset + 1)
            .max()
            .unwrap_or(0)
            .max(f.committed_floor);
        let last = match delivered.checked_sub(1) {
            Some(offset) => id_at(broker, topic, offset)?.unwrap_or_default(),
            None => StreamId::default(),
        };
        let consumers = broker.members.named_in(topic, &group).len();
        out.push(Reply::Map(vec![
            field("name", Reply::bulk(&group)),
            field("consumers", Reply::Integer(consumers as i64)),
            field("pending", Reply::Integer(pending.len() as i64)),
            field("last-delivered-id", Reply::bulk(last.to_string())),
            field("entries-read", Reply::Integer(delivered as i64)),
            field(
                "lag",
                Reply::Integer(f.log_end.saturating_sub(delivered) as i64),
            ),
        ]));
    }
    Ok(Reply::Array(out))
}

/// `XINFO CONSUMERS key group`.
pub async fn consumers(broker: &Broker, topic: &str, group: &str) -> Result<Reply, BrokerError> {
    let pending = broker.pending(topic, group).await?;
    let mut out = Vec::new();
    for (name, consumer, idle) in broker.members.named_in(topic, group) {
        let held = pending.iter().filter(|l| l.consumer == consumer).count();
        out.push(Reply::Map(vec![
            field("name", Reply::bulk(&name)),
            field("pending", Reply::Integer(held as i64)),
            field("idle", Reply::Integer(idle.as_millis() as i64)),
        ]));
    }
    Ok(Reply::Array(out))
}
