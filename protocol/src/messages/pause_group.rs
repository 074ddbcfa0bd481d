//! PauseGroup (API key 44): pause or resume a consumer group.
//!
//! Request v0: `topic` string (topic name), `group` string (group name),
//! `paused` u8 bool (1 pause, 0 resume; anything else is invalid).
//! Response v0: empty body; the outcome is the header's error code
//! (`UnknownTopic`, `UnknownGroup`, …).
//!
//! A paused group makes no new deliveries; settling what is already in
//! flight still counts. The pause survives broker restarts.

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Pause (`paused: true`) or resume (`paused: false`) a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseGroupRequest {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// `true` to pause, `false` to resume.
    pub paused: bool,
}

/// PauseGroup succeeded (errors travel in the response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PauseGroupResponse;

impl Message for PauseGroupRequest {
    const API_KEY: ApiKey = ApiKey::PauseGroup;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)?;
        w.bool(self.paused);
        Ok(())
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(PauseGroupRequest {
            topic: r.topic_name("topic")?,
            group: r.group_name("group")?,
            paused: r.bool("paused")?,
        })
    }
}

impl Message for PauseGroupResponse {
    const API_KEY: ApiKey = ApiKey::PauseGroup;

    fn encode(&self, _version: u16, _w: &mut Writer<'_>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(_version: u16, _r: &mut Reader) -> Result<Self, CodecError> {
        Ok(PauseGroupResponse)
    }
}
