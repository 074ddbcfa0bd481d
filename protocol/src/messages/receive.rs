//! Receive (API key 47): a consumer of a group receives deliveries.
//!
//! Request v0: `topic` string (topic name), `group` string (group name),
//! `consumer_id` u64, `max_messages` u32 (≥ 1), `max_wait_ms` u32.
//! Request v1 adds `max_bytes` u32 after `max_wait_ms` (0: no bound but
//! the frame's; a v0 request decodes with 0).
//!
//! Response v0 and v1 are the same.
//!
//! Response v0: `deliveries` array (possibly empty) of (`partition` u32,
//! `offset` u64, `attempt` u32, `lease_deadline_ms` i64, `timestamp_ms`
//! i64, `key` option bytes, `value` bytes, `headers` array of (`name`
//! string ≤ 255, `value` bytes)).
//!
//! Each delivery is leased to the consumer until its deadline: settle it
//! (Settle, key 48) before then, or it is redelivered. Keys, values and
//! header values are bounded by the max frame size and decoded as zero-copy
//! slices of the frame.

use bytes::Bytes;

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::wire::{Reader, Writer};

/// Longest header name in a delivery, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 255;

/// Smallest encoding of one [`Delivery`]: the fixed fields, an absent key,
/// an empty value and no headers.
const MIN_DELIVERY_LEN: usize = 4 + 8 + 4 + 8 + 8 + 1 + 4 + 4;

/// Smallest encoding of one [`DeliveryHeader`].
const MIN_HEADER_LEN: usize = 2 + 4;

/// Ask for up to `max_messages` deliveries, waiting up to `max_wait_ms`
/// for the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveRequest {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// The id JoinGroup returned.
    pub consumer_id: u64,
    /// Most deliveries in the response; at least 1.
    pub max_messages: u32,
    /// Longest the broker may wait while nothing is available (0: answer
    /// at once, possibly with no deliveries).
    pub max_wait_ms: u32,
    /// Most bytes of deliveries in the response, as the broker counts them
    /// (always at least one message); 0: only the frame limit (version 1;
    /// not sent in version 0).
    pub max_bytes: u32,
}

/// The messages leased to the consumer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiveResponse {
    /// Zero or more deliveries (none if the wait ran out).
    pub deliveries: Vec<Delivery>,
}

/// One message, leased to the consumer until `lease_deadline_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Partition id.
    pub partition: u32,
    /// The message's offset in its partition.
    pub offset: u64,
    /// Which delivery of this message to the group this is: 1 the first.
    pub attempt: u32,
    /// When the lease ends, ms since the Unix epoch (broker clock).
    pub lease_deadline_ms: i64,
    /// The record's append time, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The record's key, if it has one.
    pub key: Option<Bytes>,
    /// The record's value.
    pub value: Bytes,
    /// The record's headers, in order (names may repeat).
    pub headers: Vec<DeliveryHeader>,
}

/// A record header: a UTF-8 name and a byte value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryHeader {
    /// Header name, at most 255 bytes.
    pub name: String,
    /// Header value.
    pub value: Bytes,
}

impl Message for ReceiveRequest {
    const API_KEY: ApiKey = ApiKey::Receive;

    fn encode(&self, version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)?;
        w.u64(self.consumer_id);
        if self.max_messages == 0 {
            return Err(w.error(CodecErrorKind::InvalidValue {
                field: "max_messages",
                value: 0,
            }));
        }
        w.u32(self.max_messages);
        w.u32(self.max_wait_ms);
        if version >= 1 {
            w.u32(self.max_bytes);
        }
        Ok(())
    }

    fn decode(version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        let topic = r.topic_name("topic")?;
        let group = r.group_name("group")?;
        let consumer_id = r.u64("consumer_id")?;
        let start = r.offset();
        let max_messages = r.u32("max_messages")?;
        if max_messages == 0 {
            return Err(CodecError::new(
                start,
                CodecErrorKind::InvalidValue {
                    field: "max_messages",
                    value: 0,
                },
            ));
        }
        Ok(ReceiveRequest {
            topic,
            group,
            consumer_id,
            max_messages,
            max_wait_ms: r.u32("max_wait_ms")?,
            max_bytes: if version >= 1 { r.u32("max_bytes")? } else { 0 },
        })
    }
}

impl Message for ReceiveResponse {
    const API_KEY: ApiKey = ApiKey::Receive;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.vec("deliveries", &self.deliveries, false, |w, d| {
            w.u32(d.partition);
            w.u64(d.offset);
            w.u32(d.attempt);
            w.i64(d.lease_deadline_ms);
            w.i64(d.timestamp_ms);
            w.option_bytes("key", d.key.as_deref())?;
            w.bytes("value", &d.value)?;
            w.vec("headers", &d.headers, false, |w, h| {
                w.string("header_name", &h.name, MAX_HEADER_NAME_LEN)?;
                w.bytes("header_value", &h.value)
            })
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        let max_bytes = u64::from(r.limits().max_frame_size);
        Ok(ReceiveResponse {
            deliveries: r.vec("deliveries", MIN_DELIVERY_LEN, false, |r| {
                Ok(Delivery {
                    partition: r.u32("partition")?,
                    offset: r.u64("offset")?,
                    attempt: r.u32("attempt")?,
                    lease_deadline_ms: r.i64("lease_deadline_ms")?,
                    timestamp_ms: r.i64("timestamp_ms")?,
                    key: r.option_bytes("key", max_bytes)?,
                    value: r.bytes("value", max_bytes)?,
                    headers: r.vec("headers", MIN_HEADER_LEN, false, |r| {
                        Ok(DeliveryHeader {
                            name: r.string("header_name", MAX_HEADER_NAME_LEN)?,
                            value: r.bytes("header_value", max_bytes)?,
                        })
                    })?,
                })
            })?,
        })
    }
}
