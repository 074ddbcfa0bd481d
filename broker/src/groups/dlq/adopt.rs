//! Whether a group may take an existing topic of its dead-letter name
//! (`<topic>.<group>.dlq`) for its dead-letter topic, at group create.
//!
//! A group's dead letters must never be mixed with anything else: another
//! group's dead letters (`a.b` + `c` and `a` + `b.c` both name
//! `a.b.c.dlq`; the other group may be deleted, its dead-letter topic
//! stays) or a topic someone created under that name. The rule:
//!
//! | the existing topic's `dead_letters_of` | adopted when |
//! | --- | --- |
//! | names this group (`topic`, `group`) | always: it is this group's, left by an earlier group of the name |
//! | names another group | never |
//! | absent (a topic created by a client, or a dead-letter topic of a version before the field) | each partition is empty or its first record is a dead letter of this group (headers `pigeon.dlq.source-topic` and `pigeon.dlq.group`) |
//!
//! and in every case the topic has at least the source topic's partition
//! count (a dead letter goes to the partition of its source's number).
//! A refusal names the topic and says to delete it or rename the group.
//!
//! Only group *create* checks this: a group already running keeps the
//! dead-letter topic it has (at start it is taken as it is, so that no
//! restart can stop a group that ran before).

use pigeon_protocol::batch::Record;

use super::header_text;
use crate::error::{BrokerError, ErrorKind};
use crate::groups::source::{blocking, scan};
use crate::topics::Topic;

/// `existing` (named as the dead-letter topic of `group` of `topic`) when
/// that group may take it for its dead letters, else the refusal.
pub fn check_adoptable(
    existing: &Topic,
    topic: &str,
    group: &str,
    source: &Topic,
) -> Result<(), BrokerError> {
    let name = &existing.metadata.name;
    let refuse = |why: String| {
        Err(BrokerError::new(
            ErrorKind::InvalidRequest,
            format!(
                "group {group} of topic {topic} would dead-letter into {name}, {why}; delete that topic (pigeon topic delete {name}) or give the group another name"
            ),
        ))
    };
    match &existing.metadata.dead_letters_of {
        Some(of) if of.topic == topic && of.group == group => {}
        Some(of) => {
            return refuse(format!(
                "which holds the dead letters of group {} of topic {}",
                of.group, of.topic
            ));
        }
        None => {
            if let Some(why) = blocking(|| foreign_records(existing, topic, group)) {
                return refuse(why);
            }
        }
    }
    if existing.metadata.partitions < source.metadata.partitions {
        return refuse(format!(
            "which has {} partitions where topic {topic} has {}",
            existing.metadata.partitions, source.metadata.partitions
        ));
    }
    Ok(())
}

/// Why `existing` (without `dead_letters_of`) holds something other than
/// dead letters of `group` of `topic`: the first partition whose first
/// record is not one, or cannot be read. `None` when every partition is
/// empty or starts with one.
fn foreign_records(existing: &Topic, topic: &str, group: &str) -> Option<String> {
    for (partition, log) in existing.partitions.iter().enumerate() {
        let reader = log.reader();
        let (start, end) = (reader.start_offset(), reader.end_offset());
        if start >= end {
            continue;
        }
        let mut first: Option<Record> = None;
        let scanned = scan(reader, start, end, 64 * 1024, |record| {
            first = Some(record);
            false
        });
        let why = match (scanned, first) {
            (Err(e), _) => Some(format!(
                "an existing topic whose partition {partition} cannot be read ({e})"
            )),
            (Ok(()), None) => None,
            (Ok(()), Some(record)) => (!is_dead_letter_of(&record, topic, group)).then(|| {
                format!(
                    "an existing topic whose partition {partition} holds records that are not dead letters of this group (offset {} has no pigeon.dlq.group header naming it)",
                    record.offset
                )
            }),
        };
        if why.is_some() {
            return why;
        }
    }
    None
}

/// Whether `record` is a dead-letter copy written for `group` of `topic`.
fn is_dead_letter_of(record: &Record, topic: &str, group: &str) -> bool {
    header_text(record, "pigeon.dlq.source-topic") == Some(topic)
        && header_text(record, "pigeon.dlq.group") == Some(group)
}
