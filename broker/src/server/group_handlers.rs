//! The consumer-group APIs (40–50) of the binary protocol, each a
//! translation: wire request → one call to the service → wire answer.
//!
//! Consumers that join on a connection are owned by it
//! ([`MemberOwner::Connection`]): their ids are valid only on that
//! connection, and they leave when it closes (see `service/members.rs`).

use std::time::Duration;

use pigeon_protocol as wire;
use pigeon_protocol::Response;

use super::errors::entry_error;
use crate::delivery::GroupSettings;
use crate::delivery::engine::GroupDelivery;
use crate::error::BrokerError;
use crate::groups::redrive::{RedriveOptions, RedriveOutcome, RedriveReport};
use crate::service::{
    Checked, GroupDescription, MemberOwner, MessageReport, MessageStatus, SeekTarget, SettleAction,
    SettleRequest,
};

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

type Answer = Result<Response, BrokerError>;

/// CreateGroup.
pub async fn create(broker: &Checked<'_>, req: wire::CreateGroupRequest) -> Answer {
    let settings = from_wire(&req.settings);
    let created = broker.create_group(&req.topic, &req.group, settings).await;
    created.map(|()| wire::CreateGroupResponse.into())
}

/// DeleteGroup.
pub async fn delete(broker: &Checked<'_>, req: wire::DeleteGroupRequest) -> Answer {
    let deleted = broker.delete_group(&req.topic, &req.group).await;
    deleted.map(|()| wire::DeleteGroupResponse.into())
}

/// AlterGroup.
pub async fn alter(broker: &Checked<'_>, req: wire::AlterGroupRequest) -> Answer {
    let settings = from_wire(&req.settings);
    let altered = broker.alter_group(&req.topic, &req.group, settings).await;
    altered.map(|()| wire::AlterGroupResponse.into())
}

/// PauseGroup (pause or resume).
pub async fn pause(broker: &Checked<'_>, req: wire::PauseGroupRequest) -> Answer {
    let paused = broker.pause_group(&req.topic, &req.group, req.paused).await;
    paused.map(|()| wire::PauseGroupResponse.into())
}

/// DescribeGroup.
pub async fn describe(broker: &Checked<'_>, req: wire::DescribeGroupRequest) -> Answer {
    let GroupDescription {
        settings,
        paused,
        partitions,
    } = broker.describe_group(&req.topic, &req.group).await?;
    let partitions =
        partitions
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
            });
    Ok(wire::DescribeGroupResponse {
        settings: to_wire(&settings),
        paused,
        partitions: partitions.collect(),
    }
    .into())
}

/// SeekGroup.
pub async fn seek(broker: &Checked<'_>, req: wire::SeekGroupRequest) -> Answer {
    let target = match req.target {
        wire::SeekTarget::Offset(o) => SeekTarget::Offset(o),
        wire::SeekTarget::Timestamp(ts) => SeekTarget::Timestamp(ts),
        wire::SeekTarget::Earliest => SeekTarget::Earliest,
        wire::SeekTarget::Latest => SeekTarget::Latest,
    };
    let moved = broker
        .seek_group(&req.topic, &req.group, req.partition, target)
        .await?;
    let partitions = moved
        .into_iter()
        .map(|(partition, offset)| wire::SeekGroupPartition { partition, offset });
    Ok(wire::SeekGroupResponse {
        partitions: partitions.collect(),
    }
    .into())
}

/// JoinGroup: the consumer is owned by the connection.
pub async fn join(
    broker: &Checked<'_>,
    owner: &MemberOwner,
    req: wire::JoinGroupRequest,
) -> Answer {
    let owner = owner.clone();
    let joined = broker.join(&req.topic, &req.group, &req.consumer_name, owner, None);
    let (consumer, settings) = joined.await?;
    Ok(wire::JoinGroupResponse {
        consumer_id: u64::from(consumer),
        settings: to_wire(&settings),
    }
    .into())
}

/// Bytes of a Receive response frame besides its deliveries (header,
/// count), with room to spare.
const RECEIVE_RESPONSE_OVERHEAD: usize = 1024;

/// Receive. The deliveries must fit one response frame, and the request's
/// `max_bytes` (v1) if it sets one: the engine leases no more than that
/// many bytes of them.
pub async fn receive(
    broker: &Checked<'_>,
    owner: &MemberOwner,
    req: wire::ReceiveRequest,
) -> Answer {
    let wait = Duration::from_millis(u64::from(req.max_wait_ms));
    let (topic, group, max) = (&req.topic, &req.group, req.max_messages as usize);
    let frame = broker.config.max_frame_bytes as usize;
    let mut max_bytes = frame.saturating_sub(RECEIVE_RESPONSE_OVERHEAD);
    if req.max_bytes > 0 {
        max_bytes = max_bytes.min(req.max_bytes as usize);
    }
    let got = broker
        .receive(topic, group, req.consumer_id, owner, max, max_bytes, wait)
        .await?;
    let deliveries = got.into_iter().map(delivery_to_wire).collect();
    Ok(wire::ReceiveResponse { deliveries }.into())
}

fn delivery_to_wire(d: GroupDelivery) -> wire::Delivery {
    let headers = d.record.headers.into_iter().map(|h| wire::DeliveryHeader {
        name: h.name,
        value: h.value,
    });
    wire::Delivery {
        partition: d.partition,
        offset: d.record.offset,
        attempt: d.attempt,
        lease_deadline_ms: d.lease_deadline_ms,
        timestamp_ms: d.record.timestamp,
        key: d.record.key,
        value: d.record.value,
        headers: headers.collect(),
    }
}

/// Settle.
pub async fn settle(broker: &Checked<'_>, owner: &MemberOwner, req: wire::SettleRequest) -> Answer {
    let positions: Vec<(u32, u64)> = req.items.iter().map(|i| (i.partition, i.offset)).collect();
    let delay = |ms: u32| (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
    let items = req.items.into_iter().map(|i| SettleRequest {
        partition: i.partition,
        offset: i.offset,
        attempt: i.attempt,
        action: match i.action {
            wire::SettleAction::Ack => SettleAction::Ack,
            wire::SettleAction::Nack => SettleAction::Nack(delay(i.delay_ms)),
            wire::SettleAction::Reject => SettleAction::Reject(i.reason),
            wire::SettleAction::Extend => SettleAction::Extend(delay(i.delay_ms)),
            wire::SettleAction::Release => SettleAction::Release,
        },
    });
    let (topic, group) = (&req.topic, &req.group);
    let outcomes = broker
        .settle(topic, group, req.consumer_id, owner, items.collect())
        .await?;
    let results = positions
        .into_iter()
        .zip(outcomes)
        .map(|((p, o), outcome)| {
            let (error_code, error_message) = entry_error(outcome.err());
            wire::SettleResult {
                partition: p,
                offset: o,
                error_code,
                error_message,
            }
        });
    Ok(wire::SettleResponse {
        results: results.collect(),
    }
    .into())
}

/// MessageState.
pub async fn message_state(broker: &Checked<'_>, req: wire::MessageStateRequest) -> Answer {
    let (topic, group) = (&req.topic, &req.group);
    let report = broker
        .message_state(topic, group, req.partition, req.offset)
        .await?;
    Ok(message_state_to_wire(report).into())
}

fn message_state_to_wire(report: MessageReport) -> wire::MessageStateResponse {
    let state = match report.status {
        MessageStatus::Available => wire::MessageState::Available,
        MessageStatus::InFlight => wire::MessageState::InFlight,
        MessageStatus::Delayed => wire::MessageState::Delayed,
        MessageStatus::Settled => wire::MessageState::Settled,
        MessageStatus::DeadLettered => wire::MessageState::DeadLettered,
        MessageStatus::NotYetWritten => wire::MessageState::NotYetWritten,
        MessageStatus::RemovedByRetention => wire::MessageState::RemovedByRetention,
    };
    wire::MessageStateResponse {
        state,
        attempts: report.attempts,
        consumer: report.consumer,
        until_ms: report.until_ms,
        first_delivery_ms: report.first_delivery_ms,
        last_delivery_ms: report.last_delivery_ms,
        reason: report.reason,
    }
}

/// Redrive: version 1 answers the summary (counts and ranges); version 0
/// lists every message, so it moves at most `V0_MAX_MESSAGES`.
pub async fn redrive(broker: &Checked<'_>, req: wire::RedriveRequest, version: u16) -> Answer {
    let listed = version == 0;
    let max = match (listed, req.max) {
        (true, 0) => wire::V0_MAX_MESSAGES,
        (true, max) => max.min(wire::V0_MAX_MESSAGES),
        (false, max) => max,
    };
    let options = RedriveOptions {
        max: u64::from(max),
        dry_run: req.dry_run,
        rate_per_sec: req.rate_per_sec,
        list: listed,
    };
    let report = broker.redrive(&req.topic, &req.group, options).await?;
    Ok(redrive_response(report).into())
}

fn redrive_response(report: RedriveReport) -> wire::RedriveResponse {
    let redriven = report.messages.iter().map(|r| wire::RedrivenMessage {
        dlq_offset: r.dlq_offset,
        partition: r.partition,
        new_offset: r.new_offset,
    });
    let partitions = report.partitions.iter().map(|p| {
        let (new_from, new_to) = p.new_offsets.unwrap_or((0, 0));
        wire::RedrivePartition {
            partition: p.partition,
            dlq_from: p.dlq_from,
            dlq_to: p.dlq_to,
            moved: p.moved,
            skipped: p.skipped,
            new_from,
            new_to,
        }
    });
    wire::RedriveResponse {
        redriven: redriven.collect(),
        moved: report.moved(),
        skipped: report.skipped(),
        outcome: match report.outcome {
            RedriveOutcome::Done => wire::RedriveOutcome::Done,
            RedriveOutcome::MaxReached => wire::RedriveOutcome::MaxReached,
            RedriveOutcome::Interrupted => wire::RedriveOutcome::Interrupted,
        },
        partitions: partitions.collect(),
    }
}
