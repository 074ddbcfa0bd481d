//! Key commands over streams: `EXISTS`, `TYPE`, `KEYS`, `SCAN`, `DEL`,
//! `UNLINK`, `FLUSHALL`, `FLUSHDB`. Every key is a stream (a topic, or a partition of one, see
//! [`keyspace`](super::super::keyspace)); `DEL` deletes a topic with its
//! consumer groups (their dead-letter topics stay, as with `pigeon topic
//! delete`). `FLUSHALL` / `FLUSHDB` delete every stream the same way, and
//! only when the broker's `resp_allow_flush` setting allows it; the
//! broker's own `__`-prefixed topics are never keys and are never deleted.

use bytes::Bytes;

use super::super::errors;
use super::super::keyspace::{StreamKey, matching, stream_names};
use super::super::reply::Reply;
use super::super::session::Context;
use super::{integer, upper};

/// `EXISTS key …`: how many of the keys name streams (repeats count).
pub fn exists(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let broker = &ctx.broker();
    let found = args[1..]
        .iter()
        .filter(|k| StreamKey::parse(k).is_some_and(|k| k.exists(broker)))
        .count();
    Reply::Integer(found as i64)
}

/// `TYPE key`: `stream` or `none`.
pub fn key_type(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let exists = StreamKey::parse(&args[1]).is_some_and(|k| k.exists(&ctx.broker()));
    Reply::status(if exists { "stream" } else { "none" })
}

/// `KEYS pattern`.
pub fn keys(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let names = matching(stream_names(&ctx.broker()), Some(&args[1]));
    Reply::Array(names.into_iter().map(Reply::bulk).collect())
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`. The cursor is a
/// position in the sorted stream names.
pub fn scan(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return Reply::error("ERR invalid cursor");
    };
    let (mut pattern, mut count, mut only_streams) = (None, 10usize, true);
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return errors::syntax();
        }
        match upper(&args[i]).as_str() {
            "MATCH" => pattern = Some(&args[i + 1]),
            "COUNT" => match integer(&args[i + 1]) {
                Some(n) if n >= 1 => count = n as usize,
                Some(_) => return errors::syntax(),
                None => return errors::not_integer(),
            },
            "TYPE" => only_streams = upper(&args[i + 1]) == "STREAM",
            _ => return errors::syntax(),
        }
        i += 2;
    }
    let names = stream_names(&ctx.broker());
    let start = (cursor as usize).min(names.len());
    let end = start.saturating_add(count).min(names.len());
    let next = if end >= names.len() { 0 } else { end };
    let page = names[start..end].to_vec();
    let page = if only_streams {
        matching(page, pattern)
    } else {
        Vec::new()
    };
    Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(page.into_iter().map(Reply::bulk).collect()),
    ])
}

/// `DEL key …` and `UNLINK key …`: deletes each named topic (with its
/// groups); how many were deleted. A key naming one partition cannot be
/// deleted alone.
pub async fn del(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let broker = &ctx.broker();
    let mut deleted = 0;
    for key in &args[1..] {
        let Some(key) = StreamKey::parse(key) else {
            continue;
        };
        if let Some(p) = key.partition {
            return Reply::error(format!(
                "ERR {0}#{p} names one partition of topic {0}; a partition cannot be deleted alone: DEL {0} deletes the whole topic",
                key.topic
            ));
        }
        if broker.partitions_of(&key.topic).is_none() {
            continue;
        }
        match broker.delete_topic(&key.topic).await {
            Ok(()) => deleted += 1,
            Err(e) if e.kind == crate::error::ErrorKind::UnknownTopic => {}
            Err(e) => return errors::broker_error(&e),
        }
    }
    Reply::Integer(deleted)
}

/// `FLUSHALL [ASYNC|SYNC]` and `FLUSHDB [ASYNC|SYNC]` (`name` as typed):
/// deletes every stream (topic), as `DEL` does, when `resp_allow_flush`
/// is set; refused with an error saying how to allow it otherwise. With
/// users it needs `admin` on every stream the user sees, checked before
/// anything is deleted. Both modes delete before answering.
pub async fn flush(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    match args.len() {
        1 => {}
        2 if matches!(upper(&args[1]).as_str(), "ASYNC" | "SYNC") => {}
        _ => return errors::syntax(),
    }
    let broker = &ctx.broker();
    if !broker.config.resp_allow_flush {
        let name = upper(&args[0]);
        return Reply::error(format!(
            "ERR {name} is disabled on this Pigeon broker: it would delete every stream (topic) with its groups. \
             To allow it, set resp_allow_flush = true in the config file (or --resp-allow-flush true, \
             PIGEON_RESP_ALLOW_FLUSH=true) and restart the broker"
        ));
    }
    let streams = stream_names(broker);
    // All or nothing: with users, it needs admin on every stream first.
    let on = crate::security::rules::Resource::topic;
    if let Some(kept) = streams
        .iter()
        .find(|t| !broker.may(crate::security::rules::Op::Admin, on(t)))
    {
        return Reply::error(format!(
            "NOPERM {} deletes every stream and needs admin on each; this user may not administer {kept}, so nothing was deleted",
            upper(&args[0])
        ));
    }
    for topic in streams {
        match broker.delete_topic(&topic).await {
            Ok(()) => {}
            Err(e) if e.kind == crate::error::ErrorKind::UnknownTopic => {}
            Err(e) => return errors::broker_error(&e),
        }
    }
    Reply::ok()
}
