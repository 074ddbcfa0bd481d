//! MessageState (API key 49): where one message stands in a consumer group.
//!
//! Request v0: `topic` string (topic name), `group` string (group name),
//! `partition` u32, `offset` u64.
//!
//! Response v0: `state` u8 (0 Available, 1 InFlight, 2 Delayed, 3 Settled,
//! 4 DeadLettered, 5 NotYetWritten, 6 RemovedByRetention; any other value
//! is invalid), `attempts` u32, `consumer` string ≤ 255, `until_ms` i64,
//! `first_delivery_ms` i64, `last_delivery_ms` i64, `reason` string ≤ 1024.

use super::Message;
use super::join_group::MAX_CONSUMER_NAME_LEN;
use super::settle::MAX_SETTLE_REASON_LEN;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::wire::{Reader, Writer};

/// A message's state in one consumer group.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Waiting to be delivered.
    Available = 0,
    /// Delivered and leased to a consumer.
    InFlight = 1,
    /// Waiting for its redelivery backoff to pass.
    Delayed = 2,
    /// Acked: done for this group.
    Settled = 3,
    /// Copied to the dead-letter topic, then settled.
    DeadLettered = 4,
    /// At or beyond the partition's log end offset.
    NotYetWritten = 5,
    /// Below the log start offset: retention removed it.
    RemovedByRetention = 6,
}

impl MessageState {
    /// The number on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The state numbered `n`; an unknown number is `InvalidValue`.
    pub fn from_u8(n: u8) -> Result<MessageState, CodecErrorKind> {
        match n {
            0 => Ok(MessageState::Available),
            1 => Ok(MessageState::InFlight),
            2 => Ok(MessageState::Delayed),
            3 => Ok(MessageState::Settled),
            4 => Ok(MessageState::DeadLettered),
            5 => Ok(MessageState::NotYetWritten),
            6 => Ok(MessageState::RemovedByRetention),
            other => Err(CodecErrorKind::InvalidValue {
                field: "state",
                value: u64::from(other),
            }),
        }
    }
}

/// Look up one message's state in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStateRequest {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// Partition id.
    pub partition: u32,
    /// The message's offset.
    pub offset: u64,
}

/// One message's state in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStateResponse {
    /// Where the message stands.
    pub state: MessageState,
    /// Deliveries of the message to the group so far.
    pub attempts: u32,
    /// Name of the consumer holding the lease; empty unless `InFlight`.
    pub consumer: String,
    /// `InFlight`: the lease deadline; `Delayed`: when the next attempt is
    /// due (ms since the Unix epoch); −1 otherwise.
    pub until_ms: i64,
    /// First delivery to the group, ms since the Unix epoch; −1 if never.
    pub first_delivery_ms: i64,
    /// Latest delivery to the group, ms since the Unix epoch; −1 if never.
    pub last_delivery_ms: i64,
    /// `DeadLettered`: why (max deliveries, or rejected with the consumer's
    /// reason); empty otherwise.
    pub reason: String,
}

impl Message for MessageStateRequest {
    const API_KEY: ApiKey = ApiKey::MessageState;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)?;
        w.u32(self.partition);
        w.u64(self.offset);
        Ok(())
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(MessageStateRequest {
            topic: r.topic_name("topic")?,
            group: r.group_name("group")?,
            partition: r.u32("partition")?,
            offset: r.u64("offset")?,
        })
    }
}

impl Message for MessageStateResponse {
    const API_KEY: ApiKey = ApiKey::MessageState;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.u8(self.state.as_u8());
        w.u32(self.attempts);
        w.string("consumer", &self.consumer, MAX_CONSUMER_NAME_LEN)?;
        w.i64(self.until_ms);
        w.i64(self.first_delivery_ms);
        w.i64(self.last_delivery_ms);
        w.string("reason", &self.reason, MAX_SETTLE_REASON_LEN)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        let start = r.offset();
        let state =
            MessageState::from_u8(r.u8("state")?).map_err(|kind| CodecError::new(start, kind))?;
        Ok(MessageStateResponse {
            state,
            attempts: r.u32("attempts")?,
            consumer: r.string("consumer", MAX_CONSUMER_NAME_LEN)?,
            until_ms: r.i64("until_ms")?,
            first_delivery_ms: r.i64("first_delivery_ms")?,
            last_delivery_ms: r.i64("last_delivery_ms")?,
            reason: r.string("reason", MAX_SETTLE_REASON_LEN)?,
        })
    }
}
