//! AlterGroup (API key 42): replace a consumer group's settings.
//!
//! Request v0: `topic` string (topic name), `group` string (group name),
//! `settings` ([`GroupSettings`], 30 bytes: the whole new set).
//! Response v0: empty body; the outcome is the header's error code
//! (`UnknownTopic`, `UnknownGroup`, `InvalidConfig`, …).

use super::Message;
use super::group_settings::GroupSettings;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Replace a consumer group's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterGroupRequest {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// The group's new settings, all of them.
    pub settings: GroupSettings,
}

/// AlterGroup succeeded (errors travel in the response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlterGroupResponse;

impl Message for AlterGroupRequest {
    const API_KEY: ApiKey = ApiKey::AlterGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)?;
        self.settings.encode(w)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(AlterGroupRequest {
            topic: r.topic_name("topic")?,
            group: r.group_name("group")?,
            settings: GroupSettings::decode(r)?,
        })
    }
}

impl Message for AlterGroupResponse {
    const API_KEY: ApiKey = ApiKey::AlterGroup;

    fn encode(&self, _version: u16, _w: &mut Writer<'_>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(_version: u16, _r: &mut Reader) -> Result<Self, CodecError> {
        Ok(AlterGroupResponse)
    }
}
