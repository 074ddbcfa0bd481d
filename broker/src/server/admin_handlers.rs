//! The broker-wide administration APIs of the binary protocol — AlterTopic
//! (14), ListGroups (51), DescribeBroker (60) — each a translation: wire
//! request → one call to the service → wire answer.

use pigeon_protocol as wire;
use pigeon_protocol::Response;

use super::handlers::ListRoom;
use crate::error::BrokerError;
use crate::service::Checked;
use crate::topics::RetentionChange;

type Answer = Result<Response, BrokerError>;

fn change_from_wire(change: wire::RetentionChange) -> RetentionChange {
    match change {
        wire::RetentionChange::Keep => RetentionChange::Keep,
        wire::RetentionChange::Default => RetentionChange::Default,
        wire::RetentionChange::Set(limit) => RetentionChange::Set(limit),
    }
}

/// AlterTopic.
pub async fn alter_topic(broker: &Checked<'_>, req: wire::AlterTopicRequest) -> Answer {
    let (ms, bytes) = (req.retention_ms, req.retention_bytes);
    let altered = broker
        .alter_topic(&req.topic, change_from_wire(ms), change_from_wire(bytes))
        .await?;
    Ok(wire::AlterTopicResponse {
        retention_ms: altered.retention_ms,
        retention_bytes: altered.retention_bytes,
        segments_deleted: u32::try_from(altered.segments_deleted).unwrap_or(u32::MAX),
    }
    .into())
}

/// ListGroups.
///
/// Adds up the encoded size of the listings as the groups are found: as
/// soon as the answer would pass `max_frame_bytes`, the request is answered
/// `FrameTooLarge` before any group is asked for its figures.
pub async fn list_groups(broker: &Checked<'_>, req: wire::ListGroupsRequest) -> Answer {
    let mut room = ListRoom::new(broker.config.max_frame_bytes);
    let advice = if req.topic.is_none() {
        "name one topic (pigeon group list --topic T) to list fewer, or raise the broker's max_frame_bytes"
    } else {
        "raise the broker's max_frame_bytes"
    };
    let fits = |topic: &str, group: &str| {
        room.take(
            wire::GroupListing::encoded_len(topic, group),
            "groups",
            advice,
        )
    };
    let groups = broker.list_groups(req.topic.as_deref(), fits).await?;
    let groups = groups.into_iter().map(|g| wire::GroupListing {
        topic: g.topic,
        group: g.group,
        paused: g.paused,
        partitions: g.partitions,
        lag: g.lag,
        in_flight: g.in_flight,
        delayed: g.delayed,
        dead_lettered: g.dead_lettered,
    });
    Ok(wire::ListGroupsResponse {
        groups: groups.collect(),
    }
    .into())
}

/// DescribeBroker.
pub async fn describe_broker(broker: &Checked<'_>) -> Answer {
    let described = broker.describe_broker().await?;
    let config = described.config.into_iter().map(|(key, value)| {
        let mut value = value;
        truncate(&mut value, wire::MAX_DESCRIBE_STRING_LEN);
        wire::ConfigEntry {
            key: key.to_owned(),
            value,
        }
    });
    let mut data_dir = described.data_dir.display().to_string();
    truncate(&mut data_dir, wire::MAX_DESCRIBE_STRING_LEN);
    Ok(wire::DescribeBrokerResponse {
        version: described.version,
        started_ms: described.started_ms,
        uptime_ms: u64::try_from(described.uptime.as_millis()).unwrap_or(u64::MAX),
        data_dir,
        data_dir_bytes: described.data_dir_bytes,
        topics: u32::try_from(described.topics).unwrap_or(u32::MAX),
        groups: u32::try_from(described.groups).unwrap_or(u32::MAX),
        config: config.collect(),
    }
    .into())
}

/// Cuts `s` to at most `max` bytes, at a character boundary (a path or a
/// setting longer than the wire allows still describes the broker).
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
