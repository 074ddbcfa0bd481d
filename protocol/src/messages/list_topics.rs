//! ListTopics (API key 12).
//!
//! Request v0: empty body.
//! Response v0: `topics` array of (`topic` string, `partitions` u32).

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// List every topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListTopicsRequest;

/// One topic in a [`ListTopicsResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicListing {
    /// The topic's name.
    pub topic: String,
    /// Its number of partitions.
    pub partitions: u32,
}

impl TopicListing {
    /// Bytes the listing of `topic` takes in an encoded response: what a
    /// broker adds up to stop building a list before it passes the frame
    /// limit.
    pub fn encoded_len(topic: &str) -> usize {
        2 + topic.len() + 4
    }
}

/// Bytes of a [`ListTopicsResponse`] frame besides its listings (frame
/// header and the array's count).
pub const LIST_RESPONSE_OVERHEAD: usize = crate::frame::RESPONSE_HEADER_LEN + 4;

/// Every topic the broker has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListTopicsResponse {
    /// The topics, in no particular order.
    pub topics: Vec<TopicListing>,
}

impl Message for ListTopicsRequest {
    const API_KEY: ApiKey = ApiKey::ListTopics;

    fn encode(&self, _version: u16, _w: &mut Writer<'_>) -> Result<(), CodecError> {
        Ok(())
    }

    fn decode(_version: u16, _r: &mut Reader) -> Result<Self, CodecError> {
        Ok(ListTopicsRequest)
    }
}

impl Message for ListTopicsResponse {
    const API_KEY: ApiKey = ApiKey::ListTopics;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.vec("topics", &self.topics, false, |w, t| {
            w.topic_name("topic", &t.topic)?;
            w.u32(t.partitions);
            Ok(())
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(ListTopicsResponse {
            topics: r.vec("topics", 6, false, |r| {
                Ok(TopicListing {
                    topic: r.topic_name("topic")?,
                    partitions: r.u32("partitions")?,
                })
            })?,
        })
    }
}
