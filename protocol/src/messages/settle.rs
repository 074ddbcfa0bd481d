//! Settle (API key 48): a consumer settles deliveries it holds: ack, nack,
//! reject (dead-letter) or extend the lease.
//!
//! Request v0: `topic` string (topic name), `group` string (group name),
//! `consumer_id` u64, `items` non-empty array of (`partition` u32, `offset`
//! u64, `action` u8 (0 Ack, 1 Nack, 2 Reject, 3 Extend; any other value is
//! invalid), `delay_ms` u32, `reason` string ≤ 1024).
//!
//! Request v1: the same, with `attempt` u32 after `offset` in each item:
//! the attempt number of the delivery being settled. The broker applies the
//! item only if the consumer's lease on the offset is that attempt (else
//! `LeaseLost`): a late settle of an expired lease is refused even when the
//! message came back to the same consumer. 0 (and every v0 item) means "the
//! consumer's current lease, whichever attempt".
//!
//! Request v2: the same bytes as v1; `action` may also be 4, Release: the
//! consumer gives the delivery back unprocessed (its client had it
//! buffered and never handed it to the application). The message is
//! available again at once and the delivery is not counted: its next
//! delivery has the same attempt number. `delay_ms` and `reason` should be
//! 0 and empty. Action 4 in a v0 or v1 request is invalid (and a client
//! cannot encode it: it needs a broker that speaks v2).
//!
//! | action | v0 | v1 | v2 |
//! | --- | --- | --- | --- |
//! | 0 Ack, 1 Nack, 2 Reject, 3 Extend | yes | yes | yes |
//! | 4 Release | — | — | yes |
//!
//! Response v0, v1 and v2: `results` array of (`partition` u32, `offset` u64,
//! `error_code` u16, `error_message` string): one per item, in order.
//!
//! `delay_ms` is read by Nack (the redelivery delay; 0 = the group's
//! backoff) and Extend (the new lease length from now; 0 = the group's
//! ack timeout), and should be 0 otherwise. `reason` is Reject's reason
//! text, recorded with the dead-lettered copy, and should be empty
//! otherwise. A settle of a message whose lease this consumer no longer
//! holds fails for that item alone (`LeaseLost`).

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::error_code::ErrorCode;
use crate::frame::truncate_at_char_boundary;
use crate::limits::MAX_ERROR_MESSAGE_LEN;
use crate::wire::{Reader, Writer};

/// Longest reject reason, in bytes.
pub const MAX_SETTLE_REASON_LEN: usize = 1024;

/// Smallest encoding of one [`SettleItem`] (empty reason).
const MIN_ITEM_LEN: usize = 4 + 8 + 1 + 4 + 2;

/// Smallest encoding of one [`SettleResult`] (empty message).
const MIN_RESULT_LEN: usize = 4 + 8 + 2 + 2;

/// What to do with a delivery.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SettleAction {
    /// Done with it: the message is settled for the group.
    Ack = 0,
    /// Not now: redeliver it after `delay_ms` (0: the group's backoff).
    Nack = 1,
    /// Never: dead-letter it at once, with `reason`.
    Reject = 2,
    /// Still working: the lease now ends `delay_ms` from now (0: the
    /// group's ack timeout).
    Extend = 3,
    /// Never processed: back to the group at once, without counting the
    /// delivery as an attempt (version 2).
    Release = 4,
}

impl SettleAction {
    /// The number on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The lowest Settle version that carries this action.
    pub fn since_version(self) -> u16 {
        match self {
            SettleAction::Release => 2,
            _ => 0,
        }
    }

    /// The action numbered `n`; an unknown number is `InvalidValue`.
    pub fn from_u8(n: u8) -> Result<SettleAction, CodecErrorKind> {
        match n {
            0 => Ok(SettleAction::Ack),
            1 => Ok(SettleAction::Nack),
            2 => Ok(SettleAction::Reject),
            3 => Ok(SettleAction::Extend),
            4 => Ok(SettleAction::Release),
            other => Err(CodecErrorKind::InvalidValue {
                field: "action",
                value: u64::from(other),
            }),
        }
    }

    /// The action numbered `n` in a request of `version`: an action that
    /// version does not have is `InvalidValue`, like an unknown number.
    pub fn from_u8_in(n: u8, version: u16) -> Result<SettleAction, CodecErrorKind> {
        let action = SettleAction::from_u8(n)?;
        if action.since_version() > version {
            return Err(CodecErrorKind::InvalidValue {
                field: "action",
                value: u64::from(n),
            });
        }
        Ok(action)
    }
}

/// Settle one or more deliveries held by one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleRequest {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// The id JoinGroup returned.
    pub consumer_id: u64,
    /// At least one delivery to settle.
    pub items: Vec<SettleItem>,
}

/// What to do with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleItem {
    /// Partition id.
    pub partition: u32,
    /// The delivery's offset.
    pub offset: u64,
    /// The delivery's attempt number: the item applies only to that lease
    /// (v1; 0 = whichever lease the consumer holds, and what v0 decodes to).
    pub attempt: u32,
    /// Ack, nack, reject, extend or release.
    pub action: SettleAction,
    /// Nack: redelivery delay (0 = the group's backoff). Extend: new lease
    /// length from now (0 = the group's ack timeout). Otherwise 0.
    pub delay_ms: u32,
    /// Reject: why, kept with the dead-lettered copy (at most 1024 bytes).
    /// Otherwise empty.
    pub reason: String,
}

impl SettleItem {
    /// An ack of the delivery at `partition`/`offset`, attempt `attempt`
    /// (0: whichever lease the consumer holds).
    ///
    /// ```
    /// use pigeon_protocol::{SettleAction, SettleItem};
    /// let item = SettleItem::ack(2, 41, 1);
    /// assert_eq!((item.action, item.delay_ms, item.reason.as_str()), (SettleAction::Ack, 0, ""));
    /// ```
    pub fn ack(partition: u32, offset: u64, attempt: u32) -> SettleItem {
        SettleItem {
            partition,
            offset,
            attempt,
            action: SettleAction::Ack,
            delay_ms: 0,
            reason: String::new(),
        }
    }

    /// A release of the delivery at `partition`/`offset`, attempt
    /// `attempt`: back to the group unprocessed, not counted (Settle v2).
    ///
    /// ```
    /// use pigeon_protocol::{SettleAction, SettleItem};
    /// let item = SettleItem::release(0, 7, 2);
    /// assert_eq!((item.action, item.attempt), (SettleAction::Release, 2));
    /// ```
    pub fn release(partition: u32, offset: u64, attempt: u32) -> SettleItem {
        SettleItem {
            action: SettleAction::Release,
            ..SettleItem::ack(partition, offset, attempt)
        }
    }
}

/// The outcome of each settle item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettleResponse {
    /// One result per item, in the request's order.
    pub results: Vec<SettleResult>,
}

/// The outcome of settling one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleResult {
    /// Partition id.
    pub partition: u32,
    /// The delivery's offset.
    pub offset: u64,
    /// `None`, or why this item was not applied (`LeaseLost`,
    /// `UnknownPartition`, …).
    pub error_code: ErrorCode,
    /// Why, in words, when `error_code` is not `None` (empty otherwise; at
    /// most 1024 bytes, longer is truncated).
    pub error_message: String,
}

impl Message for SettleRequest {
    const API_KEY: ApiKey = ApiKey::Settle;

    fn encode(&self, version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)?;
        w.u64(self.consumer_id);
        w.vec("items", &self.items, true, |w, item| {
            if item.action.since_version() > version {
                // An older broker would refuse the whole request.
                return Err(w.error(CodecErrorKind::InvalidValue {
                    field: "action",
                    value: u64::from(item.action.as_u8()),
                }));
            }
            w.u32(item.partition);
            w.u64(item.offset);
            if version >= 1 {
                w.u32(item.attempt);
            }
            w.u8(item.action.as_u8());
            w.u32(item.delay_ms);
            w.string("reason", &item.reason, MAX_SETTLE_REASON_LEN)
        })
    }

    fn decode(version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(SettleRequest {
            topic: r.topic_name("topic")?,
            group: r.group_name("group")?,
            consumer_id: r.u64("consumer_id")?,
            items: r.vec("items", MIN_ITEM_LEN, true, |r| {
                let partition = r.u32("partition")?;
                let offset = r.u64("offset")?;
                let attempt = if version >= 1 { r.u32("attempt")? } else { 0 };
                let start = r.offset();
                let action = SettleAction::from_u8_in(r.u8("action")?, version)
                    .map_err(|kind| CodecError::new(start, kind))?;
                Ok(SettleItem {
                    partition,
                    offset,
                    attempt,
                    action,
                    delay_ms: r.u32("delay_ms")?,
                    reason: r.string("reason", MAX_SETTLE_REASON_LEN)?,
                })
            })?,
        })
    }
}

impl Message for SettleResponse {
    const API_KEY: ApiKey = ApiKey::Settle;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.vec("results", &self.results, false, |w, result| {
            w.u32(result.partition);
            w.u64(result.offset);
            w.u16(result.error_code.as_u16());
            w.string(
                "error_message",
                truncate_at_char_boundary(&result.error_message, MAX_ERROR_MESSAGE_LEN),
                MAX_ERROR_MESSAGE_LEN,
            )
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(SettleResponse {
            results: r.vec("results", MIN_RESULT_LEN, false, |r| {
                Ok(SettleResult {
                    partition: r.u32("partition")?,
                    offset: r.u64("offset")?,
                    error_code: ErrorCode::from_u16(r.u16("error_code")?),
                    error_message: r.string("error_message", MAX_ERROR_MESSAGE_LEN)?,
                })
            })?,
        })
    }
}
