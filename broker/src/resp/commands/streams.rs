//! Stream commands without groups: `XADD`, `XLEN`, `XRANGE`,
//! `XREVRANGE`, `XDEL`, `XTRIM` (the reads with `XREAD` are in
//! `xread.rs`). IDs and entries map to offsets and records as
//! [`stream`](super::super::stream) describes.

use std::time::Duration;

use bytes::Bytes;
use pigeon_protocol::batch::{BatchBuilder, ProducerStamp};

use super::super::errors;
use super::super::keyspace::{StreamKey, bad_key};
use super::super::reply::Reply;
use super::super::session::Context;
use super::super::stream::entry::{NewRecord, to_record};
use super::super::stream::ids::{self, INVALID_ID, StreamId};
use super::super::stream::read::{Entry, StreamPart};
use super::{integer, upper};
use crate::error::{BrokerError, ErrorKind};
use crate::service::{Appended, Checked, PartitionBatches, SubmittedProduce};
use crate::topics::NewTopic;

/// A reply for a failed service call.
fn failed(e: BrokerError) -> Reply {
    errors::broker_error(&e)
}

/// The one partition `key` reads and writes, as an error reply if none.
pub fn resolve(broker: &Checked<'_>, key: &[u8]) -> Result<(StreamKey, u32), Reply> {
    let parsed = StreamKey::parse(key).ok_or_else(|| Reply::error(bad_key(key)))?;
    let partition = parsed.partition_in(broker).map_err(failed)?;
    Ok((parsed, partition))
}

/// Like [`resolve`], for a stream that exists: `None` for a key that
/// names no stream (or cannot name one), which the read commands answer
/// as empty.
fn resolve_existing(broker: &Checked<'_>, key: &[u8]) -> Result<Option<(StreamKey, u32)>, Reply> {
    match StreamKey::parse(key) {
        Some(parsed) if parsed.exists(broker) => {
            let partition = parsed.partition_in(broker).map_err(failed)?;
            Ok(Some((parsed, partition)))
        }
        _ => Ok(None),
    }
}

/// An entry as Redis replies it: `[id, [field, value, …]]`.
pub fn entry_reply(entry: Entry) -> Reply {
    let fields = entry.fields.into_iter().map(Reply::Bulk).collect();
    Reply::Array(vec![
        Reply::bulk(entry.id.to_string()),
        Reply::Array(fields),
    ])
}

/// How `XADD` or `XTRIM` trims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trim {
    /// Keep about the newest n entries.
    MaxLen(u64),
    /// Drop entries with IDs below this.
    MinId(StreamId),
}

/// The ID `XADD` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewId {
    /// `*`.
    Auto,
    /// `ms-*`.
    Time(u64),
    /// `ms-seq` (or `ms`).
    Exact(StreamId),
}

/// Reads a trim clause at `args[i]` (`MAXLEN|MINID [=|~] threshold
/// [LIMIT n]`); the clause and the index after it.
fn parse_trim(args: &[Bytes], mut i: usize) -> Result<(Trim, usize), Reply> {
    let kind = upper(&args[i]);
    i += 1;
    let approximate = match args.get(i).map(|a| a.as_ref()) {
        Some(b"~") => true,
        Some(b"=") => false,
        _ => {
            i -= 1;
            false
        }
    };
    i += 1;
    let threshold = args.get(i).ok_or_else(errors::syntax)?;
    let trim = if kind == "MAXLEN" {
        match integer(threshold) {
            Some(n) if n >= 0 => Trim::MaxLen(n as u64),
            Some(_) => return Err(Reply::error("ERR The MAXLEN argument must be >= 0.")),
            None => return Err(errors::not_integer()),
        }
    } else {
        Trim::MinId(StreamId::parse(threshold, 0).ok_or_else(|| Reply::error(INVALID_ID))?)
    };
    i += 1;
    if args.get(i).is_some_and(|a| upper(a) == "LIMIT") {
        if !approximate {
            return Err(Reply::error(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
        integer(args.get(i + 1).ok_or_else(errors::syntax)?).ok_or_else(errors::not_integer)?;
        i += 2;
    }
    if !approximate {
        return Err(Reply::error(
            "ERR Pigeon trims whole log segments only: use MAXLEN ~ <count> or MINID ~ <id> (approximate trimming)",
        ));
    }
    Ok((trim, i))
}

/// `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT n]]
/// *|id field value [field value …]`.
pub async fn xadd(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let mut i = 2;
    let (mut no_create, mut trim) = (false, None);
    while i < args.len() {
        match upper(&args[i]).as_str() {
            "NOMKSTREAM" => {
                no_create = true;
                i += 1;
            }
            "MAXLEN" | "MINID" => {
                if trim.is_some() {
                    return Reply::error(
                        "ERR syntax error, MAXLEN and MINID options at the same time are not compatible",
                    );
                }
                match parse_trim(args, i) {
                    Ok((t, next)) => {
                        trim = Some(t);
                        i = next;
                    }
                    Err(reply) => return reply,
                }
            }
            _ => break,
        }
    }
    let pairs = args.get(i + 1..).unwrap_or_default();
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return errors::wrong_arity("xadd");
    }
    let new_id = match parse_new_id(&args[i]) {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let broker = &ctx.broker();
    if let Err(reply) = check_new_stream(broker, &args[1], new_id) {
        // Refused before the stream is created for it.
        return reply;
    }
    match ensure_stream(broker, &args[1], no_create).await {
        Ok(true) => {}
        Ok(false) => return Reply::Null,
        Err(reply) => return reply,
    }
    let (key, partition) = match resolve(broker, &args[1]) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let appended = append(ctx, &key.topic, partition, new_id, pairs).await;
    let id = match appended {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    if let Some(trim) = trim {
        let part = StreamPart {
            broker,
            topic: &key.topic,
            partition,
            group: None,
        };
        if let Err(e) = trim_part(&part, trim).await {
            return failed(e);
        }
    }
    Reply::bulk(id.to_string())
}

/// Reads `XADD`'s ID argument.
fn parse_new_id(arg: &[u8]) -> Result<NewId, Reply> {
    if arg == b"*" {
        return Ok(NewId::Auto);
    }
    if let Some(ms) = arg.strip_suffix(b"-*") {
        let ms = StreamId::parse(ms, 0).filter(|id| id.seq == 0 && !ms.contains(&b'-'));
        return ms
            .map(|id| NewId::Time(id.ms))
            .ok_or_else(|| Reply::error(INVALID_ID));
    }
    match StreamId::parse(arg, 0) {
        Some(id) if id == StreamId::default() => Err(Reply::error(
            "ERR The ID specified in XADD must be greater than 0-0",
        )),
        Some(id) => Ok(NewId::Exact(id)),
        None => Err(Reply::error(INVALID_ID)),
    }
}

/// For a stream that does not exist yet, checks an explicit ID as the
/// append would (top `0-0`, log end 0), so that a refused `XADD` creates
/// no topic.
fn check_new_stream(broker: &Checked<'_>, key: &[u8], new_id: NewId) -> Result<(), Reply> {
    let exists = StreamKey::parse(key).is_some_and(|k| broker.partitions_of(&k.topic).is_some());
    if exists || new_id == NewId::Auto {
        return Ok(());
    }
    let id = explicit_id(new_id, StreamId::default())?;
    check_bound(id, 0)
}

/// Refuses an explicit ID above `<now>-<log end>` (see [`stream`](super::super::stream)).
fn check_bound(id: StreamId, end: u64) -> Result<(), Reply> {
    let now = crate::log::Clock::now_ms(&crate::log::SystemClock).max(0) as u64;
    let bound = StreamId::new(now, end);
    if id > bound {
        return Err(Reply::error(format!(
            "ERR The ID specified in XADD is ahead of Pigeon's stream: an entry's ID can be at most <append time ms>-<offset>, here {bound}; use * or a smaller ID"
        )));
    }
    Ok(())
}

/// Makes sure the stream `key` exists: creates a one-partition topic for
/// a bare name unless `no_create`. `Ok(false)`: it does not exist and
/// must not be created.
pub(super) async fn ensure_stream(
    broker: &Checked<'_>,
    key: &[u8],
    no_create: bool,
) -> Result<bool, Reply> {
    let parsed = StreamKey::parse(key).ok_or_else(|| Reply::error(bad_key(key)))?;
    if broker.partitions_of(&parsed.topic).is_some() {
        return Ok(true);
    }
    if no_create {
        return Ok(false);
    }
    if parsed.partition.is_some_and(|p| p > 0) {
        return Err(failed(BrokerError::unknown_topic(&parsed.topic)));
    }
    let topic = NewTopic {
        name: parsed.topic.clone(),
        partitions: 1,
        retention_ms: None,
        retention_bytes: None,
    };
    match broker.create_topic(topic).await {
        Err(e) if e.kind != ErrorKind::TopicExists => Err(failed(e)),
        _ => Ok(true),
    }
}

/// Appends one entry to `topic`/`partition` under the partition's append
/// lock; its ID.
async fn append(
    ctx: &Context<'_>,
    topic: &str,
    partition: u32,
    new_id: NewId,
    pairs: &[Bytes],
) -> Result<StreamId, Reply> {
    let broker = &ctx.broker();
    let lock = ctx.listener.appends.of(topic, partition);
    if new_id == NewId::Auto {
        let _shared = lock.read().await;
        let appended = produce(broker, topic, partition, pairs, None).await?;
        return Ok(StreamId::new(
            appended.append_time_ms.max(0) as u64,
            appended.base_offset,
        ));
    }
    let _exclusive = lock.write().await;
    let part = StreamPart {
        broker,
        topic,
        partition,
        group: None,
    };
    let top = part.top_id().map_err(failed)?;
    let id = explicit_id(new_id, top)?;
    let (_, end) = part.bounds().map_err(failed)?;
    check_bound(id, end)?;
    produce(broker, topic, partition, pairs, Some(id)).await?;
    Ok(id)
}

/// The ID for `new_id` on a stream whose top ID is `top`, by Redis's
/// rules.
fn explicit_id(new_id: NewId, top: StreamId) -> Result<StreamId, Reply> {
    let too_small = || {
        Reply::error(
            "ERR The ID specified in XADD is equal or smaller than the target stream top item",
        )
    };
    let id = match new_id {
        NewId::Time(ms) if ms == top.ms => {
            StreamId::new(ms, top.seq.checked_add(1).ok_or_else(too_small)?)
        }
        NewId::Time(ms) => StreamId::new(ms, 0),
        NewId::Exact(id) => id,
        NewId::Auto => return Err(too_small()),
    };
    if id <= top { Err(too_small()) } else { Ok(id) }
}

/// Appends the record of an entry and waits until it is durable.
async fn produce(
    broker: &Checked<'_>,
    topic: &str,
    partition: u32,
    pairs: &[Bytes],
    id: Option<StreamId>,
) -> Result<Appended, Reply> {
    committed(submit(broker, topic, partition, pairs, id).await?).await
}

/// Queues the record of an entry at its partition's writer.
async fn submit(
    broker: &Checked<'_>,
    topic: &str,
    partition: u32,
    pairs: &[Bytes],
    id: Option<StreamId>,
) -> Result<SubmittedProduce, Reply> {
    submit_records(broker, topic, partition, [to_record(pairs, id)]).await
}

/// Queues `records`, in order, as one batch at the partition's writer
/// (one produce: one commit, consecutive offsets, one append time).
pub(super) async fn submit_records(
    broker: &Checked<'_>,
    topic: &str,
    partition: u32,
    records: impl IntoIterator<Item = NewRecord>,
) -> Result<SubmittedProduce, Reply> {
    let mut builder = BatchBuilder::new();
    for record in records {
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_ref()))
            .collect();
        builder.push(record.key.as_deref(), &record.value, &headers);
    }
    let batch = builder.build(ProducerStamp::NONE, 0);
    let part = PartitionBatches {
        partition,
        batches: vec![batch],
    };
    let submitted = broker
        .submit_produce(topic, vec![part], Duration::ZERO)
        .await;
    submitted.map_err(failed)
}

/// Waits until a queued entry is durable; where it landed.
pub(super) async fn committed(submitted: SubmittedProduce) -> Result<Appended, Reply> {
    let outcome = submitted.finish().await;
    match outcome.partitions.into_iter().next() {
        Some((_, result)) => result.map_err(failed),
        None => Err(Reply::error("ERR the append was not answered; retry")),
    }
}

/// Applies a trim: deletes the whole segments it allows; how many
/// entries went.
async fn trim_part(part: &StreamPart<'_>, trim: Trim) -> Result<u64, BrokerError> {
    let (_, end) = part.bounds()?;
    let before = match trim {
        Trim::MaxLen(n) => end.saturating_sub(n),
        Trim::MinId(id) => part.seek(id)?,
    };
    part.broker
        .trim_partition(part.topic, part.partition, before)
        .await
}

/// `XLEN key`.
pub async fn xlen(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let broker = &ctx.broker();
    let (key, partition) = match resolve_existing(broker, &args[1]) {
        Ok(Some(found)) => found,
        Ok(None) => return Reply::Integer(0),
        Err(reply) => return reply,
    };
    let part = StreamPart {
        broker,
        topic: &key.topic,
        partition,
        group: None,
    };
    match part.entries().await {
        Ok(n) => Reply::Integer(n as i64),
        Err(e) => failed(e),
    }
}

/// `XRANGE key start end [COUNT n]` and, with `reverse`, `XREVRANGE key
/// end start [COUNT n]`.
pub async fn xrange(ctx: &Context<'_>, args: &[Bytes], reverse: bool) -> Reply {
    let (start_arg, end_arg) = if reverse {
        (&args[3], &args[2])
    } else {
        (&args[2], &args[3])
    };
    let (Some(start), Some(end)) = (
        ids::parse_bound(start_arg, true),
        ids::parse_bound(end_arg, false),
    ) else {
        return Reply::error(INVALID_ID);
    };
    let first = match ids::start_of(start) {
        Ok(id) => id,
        Err(text) => return Reply::error(text),
    };
    let last = match ids::end_of(end) {
        Ok(id) => id,
        Err(text) => return Reply::error(text),
    };
    let count = match args.len() {
        4 => None,
        6 if upper(&args[4]) == "COUNT" => match integer(&args[5]) {
            Some(n) => Some(n.max(0) as usize),
            None => return errors::not_integer(),
        },
        _ => return errors::syntax(),
    };
    if count == Some(0) {
        // As Redis answers COUNT 0 (or less).
        return Reply::NullArray;
    }
    let broker = &ctx.broker();
    if first > last {
        return Reply::Array(Vec::new());
    }
    let (key, partition) = match resolve_existing(broker, &args[1]) {
        Ok(Some(found)) => found,
        Ok(None) => return Reply::Array(Vec::new()),
        Err(reply) => return reply,
    };
    let part = StreamPart {
        broker,
        topic: &key.topic,
        partition,
        group: None,
    };
    let read = if reverse {
        part.backward(first, last, count.unwrap_or(0)).await
    } else {
        match part.seek(first) {
            Ok(from) => part.forward(from, last, count.unwrap_or(0)).await,
            Err(e) => Err(e),
        }
    };
    match read {
        Ok(entries) => Reply::Array(entries.into_iter().map(entry_reply).collect()),
        Err(e) => failed(e),
    }
}

/// `XDEL key id …`: deletes the entries with these IDs; how many were
/// there.
pub async fn xdel(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let mut wanted = Vec::with_capacity(args.len() - 2);
    for arg in &args[2..] {
        match StreamId::parse(arg, 0) {
            Some(id) => wanted.push(id),
            None => return Reply::error(INVALID_ID),
        }
    }
    let broker = &ctx.broker();
    let (key, partition) = match resolve_existing(broker, &args[1]) {
        Ok(Some(found)) => found,
        Ok(None) => return Reply::Integer(0),
        Err(reply) => return reply,
    };
    let part = StreamPart {
        broker,
        topic: &key.topic,
        partition,
        group: None,
    };
    let mut offsets = Vec::with_capacity(wanted.len());
    for id in wanted {
        match part.seek(id) {
            Ok(offset) => match part.record_at(offset) {
                Ok(Some(r)) if super::super::stream::entry::id_of(&r) == id => offsets.push(offset),
                Ok(_) => {}
                Err(e) => return failed(e),
            },
            Err(e) => return failed(e),
        }
    }
    match broker.delete_records(&key.topic, partition, &offsets).await {
        Ok(n) => Reply::Integer(n as i64),
        Err(e) => failed(e),
    }
}

/// `XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT n]`: only the
/// approximate form (whole segments).
pub async fn xtrim(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    if !matches!(upper(&args[2]).as_str(), "MAXLEN" | "MINID") {
        return errors::syntax();
    }
    let trim = match parse_trim(args, 2) {
        Ok((trim, next)) if next == args.len() => trim,
        Ok(_) => return errors::syntax(),
        Err(reply) => return reply,
    };
    let broker = &ctx.broker();
    let (key, partition) = match resolve_existing(broker, &args[1]) {
        Ok(Some(found)) => found,
        Ok(None) => return Reply::Integer(0),
        Err(reply) => return reply,
    };
    let part = StreamPart {
        broker,
        topic: &key.topic,
        partition,
        group: None,
    };
    match trim_part(&part, trim).await {
        Ok(n) => Reply::Integer(n as i64),
        Err(e) => failed(e),
    }
}
