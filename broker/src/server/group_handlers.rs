//! Request handlers of the consumer-group APIs (40–49). Consumers that
//! join on a connection are remembered by it, so that when the connection
//! ends their leases return at once.
//!
//! A consumer id is valid only on the connection that joined it: consumer
//! ids are numbered from 1 again when the broker restarts, so an id kept
//! from an earlier connection may now name someone else. Receive for an id
//! not joined on the connection delivers nothing, and Settle answers each
//! item `LeaseLost` (whatever that id holds now is not the caller's lease).

use std::time::Duration;

use parking_lot::Mutex;
use pigeon_protocol as wire;
use pigeon_protocol::{ErrorCode, Response};

use super::Broker;
use crate::delivery::engine::{GroupHandle, SeekTo, Settle};
use crate::delivery::{ConsumerId, GroupSettings, OffsetState, SettleError};
use crate::groups::dlq::{dlq_topic, find_parked, header_text};
use crate::groups::source::read_records;
use crate::topics::TopicError;
use pigeon_protocol::batch::Record;

/// Longest wait a receive may ask for.
const MAX_RECEIVE_WAIT: Duration = Duration::from_secs(30);

/// Consumers joined on one connection.
#[derive(Debug, Default)]
pub struct Membership(Mutex<Vec<Member>>);

/// One consumer joined on a connection.
#[derive(Debug)]
struct Member {
    topic: String,
    group: String,
    handle: GroupHandle,
    consumer: ConsumerId,
}

impl Membership {
    /// Makes every consumer of the connection leave its group.
    pub async fn leave_all(&self) {
        let joined = std::mem::take(&mut *self.0.lock());
        for member in joined {
            member.handle.leave(member.consumer).await;
        }
    }

    /// Whether `consumer` of `topic`/`group` joined on this connection.
    fn holds(&self, topic: &str, group: &str, consumer: ConsumerId) -> bool {
        self.0
            .lock()
            .iter()
            .any(|m| m.consumer == consumer && m.topic == topic && m.group == group)
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> TopicError {
    TopicError {
        code,
        message: message.into(),
    }
}

fn stopped(_: impl std::fmt::Debug) -> TopicError {
    error(
        ErrorCode::ShuttingDown,
        "the consumer group is shutting down; retry",
    )
}

/// Protocol settings → engine settings.
pub fn from_wire(s: &wire::GroupSettings) -> GroupSettings {
    GroupSettings {
        ack_timeout: Duration::from_millis(u64::from(s.ack_timeout_ms)),
        max_deliveries: s.max_deliveries,
        backoff_initial: Duration::from_millis(u64::from(s.backoff_initial_ms)),
        backoff_multiplier: s.backoff_multiplier,
        backoff_max: Duration::from_millis(u64::from(s.backoff_max_ms)),
        backoff_jitter: f64::from(s.backoff_jitter_permille) / 1000.0,
        max_in_flight: s.max_in_flight,
    }
}

/// Engine settings → protocol settings.
pub fn to_wire(s: &GroupSettings) -> wire::GroupSettings {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    wire::GroupSettings {
        ack_timeout_ms: ms(s.ack_timeout),
        max_deliveries: s.max_deliveries,
        backoff_initial_ms: ms(s.backoff_initial),
        backoff_multiplier: s.backoff_multiplier,
        backoff_max_ms: ms(s.backoff_max),
        backoff_jitter_permille: (s.backoff_jitter * 1000.0).round() as u16,
        max_in_flight: s.max_in_flight,
    }
}

fn consumer_id(id: u64) -> Result<ConsumerId, TopicError> {
    ConsumerId::try_from(id).map_err(|_| {
        error(
            ErrorCode::InvalidRequest,
            format!("consumer id {id} was never given out by this broker; join the group again"),
        )
    })
}

/// Answers a group request; `None` if `request` is not one.
pub async fn handle(
    broker: &Broker,
    members: &Membership,
    request: wire::Request,
) -> Option<Result<Response, TopicError>> {
    use wire::Request as R;
    let groups = &broker.groups;
    Some(match request {
        R::CreateGroup(req) => groups
            .create(
                &broker.topics,
                &req.topic,
                &req.group,
                from_wire(&req.settings),
            )
            .await
            .map(|()| wire::CreateGroupResponse.into()),
        R::DeleteGroup(req) => groups
            .delete(&req.topic, &req.group)
            .await
            .map(|()| wire::DeleteGroupResponse.into()),
        R::AlterGroup(req) => alter(broker, req).await,
        R::DescribeGroup(req) => describe(broker, req).await,
        R::SeekGroup(req) => seek(broker, req).await,
        R::PauseGroup(req) => match groups.get(&req.topic, &req.group) {
            Ok(entry) => match entry.handle.pause(req.paused).await {
                Ok(Ok(())) => Ok(wire::PauseGroupResponse.into()),
                Ok(Err(e)) => Err(error(ErrorCode::StorageError, e)),
                Err(e) => Err(stopped(e)),
            },
            Err(e) => Err(e),
        },
        R::JoinGroup(req) => match groups.get(&req.topic, &req.group) {
            Ok(entry) => match entry.handle.join(req.consumer_name.clone()).await {
                Ok(consumer) => {
                    members.0.lock().push(Member {
                        topic: req.topic.clone(),
                        group: req.group.clone(),
                        handle: entry.handle.clone(),
                        consumer,
                    });
                    Ok(wire::JoinGroupResponse {
                        consumer_id: u64::from(consumer),
                        settings: to_wire(&entry.settings),
                    }
                    .into())
                }
                Err(e) => Err(stopped(e)),
            },
            Err(e) => Err(e),
        },
        R::Receive(req) => receive(broker, members, req).await,
        R::Settle(req) => settle(broker, members, req).await,
        R::MessageState(req) => message_state(broker, req).await,
        R::Redrive(req) => {
            let moved = groups
                .redrive(
                    &broker.topics,
                    &req.topic,
                    &req.group,
                    u64::from(req.max),
                    req.dry_run,
                    req.rate_per_sec,
                )
                .await;
            moved.map(|moved| {
                let redriven = moved
                    .into_iter()
                    .map(|r| wire::RedrivenMessage {
                        dlq_offset: r.dlq_offset,
                        partition: r.partition,
                        new_offset: r.new_offset,
                    })
                    .collect();
                wire::RedriveResponse { redriven }.into()
            })
        }
        _ => return None,
    })
}

async fn alter(broker: &Broker, req: wire::AlterGroupRequest) -> Result<Response, TopicError> {
    let entry = broker.groups.get(&req.topic, &req.group)?;
    let settings = from_wire(&req.settings);
    match entry.handle.alter(settings).await.map_err(stopped)? {
        Ok(()) => {
            broker.groups.set_settings(&req.topic, &req.group, settings);
            Ok(wire::AlterGroupResponse.into())
        }
        Err(e) => Err(error(ErrorCode::InvalidConfig, e)),
    }
}

async fn describe(
    broker: &Broker,
    req: wire::DescribeGroupRequest,
) -> Result<Response, TopicError> {
    let entry = broker.groups.get(&req.topic, &req.group)?;
    let (paused, figures) = entry.handle.describe().await.map_err(stopped)?;
    let partitions = figures
        .into_iter()
        .enumerate()
        .map(|(p, f)| wire::GroupPartitionDescription {
            partition: p as u32,
            committed_floor: f.committed_floor,
            log_start: f.log_start,
            log_end: f.log_end,
            lag: f.lag,
            in_flight: f.in_flight,
            delayed: f.delayed,
            dead_lettered: f.dead_lettered,
            removed_by_retention: f.removed_by_retention,
        })
        .collect();
    Ok(wire::DescribeGroupResponse {
        settings: to_wire(&entry.settings),
        paused,
        partitions,
    }
    .into())
}

async fn seek(broker: &Broker, req: wire::SeekGroupRequest) -> Result<Response, TopicError> {
    let entry = broker.groups.get(&req.topic, &req.group)?;
    let topic = broker.topics.get(&req.topic).ok_or_else(|| {
        error(
            ErrorCode::UnknownTopic,
            format!("topic {} does not exist", req.topic),
        )
    })?;
    if let Some(p) = req.partition
        && topic.partition(p).is_none()
    {
        return Err(error(
            ErrorCode::UnknownPartition,
            format!("topic {} has no partition {p}", req.topic),
        ));
    }
    let mut moved = Vec::new();
    match req.target {
        wire::SeekTarget::Timestamp(ts) => {
            // Each partition to its first record at or after the time.
            for (p, log) in topic.partitions.iter().enumerate() {
                if req.partition.is_some_and(|only| only as usize != p) {
                    continue;
                }
                let reader = log.reader();
                let offset = tokio::task::block_in_place(|| reader.offset_for_timestamp(ts))
                    .map_err(|e| error(ErrorCode::StorageError, e.to_string()))?
                    .unwrap_or_else(|| reader.end_offset());
                moved.extend(
                    entry
                        .handle
                        .seek(Some(p as u32), SeekTo::Offset(offset))
                        .await
                        .map_err(stopped)?,
                );
            }
        }
        target => {
            let to = match target {
                wire::SeekTarget::Offset(o) => SeekTo::Offset(o),
                wire::SeekTarget::Earliest => SeekTo::Earliest,
                _ => SeekTo::Latest,
            };
            moved = entry
                .handle
                .seek(req.partition, to)
                .await
                .map_err(stopped)?;
        }
    }
    let partitions = moved
        .into_iter()
        .map(|(partition, offset)| wire::SeekGroupPartition { partition, offset })
        .collect();
    Ok(wire::SeekGroupResponse { partitions }.into())
}

async fn receive(
    broker: &Broker,
    members: &Membership,
    req: wire::ReceiveRequest,
) -> Result<Response, TopicError> {
    let entry = broker.groups.get(&req.topic, &req.group)?;
    let consumer = consumer_id(req.consumer_id)?;
    if !members.holds(&req.topic, &req.group, consumer) {
        // Not this connection's: the caller's membership ended with its
        // connection (a client joins again when it notices).
        return Ok(wire::ReceiveResponse {
            deliveries: Vec::new(),
        }
        .into());
    }
    let wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(MAX_RECEIVE_WAIT);
    let max = (req.max_messages as usize).clamp(1, 10_000);
    let got = tokio::select! {
        got = entry.handle.receive(consumer, max, wait) => got.map_err(stopped)?,
        _ = broker.shutdown.cancelled() => Vec::new(),
    };
    let deliveries = got
        .into_iter()
        .map(|d| wire::Delivery {
            partition: d.partition,
            offset: d.record.offset,
            attempt: d.attempt,
            lease_deadline_ms: d.lease_deadline_ms,
            timestamp_ms: d.record.timestamp,
            key: d.record.key,
            value: d.record.value,
            headers: d
                .record
                .headers
                .into_iter()
                .map(|h| wire::DeliveryHeader {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
        })
        .collect();
    Ok(wire::ReceiveResponse { deliveries }.into())
}

async fn settle(
    broker: &Broker,
    members: &Membership,
    req: wire::SettleRequest,
) -> Result<Response, TopicError> {
    let entry = broker.groups.get(&req.topic, &req.group)?;
    let consumer = consumer_id(req.consumer_id)?;
    if !members.holds(&req.topic, &req.group, consumer) {
        let results = req
            .items
            .iter()
            .map(|i| wire::SettleResult {
                partition: i.partition,
                offset: i.offset,
                error_code: ErrorCode::LeaseLost,
                error_message: format!(
                    "consumer {} did not join {}/{} on this connection; its leases ended with its connection",
                    req.consumer_id, req.topic, req.group
                ),
            })
            .collect();
        return Ok(wire::SettleResponse { results }.into());
    }
    let positions: Vec<(u32, u64)> = req.items.iter().map(|i| (i.partition, i.offset)).collect();
    let items = req
        .items
        .into_iter()
        .map(|i| {
            let action = match i.action {
                wire::SettleAction::Ack => Settle::Ack,
                wire::SettleAction::Nack => Settle::Nack(
                    (i.delay_ms > 0).then(|| Duration::from_millis(u64::from(i.delay_ms))),
                ),
                wire::SettleAction::Reject => Settle::Reject(i.reason),
                wire::SettleAction::Extend => {
                    let by = if i.delay_ms > 0 {
                        Duration::from_millis(u64::from(i.delay_ms))
                    } else {
                        entry.settings.ack_timeout
                    };
                    Settle::Extend(by)
                }
            };
            (i.partition, i.offset, i.attempt, action)
        })
        .collect();
    let outcomes = entry
        .handle
        .settle_attempts(consumer, items)
        .await
        .map_err(stopped)?;
    let results = positions
        .into_iter()
        .zip(outcomes)
        .map(|((partition, offset), outcome)| {
            let (error_code, error_message) = match outcome {
                Ok(()) => (ErrorCode::None, String::new()),
                Err(e @ SettleError::LeaseLost { .. }) => (ErrorCode::LeaseLost, e.to_string()),
            };
            wire::SettleResult {
                partition,
                offset,
                error_code,
                error_message,
            }
        })
        .collect();
    Ok(wire::SettleResponse { results }.into())
}

/// Fills `answer` from the dead-letter copy of its message.
fn describe_parked(answer: &mut wire::MessageStateResponse, copy: &Record) {
    let number = |name: &str| header_text(copy, name).and_then(|v| v.parse::<i64>().ok());
    answer.state = wire::MessageState::DeadLettered;
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

async fn message_state(
    broker: &Broker,
    req: wire::MessageStateRequest,
) -> Result<Response, TopicError> {
    let entry = broker.groups.get(&req.topic, &req.group)?;
    let topic = broker.topics.get(&req.topic).ok_or_else(|| {
        error(
            ErrorCode::UnknownTopic,
            format!("topic {} does not exist", req.topic),
        )
    })?;
    let log = topic.partition(req.partition).ok_or_else(|| {
        error(
            ErrorCode::UnknownPartition,
            format!("topic {} has no partition {}", req.topic, req.partition),
        )
    })?;
    let (start, end) = (log.reader().start_offset(), log.reader().end_offset());
    let mut answer = wire::MessageStateResponse {
        state: wire::MessageState::Available,
        attempts: 0,
        consumer: String::new(),
        until_ms: -1,
        first_delivery_ms: -1,
        last_delivery_ms: -1,
        reason: String::new(),
    };
    if req.offset >= end {
        answer.state = wire::MessageState::NotYetWritten;
        return Ok(answer.into());
    }
    let found = entry
        .handle
        .state_of(req.partition, req.offset)
        .await
        .map_err(stopped)?;
    let (state, times, holder) = match found {
        Some(report) => (Some(report.state), report.times, report.holder),
        None => (None, None, None),
    };
    if let Some(times) = times {
        answer.first_delivery_ms = times.first_ms().unwrap_or(-1);
        answer.last_delivery_ms = times.last_ms().unwrap_or(-1);
    }
    match state {
        None => answer.state = wire::MessageState::NotYetWritten,
        Some(OffsetState::Settled) if req.offset < start => {
            answer.state = wire::MessageState::RemovedByRetention
        }
        Some(OffsetState::Available { .. }) if req.offset < start => {
            answer.state = wire::MessageState::RemovedByRetention
        }
        Some(OffsetState::Available { attempts }) => answer.attempts = attempts,
        Some(OffsetState::InFlight(lease)) => {
            answer.state = wire::MessageState::InFlight;
            answer.attempts = lease.attempt;
            answer.consumer = match holder.filter(|name| !name.is_empty()) {
                Some(name) => {
                    let id = format!(" (consumer {})", lease.consumer);
                    let room = wire::MAX_CONSUMER_NAME_LEN.saturating_sub(id.len());
                    format!("{}{id}", wire::truncate_at_char_boundary(&name, room))
                }
                None if lease.consumer == crate::delivery::RECOVERED => {
                    "nobody (a lease from before the restart)".to_string()
                }
                None => format!("consumer {} (gone)", lease.consumer),
            };
            answer.until_ms = lease.deadline_ms;
        }
        Some(OffsetState::Delayed { attempts, due_ms }) => {
            answer.state = wire::MessageState::Delayed;
            answer.attempts = attempts;
            answer.until_ms = due_ms;
        }
        Some(OffsetState::DeadLettering { attempts }) => {
            answer.state = wire::MessageState::DeadLettered;
            answer.attempts = attempts;
            answer.reason = "its dead-letter copy is being written".into();
        }
        Some(OffsetState::Settled) => {
            answer.state = wire::MessageState::Settled;
            // Acked, or dead-lettered: the DLQ copy tells which.
            let dlq = broker.topics.get(&dlq_topic(&req.topic, &req.group));
            let source = read_records(log.reader(), &[req.offset]);
            if let (Some(dlq), Some(record)) = (dlq, source.first()) {
                let partition = req.partition as usize;
                let parked = tokio::task::block_in_place(|| {
                    find_parked(&dlq, partition, req.offset, record.timestamp)
                });
                if let Some(copy) = parked {
                    describe_parked(&mut answer, &copy);
                }
            }
        }
    }
    Ok(answer.into())
}
