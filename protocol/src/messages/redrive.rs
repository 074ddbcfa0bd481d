//! Redrive (API key 50): move a consumer group's dead-lettered messages
//! back into the source topic.
//!
//! Request v0: `topic` string (topic name), `group` string (group name),
//! `max` u32 (0 = all), `dry_run` u8 bool, `rate_per_sec` u32 (0 =
//! unlimited).
//!
//! Response v0: `redriven` array of (`dlq_offset` u64, `partition` u32,
//! `new_offset` u64).
//!
//! The dead-letter topic is `<topic>.<group>.dlq`. A dry run reports what
//! would be moved and moves nothing.

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::CodecError;
use crate::wire::{Reader, Writer};

/// Move dead-lettered messages back into the source topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveRequest {
    /// The source topic.
    pub topic: String,
    /// The group whose dead letters to move.
    pub group: String,
    /// Most messages to move; 0 = all.
    pub max: u32,
    /// Report what would be moved without moving anything.
    pub dry_run: bool,
    /// Most messages moved per second; 0 = unlimited.
    pub rate_per_sec: u32,
}

/// The messages moved (or, on a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedriveResponse {
    /// One entry per message, in dead-letter topic order.
    pub redriven: Vec<RedrivenMessage>,
}

/// One dead-lettered message moved back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedrivenMessage {
    /// Its offset in the dead-letter topic.
    pub dlq_offset: u64,
    /// The source partition it went back to.
    pub partition: u32,
    /// Its new offset in that partition; 0 on a dry run.
    pub new_offset: u64,
}

impl Message for RedriveRequest {
    const API_KEY: ApiKey = ApiKey::Redrive;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.topic_name("topic", &self.topic)?;
        w.group_name("group", &self.group)?;
        w.u32(self.max);
        w.bool(self.dry_run);
        w.u32(self.rate_per_sec);
        Ok(())
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(RedriveRequest {
            topic: r.topic_name("topic")?,
            group: r.group_name("group")?,
            max: r.u32("max")?,
            dry_run: r.bool("dry_run")?,
            rate_per_sec: r.u32("rate_per_sec")?,
        })
    }
}

impl Message for RedriveResponse {
    const API_KEY: ApiKey = ApiKey::Redrive;

    fn encode(&self, _version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.vec("redriven", &self.redriven, false, |w, m| {
            w.u64(m.dlq_offset);
            w.u32(m.partition);
            w.u64(m.new_offset);
            Ok(())
        })
    }

    fn decode(_version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        Ok(RedriveResponse {
            redriven: r.vec("redriven", 20, false, |r| {
                Ok(RedrivenMessage {
                    dlq_offset: r.u64("dlq_offset")?,
                    partition: r.u32("partition")?,
                    new_offset: r.u64("new_offset")?,
                })
            })?,
        })
    }
}
