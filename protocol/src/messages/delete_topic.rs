//! DeleteTopic (API key 11).
//!
//! Request v0: `topic` string (topic name).
//! Response v0: empty body; the outcome is the header's error code
//! (`UnknownTopic`, …).

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Delete a topic and all its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicRequest {
    /// The topic to delete.
    pub topic: String,
}

/// DeleteTopic succeeded (errors travel in the response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeleteTopicResponse;

impl Message for DeleteTopicRequest {
    const API_KEY: ApiKey = ApiKey::DeleteTopic;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(DeleteTopicRequest {
            topic: r.topic_name("topic")?,
        })
    }
}

impl Message for DeleteTopicResponse {
    const API_KEY: ApiKey = ApiKey::DeleteTopic;

    fn encode(&self, _version: u16, _w: &mut Writer<'_>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(_version: u16, _r: &mut Reader) -> Result<Self, CodecError> {
        Ok(DeleteTopicResponse)
    }
}
