//! Record-level reads and trims of one partition, for adapters that work
//! record by record (the Redis listener's `XRANGE`, `XREAD`, `XTRIM`):
//! decoded records from an offset, a partition's bounds, a wait for the
//! log to grow past an offset, and a trim of whole segments.
//!
//! Reads decode the stored batches and drop the records before the offset
//! asked for (a read starts at the batch holding it). File reads run in
//! `block_in_place`, as the fetch path's do.
//!
//! ## Trim
//!
//! [`Broker::trim_partition`] deletes the sealed segments that hold only
//! offsets below a given one (the log's own `trim_before`: the segment
//! list is swapped first, then the files are removed and the directory
//! synced). A crash in between leaves either the segment files, which the
//! next start opens again (nothing is lost that was not meant to go), or
//! fewer of them; the log start only ever moves forward. The active
//! segment is never deleted, so a trim may delete nothing.

use std::time::Duration;

use pigeon_protocol::batch::{Record, records_of_batches};

use super::Broker;
use crate::error::{BrokerError, ErrorKind};

/// Records read from a partition.
#[derive(Debug, Clone, Default)]
pub struct RecordsRead {
    /// The records from the offset asked for on, in offset order.
    pub records: Vec<Record>,
    /// The partition's first offset when read.
    pub log_start: u64,
    /// The offset the next record will get.
    pub log_end: u64,
}

impl Broker {
    /// The first offset still stored and the offset the next record gets.
    pub(super) fn partition_bounds(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(u64, u64), BrokerError> {
        let log = self.partition(topic, partition)?;
        let reader = log.reader();
        Ok((reader.start_offset(), reader.end_offset()))
    }

    /// Records of `topic`/`partition` from `offset` (clamped to the log's
    /// start), reading whole batches up to about `max_bytes` (at least one
    /// batch). Empty at the end of the log.
    pub(super) fn read_records(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<RecordsRead, BrokerError> {
        let log = self.partition(topic, partition)?;
        let reader = log.reader();
        let (start, end) = (reader.start_offset(), reader.end_offset());
        let offset = offset.max(start);
        if offset >= end {
            return Ok(RecordsRead {
                records: Vec::new(),
                log_start: start,
                log_end: end,
            });
        }
        let read = tokio::task::block_in_place(|| reader.read(offset, max_bytes))?;
        let mut records = Vec::new();
        for record in records_of_batches(read.bytes) {
            let record = record.map_err(|e| {
                BrokerError::new(
                    ErrorKind::CorruptStoredData,
                    format!("a stored batch of {topic}/{partition} cannot be decoded: {e}"),
                )
            })?;
            if record.offset >= offset {
                records.push(record);
            }
        }
        Ok(RecordsRead {
            records,
            log_start: read.log_start_offset,
            log_end: read.high_watermark,
        })
    }

    /// The first offset of `topic`/`partition` whose record was appended
    /// at or after `ms`; the log end if none was.
    pub(super) fn offset_at_time(
        &self,
        topic: &str,
        partition: u32,
        ms: i64,
    ) -> Result<u64, BrokerError> {
        let log = self.partition(topic, partition)?;
        let reader = log.reader();
        let found = tokio::task::block_in_place(|| reader.offset_for_timestamp(ms))?;
        Ok(found.unwrap_or_else(|| reader.end_offset()))
    }

    /// Waits until one of `partitions` (`(topic, partition, offset)`)
    /// holds a record at or past its offset, `timeout` passes (`None`:
    /// no limit) or the broker shuts down; whether one did. No polling:
    /// each log announces its end through a watch channel.
    pub(super) async fn wait_for_records(
        &self,
        partitions: &[(String, u32, u64)],
        timeout: Option<Duration>,
    ) -> bool {
        let mut waits = Vec::new();
        for (topic, partition, offset) in partitions {
            let Ok(log) = self.partition(topic, *partition) else {
                continue;
            };
            let mut end = log.watch_end();
            let offset = *offset;
            waits.push(Box::pin(async move {
                end.wait_for(|e| *e > offset).await.is_ok()
            }));
        }
        if waits.is_empty() {
            return false;
        }
        let any = futures_util::future::select_all(waits);
        let limit = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            (grown, _, _) = any => grown,
            () = limit => false,
            () = self.shutdown.cancelled() => false,
        }
    }

    /// Deletes the sealed segments of `topic`/`partition` that hold only
    /// offsets below `before`; returns how many records went.
    pub(super) async fn trim_partition(
        &self,
        topic: &str,
        partition: u32,
        before: u64,
    ) -> Result<u64, BrokerError> {
        let log = self.partition(topic, partition)?;
        let first = log.reader().start_offset();
        log.trim_before(before).await?;
        Ok(log.reader().start_offset().saturating_sub(first))
    }
}
