//! JoinGroup (API key 46): a consumer joins a consumer group.
//!
//! Request v0: `topic` string (topic name), `group` string (group name),
//! `consumer_name` string (1–255 bytes of UTF-8, e.g. `billing-worker-3`).
//! Response v0: `consumer_id` u64, `settings` ([`GroupSettings`], 30 bytes).
//!
//! The consumer id goes in every Receive and Settle of this consumer.

use super::Message;
use super::group_settings::GroupSettings;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::limits::MAX_SOFTWARE_NAME_LEN;
use crate::wire::{Reader, Writer};

/// Longest consumer name.
pub const MAX_CONSUMER_NAME_LEN: usize = MAX_SOFTWARE_NAME_LEN;

/// A consumer joins a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupRequest {
    /// The topic.
    pub topic: String,
    /// The group to join.
    pub group: String,
    /// The consumer's name, 1 to 255 bytes, shown in message states.
    pub consumer_name: String,
}

/// The consumer's identity in the group, and the group's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// Id to put in every Receive and Settle.
    pub consumer_id: u64,
    /// The group's settings (the lease length, the in-flight limit, …).
    pub settings: GroupSettings,
}

impl Message for JoinGroupRequest {
    const API_KEY: ApiKey = ApiKey::JoinGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)?;
        if self.consumer_name.is_empty() {
            return Err(w.error(CodecErrorKind::InvalidValue {
                field: "consumer_name",
                value: 0,
            }));
        }
        w.string("consumer_name", &self.consumer_name, MAX_CONSUMER_NAME_LEN)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        let topic = r.topic_name("topic")?;
        let group = r.group_name("group")?;
        let start = r.offset();
        let consumer_name = r.string("consumer_name", MAX_CONSUMER_NAME_LEN)?;
        if consumer_name.is_empty() {
            return Err(CodecError::new(
                start,
                CodecErrorKind::InvalidValue {
                    field: "consumer_name",
                    value: 0,
                },
            ));
        }
        Ok(JoinGroupRequest {
            topic,
            group,
            consumer_name,
        })
    }
}

impl Message for JoinGroupResponse {
    const API_KEY: ApiKey = ApiKey::JoinGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.u64(self.consumer_id);
        self.settings.encode(w)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(JoinGroupResponse {
            consumer_id: r.u64("consumer_id")?,
            settings: GroupSettings::decode(r)?,
        })
    }
}
