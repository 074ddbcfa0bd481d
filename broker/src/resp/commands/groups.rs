//! Consumer group administration: `XGROUP CREATE|SETID|DESTROY|
//! CREATECONSUMER|DELCONSUMER` and `XINFO STREAM|GROUPS|CONSUMERS`, and
//! what the group commands share: how a key names a group's stream and
//! how entry IDs become offsets.
//!
//! A Redis consumer group is a Pigeon group of the stream's topic. Groups
//! made with `XGROUP CREATE` get settings that behave as Redis does (see
//! [`redis_settings`]); Pigeon's redelivery, backoff and dead letters are
//! opt-in per group by altering its settings.

use std::time::Duration;

use bytes::Bytes;

use super::super::errors;
use super::super::keyspace::{StreamKey, bad_key};
use super::super::reply::Reply;
use super::super::session::Context;
use super::super::stream::entry::id_of;
use super::super::stream::ids::{INVALID_ID, StreamId};
use super::super::stream::read::StreamPart;
use super::streams::entry_reply;
use super::{integer, upper};
use crate::delivery::GroupSettings;
use crate::error::{BrokerError, ErrorKind};
use crate::service::{Checked, MemberOwner, SeekTarget};
use crate::topics::NewTopic;

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

/// The topic whose groups `key` names (a one-partition topic), or the
/// error reply; `Ok(None)` when the topic does not exist.
pub fn group_topic(broker: &Checked<'_>, key: &[u8]) -> Result<Option<String>, Reply> {
    let parsed = StreamKey::parse(key).ok_or_else(|| Reply::error(bad_key(key)))?;
    let Some(partitions) = broker.partitions_of(&parsed.topic) else {
        return Ok(None);
    };
    if let Some(p) = parsed.partition {
        return Err(Reply::error(format!(
            "ERR consumer groups cover a whole topic: name it as {} instead of {}#{p}",
            parsed.topic, parsed.topic
        )));
    }
    if partitions != 1 {
        return Err(Reply::error(format!(
            "ERR Redis consumer groups work on one-partition topics, and {} has {partitions}; consume it with a Pigeon consumer, or read each partition with XREAD",
            parsed.topic
        )));
    }
    Ok(Some(parsed.topic))
}

/// The offset of the entry with ID `id` in partition 0 of `topic`, if
/// one has that ID.
pub fn offset_of(
    broker: &Checked<'_>,
    (topic, group): (&str, &str),
    id: StreamId,
) -> Result<Option<u64>, BrokerError> {
    let part = StreamPart {
        broker,
        topic,
        partition: 0,
        group: Some(group),
    };
    let offset = part.seek(id)?;
    let found = part.record_at(offset)?;
    Ok(found.filter(|r| id_of(r) == id).map(|r| r.offset))
}

/// The ID of the record at `offset` of partition 0 of `topic` (`None`:
/// gone by retention).
pub fn id_at(
    broker: &Checked<'_>,
    (topic, group): (&str, &str),
    offset: u64,
) -> Result<Option<StreamId>, BrokerError> {
    let part = StreamPart {
        broker,
        topic,
        partition: 0,
        group: Some(group),
    };
    Ok(part.record_at(offset)?.as_ref().map(id_of))
}

/// The entry reply of the record at `offset` (`[id, nil]` when deleted
/// or gone, as Redis answers for a pending entry it no longer has).
pub async fn entry_at(
    broker: &Checked<'_>,
    (topic, group): (&str, &str),
    offset: u64,
    id: StreamId,
) -> Result<Reply, BrokerError> {
    let part = StreamPart {
        broker,
        topic,
        partition: 0,
        group: Some(group),
    };
    let deleted = broker
        .deleted_in((topic, Some(group)), 0, (offset, offset + 1))
        .await?;
    let found = part.forward(offset, id, 1).await?;
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
    let topic = match group_topic(broker, &args[2]) {
        Ok(Some(topic)) => topic,
        Ok(None) if mk_stream => match make_stream(broker, &args[2]).await {
            Ok(topic) => topic,
            Err(reply) => return reply,
        },
        Ok(None) => return Reply::error(KEY_REQUIRED),
        Err(reply) => return reply,
    };
    let group = String::from_utf8_lossy(&args[3]).into_owned();
    match sub.as_str() {
        "CREATE" => create(broker, &topic, &group, args).await,
        "SETID" => setid(broker, &topic, &group, args).await,
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
async fn make_stream(broker: &Checked<'_>, key: &[u8]) -> Result<String, Reply> {
    let parsed = StreamKey::parse(key).ok_or_else(|| Reply::error(bad_key(key)))?;
    let topic = NewTopic {
        name: parsed.topic.clone(),
        partitions: 1,
        retention_ms: None,
        retention_bytes: None,
    };
    match broker.create_topic(topic).await {
        Err(e) if e.kind != ErrorKind::TopicExists => Err(failed(e)),
        _ => Ok(parsed.topic),
    }
}

/// Where a group starts for `id` (`$`: new entries only; else after the
/// entry `id`).
fn start_of(
    broker: &Checked<'_>,
    (topic, group): (&str, &str),
    id: &[u8],
) -> Result<SeekTarget, Reply> {
    if id == b"$" {
        return Ok(SeekTarget::Latest);
    }
    let id = StreamId::parse(id, 0).ok_or_else(|| Reply::error(INVALID_ID))?;
    let part = StreamPart {
        broker,
        topic,
        partition: 0,
        group: Some(group),
    };
    let offset = match id.next() {
        Some(next) => part.seek(next).map_err(failed)?,
        None => part.bounds().map_err(failed)?.1,
    };
    Ok(SeekTarget::Offset(offset))
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

async fn create(broker: &Checked<'_>, topic: &str, group: &str, args: &[Bytes]) -> Reply {
    if let Err(reply) = check_options(args, true) {
        return reply;
    }
    let target = match start_of(broker, (topic, group), &args[4]) {
        Ok(target) => target,
        Err(reply) => return reply,
    };
    if let Err(e) = broker.create_group(topic, group, redis_settings()).await {
        return failed(e);
    }
    match broker.seek_group(topic, group, None, target).await {
        Ok(_) => Reply::ok(),
        Err(e) => failed(e),
    }
}

async fn setid(broker: &Checked<'_>, topic: &str, group: &str, args: &[Bytes]) -> Reply {
    if let Err(reply) = check_options(args, false) {
        return reply;
    }
    let target = match start_of(broker, (topic, group), &args[4]) {
        Ok(target) => target,
        Err(reply) => return reply,
    };
    match broker.seek_group(topic, group, None, target).await {
        Ok(_) => Reply::ok(),
        Err(e) if e.kind == ErrorKind::UnknownGroup => no_group(topic, group),
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
    let topic = match group_topic(broker, &args[2]) {
        Ok(Some(topic)) => topic,
        Ok(None) => return Reply::error("ERR no such key"),
        Err(reply) => return reply,
    };
    let result = match sub.as_str() {
        "STREAM" if args.len() > 3 => {
            return Reply::error(
                "ERR XINFO STREAM FULL is not supported by Pigeon; use XINFO STREAM, XINFO GROUPS and XINFO CONSUMERS",
            );
        }
        "STREAM" => super::xinfo::stream(broker, &topic).await,
        "GROUPS" => super::xinfo::groups(broker, &topic).await,
        _ => {
            let group = String::from_utf8_lossy(&args[3]).into_owned();
            if !broker.group_exists(&topic, &group) {
                return no_group(&topic, &group);
            }
            super::xinfo::consumers(broker, &topic, &group).await
        }
    };
    result.unwrap_or_else(failed)
}
