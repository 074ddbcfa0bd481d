//! `XREADGROUP GROUP group consumer [COUNT n] [BLOCK ms] [NOACK] STREAMS
//! key … id …`: new entries (`>`) leased to a named consumer through the
//! group's engine, or the consumer's own pending entries after an ID.
//!
//! A Redis consumer is a named member of the Pigeon group
//! ([`MemberOwner::Named`](crate::service::MemberOwner)): it keeps its
//! leases across connections. Reading its history counts a new delivery
//! of each entry, as Redis counts it. Entries deleted with `XDEL` are
//! acked and left out of `>` reads.
//!
//! On a topic of several partitions (the key its bare name), `>` leases
//! from every partition, as the group shares them among its consumers,
//! and the reply answers each partition's entries under its own key
//! `<topic>#<p>` (IDs are per partition); see `group_key`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::super::errors;
use super::super::reply::Reply;
use super::super::session::Context;
use super::super::stream::entry::{fields_of, id_of};
use super::super::stream::ids::{INVALID_ID, StreamId};
use super::super::stream::read::{Entry, StreamPart};
use super::group_key::{GroupStream, entry_at, id_at, owner_of};
use super::streams::entry_reply;
use super::xread::{block_timeout, streams_and_ids};
use super::{integer, upper};
use crate::delivery::handle::GroupDelivery;
use crate::error::{BrokerError, ErrorKind};
use crate::service::{Checked, MemberOwner, SettleAction, SettleRequest};

/// Most entries one `>` read hands out without a `COUNT`.
const DEFAULT_COUNT: usize = 10_000;

/// The longest single wait of a blocked read (it waits again after).
const WAIT_STEP: Duration = Duration::from_secs(30);

/// A read's options.
struct GroupRead {
    group: String,
    consumer: Bytes,
    count: usize,
    block: Option<Duration>,
    no_ack: bool,
    keys: Vec<Bytes>,
    ids: Vec<Option<StreamId>>,
}

fn parse(args: &[Bytes]) -> Result<GroupRead, Reply> {
    if upper(&args[1]) != "GROUP" {
        return Err(errors::syntax());
    }
    let (mut count, mut block, mut no_ack, mut i) = (0usize, None, false, 4);
    loop {
        let arg = args.get(i).ok_or_else(errors::syntax)?;
        match upper(arg).as_str() {
            "COUNT" => {
                let n = args.get(i + 1).ok_or_else(errors::syntax)?;
                count = integer(n).ok_or_else(errors::not_integer)?.max(0) as usize;
                i += 2;
            }
            "BLOCK" => {
                block = Some(block_timeout(args.get(i + 1))?);
                i += 2;
            }
            "NOACK" => {
                no_ack = true;
                i += 1;
            }
            "STREAMS" => break,
            _ => return Err(errors::syntax()),
        }
    }
    let (keys, ids) = streams_and_ids(&args[i + 1..])?;
    let mut parsed = Vec::with_capacity(ids.len());
    for id in ids {
        parsed.push(match id.as_ref() {
            b">" => None,
            b"$" => return Err(Reply::error(
                "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.",
            )),
            _ => Some(StreamId::parse(id, 0).ok_or_else(|| Reply::error(INVALID_ID))?),
        });
    }
    Ok(GroupRead {
        group: String::from_utf8_lossy(&args[2]).into_owned(),
        consumer: args[3].clone(),
        count,
        block,
        no_ack,
        keys: keys.to_vec(),
        ids: parsed,
    })
}

/// `XREADGROUP`.
pub async fn xreadgroup(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let read = match parse(args) {
        Ok(read) => read,
        Err(reply) => return reply,
    };
    let broker = &ctx.broker();
    let mut streams = Vec::with_capacity(read.keys.len());
    for (key, id) in read.keys.iter().zip(&read.ids) {
        match GroupStream::resolve(broker, key) {
            Ok(Some(s)) if broker.group_exists(&s.topic, &read.group) => {
                if id.is_none()
                    && let (Some(p), true) = (s.named, s.partitions > 1)
                {
                    return Reply::error(format!(
                        "ERR the partitions of {0} are shared by the consumers of a group: new entries cannot be read from {0}#{p} alone; read them with the key {0} (each entry is answered under its partition's key)",
                        s.topic
                    ));
                }
                streams.push(s);
            }
            Ok(_) => {
                return Reply::error(format!(
                    "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                    String::from_utf8_lossy(key),
                    read.group
                ));
            }
            Err(reply) => return reply,
        }
    }
    let block = read.block.filter(|_| !ctx.session.in_exec);
    let deadline = block.filter(|b| !b.is_zero()).map(|b| Instant::now() + b);
    let mut first = true;
    loop {
        let wait = match (first, block) {
            (true, _) | (_, None) => Duration::ZERO,
            (false, Some(_)) => {
                let left =
                    deadline.map_or(WAIT_STEP, |d| d.saturating_duration_since(Instant::now()));
                if left.is_zero() {
                    return Reply::NullArray;
                }
                left.min(WAIT_STEP)
            }
        };
        let found = match read_all(ctx, &read, &streams, wait).await {
            Ok(found) => found,
            Err(e) => return errors::broker_error(&e),
        };
        if found
            .iter()
            .any(|(_, entries, history)| *history || !entries.is_empty())
        {
            return reply_of(ctx.session.resp3, found);
        }
        if block.is_none() || broker.is_shutting_down() {
            return Reply::NullArray;
        }
        first = false;
    }
}

/// Entries answered under one key, and whether they are a history read
/// (answered even when empty).
type Found = (Bytes, Vec<Reply>, bool);

/// One pass over the keys: per key (per partition, for the bare name of
/// a topic of several), its entries.
async fn read_all(
    ctx: &Context<'_>,
    read: &GroupRead,
    streams: &[GroupStream],
    wait: Duration,
) -> Result<Vec<Found>, BrokerError> {
    let broker = &ctx.broker();
    let owner = owner_of(&read.consumer);
    let name = String::from_utf8_lossy(&read.consumer).into_owned();
    let mut out = Vec::new();
    // Only a lone `>` read waits in the engine; several keys are read
    // without waiting, and waited for again by the caller.
    let wait = if streams.len() == 1 {
        wait
    } else {
        wait.min(Duration::from_millis(100))
    };
    for (stream, id) in streams.iter().zip(&read.ids) {
        let (consumer, _) = broker
            .join(&stream.topic, &read.group, &name, owner.clone(), None)
            .await?;
        let member = Member {
            broker,
            topic: &stream.topic,
            group: &read.group,
            consumer: u64::from(consumer),
            owner: &owner,
        };
        match id {
            None => {
                let _blocked = (!wait.is_zero()).then(|| ctx.listener.clients.block());
                let by_partition = member.new_entries(read, wait).await?;
                out.extend(
                    by_partition
                        .into_iter()
                        .map(|(p, entries)| (stream.key_of(p), entries, false)),
                );
            }
            Some(after) => {
                for p in stream.covered() {
                    let entries = member.history(p, *after, read.count).await?;
                    out.push((stream.key_of(p), entries, true));
                }
            }
        }
    }
    Ok(out)
}

/// A Redis consumer, joined to a group.
struct Member<'a> {
    broker: &'a Checked<'a>,
    topic: &'a str,
    group: &'a str,
    consumer: u64,
    owner: &'a MemberOwner,
}

impl Member<'_> {
    /// New entries for the consumer, by partition in partition order
    /// (deleted ones acked and left out).
    async fn new_entries(
        &self,
        read: &GroupRead,
        wait: Duration,
    ) -> Result<Vec<(u32, Vec<Reply>)>, BrokerError> {
        let (broker, topic, group) = (self.broker, self.topic, self.group);
        let max = if read.count == 0 {
            DEFAULT_COUNT
        } else {
            read.count
        };
        let got = broker
            .receive(
                topic,
                group,
                self.consumer,
                self.owner,
                max,
                usize::MAX,
                wait,
            )
            .await?;
        let mut by_partition: BTreeMap<u32, Vec<GroupDelivery>> = BTreeMap::new();
        for delivery in got {
            by_partition
                .entry(delivery.partition)
                .or_default()
                .push(delivery);
        }
        let mut acks = Vec::new();
        let mut out = Vec::with_capacity(by_partition.len());
        for (partition, got) in by_partition {
            let (lo, hi) = (got[0].record.offset, got[got.len() - 1].record.offset);
            let deleted = broker
                .deleted_in((topic, Some(group)), partition, (lo, hi + 1))
                .await?;
            let mut entries = Vec::with_capacity(got.len());
            for delivery in got {
                let offset = delivery.record.offset;
                if read.no_ack || deleted.contains(&offset) {
                    acks.push(SettleRequest {
                        partition,
                        offset,
                        attempt: delivery.attempt,
                        action: SettleAction::Ack,
                    });
                }
                if !deleted.contains(&offset) {
                    let entry = Entry {
                        id: id_of(&delivery.record),
                        offset,
                        fields: fields_of(&delivery.record),
                    };
                    entries.push(entry_reply(entry));
                }
            }
            out.push((partition, entries));
        }
        if !acks.is_empty() {
            broker
                .settle(topic, group, self.consumer, self.owner, acks)
                .await?;
        }
        Ok(out)
    }

    /// The consumer's pending entries in `partition` after `after`, each
    /// delivered again.
    async fn history(
        &self,
        partition: u32,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<Reply>, BrokerError> {
        let (broker, topic, group) = (self.broker, self.topic, self.group);
        let part = StreamPart {
            broker,
            topic,
            partition,
            group: Some(group),
        };
        let from = match after.next() {
            Some(next) => part.seek(next)?,
            None => return Ok(Vec::new()),
        };
        let id = u32::try_from(self.consumer)
            .map_err(|_| BrokerError::new(ErrorKind::Internal, "consumer id out of range"))?;
        let mut mine: Vec<u64> = broker
            .pending(topic, group)
            .await?
            .into_iter()
            .filter(|l| l.consumer == id && l.partition == partition && l.offset >= from)
            .map(|l| l.offset)
            .collect();
        mine.sort_unstable();
        if count > 0 {
            mine.truncate(count);
        }
        let items = mine.iter().map(|o| (partition, *o)).collect();
        broker
            .claim(topic, group, id, self.owner, items, 0, true)
            .await?;
        let mut out = Vec::with_capacity(mine.len());
        for offset in mine {
            let Some(id) = id_at(broker, (topic, group), partition, offset)? else {
                continue;
            };
            out.push(entry_at(broker, (topic, group), partition, offset, id).await?);
        }
        Ok(out)
    }
}

/// The reply: per key, its entries (keys without any left out of `>`
/// reads); a map in RESP3.
fn reply_of(resp3: bool, found: Vec<Found>) -> Reply {
    let pairs: Vec<(Reply, Reply)> = found
        .into_iter()
        .filter(|(_, entries, history)| *history || !entries.is_empty())
        .map(|(key, entries, _)| (Reply::Bulk(key), Reply::Array(entries)))
        .collect();
    if resp3 {
        Reply::Map(pairs)
    } else {
        Reply::Array(
            pairs
                .into_iter()
                .map(|(k, v)| Reply::Array(vec![k, v]))
                .collect(),
        )
    }
}
