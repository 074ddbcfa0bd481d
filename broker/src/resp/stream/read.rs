//! Reads of one stream partition by ID, over the service layer's record
//! reads: find the first offset at or past an ID (binary search, with a
//! shortcut for derived IDs), read forward or backward within an ID
//! interval, and count the entries. Deleted records (`XDEL`) are skipped.

use bytes::Bytes;
use pigeon_protocol::batch::Record;

use super::entry::{fields_of, id_of};
use super::ids::StreamId;
use crate::error::BrokerError;
use crate::service::Checked;

/// Bytes read per step of a scan.
const READ_BYTES: usize = 256 * 1024;

/// Records read per step of a backward scan.
const BACK_STEP: u64 = 64;

/// One entry: its ID and its field/value pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its ID.
    pub id: StreamId,
    /// Its offset in the partition.
    pub offset: u64,
    /// Field, value, field, value, …
    pub fields: Vec<Bytes>,
}

impl Entry {
    fn of(record: &Record) -> Entry {
        Entry {
            id: id_of(record),
            offset: record.offset,
            fields: fields_of(record),
        }
    }
}

/// One partition of a topic, read as a stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamPart<'a> {
    /// The service layer.
    pub broker: &'a Checked<'a>,
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// The group the entries are read for (`XREADGROUP` history, `XCLAIM`:
    /// the group's `consume` rule lets its consumers see them), or `None`
    /// for a plain read (the topic's `read` rule).
    pub group: Option<&'a str>,
}

impl StreamPart<'_> {
    /// The topic and the group it is read for.
    fn on(&self) -> (&str, Option<&str>) {
        (self.topic, self.group)
    }

    /// `(log start, log end)`.
    pub fn bounds(&self) -> Result<(u64, u64), BrokerError> {
        self.broker.partition_bounds(self.on(), self.partition)
    }

    /// The record at `offset`, if it is stored.
    pub fn record_at(&self, offset: u64) -> Result<Option<Record>, BrokerError> {
        let read = self
            .broker
            .read_records(self.on(), self.partition, offset, 1)?;
        Ok(read.records.into_iter().find(|r| r.offset == offset))
    }

    /// The ID of the record at `offset`, if it is stored.
    fn id_at(&self, offset: u64) -> Result<Option<StreamId>, BrokerError> {
        Ok(self.record_at(offset)?.as_ref().map(id_of))
    }

    /// The first offset whose ID is at least `target` (the log end if
    /// none is).
    pub fn seek(&self, target: StreamId) -> Result<u64, BrokerError> {
        let (start, end) = self.bounds()?;
        let ms = i64::try_from(target.ms).unwrap_or(i64::MAX);
        let mut lo = self
            .broker
            .offset_at_time(self.on(), self.partition, ms)?
            .max(start);
        let mut hi = end;
        // A derived ID names its offset: check it first.
        if (lo..hi).contains(&target.seq) && self.id_at(target.seq)? == Some(target) {
            return Ok(target.seq);
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.id_at(mid)? {
                Some(id) if id < target => lo = mid + 1,
                Some(_) => hi = mid,
                // Gone meanwhile (retention): everything before is gone too.
                None => lo = mid + 1,
            }
        }
        Ok(lo)
    }

    /// The entries from `from` (an offset) on whose IDs are at most
    /// `last`, at most `count` of them (0: no limit).
    pub async fn forward(
        &self,
        from: u64,
        last: StreamId,
        count: usize,
    ) -> Result<Vec<Entry>, BrokerError> {
        let (start, end) = self.bounds()?;
        let from = from.max(start);
        let deleted = self
            .broker
            .deleted_in(self.on(), self.partition, (from, end))
            .await?;
        let mut out = Vec::new();
        let mut offset = from;
        while offset < end {
            let read = self
                .broker
                .read_records(self.on(), self.partition, offset, READ_BYTES)?;
            let Some(next) = read.records.last().map(|r| r.offset + 1) else {
                break;
            };
            for record in read.records.iter().filter(|r| r.offset < end) {
                if deleted.contains(&record.offset) {
                    continue;
                }
                let entry = Entry::of(record);
                if entry.id > last {
                    return Ok(out);
                }
                out.push(entry);
                if out.len() == count {
                    return Ok(out);
                }
            }
            offset = next;
        }
        Ok(out)
    }

    /// The entries with IDs in `first..=last`, newest first, at most
    /// `count` (0: no limit).
    pub async fn backward(
        &self,
        first: StreamId,
        last: StreamId,
        count: usize,
    ) -> Result<Vec<Entry>, BrokerError> {
        let (start, _) = self.bounds()?;
        let mut hi = match last.next() {
            Some(next) => self.seek(next)?,
            None => self.bounds()?.1,
        };
        let deleted = self
            .broker
            .deleted_in(self.on(), self.partition, (start, hi))
            .await?;
        let mut out = Vec::new();
        while hi > start {
            let lo = hi.saturating_sub(BACK_STEP).max(start);
            let mut step = Vec::new();
            let mut offset = lo;
            while offset < hi {
                let read =
                    self.broker
                        .read_records(self.on(), self.partition, offset, READ_BYTES)?;
                let Some(next) = read.records.last().map(|r| r.offset + 1) else {
                    break;
                };
                step.extend(read.records.into_iter().filter(|r| r.offset < hi));
                offset = next;
            }
            for record in step.iter().rev().filter(|r| !deleted.contains(&r.offset)) {
                let entry = Entry::of(record);
                if entry.id < first {
                    return Ok(out);
                }
                out.push(entry);
                if out.len() == count {
                    return Ok(out);
                }
            }
            hi = lo;
        }
        Ok(out)
    }

    /// The stream's last entry's ID (`0-0` when empty), deleted ones
    /// included (as Redis keeps its top ID after an `XDEL`).
    pub fn top_id(&self) -> Result<StreamId, BrokerError> {
        let (start, end) = self.bounds()?;
        if end == start {
            return Ok(StreamId::default());
        }
        Ok(self.id_at(end - 1)?.unwrap_or_default())
    }

    /// Entries stored, less the deleted ones.
    pub async fn entries(&self) -> Result<u64, BrokerError> {
        let (start, end) = self.bounds()?;
        let deleted = self
            .broker
            .deleted_in(self.on(), self.partition, (start, end))
            .await?;
        Ok((end - start).saturating_sub(deleted.len() as u64))
    }
}
