//! Consumer group administration: `XGROUP CREATE|SETID|DESTROY|
//! CREATECONSUMER|DELCONSUMER` and `XINFO STREAM|GROUPS|CONSUMERS`.
//!
//! A Redis consumer group is a Pigeon group of the stream's topic, on
//! topics of any number of partitions (how keys name them: `group_key`).
//! Groups made with `XGROUP CREATE` get settings that behave as Redis does
//! ([`redis_settings`]); Pigeon's redelivery, backoff and dead letters are
//! opt-in per group by altering its settings.

use bytes::Bytes;

use super::super::errors;
use super::super::keyspace::{StreamKey, bad_key};
use super::super::reply::Reply;
use super::super::session::Context;
use super::super::stream::ids::{INVALID_ID, StreamId};
use super::super::stream::read::StreamPart;
use super::group_key::{GroupStream, owner_of, redis_settings};
use super::{integer, upper};
use crate::error::{BrokerError, ErrorKind};
use crate::service::{Checked, SeekTarget};
use crate::topics::NewTopic;

fn failed(e: BrokerError) -> Reply {
    errors::broker_error(&e)
}

/// Redis's error for a group command on a missing key.
const KEY_REQUIRED: &str = "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.";

/// `XGROUP CREATE|SETID|DESTROY|CREATECONSUMER|DELCONSUMER …`.
pub async fn xgroup(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let sub = upper(&args[1]);
    let arity_ok = match sub.as_str() {
        "CREATE" => (5..=8).contains(&args.len()),
        "SETID" => args.len() == 5 || args.len() == 7,
        "DESTROY" => args.len() == 4,
        "CREATECONSUMER" | "DELCONSUMER" => args.len() == 5,
        _ => return errors::unknown_subcommand(&args[1], "XGROUP"),
    };
    if !arity_ok {
        return errors::wrong_arity(&format!("xgroup|{}", sub.to_ascii_lowercase()));
    }
    let broker = &ctx.broker();
    let mk_stream = sub == "CREATE" && args[5..].iter().any(|a| upper(a) == "MKSTREAM");
    let stream = match GroupStream::resolve(broker, &args[2]) {
        Ok(Some(stream)) => stream,
        Ok(None) if mk_stream => match make_stream(broker, &args[2]).await {
            Ok(stream) => stream,
            Err(reply) => return reply,
        },
        Ok(None) => return Reply::error(KEY_REQUIRED),
        Err(reply) => return reply,
    };
    if sub != "SETID"
        && let Err(reply) = stream.whole_topic()
    {
        return reply;
    }
    let topic = stream.topic.clone();
    let group = String::from_utf8_lossy(&args[3]).into_owned();
    match sub.as_str() {
        "CREATE" => create(broker, &stream, &group, args).await,
        "SETID" => setid(broker, &stream, &group, args).await,
        "DESTROY" => match broker.delete_group(&topic, &group).await {
            Ok(()) => Reply::Integer(1),
            Err(e) if e.kind == ErrorKind::UnknownGroup => Reply::Integer(0),
            Err(e) => failed(e),
        },
        "CREATECONSUMER" => create_consumer(broker, &topic, &group, &args[4]).await,
        _ => del_consumer(broker, &topic, &group, &args[4]).await,
    }
}

/// Creates the one-partition topic for `XGROUP CREATE … MKSTREAM`.
async fn make_stream(broker: &Checked<'_>, key: &Bytes) -> Result<GroupStream, Reply> {
    let parsed = StreamKey::parse(key).ok_or_else(|| Reply::error(bad_key(key)))?;
    let topic = NewTopic {
        name: parsed.topic.clone(),
        partitions: 1,
        retention_ms: None,
        retention_bytes: None,
    };
    match broker.create_topic(topic).await {
        Err(e) if e.kind != ErrorKind::TopicExists => Err(failed(e)),
        _ => GroupStream::resolve(broker, key)?.ok_or_else(|| {
            Reply::error(format!(
                "ERR stream {} was deleted while being created; try again",
                parsed.topic
            ))
        }),
    }
}

/// Where a group starts for `id` (`$`: new entries only; else after the
/// entry `id`), in each partition the key covers: `(partition, target)`,
/// `None` for every partition at once.
fn start_of(
    broker: &Checked<'_>,
    (stream, group): (&GroupStream, &str),
    id: &[u8],
) -> Result<Vec<(Option<u32>, SeekTarget)>, Reply> {
    if id == b"$" {
        return Ok(vec![(stream.named, SeekTarget::Latest)]);
    }
    let id = StreamId::parse(id, 0).ok_or_else(|| Reply::error(INVALID_ID))?;
    let mut targets = Vec::new();
    for partition in stream.covered() {
        let part = StreamPart {
            broker,
            topic: &stream.topic,
            partition,
            group: Some(group),
        };
        let offset = match id.next() {
            Some(next) => part.seek(next).map_err(failed)?,
            None => part.bounds().map_err(failed)?.1,
        };
        targets.push((Some(partition), SeekTarget::Offset(offset)));
    }
    Ok(targets)
}

/// Moves `group` to `targets`.
async fn seek_to(
    broker: &Checked<'_>,
    topic: &str,
    group: &str,
    targets: Vec<(Option<u32>, SeekTarget)>,
) -> Result<(), BrokerError> {
    for (partition, target) in targets {
        broker.seek_group(topic, group, partition, target).await?;
    }
    Ok(())
}

/// Checks the options after the ID of `CREATE` / `SETID`.
fn check_options(args: &[Bytes], allow_mkstream: bool) -> Result<(), Reply> {
    let mut i = 5;
    while i < args.len() {
        match upper(&args[i]).as_str() {
            "MKSTREAM" if allow_mkstream => i += 1,
            "ENTRIESREAD" if i + 1 < args.len() => {
                match integer(&args[i + 1]) {
                    Some(n) if n >= -1 => {}
                    Some(_) => {
                        return Err(Reply::error(
                            "ERR value for ENTRIESREAD must be positive or -1",
                        ));
                    }
                    None => return Err(errors::not_integer()),
                }
                i += 2;
            }
            _ => return Err(errors::syntax()),
        }
    }
    Ok(())
}

async fn create(broker: &Checked<'_>, stream: &GroupStream, group: &str, args: &[Bytes]) -> Reply {
    if let Err(reply) = check_options(args, true) {
        return reply;
    }
    let targets = match start_of(broker, (stream, group), &args[4]) {
        Ok(targets) => targets,
        Err(reply) => return reply,
    };
    let topic = &stream.topic;
    if let Err(e) = broker.create_group(topic, group, redis_settings()).await {
        return failed(e);
    }
    match seek_to(broker, topic, group, targets).await {
        Ok(()) => Reply::ok(),
        Err(e) => failed(e),
    }
}

/// `SETID`: a seek of every partition the key covers.
async fn setid(broker: &Checked<'_>, stream: &GroupStream, group: &str, args: &[Bytes]) -> Reply {
    if let Err(reply) = check_options(args, false) {
        return reply;
    }
    let targets = match start_of(broker, (stream, group), &args[4]) {
        Ok(targets) => targets,
        Err(reply) => return reply,
    };
    match seek_to(broker, &stream.topic, group, targets).await {
        Ok(()) => Reply::ok(),
        Err(e) if e.kind == ErrorKind::UnknownGroup => no_group(&stream.topic, group),
        Err(e) => failed(e),
    }
}

/// Redis's `NOGROUP` for `XGROUP` and `XINFO`.
fn no_group(topic: &str, group: &str) -> Reply {
    Reply::error(format!(
        "NOGROUP No such consumer group '{group}' for key name '{topic}'"
    ))
}

async fn create_consumer(broker: &Checked<'_>, topic: &str, group: &str, name: &[u8]) -> Reply {
    if !broker.group_exists(topic, group) {
        return no_group(topic, group);
    }
    let text = String::from_utf8_lossy(name).into_owned();
    let existed = match broker.named_consumers(topic, group) {
        Ok(named) => named.iter().any(|(n, _, _)| *n == text),
        Err(e) => return failed(e),
    };
    match broker.join(topic, group, &text, owner_of(name), None).await {
        Ok(_) => Reply::Integer(i64::from(!existed)),
        Err(e) => failed(e),
    }
}

/// `DELCONSUMER`: the consumer leaves; its pending entries go back to the
/// group (Pigeon delivers them again) rather than being dropped.
async fn del_consumer(broker: &Checked<'_>, topic: &str, group: &str, name: &[u8]) -> Reply {
    if !broker.group_exists(topic, group) {
        return no_group(topic, group);
    }
    let text = String::from_utf8_lossy(name).into_owned();
    let member = match broker.named_consumers(topic, group) {
        Ok(named) => named.into_iter().find(|(n, _, _)| *n == text),
        Err(e) => return failed(e),
    };
    let Some((_, consumer, _)) = member else {
        return Reply::Integer(0);
    };
    let pending = match broker.pending(topic, group).await {
        Ok(all) => all.iter().filter(|l| l.consumer == consumer).count(),
        Err(e) => return failed(e),
    };
    match broker.leave_group(topic, group, &owner_of(name)).await {
        Ok(_) => Reply::Integer(pending as i64),
        Err(e) => failed(e),
    }
}

/// `XINFO STREAM key | GROUPS key | CONSUMERS key group`.
pub async fn xinfo(ctx: &Context<'_>, args: &[Bytes]) -> Reply {
    let sub = upper(&args[1]);
    let arity_ok = match sub.as_str() {
        "STREAM" => args.len() == 3 || args.len() == 4 || args.len() == 6,
        "GROUPS" => args.len() == 3,
        "CONSUMERS" => args.len() == 4,
        _ => return errors::unknown_subcommand(&args[1], "XINFO"),
    };
    if !arity_ok {
        return errors::wrong_arity(&format!("xinfo|{}", sub.to_ascii_lowercase()));
    }
    let broker = &ctx.broker();
    let stream = match GroupStream::resolve(broker, &args[2]) {
        Ok(Some(stream)) => stream,
        Ok(None) => return Reply::error("ERR no such key"),
        Err(reply) => return reply,
    };
    let result = match sub.as_str() {
        "STREAM" if args.len() > 3 => {
            return Reply::error(
                "ERR XINFO STREAM FULL is not supported by Pigeon; use XINFO STREAM, XINFO GROUPS and XINFO CONSUMERS",
            );
        }
        "STREAM" => match stream.one() {
            Ok(partition) => super::xinfo::stream(broker, &stream.topic, partition).await,
            Err(reply) => return reply,
        },
        "GROUPS" => super::xinfo::groups(broker, &stream).await,
        _ => {
            let group = String::from_utf8_lossy(&args[3]).into_owned();
            if !broker.group_exists(&stream.topic, &group) {
                return no_group(&stream.topic, &group);
            }
            super::xinfo::consumers(broker, &stream, &group).await
        }
    };
    result.unwrap_or_else(failed)
}
