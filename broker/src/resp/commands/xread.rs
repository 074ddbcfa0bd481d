//! `XREAD [COUNT n] [BLOCK ms] STREAMS key … id …`: reads the entries
//! after an ID from one or more streams, waiting for them with `BLOCK`
//! (0: for ever) through each partition's end watch (no polling while
//! every stream exists; a stream that does not exist yet is looked for
//! again every 100 ms).

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::super::errors;
use super::super::keyspace::StreamKey;
use super::super::reply::Reply;
use super::super::session::Context;
use super::super::stream::ids::{INVALID_ID, StreamId};
use super::super::stream::read::StreamPart;
use super::streams::{entry_reply, resolve};
use super::{integer, upper};

/// How often a blocked read looks again for streams that do not exist.
const MISSING_RECHECK: Duration = Duration::from_millis(100);

/// Where a read of one stream starts.
#[derive(Debug, Clone, Copy)]
enum From {
    /// After this ID.
    After(StreamId),
    /// After the last entry now (`$`), resolved to an offset once.
    End(Option<u64>),
}

/// `XREAD`'s options.
struct ReadArgs {
    count: usize,
    block: Option<Duration>,
    keys: Vec<Bytes>,
    from: Vec<From>,
}

/// Reads `XREAD`'s options; an error reply if they are wrong.
fn parse(args: &[Bytes]) -> Result<ReadArgs, Reply> {
    let (mut count, mut block, mut i) = (0usize, None, 1);
    loop {
        let Some(arg) = args.get(i) else {
            return Err(errors::syntax());
        };
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
            "STREAMS" => break,
            _ => return Err(errors::syntax()),
        }
    }
    let (keys, ids) = streams_and_ids(&args[i + 1..])?;
    let mut from = Vec::with_capacity(ids.len());
    for id in ids {
        from.push(match id.as_ref() {
            b"$" => From::End(None),
            _ => From::After(StreamId::parse(id, 0).ok_or_else(|| Reply::error(INVALID_ID))?),
        });
    }
    Ok(ReadArgs {
        count,
        block,
        keys: keys.to_vec(),
        from,
    })
}

/// The timeout of a `BLOCK` option (`XREAD`, `XREADGROUP`), with Redis's
/// errors.
pub(super) fn block_timeout(arg: Option<&Bytes>) -> Result<Duration, Reply> {
    let ms = arg.ok_or_else(errors::syntax)?;
    let ms =
        integer(ms).ok_or_else(|| Reply::error("ERR timeout is not an integer or out of range"))?;
    if ms < 0 {
        return Err(Reply::error("ERR timeout is negative"));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// What follows `STREAMS` (`XREAD`, `XREADGROUP`): the keys, then as many
/// IDs; Redis's error when they do not pair up.
pub(super) fn streams_and_ids(rest: &[Bytes]) -> Result<(&[Bytes], &[Bytes]), Reply> {
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(Reply::error(
            "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.",
        ));
    }
    Ok(rest.split_at(rest.len() / 2))
}

/// `XREAD`.
pub async fn xread(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let mut read = match parse(args) {
        Ok(read) => read,
        Err(reply) => return reply,
    };
    if ctx.session.in_exec {
        // Inside EXEC a read does not block, as in Redis.
        read.block = None;
    }
    let deadline = read
        .block
        .filter(|b| !b.is_zero())
        .map(|b| Instant::now() + b);
    loop {
        let (reply, watched, missing) = match read_once(ctx, &mut read).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        if let Some(reply) = reply {
            return reply;
        }
        let Some(_) = read.block else {
            return Reply::NullArray;
        };
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Reply::NullArray;
        }
        let wait = if missing {
            Some(left.map_or(MISSING_RECHECK, |l| l.min(MISSING_RECHECK)))
        } else {
            left
        };
        let _blocked = ctx.listener.clients.block();
        ctx.broker().wait_for_records(&watched, wait).await;
        if ctx.broker().is_shutting_down() {
            return Reply::NullArray;
        }
    }
}

/// One pass over the streams: the reply if any has entries, else what to
/// watch (`(topic, partition, next offset)`) and whether a stream is
/// missing.
async fn read_once(
    ctx: &Context<'_>,
    read: &mut ReadArgs,
) -> Result<(Option<Reply>, Vec<(String, u32, u64)>, bool), Reply> {
    let broker = &ctx.broker();
    let mut found = Vec::new();
    let mut watched = Vec::new();
    let mut missing = false;
    for (key, from) in read.keys.iter().zip(read.from.iter_mut()) {
        if StreamKey::parse(key).is_none_or(|k| !k.exists(broker)) {
            missing = true;
            continue;
        }
        let (stream, partition) = resolve(broker, key)?;
        let part = StreamPart {
            broker,
            topic: &stream.topic,
            partition,
            group: None,
        };
        let failed = |e| errors::broker_error(&e);
        let offset = match *from {
            From::End(Some(offset)) => offset,
            From::End(None) => {
                let end = part.bounds().map_err(failed)?.1;
                *from = From::End(Some(end));
                end
            }
            From::After(id) => match id.next() {
                Some(next) => part.seek(next).map_err(failed)?,
                None => part.bounds().map_err(failed)?.1,
            },
        };
        let entries = part
            .forward(offset, super::super::stream::ids::MAX_ID, read.count)
            .await;
        let entries = entries.map_err(failed)?;
        if entries.is_empty() {
            // Nothing visible up to the end (deleted entries are not):
            // wait for the log to grow past it.
            let end = part.bounds().map_err(failed)?.1;
            watched.push((stream.topic.clone(), partition, offset.max(end)));
        } else {
            let items = entries.into_iter().map(entry_reply).collect();
            found.push((Reply::Bulk(key.clone()), Reply::Array(items)));
        }
    }
    if found.is_empty() {
        return Ok((None, watched, missing));
    }
    let reply = if ctx.session.resp3 {
        Reply::Map(found)
    } else {
        Reply::Array(
            found
                .into_iter()
                .map(|(k, v)| Reply::Array(vec![k, v]))
                .collect(),
        )
    };
    Ok((Some(reply), watched, missing))
}
