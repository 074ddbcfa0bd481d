//! One message's state in a group (`pigeon message show`): available, in
//! flight to whom until when, delayed until when, settled, dead-lettered
//! and why, or gone by retention.
//!
//! The engine knows what it tracks (available, in flight, delayed, being
//! dead-lettered, settled below its floor). A settled message was either
//! acked or parked: its dead-letter copy, if one exists, tells which, and
//! its `pigeon.dlq.*` headers give the attempts, delivery times and
//! reason.

use pigeon_protocol::batch::Record;
use pigeon_protocol::{MAX_CONSUMER_NAME_LEN, truncate_at_char_boundary};

use super::Broker;
use super::topics::{group_partition, group_source};
use crate::delivery::engine::OffsetReport;
use crate::delivery::{OffsetState, RECOVERED};
use crate::error::BrokerError;
use crate::groups::dlq::{DlqIdentity, Parked, dlq_topic, find_parked, header_text};
use crate::groups::source::{blocking, read_records};
use crate::log::PartitionLog;

/// Where a message is in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Waiting to be delivered.
    Available,
    /// Leased to a consumer.
    InFlight,
    /// Waiting for a redelivery.
    Delayed,
    /// Acked.
    Settled,
    /// Parked in the dead-letter topic (or being copied there).
    DeadLettered,
    /// Past the end of the log.
    NotYetWritten,
    /// Removed by retention before the group settled it.
    RemovedByRetention,
}

/// A message's state in a group, with what is known about its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageReport {
    /// Where it is.
    pub status: MessageStatus,
    /// Deliveries so far.
    pub attempts: u32,
    /// The lease holder, in flight only ("name (consumer id)").
    pub consumer: String,
    /// Lease deadline (in flight) or due time (delayed), ms; −1 otherwise.
    pub until_ms: i64,
    /// First delivery, ms; −1 if unknown.
    pub first_delivery_ms: i64,
    /// Last delivery, ms; −1 if unknown.
    pub last_delivery_ms: i64,
    /// Why it was dead-lettered.
    pub reason: String,
}

impl MessageReport {
    fn new(status: MessageStatus) -> MessageReport {
        MessageReport {
            status,
            attempts: 0,
            consumer: String::new(),
            until_ms: -1,
            first_delivery_ms: -1,
            last_delivery_ms: -1,
            reason: String::new(),
        }
    }
}

impl Broker {
    /// The state of `topic`/`partition`@`offset` in `group`.
    pub(super) async fn message_state(
        &self,
        topic: &str,
        group: &str,
        partition: u32,
        offset: u64,
    ) -> Result<MessageReport, BrokerError> {
        let entry = self.groups.get(topic, group)?;
        let source = group_source(self, topic)?;
        let log = group_partition(&source, partition)?;
        if offset >= log.reader().end_offset() {
            return Ok(MessageReport::new(MessageStatus::NotYetWritten));
        }
        let found = entry.handle.state_of(partition, offset).await;
        let Some(report) = found.map_err(|_| BrokerError::group_stopped())? else {
            return Ok(MessageReport::new(MessageStatus::NotYetWritten));
        };
        let mut answer = describe(report, offset < log.reader().start_offset());
        if answer.status == MessageStatus::Settled {
            let id = &entry.identity;
            self.describe_if_parked(&mut answer, id, log, partition, offset);
        }
        Ok(answer)
    }

    /// A settled message was acked or dead-lettered: if its dead-letter
    /// copy exists (one of this group incarnation's, see `groups::dlq`),
    /// fills `answer` from it.
    fn describe_if_parked(
        &self,
        answer: &mut MessageReport,
        id: &DlqIdentity,
        log: &PartitionLog,
        partition: u32,
        offset: u64,
    ) {
        let dlq_name = dlq_topic(&id.source_topic, &id.group);
        let dlq = self.topics.get(&dlq_name);
        let source = read_records(log.reader(), &[offset]);
        if let (Some(dlq), Some(record)) = (dlq, source.first()) {
            let parked =
                blocking(|| find_parked(&dlq, id, partition as usize, offset, record.timestamp));
            match parked {
                Parked::Found(copy) => describe_parked(answer, &copy),
                Parked::Absent => {}
                Parked::NotSearched { from, next, bytes } => {
                    answer.reason = format!(
                        "acked, or dead-lettered with its copy past what one message show reads: offsets {from} to {} ({bytes} bytes) of partition {partition} of {dlq_name} hold no copy of it; read on with `pigeon read {dlq_name} --partition {partition} --from-offset {next}` and look for header pigeon.dlq.source-offset = {offset}",
                        next.saturating_sub(1)
                    );
                }
            }
        }
    }
}

/// The report for what the engine tracks; `removed` when the offset is
/// below the log start.
fn describe(report: OffsetReport, removed: bool) -> MessageReport {
    let mut answer = MessageReport::new(MessageStatus::Available);
    if let Some(times) = report.times {
        answer.first_delivery_ms = times.first_ms().unwrap_or(-1);
        answer.last_delivery_ms = times.last_ms().unwrap_or(-1);
    }
    match report.state {
        OffsetState::Settled | OffsetState::Available { .. } if removed => {
            answer.status = MessageStatus::RemovedByRetention
        }
        OffsetState::Available { attempts } => answer.attempts = attempts,
        OffsetState::InFlight(lease) => {
            answer.status = MessageStatus::InFlight;
            answer.attempts = lease.attempt;
            answer.consumer = match report.holder.filter(|name| !name.is_empty()) {
                Some(name) => {
                    let id = format!(" (consumer {})", lease.consumer);
                    let room = MAX_CONSUMER_NAME_LEN.saturating_sub(id.len());
                    format!("{}{id}", truncate_at_char_boundary(&name, room))
                }
                None if lease.consumer == RECOVERED => {
                    "nobody (a lease from before the restart)".to_string()
                }
                None => format!("consumer {} (gone)", lease.consumer),
            };
            answer.until_ms = lease.deadline_ms;
        }
        OffsetState::Delayed { attempts, due_ms } => {
            answer.status = MessageStatus::Delayed;
            answer.attempts = attempts;
            answer.until_ms = due_ms;
        }
        OffsetState::DeadLettering { attempts } => {
            answer.status = MessageStatus::DeadLettered;
            answer.attempts = attempts;
            answer.reason = "its dead-letter copy is being written".into();
        }
        OffsetState::Settled => answer.status = MessageStatus::Settled,
    }
    answer
}

/// Fills `answer` from the dead-letter copy of its message.
fn describe_parked(answer: &mut MessageReport, copy: &Record) {
    let number = |name: &str| header_text(copy, name).and_then(|v| v.parse::<i64>().ok());
    answer.status = MessageStatus::DeadLettered;
    answer.attempts = number("pigeon.dlq.attempts").map_or(0, |n| n as u32);
    answer.first_delivery_ms = number("pigeon.dlq.first-delivery-ms").unwrap_or(-1);
    answer.last_delivery_ms = number("pigeon.dlq.last-delivery-ms").unwrap_or(-1);
    let reason = header_text(copy, "pigeon.dlq.reason").unwrap_or("unknown");
    let text = header_text(copy, "pigeon.dlq.reason-text").unwrap_or("");
    answer.reason = if text.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}: {text}")
    };
}
