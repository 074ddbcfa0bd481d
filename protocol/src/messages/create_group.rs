//! CreateGroup (API key 40): create a consumer group on a topic.
//!
//! Request v0: `topic` string (topic name), `group` string (group name),
//! `settings` ([`GroupSettings`], 30 bytes).
//! Response v0: empty body; the outcome is the header's error code
//! (`UnknownTopic`, `GroupAlreadyExists`, `InvalidConfig`, …).

use super::Message;
use super::group_settings::GroupSettings;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Create a consumer group on a topic, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateGroupRequest {
    /// The topic the group subscribes to.
    pub topic: String,
    /// The new group's name (the topic naming rules apply).
    pub group: String,
    /// How the group delivers.
    pub settings: GroupSettings,
}

/// CreateGroup succeeded (errors travel in the response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateGroupResponse;

impl Message for CreateGroupRequest {
    const API_KEY: ApiKey = ApiKey::CreateGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)?;
        self.settings.encode(w)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(CreateGroupRequest {
            topic: r.topic_name("topic")?,
            group: r.group_name("group")?,
            settings: GroupSettings::decode(r)?,
        })
    }
}

impl Message for CreateGroupResponse {
    const API_KEY: ApiKey = ApiKey::CreateGroup;

    fn encode(&self, _version: u16, _w: &mut Writer<'_>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(_version: u16, _r: &mut Reader) -> Result<Self, CodecError> {
        Ok(CreateGroupResponse)
    }
}
