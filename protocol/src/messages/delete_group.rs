//! DeleteGroup (API key 45): delete a consumer group and its delivery state.
//!
//! Request v0: `topic` string (topic name), `group` string (group name).
//! Response v0: empty body; the outcome is the header's error code
//! (`UnknownTopic`, `UnknownGroup`, …).

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Delete a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteGroupRequest {
    /// The topic.
    pub topic: String,
    /// The group to delete.
    pub group: String,
}

/// DeleteGroup succeeded (errors travel in the response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeleteGroupResponse;

impl Message for DeleteGroupRequest {
    const API_KEY: ApiKey = ApiKey::DeleteGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(DeleteGroupRequest {
            topic: r.topic_name("topic")?,
            group: r.group_name("group")?,
        })
    }
}

impl Message for DeleteGroupResponse {
    const API_KEY: ApiKey = ApiKey::DeleteGroup;

    fn encode(&self, _version: u16, _w: &mut Writer<'_>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(_version: u16, _r: &mut Reader) -> Result<Self, CodecError> {
        Ok(DeleteGroupResponse)
    }
}
