//! Plain reads without a group: fetch (a long-poll over many partitions)
//! and offset lookups (earliest, latest, by time).
//!
//! ## Fetch
//!
//! - Each named partition is read once per pass, at most its own byte
//!   bound and never more than the fetch's total bound; a read returns
//!   whole batches, and past the first partition a batch that does not fit
//!   waits for the next fetch.
//! - A fetch that has fewer than `min_bytes` waits (up to `max_wait`,
//!   at most 30 s) for the partitions' end offsets to move, through each
//!   log's watch channel: no polling, and it reads again only once enough
//!   bytes may have arrived to reach `min_bytes`.
//! - What it reads counts against the caller's read budget (a semaphore
//!   of KiB): it waits for budget before reading, and the permit it
//!   returns holds the share of what was read until the caller has handed
//!   the records on. A caller that does not read its answers thus pins at
//!   most its budget.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::select_all;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Broker;
use crate::error::{BrokerError, ErrorKind};
use crate::metrics;

/// Longest long-poll a fetch may ask for.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

/// One partition to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRead {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// At most this many bytes of records from this partition.
    pub max_bytes: u32,
}

/// A fetch over many partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchQuery {
    /// The partitions, each named once.
    pub partitions: Vec<FetchRead>,
    /// Wait up to this long for `min_bytes` (capped at 30 s).
    pub max_wait: Duration,
    /// Answer once this many bytes are available (at least 1).
    pub min_bytes: u32,
    /// At most this many bytes of records in all.
    pub max_bytes: usize,
}

/// What a fetch read from one partition.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The partition's end offset when read (0 if it does not exist).
    pub high_watermark: u64,
    /// The partition's start offset when read.
    pub log_start_offset: u64,
    /// Whole record batches, as stored.
    pub records: Bytes,
    /// Why this partition could not be read.
    pub error: Option<BrokerError>,
}

/// The answer to a fetch.
#[derive(Debug)]
pub struct FetchOutcome {
    /// One entry per partition, in the query's order.
    pub partitions: Vec<FetchedPartition>,
    /// The caller's read budget held for the records read, until dropped.
    pub held: Option<OwnedSemaphorePermit>,
}

/// Where to look up an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start.
    Earliest,
    /// The log end (the next offset to be written).
    Latest,
    /// The first record appended at or after this time (ms).
    ByTimestamp(i64),
}

/// An offset lookup's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetFound {
    /// The offset.
    pub offset: u64,
    /// The record's append time, for a lookup by time that found one.
    pub timestamp_ms: Option<i64>,
}

impl Broker {
    /// Reads the query's partitions, waiting for `min_bytes` up to
    /// `max_wait`; what it reads is charged to `read_budget` (KiB).
    pub(super) async fn fetch(
        &self,
        query: &FetchQuery,
        read_budget: &Arc<Semaphore>,
    ) -> Result<FetchOutcome, BrokerError> {
        let started = Instant::now();
        crate::caps::check_entries("partitions", query.partitions.len())?;
        named_once(query)?;
        let deadline = started + query.max_wait.min(MAX_FETCH_WAIT);
        let min_bytes = (query.min_bytes as usize).max(1);
        // What this fetch may read, in KiB of the read budget (which
        // always holds at least one frame).
        let want = u32::try_from(query.max_bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        loop {
            // Bytes stored before the read: what grows past them is new.
            let before = self.log_state(query);
            let mut permit = tokio::select! {
                permit = read_budget.clone().acquire_many_owned(want) => permit.ok(),
                _ = self.shutdown.cancelled() => None,
            };
            let (partitions, total, full) = self.fetch_once(query);
            if total >= min_bytes
                || full
                || Instant::now() >= deadline
                || self.shutdown.is_cancelled()
            {
                metrics::fetched(total as u64, started.elapsed());
                // Keep only what was read.
                let used = total.div_ceil(1024);
                if let Some(permit) = &mut permit
                    && permit.num_permits() > used
                {
                    drop(permit.split(permit.num_permits() - used));
                }
                return Ok(FetchOutcome {
                    partitions,
                    held: permit,
                });
            }
            drop(permit);
            self.wait_for_more(query, &partitions, before, total, min_bytes, deadline)
                .await;
        }
    }

    /// Waits for data beyond what the last read saw (not beyond the offset
    /// asked for, which would hold at once and spin), until enough bytes
    /// may have arrived to reach `min_bytes`, the deadline passes or the
    /// broker shuts down: a long-poll does not re-read its partitions at
    /// every append.
    async fn wait_for_more(
        &self,
        query: &FetchQuery,
        read: &[FetchedPartition],
        before: Vec<Option<(u64, u64)>>,
        total: usize,
        min_bytes: usize,
        deadline: Instant,
    ) {
        let mut seen: Vec<Option<u64>> = query
            .partitions
            .iter()
            .zip(read)
            .map(|(p, r)| r.error.is_none().then(|| r.high_watermark.max(p.offset)))
            .collect();
        loop {
            self.wait_for_data(query, &seen, deadline).await;
            if Instant::now() >= deadline || self.shutdown.is_cancelled() {
                return;
            }
            let now = self.log_state(query);
            let grown: u64 = before
                .iter()
                .zip(&now)
                .map(|(b, n)| match (b, n) {
                    (Some((_, then)), Some((_, size))) => size.saturating_sub(*then),
                    _ => 0,
                })
                .sum();
            if total as u64 + grown >= min_bytes as u64 {
                return;
            }
            for (seen, now) in seen.iter_mut().zip(&now) {
                if let (Some(seen), Some((end, _))) = (seen, now) {
                    *seen = (*seen).max(*end);
                }
            }
        }
    }

    /// Each fetched partition's end offset and bytes stored (`None` for a
    /// partition that does not exist).
    fn log_state(&self, query: &FetchQuery) -> Vec<Option<(u64, u64)>> {
        query
            .partitions
            .iter()
            .map(|p| {
                let log = self.partition(&p.topic, p.partition).ok()?;
                let reader = log.reader();
                Some((reader.end_offset(), reader.size_bytes()))
            })
            .collect()
    }

    /// Reads every partition once; returns the entries, their record
    /// bytes, and whether the answer is as full as it can get now (some
    /// partition has data it could not include): then waiting for
    /// `min_bytes` cannot help.
    fn fetch_once(&self, query: &FetchQuery) -> (Vec<FetchedPartition>, usize, bool) {
        let mut total = 0usize;
        let mut full = false;
        let mut partitions = Vec::with_capacity(query.partitions.len());
        for p in &query.partitions {
            let budget = (p.max_bytes as usize).min(query.max_bytes.saturating_sub(total));
            let mut entry = FetchedPartition {
                topic: p.topic.clone(),
                partition: p.partition,
                high_watermark: 0,
                log_start_offset: 0,
                records: Bytes::new(),
                error: None,
            };
            match self.partition(&p.topic, p.partition) {
                Err(e) => entry.error = Some(e),
                Ok(log) => {
                    let reader = log.reader();
                    entry.high_watermark = reader.end_offset();
                    entry.log_start_offset = reader.start_offset();
                    if budget == 0 {
                        full |= p.offset < entry.high_watermark;
                    } else {
                        match tokio::task::block_in_place(|| reader.read(p.offset, budget)) {
                            Ok(read) => {
                                entry.high_watermark = read.high_watermark;
                                entry.log_start_offset = read.log_start_offset;
                                // A read returns at least one whole batch; past the
                                // first partition, one that does not fit waits.
                                if total == 0 || read.bytes.len() <= budget {
                                    total += read.bytes.len();
                                    full |= next_offset_after(&read.bytes)
                                        .is_some_and(|next| next < read.high_watermark);
                                    entry.records = read.bytes;
                                } else {
                                    full = true;
                                }
                            }
                            Err(e) => entry.error = Some(e.into()),
                        }
                    }
                }
            }
            partitions.push(entry);
        }
        (partitions, total, full)
    }

    /// Waits until a fetched partition's end moves past `seen` (`None`:
    /// not watched), the deadline passes, or the broker shuts down. No
    /// polling: each partition log announces its end offset through a
    /// watch channel.
    async fn wait_for_data(&self, query: &FetchQuery, seen: &[Option<u64>], deadline: Instant) {
        let mut watches = Vec::new();
        for (p, seen) in query.partitions.iter().zip(seen) {
            let Some(seen) = *seen else { continue };
            if let Ok(log) = self.partition(&p.topic, p.partition) {
                let mut end = log.watch_end();
                watches.push(Box::pin(async move {
                    let _ = end.wait_for(|e| *e > seen).await;
                }));
            }
        }
        let timeout = tokio::time::sleep_until(deadline.into());
        if watches.is_empty() {
            tokio::select! {
                _ = timeout => {}
                _ = self.shutdown.cancelled() => {}
            }
            return;
        }
        tokio::select! {
            _ = select_all(watches) => {}
            _ = timeout => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Looks up an offset of a partition.
    pub(super) fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<OffsetFound, BrokerError> {
        let log = self.partition(topic, partition)?;
        let reader = log.reader();
        let at = |offset| OffsetFound {
            offset,
            timestamp_ms: None,
        };
        Ok(match spec {
            OffsetSpec::Earliest => at(reader.start_offset()),
            OffsetSpec::Latest => at(reader.end_offset()),
            OffsetSpec::ByTimestamp(ts) => {
                match tokio::task::block_in_place(|| reader.record_at_or_after(ts))? {
                    Some((offset, found)) => OffsetFound {
                        offset,
                        timestamp_ms: Some(found),
                    },
                    None => at(reader.end_offset()),
                }
            }
        })
    }
}

/// Each entry is one read: the same partition twice would let one small
/// request make thousands of reads.
fn named_once(query: &FetchQuery) -> Result<(), BrokerError> {
    let mut named = HashSet::with_capacity(query.partitions.len());
    for p in &query.partitions {
        if !named.insert((p.topic.as_str(), p.partition)) {
            return Err(BrokerError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "the fetch names {}/{} more than once; name each partition once",
                    p.topic, p.partition
                ),
            ));
        }
    }
    Ok(())
}

/// The offset after the last record of batches laid back to back.
fn next_offset_after(mut batches: &[u8]) -> Option<u64> {
    let mut next = None;
    while !batches.is_empty() {
        let header = pigeon_protocol::batch::BatchHeader::parse(batches).ok()?;
        next = Some(header.next_offset());
        batches = batches.get(header.total_len()..)?;
    }
    next
}
