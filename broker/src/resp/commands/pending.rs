//! Pending entries of one partition: `XACK`, `XPENDING` (summary and extended, with
//! `IDLE` and a consumer), `XCLAIM`, `XAUTOCLAIM`. A pending entry is a
//! lease of the group's engine; its delivery count is Pigeon's durable
//! attempt count, and its idle time counts from its last delivery (to the
//! second, as the engine keeps delivery times).

use bytes::Bytes;

use super::super::errors;
use super::super::reply::Reply;
use super::super::session::Context;
use super::super::stream::ids::{self, INVALID_ID, StreamId};
use super::group_key::{GroupStream, entry_at, id_at, offsets_of, owner_of};
use super::{integer, upper};
use crate::delivery::engine::PendingLease;
use crate::error::BrokerError;
use crate::service::Checked;

fn failed(e: BrokerError) -> Reply {
    errors::broker_error(&e)
}

/// The topic and the one partition of `key` if it and `group` exist; an
/// error reply when the key is the bare name of a topic of several
/// partitions (IDs are per partition).
fn topic_with_group(
    broker: &Checked<'_>,
    key: &Bytes,
    group: &str,
) -> Result<Option<(String, u32)>, Reply> {
    let Some(stream) = GroupStream::resolve(broker, key)? else {
        return Ok(None);
    };
    if !broker.group_exists(&stream.topic, group) {
        return Ok(None);
    }
    let partition = stream.one()?;
    Ok(Some((stream.topic, partition)))
}

fn now_ms() -> i64 {
    crate::log::Clock::now_ms(&crate::log::SystemClock)
}

/// `XACK key group id …`: how many were pending and are now acked.
pub async fn xack(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let mut wanted = Vec::with_capacity(args.len() - 3);
    for arg in &args[3..] {
        match StreamId::parse(arg, 0) {
            Some(id) => wanted.push(id),
            None => return Reply::error(INVALID_ID),
        }
    }
    let broker = &ctx.broker();
    let group = String::from_utf8_lossy(&args[2]).into_owned();
    let (topic, partition) = match topic_with_group(broker, &args[1], &group) {
        Ok(Some(found)) => found,
        Ok(None) => return Reply::Integer(0),
        Err(reply) => return reply,
    };
    let items: Vec<(u32, u64)> = match offsets_of(broker, (&topic, &group), partition, &wanted) {
        Ok(found) => found
            .into_iter()
            .flatten()
            .map(|o| (partition, o))
            .collect(),
        Err(e) => return failed(e),
    };
    match broker.ack_held(&topic, &group, &items).await {
        Ok(n) => Reply::Integer(n as i64),
        Err(e) => failed(e),
    }
}

/// A pending lease with its entry ID.
struct Pending {
    id: StreamId,
    lease: PendingLease,
}

/// The group's pending entries in `partition` with their IDs, in ID
/// order.
async fn pending_with_ids(
    broker: &Checked<'_>,
    topic: &str,
    partition: u32,
    group: &str,
) -> Result<Vec<Pending>, BrokerError> {
    let mut leases = broker.pending(topic, group).await?;
    leases.retain(|l| l.partition == partition);
    leases.sort_by_key(|l| l.offset);
    let mut out = Vec::with_capacity(leases.len());
    for lease in leases {
        if let Some(id) = id_at(broker, (topic, group), partition, lease.offset)? {
            out.push(Pending { id, lease });
        }
    }
    Ok(out)
}

fn holder(lease: &PendingLease) -> String {
    lease.holder.clone().unwrap_or_default()
}

/// `XPENDING key group [[IDLE ms] start end count [consumer]]`.
pub async fn xpending(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let extended = args.len() > 3;
    let mut min_idle = 0;
    let mut i = 3;
    if extended && upper(&args[3]) == "IDLE" {
        match args.get(4).and_then(|a| integer(a)) {
            Some(ms) => min_idle = ms,
            None => return errors::not_integer(),
        }
        i = 5;
    }
    if extended && !(args.len() == i + 3 || args.len() == i + 4) {
        return errors::syntax();
    }
    let bounds = if extended {
        let start = ids::parse_bound(&args[i], true).map(ids::start_of);
        let end = ids::parse_bound(&args[i + 1], false).map(ids::end_of);
        let count = integer(&args[i + 2]);
        match (start, end, count) {
            (Some(Ok(s)), Some(Ok(e)), Some(c)) => Some((s, e, c.max(0) as usize)),
            (Some(Err(t)), _, _) | (_, Some(Err(t)), _) => return Reply::error(t),
            (_, _, None) if start.is_some() && end.is_some() => return errors::not_integer(),
            _ => return Reply::error(INVALID_ID),
        }
    } else {
        None
    };
    let broker = &ctx.broker();
    let group = String::from_utf8_lossy(&args[2]).into_owned();
    let (topic, partition) = match topic_with_group(broker, &args[1], &group) {
        Ok(Some(found)) => found,
        Ok(None) => return no_group(&args[1], &group),
        Err(reply) => return reply,
    };
    let pending = match pending_with_ids(broker, &topic, partition, &group).await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    match bounds {
        None => summary(pending),
        Some((start, end, count)) => {
            let consumer = args
                .get(i + 3)
                .map(|c| String::from_utf8_lossy(c).into_owned());
            let now = now_ms();
            let rows = pending
                .into_iter()
                .filter(|p| p.id >= start && p.id <= end)
                .filter(|p| consumer.as_ref().is_none_or(|c| *c == holder(&p.lease)))
                .filter(|p| now - p.lease.delivered_ms >= min_idle)
                .take(count)
                .map(|p| {
                    Reply::Array(vec![
                        Reply::bulk(p.id.to_string()),
                        Reply::bulk(holder(&p.lease)),
                        Reply::Integer((now - p.lease.delivered_ms).max(0)),
                        Reply::Integer(i64::from(p.lease.attempt)),
                    ])
                });
            Reply::Array(rows.collect())
        }
    }
}

/// `XPENDING key group`: count, smallest and largest ID, and each
/// consumer's count.
fn summary(pending: Vec<Pending>) -> Reply {
    let (Some(first), Some(last)) = (pending.first(), pending.last()) else {
        return Reply::Array(vec![
            Reply::Integer(0),
            Reply::Null,
            Reply::Null,
            Reply::NullArray,
        ]);
    };
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for p in &pending {
        *counts.entry(holder(&p.lease)).or_default() += 1;
    }
    let consumers = counts
        .into_iter()
        .map(|(name, n)| Reply::Array(vec![Reply::bulk(name), Reply::bulk(n.to_string())]));
    Reply::Array(vec![
        Reply::Integer(pending.len() as i64),
        Reply::bulk(first.id.to_string()),
        Reply::bulk(last.id.to_string()),
        Reply::Array(consumers.collect()),
    ])
}

/// `XCLAIM key group consumer min-idle-time id … [IDLE ms] [TIME ms]
/// [RETRYCOUNT n] [FORCE] [JUSTID] [LASTID id]`.
pub async fn xclaim(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let Some(min_idle) = integer(&args[4]) else {
        return Reply::error("ERR Invalid min-idle-time argument for XCLAIM");
    };
    let mut wanted = Vec::new();
    let mut i = 5;
    while let Some(id) = args.get(i).and_then(|a| StreamId::parse(a, 0)) {
        wanted.push(id);
        i += 1;
    }
    let mut just_id = false;
    while i < args.len() {
        let option = upper(&args[i]);
        match option.as_str() {
            "JUSTID" => just_id = true,
            "FORCE" => {}
            "IDLE" | "TIME" | "RETRYCOUNT" | "LASTID" if i + 1 < args.len() => i += 1,
            _ => {
                let text = String::from_utf8_lossy(&args[i]);
                return Reply::error(format!("ERR Unrecognized XCLAIM option '{text}'"));
            }
        }
        i += 1;
    }
    let broker = &ctx.broker();
    let group = String::from_utf8_lossy(&args[2]).into_owned();
    let (topic, partition) = match topic_with_group(broker, &args[1], &group) {
        Ok(Some(found)) => found,
        Ok(None) => return no_group(&args[1], &group),
        Err(reply) => return reply,
    };
    let offsets: Vec<(StreamId, u64)> =
        match offsets_of(broker, (&topic, &group), partition, &wanted) {
            Ok(found) => wanted
                .iter()
                .zip(found)
                .filter_map(|(id, o)| Some((*id, o?)))
                .collect(),
            Err(e) => return failed(e),
        };
    let to = Claim {
        broker,
        topic: &topic,
        partition,
        group: &group,
        name: &args[3],
    };
    match to.claim(offsets, min_idle, just_id).await {
        Ok(entries) => Reply::Array(entries),
        Err(e) => failed(e),
    }
}

fn no_group(key: &[u8], group: &str) -> Reply {
    Reply::error(format!(
        "NOGROUP No such key '{}' or consumer group '{group}'",
        String::from_utf8_lossy(key)
    ))
}

/// Where claimed entries go: consumer `name` of `group`, in `partition`
/// of `topic`.
struct Claim<'a> {
    broker: &'a Checked<'a>,
    topic: &'a str,
    partition: u32,
    group: &'a str,
    name: &'a [u8],
}

impl Claim<'_> {
    /// Claims `(id, offset)`s; the entries (or IDs) claimed, in order.
    async fn claim(
        &self,
        offsets: Vec<(StreamId, u64)>,
        min_idle: i64,
        just_id: bool,
    ) -> Result<Vec<Reply>, BrokerError> {
        let (broker, topic, group) = (self.broker, self.topic, self.group);
        let owner = owner_of(self.name);
        let text = String::from_utf8_lossy(self.name).into_owned();
        let (consumer, _) = broker
            .join(topic, group, &text, owner.clone(), None)
            .await?;
        let items = offsets.iter().map(|(_, o)| (self.partition, *o)).collect();
        let claimed = broker
            .claim(topic, group, consumer, &owner, items, min_idle, !just_id)
            .await?;
        let mut out = Vec::new();
        for ((id, offset), lease) in offsets.into_iter().zip(claimed) {
            if lease.is_none() {
                continue;
            }
            out.push(if just_id {
                Reply::bulk(id.to_string())
            } else {
                entry_at(broker, (topic, group), self.partition, offset, id).await?
            });
        }
        Ok(out)
    }
}

/// `XAUTOCLAIM key group consumer min-idle-time start [COUNT n]
/// [JUSTID]`: `[next start, claimed, deleted IDs]`.
pub async fn xautoclaim(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let Some(min_idle) = integer(&args[4]) else {
        return Reply::error("ERR Invalid min-idle-time argument for XAUTOCLAIM");
    };
    let Some(Ok(start)) = ids::parse_bound(&args[5], true).map(ids::start_of) else {
        return Reply::error(INVALID_ID);
    };
    let (mut count, mut just_id, mut i) = (100usize, false, 6);
    while i < args.len() {
        match upper(&args[i]).as_str() {
            "COUNT" if i + 1 < args.len() => {
                match integer(&args[i + 1]) {
                    Some(n) if n > 0 => count = n as usize,
                    Some(_) => return Reply::error("ERR COUNT must be > 0"),
                    None => return errors::not_integer(),
                }
                i += 2;
            }
            "JUSTID" => {
                just_id = true;
                i += 1;
            }
            _ => return errors::syntax(),
        }
    }
    let broker = &ctx.broker();
    let group = String::from_utf8_lossy(&args[2]).into_owned();
    let (topic, partition) = match topic_with_group(broker, &args[1], &group) {
        Ok(Some(found)) => found,
        Ok(None) => return no_group(&args[1], &group),
        Err(reply) => return reply,
    };
    let pending = match pending_with_ids(broker, &topic, partition, &group).await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let mut scan = pending.into_iter().filter(|p| p.id >= start);
    let batch: Vec<(StreamId, u64)> = scan
        .by_ref()
        .take(count)
        .map(|p| (p.id, p.lease.offset))
        .collect();
    let next = scan.next().map_or(StreamId::default(), |p| p.id);
    let to = Claim {
        broker,
        topic: &topic,
        partition,
        group: &group,
        name: &args[3],
    };
    match to.claim(batch, min_idle, just_id).await {
        Ok(entries) => Reply::Array(vec![
            Reply::bulk(next.to_string()),
            Reply::Array(entries),
            Reply::Array(Vec::new()),
        ]),
        Err(e) => failed(e),
    }
}
