//! ListGroups (API key 51): the consumer groups of every topic, or of one,
//! with their progress summed over the topic's partitions.
//!
//! Request v0: `topic` option string (a topic name; absent: every topic).
//!
//! Response v0: `groups` array of (`topic` string, `group` string,
//! `paused` u8 bool, `partitions` u32, `lag` u64, `in_flight` u64,
//! `delayed` u64, `dead_lettered` u64), ordered by topic, then group. A
//! group being deleted while the list is made is left out.

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Bytes of one encoded [`GroupListing`] besides its two names (their
/// length prefixes included, each name at least one byte).
const LISTING_MIN_LEN: usize = 2 + 1 + 2 + 1 + 1 + 4 + 8 * 4;

impl GroupListing {
    /// Bytes the listing of `group` of `topic` takes in an encoded
    /// response: what a broker adds up to stop building a list before it
    /// passes the frame limit.
    pub fn encoded_len(topic: &str, group: &str) -> usize {
        2 + topic.len() + 2 + group.len() + 1 + 4 + 8 * 4
    }
}

/// List consumer groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsRequest {
    /// Only this topic's groups; `None`: every topic's.
    pub topic: Option<String>,
}

/// One consumer group and its progress over all partitions of its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The topic the group subscribes to.
    pub topic: String,
    /// The group's name.
    pub group: String,
    /// Whether deliveries are paused.
    pub paused: bool,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Messages not settled yet, all partitions together.
    pub lag: u64,
    /// Messages leased to consumers now.
    pub in_flight: u64,
    /// Messages waiting for a redelivery.
    pub delayed: u64,
    /// Messages parked in the dead-letter topic, in total.
    pub dead_lettered: u64,
}

/// The groups asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListGroupsResponse {
    /// By topic, then group.
    pub groups: Vec<GroupListing>,
}

impl Message for ListGroupsRequest {
    const API_KEY: ApiKey = ApiKey::ListGroups;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.bool(self.topic.is_some());
        match &self.topic {
            Some(topic) => w.topic_name("topic", topic),
            None => Ok(()),
        }
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        let topic = if r.option_tag("topic")? {
            Some(r.topic_name("topic")?)
        } else {
            None
        };
        Ok(ListGroupsRequest { topic })
    }
}

impl Message for ListGroupsResponse {
    const API_KEY: ApiKey = ApiKey::ListGroups;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.vec("groups", &self.groups, false, |w, g| {
            w.topic_name("topic", &g.topic)?;
            w.group_name("group", &g.group)?;
            w.bool(g.paused);
            w.u32(g.partitions);
            w.u64(g.lag);
            w.u64(g.in_flight);
            w.u64(g.delayed);
            w.u64(g.dead_lettered);
            Ok(())
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(ListGroupsResponse {
            groups: r.vec("groups", LISTING_MIN_LEN, false, |r| {
                Ok(GroupListing {
                    topic: r.topic_name("topic")?,
                    group: r.group_name("group")?,
                    paused: r.bool("paused")?,
                    partitions: r.u32("partitions")?,
                    lag: r.u64("lag")?,
                    in_flight: r.u64("in_flight")?,
                    delayed: r.u64("delayed")?,
                    dead_lettered: r.u64("dead_lettered")?,
                })
            })?,
        })
    }
}
