//! Redrive (API key 50): move a consumer group's dead-lettered messages
//! back into the source topic.
//!
//! Request v0 and v1: `topic` string (topic name), `group` string (group
//! name), `max` u32 (0 = all), `dry_run` u8 bool, `rate_per_sec` u32 (0 =
//! unlimited).
//!
//! Response v0: `redriven` array of (`dlq_offset` u64, `partition` u32,
//! `new_offset` u64) — one entry per message, so a broker answering v0
//! moves at most [`V0_MAX_MESSAGES`] per request.
//!
//! Response v1: a bounded summary — `moved` u64, `skipped` u64, `outcome`
//! u8 ([`RedriveOutcome`]), then `partitions` array of (`partition` u32,
//! `dlq_from` u64, `dlq_to` u64, `moved` u64, `skipped` u64, `new_from`
//! u64, `new_to` u64): per DLQ partition looked at, the DLQ offsets looked
//! at `[dlq_from, dlq_to)`, the group's messages moved from them, the
//! other records left, and the span `[new_from, new_to)` of the new offsets
//! in the source partition of the same number (both 0 when nothing moved,
//! and on a dry run).
//!
//! The dead-letter topic is `<topic>.<group>.dlq`. Only the group's own
//! copies move (`pigeon.dlq.source-topic` and `pigeon.dlq.group` headers).
//! A dry run reports what would be moved and moves nothing.

use super::Message;
use crate::api::ApiKey;
use crate::codec_error::{CodecError, CodecErrorKind};
use crate::wire::{Reader, Writer};

/// Most messages a broker moves for one version 0 request (its answer
/// lists each one); run it again for more.
pub const V0_MAX_MESSAGES: u32 = 100_000;

/// Messages a redrive moves per page. The CLI asks for confirmation
/// before moving more than one page.
pub const REDRIVE_PAGE_MESSAGES: u64 = 256;

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

/// What a redrive moved (or, on a dry run, would move). A version 0
/// response fills only `redriven`; a version 1 response everything else
/// ([`RedriveResponse::summarised`] fills the summary from a version 0
/// list).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedriveResponse {
    /// Version 0: one entry per message, in dead-letter topic order.
    pub redriven: Vec<RedrivenMessage>,
    /// Messages moved (would be, dry run).
    pub moved: u64,
    /// Records of the DLQ looked at and left: not the group's.
    pub skipped: u64,
    /// Why the redrive ended.
    pub outcome: RedriveOutcome,
    /// Per DLQ partition looked at, in partition order.
    pub partitions: Vec<RedrivePartition>,
}

/// One dead-lettered message moved back (version 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedrivenMessage {
    /// Its offset in the dead-letter topic.
    pub dlq_offset: u64,
    /// The source partition it went back to.
    pub partition: u32,
    /// Its new offset in that partition; 0 on a dry run.
    pub new_offset: u64,
}

/// Why a redrive ended (version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedriveOutcome {
    /// 0: everything the DLQ held when the redrive reached it was looked at.
    #[default]
    Done,
    /// 1: `max` messages moved; more may wait.
    MaxReached,
    /// 2: stopped part-way (the broker is shutting down, or the group was
    /// deleted); what moved stays moved, run it again for the rest.
    Interrupted,
}

/// What a redrive did in one DLQ partition (version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedrivePartition {
    /// The DLQ partition, and the source partition its messages went to.
    pub partition: u32,
    /// First DLQ offset looked at.
    pub dlq_from: u64,
    /// Offset after the last DLQ record looked at.
    pub dlq_to: u64,
    /// The group's messages moved (would be, dry run).
    pub moved: u64,
    /// Other records left in place.
    pub skipped: u64,
    /// First new offset in the source partition (0: none).
    pub new_from: u64,
    /// Offset after the last new one (0: none).
    pub new_to: u64,
}

impl RedriveOutcome {
    fn to_u8(self) -> u8 {
        match self {
            RedriveOutcome::Done => 0,
            RedriveOutcome::MaxReached => 1,
            RedriveOutcome::Interrupted => 2,
        }
    }
}

impl RedriveResponse {
    /// The response with its summary filled from the version 0 list when
    /// it has one (a broker that speaks only version 0): one entry per
    /// partition with the DLQ and new offset spans of the messages listed
    /// (no new span for a `dry_run`), no skipped count, outcome `Done`. A
    /// version 1 response is unchanged.
    pub fn summarised(mut self, dry_run: bool) -> RedriveResponse {
        if self.redriven.is_empty() {
            return self;
        }
        let mut partitions: Vec<RedrivePartition> = Vec::new();
        for m in &self.redriven {
            let at = match partitions.iter().position(|p| p.partition == m.partition) {
                Some(at) => at,
                None => {
                    partitions.push(RedrivePartition {
                        partition: m.partition,
                        dlq_from: m.dlq_offset,
                        new_from: m.new_offset,
                        ..RedrivePartition::default()
                    });
                    partitions.len() - 1
                }
            };
            let entry = &mut partitions[at];
            entry.dlq_from = entry.dlq_from.min(m.dlq_offset);
            entry.dlq_to = entry.dlq_to.max(m.dlq_offset + 1);
            entry.new_from = entry.new_from.min(m.new_offset);
            entry.new_to = entry.new_to.max(m.new_offset + 1);
            entry.moved += 1;
        }
        if dry_run {
            for p in &mut partitions {
                (p.new_from, p.new_to) = (0, 0);
            }
        }
        partitions.sort_by_key(|p| p.partition);
        self.moved = self.redriven.len() as u64;
        self.partitions = partitions;
        self
    }
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

    fn encode(&self, version: u16, w: &mut Writer<'_>) -> Result<(), CodecError> {
        if version == 0 {
            return w.vec("redriven", &self.redriven, false, |w, m| {
                w.u64(m.dlq_offset);
                w.u32(m.partition);
                w.u64(m.new_offset);
                Ok(())
            });
        }
        w.u64(self.moved);
        w.u64(self.skipped);
        w.u8(self.outcome.to_u8());
        w.vec("partitions", &self.partitions, false, |w, p| {
            w.u32(p.partition);
            for v in [
                p.dlq_from, p.dlq_to, p.moved, p.skipped, p.new_from, p.new_to,
            ] {
                w.u64(v);
            }
            Ok(())
        })
    }

    fn decode(version: u16, r: &mut Reader) -> Result<Self, CodecError> {
        if version == 0 {
            return Ok(RedriveResponse {
                redriven: r.vec("redriven", 20, false, |r| {
                    Ok(RedrivenMessage {
                        dlq_offset: r.u64("dlq_offset")?,
                        partition: r.u32("partition")?,
                        new_offset: r.u64("new_offset")?,
                    })
                })?,
                ..RedriveResponse::default()
            });
        }
        let moved = r.u64("moved")?;
        let skipped = r.u64("skipped")?;
        let at = r.offset();
        let outcome = match r.u8("outcome")? {
            0 => RedriveOutcome::Done,
            1 => RedriveOutcome::MaxReached,
            2 => RedriveOutcome::Interrupted,
            other => {
                return Err(CodecError::new(
                    at,
                    CodecErrorKind::InvalidValue {
                        field: "outcome",
                        value: u64::from(other),
                    },
                ));
            }
        };
        let partitions = r.vec("partitions", 52, false, |r| {
            Ok(RedrivePartition {
                partition: r.u32("partition")?,
                dlq_from: r.u64("dlq_from")?,
                dlq_to: r.u64("dlq_to")?,
                moved: r.u64("moved")?,
                skipped: r.u64("skipped")?,
                new_from: r.u64("new_from")?,
                new_to: r.u64("new_to")?,
            })
        })?;
        Ok(RedriveResponse {
            redriven: Vec::new(),
            moved,
            skipped,
            outcome,
            partitions,
        })
    }
}
